//! The PostgreSQL baseline for `reporter_ingest_pg`: the best raw load of
//! the rows `reporter_bench ingest` posts into the same server, with no
//! reporter in between. The PostgreSQL twin of `reporter_bench raw`.
//!
//! `--url` names an empty database (no password in it; the password comes
//! from `--password-file` or `PGPASSWORD`); it gets the reporter's schema
//! ([`schema::migrate`]). Each transaction holds one agent's batch of
//! `--batch` rows, 64 agents in turn, as each HTTP batch is; `--connections`
//! load at once, each on its own connection (`writer`: callers). `--method`:
//!
//! - `copy`: binary `COPY events FROM STDIN` (the fastest raw path);
//! - `unnest`: one multi-row `INSERT ... SELECT FROM unnest(arrays) ON
//!   CONFLICT DO NOTHING`, as the reporter's guarded insert (after a racing
//!   replica) sends it.
//! - `writer`: not raw: each batch through the reporter's own
//!   [`PgWriter::ingest`] (group commit, derived state), from
//!   `--connections` concurrent callers over `--writers` shards, for the agents' rows it needs
//!   made first: the reporter's side without HTTP.
//!
//! Prints `rows= batch= connections= method= secs= rows_per_s=`.
//!
//! ```text
//! cargo run --release -p flotilla-reporter --example reporter_bench_pg_raw -- \
//!     --url postgres://flotilla@127.0.0.1:5432/raw --password-file pw --batch 100
//! ```

use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use flotilla_protocol::{Event, EventKind, EventStatus};
use flotilla_reporter::db::ingest::Batch;
use flotilla_reporter::db::pg::writer::PgWriter;
use flotilla_reporter::db::pg::{schema, Pg};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Copy,
    Unnest,
    Writer,
}

#[derive(Parser)]
struct Args {
    /// The (empty) database: postgres://USER@HOST:PORT/DB, no password.
    #[arg(long)]
    url: String,
    /// A file holding the password (else PGPASSWORD).
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 300_000)]
    rows: usize,
    #[arg(long, default_value_t = 2)]
    connections: usize,
    #[arg(long, value_enum, default_value_t = Method::Copy)]
    method: Method,
    /// `writer`: its shards (the reporter's `db_writers`).
    #[arg(long, default_value_t = 2)]
    writers: usize,
}

/// The event `reporter_bench` posts (the same fields and sizes).
fn make_event(agent: &str, i: usize) -> Event {
    let mut e = Event::new(
        agent,
        EventKind::ManifestCheck,
        EventStatus::Success,
        "manifest",
        format!("manifest serial {i} accepted, nothing to do"),
    );
    e.channel = Some("stable".into());
    e.wave = Some("all".into());
    e.details.insert("agent_version".into(), "1.4.2".into());
    e.details.insert("serial".into(), (i as u64).into());
    e.details.insert(
        "source".into(),
        "https://git.example.com/ops/fleet.git".into(),
    );
    e
}

/// One event as the columns the reporter stores.
struct Cols {
    id: Vec<u8>,
    agent_id: String,
    ts: i64,
    kind: &'static str,
    status: &'static str,
    severity: &'static str,
    component: String,
    message: String,
    from_version: Option<String>,
    to_version: Option<String>,
    channel: Option<String>,
    wave: Option<String>,
    details: String,
}

fn cols(e: &Event) -> Cols {
    Cols {
        id: e.id.as_bytes().to_vec(),
        agent_id: e.agent_id.clone(),
        ts: e.ts.timestamp_micros(),
        kind: e.kind.as_str(),
        status: e.status.as_str(),
        severity: e.severity.as_str(),
        component: e.component.clone(),
        message: e.message.clone(),
        from_version: e.from_version.clone(),
        to_version: e.to_version.clone(),
        channel: e.channel.clone(),
        wave: e.wave.clone(),
        details: serde_json::to_string(&e.details).unwrap(),
    }
}

const COLUMNS: &str = "id, agent_id, ts, kind, status, severity, component, message, \
                       from_version, to_version, channel, wave, details";

async fn load_copy(c: &mut tokio_postgres::Client, chunk: &[Cols]) {
    let tx = c.transaction().await.unwrap();
    let sink = tx
        .copy_in(&format!("COPY events ({COLUMNS}) FROM STDIN BINARY"))
        .await
        .unwrap();
    let t = Type::TEXT;
    let types = [
        Type::BYTEA,
        t.clone(),
        Type::INT8,
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t,
    ];
    let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
    for r in chunk {
        let row: [&(dyn ToSql + Sync); 13] = [
            &r.id,
            &r.agent_id,
            &r.ts,
            &r.kind,
            &r.status,
            &r.severity,
            &r.component,
            &r.message,
            &r.from_version,
            &r.to_version,
            &r.channel,
            &r.wave,
            &r.details,
        ];
        w.as_mut().write(&row).await.unwrap();
    }
    w.as_mut().finish().await.unwrap();
    tx.commit().await.unwrap();
}

async fn load_unnest(c: &mut tokio_postgres::Client, chunk: &[Cols]) {
    let tx = c.transaction().await.unwrap();
    let ids: Vec<&[u8]> = chunk.iter().map(|r| r.id.as_slice()).collect();
    let ts: Vec<i64> = chunk.iter().map(|r| r.ts).collect();
    let s = |f: fn(&Cols) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
    let o = |f: fn(&Cols) -> Option<&str>| chunk.iter().map(f).collect::<Vec<Option<&str>>>();
    let (kind, status, severity) = (s(|r| r.kind), s(|r| r.status), s(|r| r.severity));
    let (component, message, details) = (s(|r| &r.component), s(|r| &r.message), s(|r| &r.details));
    let (from, to) = (
        o(|r| r.from_version.as_deref()),
        o(|r| r.to_version.as_deref()),
    );
    let (channel, wave) = (o(|r| r.channel.as_deref()), o(|r| r.wave.as_deref()));
    let ta = Type::TEXT_ARRAY;
    tx.execute_typed(
        &format!(
            "INSERT INTO events ({COLUMNS})
             SELECT id, $2, ts, kind, status, severity, component, message, from_version,
                    to_version, channel, wave, details
             FROM unnest($1::bytea[], $3::int8[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                         $12::text[], $13::text[])
                  AS u(id, ts, kind, status, severity, component, message, from_version,
                       to_version, channel, wave, details)
             ON CONFLICT (agent_id, id) DO NOTHING"
        ),
        &[
            (&ids, Type::BYTEA_ARRAY),
            (&chunk[0].agent_id, Type::TEXT),
            (&ts, Type::INT8_ARRAY),
            (&kind, ta.clone()),
            (&status, ta.clone()),
            (&severity, ta.clone()),
            (&component, ta.clone()),
            (&message, ta.clone()),
            (&from, ta.clone()),
            (&to, ta.clone()),
            (&channel, ta.clone()),
            (&wave, ta.clone()),
            (&details, ta),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let password = match &a.password_file {
        Some(p) => Some(std::fs::read_to_string(p).unwrap().trim().to_owned()),
        None => std::env::var("PGPASSWORD").ok(),
    };
    let pg = Pg::connect(&a.url, password.as_deref(), a.connections)
        .await
        .unwrap_or_else(|e| panic!("{}", flotilla_reporter::error::error_text(&e)));
    schema::migrate(&pg).await.unwrap();
    if let Method::Writer = a.method {
        return through_writer(&a, pg).await;
    }
    let rows: Vec<Cols> = (0..a.rows)
        .map(|i| cols(&make_event(&format!("raw-{:03}", (i / a.batch) % 64), i)))
        .collect();
    let chunks: Arc<Vec<&'static [Cols]>> = {
        let rows: &'static [Cols] = rows.leak();
        Arc::new(rows.chunks(a.batch).collect())
    };
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        clients.push(pg.client().await.unwrap());
    }
    let n = clients.len();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        let (chunks, method) = (chunks.clone(), a.method);
        tasks.spawn(async move {
            for chunk in chunks.iter().skip(k).step_by(n) {
                match method {
                    Method::Copy => load_copy(&mut c, chunk).await,
                    Method::Unnest => load_unnest(&mut c, chunk).await,
                    Method::Writer => unreachable!("handled above"),
                }
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "rows={} batch={} connections={n} method={:?} secs={took:.2} rows_per_s={:.0}",
        a.rows,
        a.batch,
        a.method,
        a.rows as f64 / took
    );
}

async fn through_writer(a: &Args, pg: Pg) {
    let events: Vec<Event> = (0..a.rows)
        .map(|i| make_event(&format!("raw-{:03}", (i / a.batch) % 64), i))
        .collect();
    let c = pg.client().await.unwrap();
    for i in 0..64 {
        c.execute(
            "INSERT INTO agents (agent_id, enrolled_at) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&format!("raw-{i:03}")],
        )
        .await
        .unwrap();
    }
    drop(c);
    let batches: Vec<(String, Batch)> = events
        .chunks(a.batch)
        .map(|ch| (ch[0].agent_id.clone(), Batch::from_events(ch)))
        .collect();
    let batches = Arc::new(batches);
    let writer = PgWriter::start(pg, a.writers);
    let n = a.connections.max(1);
    let notifier = flotilla_reporter::notify::Notifier::default();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let (batches, writer, notifier) = (batches.clone(), writer.clone(), notifier.clone());
        tasks.spawn(async move {
            for (agent, b) in batches.iter().skip(k).step_by(n) {
                let o = writer
                    .ingest(agent.as_str(), b.clone(), 1, notifier.clone())
                    .await
                    .unwrap();
                assert_eq!(o.duplicates, 0);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "rows={} batch={} connections={n} method=Writer secs={took:.2} rows_per_s={:.0}",
        a.rows,
        a.batch,
        a.rows as f64 / took
    );
}
