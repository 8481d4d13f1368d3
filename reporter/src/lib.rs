//! `flotilla-reporter`: the event history of every agent, rollout progress,
//! the halt gate and a web page, on axum and SQLite.
//!
//! Start it in-process with [`launch_with_tcp_listener`] (tests bind
//! `127.0.0.1:0`) or [`launch`]; the binary's `serve` does the latter.
//!
//! # HTTP API (`/api/v1`)
//!
//! Bodies are [`flotilla_protocol::api`] types; every error is a JSON
//! [`ApiError`](flotilla_protocol::api::ApiError) `{error, event_index?, field?}`.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `POST /api/v1/enroll` | enrollment token in the body | 201 new, 200 repeated, 400, 401, 409 |
//! | `POST /api/v1/events` | agent token | 200, 400, 401, 403, 413, 429 |
//! | `GET /api/v1/agents` `?q=&state=&channel=&wave=&version=&label=k=v&not_seen_for=1h&sort=last_seen\|-last_seen\|agent_id\|version&limit=&offset=` | admin or read | [`AgentList`](flotilla_protocol::api::AgentList) (`label=` exact and repeatable; `state=` comma-separated [`HostState`](flotilla_protocol::api::HostState)s) |
//! | `GET /api/v1/agents/{id}` | admin or read | [`AgentSummary`](flotilla_protocol::api::AgentSummary), 404 |
//! | `GET /api/v1/agents/{id}/events` `?kind=&status=&severity=&since=&until=&cursor=&limit=` | admin or read | [`EventPage`](flotilla_protocol::api::EventPage), newest first |
//! | `GET /api/v1/rollouts` `?channel=` | admin or read | [`RolloutList`](flotilla_protocol::api::RolloutList): each channel's current release |
//! | `GET /api/v1/rollouts/{channel}/{release}` | admin or read | [`RolloutProgress`](flotilla_protocol::api::RolloutProgress) |
//! | `GET /api/v1/rollouts/history` `?channel=&limit=` | admin or read | [`RolloutHistory`](flotilla_protocol::api::RolloutHistory): each channel's rollouts, finished ones kept |
//! | `POST /api/v1/checkin` | agent token | 202 ([`CheckIn`](flotilla_protocol::api::CheckIn), [`checkin`]), 400, 401, 429, 503 |
//! | `GET /api/v1/halts` | admin or read | [`HaltList`](flotilla_protocol::api::HaltList) |
//! | `POST /api/v1/halts` | admin | 201 new, 200 already halted ([`halts`]), 400, 403 for a read token |
//! | `POST /api/v1/halts/{id}/reopen` | admin | 200, 404 |
//! | `GET /api/v1/gate/{channel}/{release}` | admin, read **or agent** | [`Gate`](flotilla_protocol::api::Gate) |
//! | `GET /metrics` | admin or read | Prometheus text |
//! | `GET /healthz` | none | [`Health`](flotilla_protocol::api::Health) |
//!
//! Tokens go in `Authorization: Bearer …`. The admin token comes from
//! `--admin-token-file`; a read token from `flotilla-reporter token create
//! --scope read` (it may only GET the routes marked read above; anything
//! else answers 403). Wrong tokens are counted per client address: past
//! `auth_failure_burst` an address gets 429 ([`auth`]). Filters are
//! comma-separated lists (`kind=update_install,update_rollback`;
//! `kind=migration` and `kind=update` name groups); times are RFC 3339;
//! `cursor` is the previous page's `next_cursor`.
//!
//! ## `POST /api/v1/events`
//!
//! Checked in this order: agent token (401 if missing, unknown or revoked),
//! the agent's token bucket (429 + `Retry-After` seconds; default 50
//! requests at once, 5 per second after), size (413 above 1 MiB), JSON (400
//! naming `event_index` and `field`), count (413 above 500 events), each
//! event's [`validate`](flotilla_protocol::Event::validate) (400 with index
//! and field), `ts` at most a day ahead (400), `agent_id` equal to the
//! token's agent (403, index and field `agent_id`). A refused batch stores
//! nothing: on 400/403 the agent should set the named event aside and send
//! the rest. Events already stored (same `id`) are counted as `duplicates`
//! and not stored again; the 200 [`EventsAccepted`](flotilla_protocol::api::EventsAccepted)
//! is sent only after the batch is committed (see durability below), so the
//! agent may drop acknowledged events from its spool.
//!
//! # Enrollment
//!
//! `flotilla-reporter token create [--expires 7d|never] [--uses N|unlimited]`
//! prints an enrollment token once; without flags it expires in 24 hours
//! and enrolls one agent. Enrollment requests are rate-limited per client
//! address (429 + `Retry-After`). An agent enrolls with `POST /api/v1/enroll`
//! ([`EnrollRequest`](flotilla_protocol::api::EnrollRequest)); agent ids are
//! 1–128 characters of `A-Z a-z 0-9 . _ - : @`. The rule
//! ([`db::enroll`]):
//!
//! - unknown, expired, used-up or revoked enrollment token: **401** (the
//!   message says which);
//! - a read token: **403**;
//! - an agent id an admin revoked (`agent revoke ID`): **403** until
//!   `agent readmit ID`;
//! - a new agent id (or one released or readmitted): **201**, one use counted;
//!   the agent token is the agent's own proposal (`agent_token`: 64
//!   lowercase hex digits) or a fresh random one;
//! - an enrolled agent id, with its current agent token in `agent_token` (or
//!   as `Bearer`): **200**, the same token, `already_enrolled: true`, no use
//!   counted, even if the enrollment token has expired or is used up since;
//! - an enrolled agent id without its token: **409**. An agent id cannot be
//!   taken over; an admin runs `flotilla-reporter agent release ID` first.
//!
//! So the agent should make its token itself, write it to its 0600 token
//! file, then enroll; if the answer is lost it retries with the same token
//! and gets 200. Agent tokens are stored only as SHA-256 hashes.
//!
//! # The halt gate
//!
//! Defined in [`rollout`]: an agent *failed* release R on channel C when its
//! newest outcome for (C, R) is `update_install` failed,
//! `update_healthcheck` failed, `migration_execution` failed or an
//! `update_rollback`; it *succeeded* on `update_healthcheck` success.
//! `reports` = succeeded + failed. The gate is **closed** when C's
//! `max_failure_rate` is set, `reports >= min_reports` (default 1) and
//! `failed / reports > max_failure_rate`, and also whenever no verified
//! manifest names C and R; otherwise **open**. A gate can only stop an
//! update, never start one. What each channel rolls out, its thresholds and
//! waves come only from the manifest given with `--manifest PATH|URL`,
//! verified against `--trust-root PATH` like an agent verifies it
//! ([`channels`]); what agents put in `details` never sets them. Agent
//! state is ordered by the time the reporter received it, never by the
//! agent's clock. The gate of a pair the manifest names is computed at most
//! every 2 s.
//!
//! # What agents should put in events
//!
//! The reporter reads these fields (constants in
//! [`flotilla_protocol::api::details`]):
//!
//! | field | read as |
//! |---|---|
//! | `channel`, `wave` | the agent's channel and wave (latest event wins) |
//! | `to_version` | the release an `update_*`/`migration_*` event is about |
//! | `from_version` | for `update_rollback`: the release rolled back *from* (`to_version` = the version restored) |
//! | `details.release` | overrides the two rules above |
//! | `details.agent_version` | the version the agent runs: **send it on every event** |
//! | `details.labels` | the agent's labels (object of strings), replacing the enrolled ones |
//! | `details.error_chain` | array of strings, outermost first: shown under the message |
//! | `details.system` | object: os, kernel, arch, hostname, disk…: shown as a table |
//!
//! Without `details.agent_version`, a successful `update_healthcheck` or
//! `update_rollback` sets the version to its `to_version`. An `update_rollback`
//! is stored at least as a `warning` ([`db::ingest::stored_severity`]). Rollout states
//! per event kind: [`db::ingest::release_state`].
//!
//! # Storage and durability
//!
//! One SQLite file in WAL mode, schema versioned by `user_version`
//! ([`db::schema`]). Every write goes through one writer thread
//! ([`db::writer`]) that puts all queued requests into one transaction and
//! answers each only after `COMMIT`. "Acknowledged" means committed to the
//! WAL. The default durability,
//! [`Durability::ProcessCrash`]
//! (`synchronous = NORMAL`), survives the reporter being killed at any
//! moment (SIGKILL, OOM, a crash: the committed WAL frames are in the OS
//! page cache, and the `durability` test kills the real binary mid-stream to
//! prove it) but may lose the last moments before a power loss or kernel
//! crash. `durability = "power_loss"` in the config file selects
//! `synchronous = FULL`: every commit fsyncs the WAL before anyone is
//! answered; it costs about half the ingestion rate on this class of disk.
//! WAL checkpoints run on their own thread ([`db::checkpoint`]). Reads use a
//! pool of read-only connections. Retention
//! ([`retention`]) deletes events older than `--retain-days` (90) and beyond
//! `--retain-per-agent` (10,000) per agent; rollout state is kept, so the
//! gate still counts outcomes whose events were pruned. `flotilla-reporter
//! backup` copies the live database ([`db::backup`]); only `serve` and
//! `init` create one (mode 0600).
//!
//! # Notifications
//!
//! Webhooks for gates closed and reopened, manual halts, rollbacks, failed
//! migrations, silent agents and expiring roots or manifests, from a
//! durable outbox: see [`notify`].
//!
//! # Web page
//!
//! See [`web`]: `GET /login` takes the admin token and sets a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when `public_url` is https);
//! wrong tokens are counted per client address like the API's; forms carry a CSRF token and `Origin` is
//! checked; a strict CSP allows only this origin's script and style.

pub mod auth;
pub mod channels;
pub mod checkin;
pub mod db;
pub mod error;
pub mod halts;
pub mod handlers;
pub mod metrics;
pub mod notify;
pub mod ratelimit;
pub mod retention;
pub mod rollout;
pub mod rollout_history;
pub mod router;
pub mod settings;
pub mod state;
pub mod store;
pub mod tokens;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

pub use error::{AppError, Error};
pub use settings::{Durability, Secret, Settings};

use crate::channels::ManifestStore;
use crate::state::AppState;
use crate::store::Store;

/// How often a replica over a shared database reloads the manual halts.
pub const HALTS_RELOAD: Duration = Duration::from_secs(1);

/// Binds `settings.listen` and serves until `shutdown` completes.
pub async fn launch(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::Serve {
            addr: settings.listen.to_string(),
            source,
        })?;
    launch_with_tcp_listener(settings, listener, shutdown).await
}

/// Serves on `listener` until `shutdown` completes, then finishes the
/// requests in flight, commits what the writer holds and returns.
pub async fn launch_with_tcp_listener(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut background = Vec::new();
    let manifest = match (&settings.manifest, &settings.trust_root) {
        (None, None) => {
            tracing::warn!("no --manifest and --trust-root: every halt gate is closed");
            ManifestStore::default()
        }
        (Some(src), Some(root)) => {
            let anchor = channels::load_trust_root(root).map_err(Error::Manifest)?;
            let source = channels::Source::new(src).map_err(Error::Manifest)?;
            let store = ManifestStore::configured();
            match store.refresh(&source, &anchor).await {
                Ok(serial) => tracing::info!(serial, "verified manifest loaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "manifest refused; the gates stay closed until one verifies")
                }
            }
            background.push(tokio::spawn(channels::refresh_loop(
                store.clone(),
                source,
                anchor,
                settings.manifest_refresh,
            )));
            store
        }
        (Some(_), None) => {
            return Err(Error::Manifest(
                "--manifest needs --trust-root (the root its chain is verified from)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Manifest(
                "--trust-root needs --manifest (the signed manifest to verify)".into(),
            ))
        }
    };
    let (store, running) = Store::open(&settings).await?;
    let active_halts = store.halts_active().await.map_err(|e| match e {
        db::DbError::Sqlite(source) => Error::Db {
            path: store.target().into(),
            source,
        },
        other => Error::Manifest(format!("loading the manual halts: {other}")),
    })?;
    tracing::info!(settings = ?settings, %addr, "serving");
    let state = AppState::new(settings, store, manifest);
    state.halts.set(state.halts.ticket(), active_halts);
    background.push(tokio::spawn(retention::run(state.clone())));
    if state.store.is_shared() {
        background.push(tokio::spawn(halts::reload_loop(
            state.clone(),
            HALTS_RELOAD,
        )));
    }
    if !state.settings.notify.webhooks.is_empty() {
        background.push(tokio::spawn(notify::deliver::run(state.clone())));
        background.push(tokio::spawn(notify::watch::run(state.clone())));
    }
    background.push(tokio::spawn(checkin::flush_loop(state.clone())));
    background.push(tokio::spawn(rollout_history::record_loop(state.clone())));
    let app = router::router(state.clone());
    let served = serve(listener, app, &state.settings, shutdown).await;
    for task in background {
        task.abort();
        let _ = task.await;
    }
    checkin::flush(&state).await;
    drop(state);
    // The writer thread ends once the last handle is gone and its queue is
    // committed; requests still holding one delay it only briefly.
    running.stop().await;
    served.map_err(|source| Error::Serve { addr, source })
}

/// The HTTP/1 server: at most `max_connections` connections at once (more
/// wait in the listen backlog, so the process stays below its file
/// descriptor limit and a flood cannot starve `/healthz` for long), each
/// closed if it has not sent a complete request head within
/// `header_read_timeout` (when new, and when idle between requests); the
/// request timeout is the router's. Each request carries its peer address
/// as [`ConnectInfo`]. On `shutdown` it stops accepting and waits for the
/// requests in flight.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait for connections to end.
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut app = app.clone();
            async move { app.call(req).await }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
