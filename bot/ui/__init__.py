"""What people read: Block Kit built by small pure functions, and every user-facing text. No Slack calls here."""
