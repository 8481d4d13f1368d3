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
    /// Manage enrollment tokens.
    #[command(subcommand)]
    Token(cli::token::Command),
    /// Manage agents.
    #[command(subcommand)]
    Agent(cli::agent::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    let result = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Token(c) => cli::token::run(c),
        Command::Agent(c) => cli::agent::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-reporter: {e:#}");
            ExitCode::from(1)
        }
    }
}
