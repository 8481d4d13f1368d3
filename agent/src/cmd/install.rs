//! `flotilla-agent install`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flotilla_agent::config::Source;
use flotilla_agent::setup;

/// Install this agent on the host, idempotently: the config (only if
/// absent), the trust root (only if absent; never replaced by another), the
/// systemd units, this binary as the current version, and the state dir.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  flotilla-agent install --channel stable \\
      --git https://git.example.com/ops/fleet.git \\
      --artifacts https://updates.example.com/artifacts/ \\
      --trust-root root/1.root.json --agent-id web-01 --labels role=web,site=ams1
  flotilla-agent install --prefix /tmp/root ...   (a self-contained install:
      every file and every path it names under /tmp/root; run it with
      flotilla-agent --config /tmp/root/etc/flotilla/agent.toml ...)
Then: systemctl daemon-reload && systemctl enable --now flotilla-agent.timer")]
pub struct Args {
    /// Install under this directory instead of /: the files, and the paths
    /// a new config and the units name (an existing config is kept as is).
    #[arg(long, value_name = "DIR", default_value = "/")]
    prefix: PathBuf,
    /// For a new config: the channel to follow.
    #[arg(long)]
    channel: Option<String>,
    /// For a new config: the fleet repo URL (file://, git://, https://).
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    git: Option<String>,
    /// For a new config: the branch of the fleet repo.
    #[arg(long, default_value = "main", requires = "git")]
    branch: String,
    /// For a new config: a static store URL instead of a git repo.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// For a new config: the artifact base URL.
    #[arg(long, value_name = "URL")]
    artifacts: Option<String>,
    /// For a new config: the reporter URL.
    #[arg(long, value_name = "URL")]
    reporter: Option<String>,
    /// The signed root to trust (root/1.root.json of the fleet repo).
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
    /// For a new config: this host's agent id (A-Z a-z 0-9 . _ - : @, at
    /// most 128 bytes; default: a UUID made on the first pass).
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// For a new config: labels that rollouts select on, e.g.
    /// `role=web,site=ams1`.
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = parse_labels)]
    labels: Option<BTreeMap<String, String>>,
}

/// `key=value,...` with non-empty keys, each key once.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        if out.insert(k.to_owned(), v.trim().to_owned()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    Ok(out)
}

/// Installs and prints what was written or kept.
pub fn run(config: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let source = match (args.git, args.url) {
        (Some(url), _) => Some(Source::Git {
            url,
            branch: args.branch,
        }),
        (None, Some(url)) => Some(Source::Http { url }),
        (None, None) => None,
    };
    let report = setup::install(&setup::Options {
        prefix: args.prefix,
        config_path: config.to_owned(),
        channel: args.channel,
        source,
        artifacts: args.artifacts,
        reporter: args.reporter,
        trust_root: args.trust_root,
        agent_id: args.agent_id,
        labels: args.labels.unwrap_or_default(),
    })?;
    for line in report {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
