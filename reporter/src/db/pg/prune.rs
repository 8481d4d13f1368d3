//! Retention: pruning old events and agents.
