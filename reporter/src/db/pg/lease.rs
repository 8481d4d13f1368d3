//! Leases: one replica at a time for a job (retention, notification).
