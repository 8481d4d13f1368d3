//! Queries of the API and the page: agents, events, rollout rows, counts.
