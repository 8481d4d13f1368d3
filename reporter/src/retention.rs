//! Background upkeep: every `retention_interval`, events older than
//! `retain_days` and beyond `retain_per_agent` per agent are deleted (in
//! chunks of [`CHUNK`] rows, each its own writer job, so ingestion never
//! waits long), idle rate-limit buckets and expired sessions are dropped.

use crate::db::{prune, DbError};
use crate::state::AppState;

/// Rows deleted per writer job.
pub const CHUNK: u32 = 5_000;

/// Runs forever.
pub async fn run(st: AppState) {
    let mut tick = tokio::time::interval(st.settings.retention_interval);
    loop {
        tick.tick().await;
        match prune_once(&st).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention pruned events"),
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
        st.limiter.forget_full();
        st.sessions.expire();
    }
}

/// One retention pass; returns how many events were deleted.
pub async fn prune_once(st: &AppState) -> Result<usize, DbError> {
    let mut total = 0;
    let cutoff = crate::db::now_micros() - i64::from(st.settings.retain_days) * 86_400 * 1_000_000;
    loop {
        let n = st
            .writer
            .run(move |c| prune::older_than(c, cutoff, CHUNK))
            .await?;
        total += n;
        if n < CHUNK as usize {
            break;
        }
    }
    let keep = st.settings.retain_per_agent;
    let over = st.reader.read(move |c| prune::agents_over(c, keep)).await?;
    for agent in over {
        loop {
            let a = agent.clone();
            let n = st
                .writer
                .run(move |c| prune::beyond_count(c, &a, keep, CHUNK))
                .await?;
            total += n;
            if n < CHUNK as usize {
                break;
            }
        }
    }
    Ok(total)
}
