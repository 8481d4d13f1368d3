//! The event spool (placeholder API; the crash-safe bounded spool lands with the migrations issue).
