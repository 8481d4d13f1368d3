//! Storing events: dedup per agent, the agents' rows, rollout rows.
