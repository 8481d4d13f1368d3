//! `flotilla-reporter serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use flotilla_reporter::settings::{read_admin_token, FileSettings, Settings};

/// Serve the API and the web page.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML file with any of the settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The SQLite database [default: ./flotilla-reporter.db].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// File holding the admin token (reads, metrics, web login).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// A copy of the signed manifest (path or http(s) URL): channel thresholds and waves.
    #[arg(long)]
    manifest: Option<String>,
    /// Prune events older than this many days [default: 90].
    #[arg(long)]
    retain_days: Option<u32>,
    /// Keep at most this many events per agent [default: 10000].
    #[arg(long)]
    retain_per_agent: Option<u64>,
}

impl Args {
    fn settings(self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(c) = &self.config {
            FileSettings::load(c)?.apply(&mut s)?;
        }
        if let Some(v) = self.db {
            s.db = v;
        }
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(p) = self.admin_token_file {
            s.admin_token = Some(read_admin_token(&p)?);
        }
        if let Some(v) = self.manifest {
            s.manifest = Some(v);
        }
        if let Some(v) = self.retain_days {
            s.retain_days = v;
        }
        if let Some(v) = self.retain_per_agent {
            s.retain_per_agent = v;
        }
        Ok(s)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    if settings.admin_token.is_none() {
        tracing::warn!(
            "no --admin-token-file: the read API, metrics and the web page are disabled"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        // User-facing (tests and scripts read it): the address actually bound.
        println!("listening on {}", listener.local_addr()?);
        flotilla_reporter::launch_with_tcp_listener(settings, listener, shutdown_signal()).await?;
        Ok(())
    })
}
