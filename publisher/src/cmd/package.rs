//! `package`: a .deb or .rpm for the fleet's hosts (the agent) or for its
//! reporter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use flotilla_publisher::package::{self, agent, reporter};
use flotilla_publisher::Store;

use super::Global;

/// The kind of package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PackageType {
    /// A Debian package (Debian, Ubuntu): install with apt or dpkg.
    Deb,
    /// An rpm package (Fedora, RHEL, Rocky, Alma, openSUSE): install with dnf, zypper or rpm.
    Rpm,
}

impl From<PackageType> for package::Format {
    fn from(t: PackageType) -> Self {
        match t {
            PackageType::Deb => package::Format::Deb,
            PackageType::Rpm => package::Format::Rpm,
        }
    }
}

/// Build an installer for the fleet's hosts (the agent) or, with --reporter, for the reporter.
///
/// The agent package joins a host to this fleet: it holds the agent build
/// of a signed release (the channel's, unless --release says otherwise),
/// verified against the fleet's root chain and, streamed from --store,
/// against the signed size and SHA-256 before anything is written; the
/// fleet's newest root; /etc/flotilla/agent.toml for the channel, source,
/// artifact URL, reporter and labels; the enrollment token (mode 0600); and
/// the systemd units. Installing it copies the agent to
/// /opt/flotilla/versions/<v> (where it updates itself; the package never
/// owns that) and enables and starts the timer, whose first pass enrolls.
/// Removing it stops and disables the timer and keeps /var/lib/flotilla;
/// purging deletes it (rpm has no purge: erasing keeps it; the config
/// files are %config(noreplace)). The package holds the enrollment token: give it a token
/// with limited uses and expiry, and keep the file as secret as the token
/// (it is written mode 0600).
///
/// The reporter package (--reporter) holds a build of flotilla-reporter, a
/// hardened unit with its own user and state dir, and
/// /etc/flotilla/reporter.toml; installing it makes the admin token
/// /etc/flotilla/reporter-admin.token (mode 0600) and starts the service.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-reporter token create --expires 7d --uses 50 --note web > enroll.token
  flotilla-publisher package --type deb --channel stable --store s3://updates/fleet \\
      --source-url https://updates.example.com/fleet/ \\
      --reporter-url https://reporter.example.com --enrollment-token-file enroll.token \\
      --label role=web --label site=ams1 --out dist/
  flotilla-publisher package --type deb --reporter \\
      --binary target/release/flotilla-reporter --version 1.4.0 \\
      --manifest https://updates.example.com/fleet/manifest.json --out dist/
  The same with --type rpm makes flotilla-agent-1.4.0-1.x86_64.rpm.

Then on a host: apt install ./flotilla-agent_1.4.0_amd64.deb
            or: dnf install ./flotilla-agent-1.4.0-1.x86_64.rpm
Check it with: dpkg-deb --info FILE; dpkg-deb --contents FILE; lintian FILE
           or: rpm -qip FILE; rpm -qlvp FILE; rpm -qp --scripts FILE; rpm -K FILE")]
pub struct Args {
    /// The package format.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    kind: PackageType,
    /// Package flotilla-reporter instead of the agent.
    #[arg(long)]
    reporter: bool,
    /// Write the package here: a file, or a directory (existing, or ending
    /// in /) for the usual file name (flotilla-agent_<version>_<arch>.deb,
    /// flotilla-agent-<version>-1.<arch>.rpm).
    #[arg(long, value_name = "PATH", default_value = ".")]
    out: PathBuf,
    /// The target triple of the build (the package's architecture follows).
    #[arg(
        long,
        value_name = "TRIPLE",
        default_value = "x86_64-unknown-linux-gnu"
    )]
    target: String,
    /// The package's Maintainer field (rpm: Packager): who answers for it.
    #[arg(long, value_name = "NAME <EMAIL>", default_value = package::DEFAULT_MAINTAINER)]
    maintainer: String,

    /// Agent: the channel the host follows.
    #[arg(
        long,
        required_unless_present = "reporter",
        conflicts_with = "reporter"
    )]
    channel: Option<String>,
    /// Agent: ship this release (it must be in the signed manifest)
    /// instead of the channel's.
    #[arg(long, value_name = "VERSION", conflicts_with = "reporter")]
    release: Option<String>,
    /// Agent: the store the build is read from (a directory, file:///dir
    /// or s3://bucket/prefix; what `release add --store` uploaded to).
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "reporter",
        conflicts_with = "reporter"
    )]
    store: Option<String>,
    /// Agent: where hosts read the signed manifest: the store served over
    /// HTTP(S) (`[source] url`; it holds manifest.json and root/).
    #[arg(long, value_name = "URL", conflicts_with_all = ["git", "reporter"])]
    source_url: Option<String>,
    /// Agent: or the fleet repo itself (`[source] git`).
    #[arg(long, value_name = "URL", conflicts_with = "reporter")]
    git: Option<String>,
    /// Agent: the branch of --git.
    #[arg(long, default_value = "main", requires = "git")]
    branch: String,
    /// Agent: the artifact base URL (`[artifacts] base_url`) [default: --source-url].
    #[arg(long, value_name = "URL", conflicts_with = "reporter")]
    artifacts: Option<String>,
    /// Agent: the reporter hosts report to and enroll with.
    #[arg(long, value_name = "URL", conflicts_with = "reporter")]
    reporter_url: Option<String>,
    /// Agent: the enrollment token to ship (`flotilla-reporter token create`).
    #[arg(long, value_name = "FILE", requires = "reporter_url")]
    enrollment_token_file: Option<PathBuf>,
    /// Agent: a label of the hosts that install this package (repeat it).
    #[arg(long = "label", value_name = "KEY=VALUE", conflicts_with = "reporter")]
    labels: Vec<String>,

    /// Reporter: the flotilla-reporter build to ship.
    #[arg(
        long,
        value_name = "FILE",
        required_if_eq("reporter", "true"),
        requires = "reporter"
    )]
    binary: Option<PathBuf>,
    /// Reporter: the version of that build.
    #[arg(
        long,
        value_name = "VERSION",
        required_if_eq("reporter", "true"),
        requires = "reporter"
    )]
    version: Option<semver::Version>,
    /// Reporter: the address it listens on.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        requires = "reporter"
    )]
    listen: SocketAddr,
    /// Reporter: the URL clients reach it at (behind its TLS proxy).
    #[arg(long, value_name = "URL", requires = "reporter")]
    public_url: Option<String>,
    /// Reporter: the fleet's signed manifest (URL or path) it verifies its
    /// gates against; the fleet's newest root (from --repo) is shipped with it.
    #[arg(long, value_name = "URL", requires = "reporter")]
    manifest: Option<String>,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let format = package::Format::from(args.kind);
    if args.reporter {
        let opts = reporter::Options {
            binary: args
                .binary
                .context("--binary is required with --reporter")?,
            version: args
                .version
                .context("--version is required with --reporter")?,
            target: args.target,
            listen: args.listen,
            public_url: args.public_url,
            manifest: args.manifest,
            maintainer: args.maintainer,
        };
        let built = reporter::build(&g.repo(), &opts)?;
        let path = package::write(format, &built.about, &built.deb, &args.out)?;
        eprintln!("wrote flotilla-reporter {} package", opts.version);
        println!("{}", path.display());
        return Ok(());
    }
    let source = match (args.source_url, args.git) {
        (Some(url), None) => agent::Source::Http(url),
        (None, Some(url)) => agent::Source::Git {
            url,
            branch: args.branch,
        },
        _ => bail!("give --source-url URL (the store over HTTP) or --git URL (the fleet repo)"),
    };
    let artifacts = match (&args.artifacts, &source) {
        (Some(a), _) => a.clone(),
        (None, agent::Source::Http(url)) => url.clone(),
        (None, agent::Source::Git { .. }) => {
            bail!("--artifacts URL is required with --git (where hosts download builds)")
        }
    };
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?}: expected KEY=VALUE"))?;
        if labels.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--label {k}: given twice");
        }
    }
    let store = Store::open(args.store.as_deref().context("--store is required")?)?;
    let opts = agent::Options {
        channel: args.channel.context("--channel is required")?,
        release: args.release,
        target: args.target,
        source,
        artifacts,
        reporter: args.reporter_url,
        enrollment_token: args.enrollment_token_file,
        labels,
        maintainer: args.maintainer,
        now: g.now()?,
    };
    let built = agent::build(&g.repo(), &store, &opts)?;
    let path = package::write(format, &built.about, &built.deb, &args.out)?;
    eprintln!(
        "wrote flotilla-agent {} for fleet {}, channel {} (verified at manifest serial {}); it holds {}",
        built.version,
        built.fleet,
        opts.channel,
        built.serial,
        if opts.enrollment_token.is_some() {
            "the enrollment token: keep it secret (mode 0600)"
        } else {
            "no enrollment token"
        }
    );
    println!("{}", path.display());
    Ok(())
}
