//! `flotilla-demo`: a whole fleet on one machine. See the crate docs.

use clap::Parser;

/// A whole Flotilla fleet on one machine: keys, a git fleet repo, a local
/// artifact store, a reporter and N agents, rolling out two releases.
///
/// It builds agent 1.0.0, 1.1.0 and a 1.2.0 whose config migration fails on
/// hosts labelled role=db; rolls out 1.1.0 in waves (canary 10% -> 50% ->
/// 100%), then 1.2.0, whose failing canaries roll back and close the halt
/// gate so that later waves never install it. Then it serves the reporter's
/// web page until Ctrl-C (or exits with --exit).
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  cargo run --release -p flotilla-demo\n  cargo run --release -p flotilla-demo -- --agents 12 --exit"
)]
struct Args {
    /// Number of agents (hosts) in the fleet.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Print the summary and exit instead of serving the web page.
    #[arg(long)]
    exit: bool,
    /// Keep the temp dir (fleet repo, hosts, reporter db) on exit, for a look inside.
    #[arg(long)]
    keep: bool,
    /// Seconds between two passes of one agent (the timer's 15 minutes, scaled down).
    #[arg(long, default_value_t = 1.0)]
    pass_interval: f64,
    /// Address the reporter listens on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Build the binaries with the dev profile instead of release (quicker
    /// where a dev build of the workspace exists; the tests use it).
    #[arg(long)]
    dev_builds: bool,
    /// Cargo target dir for those builds [default: target/demo in the workspace].
    #[arg(long, value_name = "DIR")]
    target_dir: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let opts = flotilla_demo::Options {
        agents: args.agents,
        exit: args.exit,
        keep: args.keep,
        pass_interval: std::time::Duration::from_secs_f64(args.pass_interval.max(0.05)),
        listen: args.listen,
        build: flotilla_demo::BuildOptions {
            release: !args.dev_builds,
            target_dir: args.target_dir,
        },
    };
    if let Err(e) = flotilla_demo::run(opts) {
        eprintln!("flotilla-demo: error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
