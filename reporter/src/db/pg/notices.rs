//! The twin of [`crate::db::notices::watch_check`]: the watcher's
//! silent-agent and expiry checks. Run it in a transaction: the watermark
//! row is locked from its read to its move, and each expiry notice is
//! claimed by inserting its key, so two replicas never tell one thing
//! twice (the watcher also runs under a lease, one replica at a time).

use tokio_postgres::GenericClient;

use super::outbox;
use crate::db::notices::{Expiring, WATERMARK};
use crate::db::DbError;
use crate::notify::{Notice, Notifier, MAX_NAMED_AGENTS};

/// See the module: whether a notice was queued.
pub async fn watch_check(
    c: &impl GenericClient,
    n: &Notifier,
    cutoff: i64,
    silent_for: &str,
    expiring: &[Expiring],
    now: i64,
) -> Result<bool, DbError> {
    let a = silent(c, n, cutoff, silent_for, now).await?;
    let b = expiry(c, n, expiring, now).await?;
    Ok(a | b)
}

/// The watermark, locked; `None` when there was none (then it is made).
async fn lock_watermark(
    c: &impl GenericClient,
    cutoff: i64,
    now: i64,
) -> Result<Option<String>, DbError> {
    let select = "SELECT value FROM notify_state WHERE key = $1 FOR UPDATE";
    if let Some(r) = c.query_opt(select, &[&WATERMARK]).await? {
        return Ok(Some(r.get(0)));
    }
    let made = c
        .execute(
            "INSERT INTO notify_state (key, value, ts) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
            &[&WATERMARK, &cutoff.to_string(), &now],
        )
        .await?;
    if made == 1 {
        return Ok(None);
    }
    Ok(c.query_opt(select, &[&WATERMARK]).await?.map(|r| r.get(0)))
}

async fn silent(
    c: &impl GenericClient,
    n: &Notifier,
    cutoff: i64,
    silent_for: &str,
    now: i64,
) -> Result<bool, DbError> {
    let after: Option<i64> = lock_watermark(c, cutoff, now)
        .await?
        .and_then(|v| v.parse().ok());
    outbox::set_state(c, WATERMARK, &cutoff.to_string(), now).await?;
    let Some(after) = after.filter(|a| *a < cutoff) else {
        return Ok(false);
    };
    if !n.wants("agents_silent") {
        return Ok(false);
    }
    let (count, agents) = outbox::fell_silent(c, after, cutoff, MAX_NAMED_AGENTS).await?;
    if count == 0 {
        return Ok(false);
    }
    let notice = Notice::AgentsSilent {
        count,
        agents,
        silent_for: silent_for.to_owned(),
    };
    outbox::queue(c, n, &notice, now).await
}

async fn expiry(
    c: &impl GenericClient,
    n: &Notifier,
    expiring: &[Expiring],
    now: i64,
) -> Result<bool, DbError> {
    let mut queued = false;
    for (what, version, expires) in expiring {
        let key = format!("expiring:{what}:{version}");
        let claimed = c
            .execute(
                "INSERT INTO notify_state (key, value, ts) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &expires.to_rfc3339(), &now],
            )
            .await?;
        if claimed == 0 {
            continue;
        }
        let notice = Notice::Expiring {
            what: (*what).to_owned(),
            version: *version,
            expires: *expires,
        };
        queued |= outbox::queue(c, n, &notice, now).await?;
    }
    Ok(queued)
}
