"""Slack's side: the Bolt app, what Slack sends turned into jobs (intake), files fetched from Slack, and what a
job shows in Slack (replies written to the outbox, the sender that delivers them at Slack's pace, per workspace)."""
