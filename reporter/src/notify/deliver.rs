//! The delivery task: POSTs queued notices and forgets them only once
//! their receiver answered 2xx.
//!
//! 1. drop rows older than `max_age`;
//! 2. take up to [`BATCH`] rows that are due, oldest first, and POST each
//!    (at once, each within `timeout`, redirects not followed);
//! 3. 2xx: delete the row. Otherwise count the attempt and retry after
//!    `retry_min * 2^(attempts-1)` (at most `retry_max`, ±10%), or drop the
//!    row once it had `max_attempts` attempts;
//! 4. sleep until the next row is due, a new row is queued, or 1 s passed.
//!
//! **Signature.** Every request carries `X-Flotilla-Delivery: <id>` (the
//! same on retries: a receiver may see a notice twice and should dedupe
//! on it), `X-Flotilla-Event: <kind>` and, when the receiver has a secret,
//! `X-Flotilla-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is
//! HMAC-SHA256 with the secret over `<t>.<body>` (the timestamp, a dot and
//! the exact body bytes). A receiver recomputes it, compares in constant
//! time and refuses a `t` far from its clock (replays). See [`sign`].

use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use super::Notifier;
use crate::db::outbox::Queued;
use crate::settings::{Webhook, WebhookFormat};
use crate::state::AppState;

/// Rows taken per round.
pub const BATCH: u32 = 32;

/// HMAC-SHA256 (RFC 2104) of `msg` with `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Flotilla-Signature` value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &msg))
    )
}

/// The wait before attempt `attempts + 1`.
pub fn backoff(n: &Notifier, attempts: u32) -> Duration {
    let s = n.settings();
    let exp = attempts.saturating_sub(1).min(30);
    let d = s.retry_min.saturating_mul(1u32 << exp).min(s.retry_max);
    d.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

/// Runs until the process ends.
pub async fn run(st: AppState) {
    let n = st.notifier.clone();
    let http = match reqwest::Client::builder()
        .timeout(n.settings().timeout)
        .connect_timeout(n.settings().timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flotilla-reporter/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: notifications are not delivered");
            return;
        }
    };
    loop {
        let full = match round(&st, &http).await {
            Ok(full) => full,
            Err(e) => {
                tracing::warn!(error = %e, "notification delivery round failed");
                false
            }
        };
        if full {
            continue;
        }
        let now = crate::db::now_micros();
        let next = st.store.outbox_next_due().await.ok().flatten();
        let wait = next
            .map(|t| Duration::from_micros((t - now).max(0) as u64))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(1));
        tokio::select! {
            () = n.0.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round; `true` when it took a full batch (more may be due).
async fn round(st: &AppState, http: &reqwest::Client) -> Result<bool, crate::db::DbError> {
    let n = &st.notifier;
    let now = crate::db::now_micros();
    let cutoff = now - n.settings().max_age.as_micros() as i64;
    for receiver in st.store.outbox_expire(cutoff).await? {
        n.dropped(&receiver, "max_age");
    }
    let due = st.store.outbox_due(now, BATCH).await?;
    let full = due.len() == BATCH as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for row in due {
        let (st, http) = (st.clone(), http.clone());
        tasks.spawn(async move { attempt(&st, &http, row).await });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "recording a delivery failed");
        }
    }
    Ok(full)
}

async fn attempt(
    st: &AppState,
    http: &reqwest::Client,
    row: Queued,
) -> Result<(), crate::db::DbError> {
    let n = &st.notifier;
    let id = row.id;
    let Some(w) = n
        .settings()
        .webhooks
        .iter()
        .find(|w| w.name == row.receiver)
    else {
        n.dropped(&row.receiver, "unknown_receiver");
        return st.store.outbox_delete(id).await;
    };
    match post(http, w, &row).await {
        Ok(()) => {
            tracing::debug!(receiver = %w.name, id, kind = %row.kind, "notification delivered");
            n.count(|c| *c.sent.entry(w.name.clone()).or_default() += 1);
            st.store.outbox_delete(id).await
        }
        Err(error) => {
            n.count(|c| *c.failed.entry(w.name.clone()).or_default() += 1);
            let attempts = row.attempts + 1;
            if attempts >= n.settings().max_attempts {
                tracing::warn!(receiver = %w.name, id, attempts, %error, "giving up on a notification");
                n.dropped(&w.name, "max_attempts");
                return st.store.outbox_delete(id).await;
            }
            let wait = backoff(n, attempts);
            tracing::info!(receiver = %w.name, id, attempts, %error, retry_in = ?wait, "notification not delivered");
            let next = crate::db::now_micros() + wait.as_micros() as i64;
            st.store.outbox_failed(id, next, error).await
        }
    }
}

/// The request for `row` to `w`: `Ok` on 2xx, else why not.
async fn post(http: &reqwest::Client, w: &Webhook, row: &Queued) -> Result<(), String> {
    let body = match w.format {
        WebhookFormat::Json => row.body.clone(),
        WebhookFormat::Slack => {
            let v: serde_json::Value = serde_json::from_str(&row.body).unwrap_or_default();
            let text = v["summary"].as_str().unwrap_or(&row.kind).to_owned();
            serde_json::json!({ "text": format!("flotilla: {text}") }).to_string()
        }
    };
    let mut req = http
        .post(&w.url)
        .header("content-type", "application/json")
        .header("x-flotilla-delivery", row.id.to_string())
        .header("x-flotilla-event", &row.kind);
    if let Some(secret) = &w.secret {
        let t = chrono::Utc::now().timestamp();
        req = req.header(
            "x-flotilla-signature",
            sign(secret.expose(), t, body.as_bytes()),
        );
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| flotilla_protocol::chain_text(&e))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let n = Notifier::new(crate::settings::NotifySettings {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            ..Default::default()
        });
        let secs = |a| backoff(&n, a).as_secs_f64();
        assert!((0.9..1.1).contains(&secs(1)));
        assert!((3.6..4.4).contains(&secs(3)));
        assert!((9.0..11.0).contains(&secs(20)));
    }
}
