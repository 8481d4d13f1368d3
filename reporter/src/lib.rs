//! flotilla-reporter (placeholder until its issue lands).
