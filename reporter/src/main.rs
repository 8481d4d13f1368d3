//! `flotilla-reporter`: parses the command line and dispatches.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The Flotilla reporter: event history, rollout progress, halt gate, web page.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the API and the web page.
    #[command(after_help = cli::serve::CONFIG_HELP)]
    Serve(cli::serve::Args),
    /// Create the database (mode 0600), or migrate an existing one, and exit.
    ///
    /// `serve` does this too; the other commands open only an existing
    /// database, so `init` is for making one before the first `serve` (to
    /// create tokens first, in an install script).
    Init(cli::DbArgs),
    /// Copy the live database to a new file, safely while `serve` runs.
    #[command(after_help = cli::backup::HELP)]
    Backup(cli::backup::Args),
    /// Manage enrollment tokens.
    #[command(subcommand)]
    Token(cli::token::Command),
    /// Manage agents.
    #[command(subcommand)]
    Agent(cli::agent::Command),
    /// Move a database: `db copy` from SQLite to PostgreSQL.
    #[command(subcommand)]
    Db(cli::db::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    let result = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Init(db) => cli::init(db),
        Command::Backup(a) => cli::backup::run(a),
        Command::Token(c) => cli::token::run(c),
        Command::Agent(c) => cli::agent::run(c),
        Command::Db(c) => cli::db::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, each cause once (journald shows each line alone).
            eprintln!(
                "flotilla-reporter: {}",
                flotilla_reporter::error::error_text(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}
