//! `flotilla-publisher`: parses the command line and dispatches to
//! `cmd::<subcommand>::run`; the work is done in the library
//! (`flotilla_publisher`). Errors are mapped to exit codes in one place,
//! [`cmd::exit_code`]: 0 success, 1 failure (one line per problem for
//! `verify`), 2 bad usage (clap).

use clap::{Parser, Subcommand};

mod cmd;

/// Keys, roots, releases, rollouts, signing, verification and publishing of
/// a Flotilla fleet repo.
///
/// The fleet repo decides what every host runs: operators change it by pull
/// request, CI verifies it, and the merge is signed and published for the
/// agents to pull. Every command works on the repo given by --repo (default:
/// the current directory).
#[derive(Parser)]
#[command(name = "flotilla-publisher", version)]
#[command(after_help = "\
Examples:
  flotilla-publisher init fleet --fleet prod
  flotilla-publisher --repo fleet release add --version 1.4.0 \\
      --target x86_64-unknown-linux-gnu --file ./flotilla-agent --store s3://bucket/fleet
  flotilla-publisher rollout set --channel stable --release 1.4.0 --repo fleet
  flotilla-publisher verify --sources --repo fleet
  flotilla-publisher status --reporter https://reporter.example.com --token-file admin.token
  flotilla-publisher plan --token-file admin.token      # on a pull request: who moves, when
  flotilla-publisher package --type deb --channel stable --store s3://bucket/fleet \\
      --source-url https://updates.example.com/fleet/ --out dist/   # a host installer")]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(cmd::init::Args),
    Keygen(cmd::keygen::Args),
    Root(cmd::root::Args),
    Release(cmd::release::Args),
    Rollout(cmd::rollout::Args),
    Pin(cmd::pin::Args),
    Sign(cmd::sign::Args),
    Verify(cmd::verify::Args),
    Publish(cmd::publish::Args),
    Package(Box<cmd::package::Args>),
    Status(cmd::status::Args),
    Plan(cmd::plan::Args),
    #[command(hide = true)]
    Hash(cmd::hash::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let g = &cli.global;
    cmd::exit_code(match cli.command {
        Command::Init(a) => cmd::init::run(g, a),
        Command::Keygen(a) => cmd::keygen::run(g, a),
        Command::Root(a) => cmd::root::run(g, a),
        Command::Release(a) => cmd::release::run(g, a),
        Command::Rollout(a) => cmd::rollout::run(g, a),
        Command::Pin(a) => cmd::pin::run(g, a),
        Command::Sign(a) => cmd::sign::run(g, a),
        Command::Verify(a) => cmd::verify::run(g, a),
        Command::Publish(a) => cmd::publish::run(g, a),
        Command::Package(a) => cmd::package::run(g, *a),
        Command::Status(a) => cmd::status::run(g, a),
        Command::Plan(a) => cmd::plan::run(g, a),
        Command::Hash(a) => cmd::hash::run(g, a),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
