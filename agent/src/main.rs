//! flotilla-agent: parses the command line and hands over to the library
//! (`flotilla_agent`). Each subcommand lives in `cmd/<name>.rs` with its
//! `Args` and `run`; errors are mapped to exit codes here, in one place.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_agent::config::DEFAULT_CONFIG_PATH;
use flotilla_agent::version::VERSION;

/// The Flotilla agent: pulls the signed manifest, decides whether its wave
/// has opened, downloads and verifies the new build, swaps itself in, checks
/// its health and rolls back on failure. A systemd timer runs `run`.
#[derive(Parser)]
#[command(name = "flotilla-agent", version = VERSION, max_term_width = 100)]
#[command(after_help = "Examples:
  flotilla-agent run                       one pass with /etc/flotilla/agent.toml
  flotilla-agent status --json             where this host stands, as JSON
  flotilla-agent --config ./agent.toml run one pass with another config

Logging: FLOTILLA_LOG=error|warn|info|debug|trace (default warn), to stderr.
Exit codes: 0 the command did its job (a pass that refused a manifest or
deferred an update still did), 1 an error stopped it, 2 bad usage.")]
struct Cli {
    /// The agent's config file.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(cmd::run::Args),
    Status(cmd::status::Args),
    SelfTest(cmd::self_test::Args),
    Rollback(cmd::rollback::Args),
    Install(Box<cmd::install::Args>),
    Version(cmd::version::Args),
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(&cli.config, a),
        Command::Status(a) => cmd::status::run(&cli.config, a),
        Command::SelfTest(a) => cmd::self_test::run(&cli.config, a),
        Command::Rollback(a) => cmd::rollback::run(&cli.config, a),
        Command::Install(a) => cmd::install::run(&cli.config, *a),
        Command::Version(a) => cmd::version::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Causes (a ureq error, say) may quote a URL with credentials.
            let shown = |t: String| flotilla_protocol::redact_urls(&t).into_owned();
            eprintln!("flotilla-agent: error: {}", shown(e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {}", shown(cause.to_string()));
            }
            ExitCode::FAILURE
        }
    }
}

/// Stderr for the log, with credentials taken out of URLs: a library's
/// debug lines (ureq's "sending request GET https://user:token@…") quote
/// URLs as they are. The formatter writes each line with one `write`.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(flotilla_protocol::redact_urls(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logging to stderr at the level `FLOTILLA_LOG` names (error, warn, info,
/// debug, trace; default warn). A level rather than a full filter
/// expression keeps the regex engine out of the binary.
fn init_logging() {
    let level = std::env::var("FLOTILLA_LOG")
        .ok()
        .and_then(|v| {
            v.trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .ok()
        })
        .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(|| RedactingStderr)
        .with_target(false)
        .init();
}
