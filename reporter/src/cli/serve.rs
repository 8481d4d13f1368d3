//! `flotilla-reporter serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use flotilla_reporter::settings::{FileSettings, Settings};

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
        // The flags are a config file of their own, applied over the file.
        FileSettings {
            db: self.db,
            listen: self.listen,
            admin_token_file: self.admin_token_file,
            manifest: self.manifest,
            retain_days: self.retain_days,
            retain_per_agent: self.retain_per_agent,
            ..FileSettings::default()
        }
        .apply(&mut s)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_override_the_config_file_and_the_file_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reporter.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretain_days = 30\nretain_per_agent = 500\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--retain-days",
            "7",
        ]);
        let s = cli.args.settings().unwrap();
        assert_eq!(s.retain_days, 7);
        assert_eq!(s.retain_per_agent, 500);
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.db, Settings::default().db);
    }
}
