//! Check-ins: each agent's latest state and reason.
