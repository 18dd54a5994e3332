"""Everything kept: the database (SQLite or PostgreSQL) and the stores on it: jobs (the queue, with leases), the
outbox, the voice library, the consent audit, installations; plus the prepared recordings on disk, the outbox
leader and the wake-ups between replicas. All SQL lives here."""
