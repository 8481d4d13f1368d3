//! The outbox of webhook notices and the notifier's state.
