//! `flotilla-publisher package`: the agent and reporter .debs and .rpms,
//! built by the real binary from a real fleet repo and store, checked with
//! the formats' own tools (`dpkg-deb`, `lintian`; `rpm -qp`, `rpm -K`,
//! `rpmlint`; `systemd-analyze`), installed into throwaway roots with
//! `dpkg --root` or `rpm --root`, and run from the installed files: the
//! agent enrolls with the installed reporter and takes an update. Both
//! formats' tests share [`Setup`] and the checks after installing.
//!
//! The throwaway roots: `dpkg --root DIR --force-script-chrootless
//! --force-not-root` unpacks into DIR and runs the maintainer scripts on the
//! host with `DPKG_ROOT=DIR`, which they honour. That needs neither network
//! nor privileges (a chroot, or a debootstrap'ed one, would need both: root
//! for chroot(2), and a Debian mirror or the host's shared libraries in it).
//! For the same reason the installed programs run on the host: their
//! configs' absolute paths (`/etc/flotilla`, `/var/lib/flotilla`,
//! `/opt/flotilla`) are re-rooted under DIR, everything else is as
//! installed.
//!
//! `rpm --root DIR` chroots into DIR for its transaction, so the rpm test
//! needs root (as the reporter's token check does: the token is root's);
//! it installs with `--noscripts` and runs each scriptlet, as queried from
//! the package, on the host under `DPKG_ROOT=DIR` with rpm's argument.
//!
//! scripts/test installs lintian, dpkg, rpm, rpmlint and systemd; these
//! tests fail (they do not skip) without them.

mod common;

#[allow(dead_code)]
#[path = "../../agent/tests/support/bins.rs"]
mod bins;
#[allow(dead_code)]
#[path = "../../agent/tests/support/http.rs"]
mod http;

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, TARGET};

/// The bound on the reporter unit's `systemd-analyze security` exposure
/// (0 = fully locked down, 10 = unprotected; 1.2 when this was written).
const MAX_REPORTER_EXPOSURE: f64 = 2.0;

/// Runs a command, panicking with its output on failure; returns stdout.
fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of `bin` with every symbol stripped, as release builds are
/// (`strip = "symbols"`; lintian rejects unstripped binaries).
fn stripped(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    sh(Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(bin));
    out
}

/// `lintian` on a package: no errors (tags the package overrides carry
/// their reasons in /usr/share/lintian/overrides/<package>).
fn lintian(deb: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let out = Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(&deb)
            .output()
            .expect(
                "lintian must be installed (Debian package `lintian`; scripts/test installs it)",
            );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.lines().any(|l| l.starts_with("E: ")),
            "lintian {}:\n{text}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// `dpkg-deb --contents`: (mode, owner, path) of every entry.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    sh(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[5].to_owned())
        })
        .collect()
}

/// An empty dpkg database under `root`.
fn dpkg_root(root: &Path) {
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
}

/// `dpkg --root <root> <args>` with the maintainer scripts run on the host
/// under `DPKG_ROOT`; libc6 is not in the empty database, hence
/// --force-depends.
fn dpkg(root: &Path, args: &[&str]) -> String {
    let out = sh(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-not-root",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args));
    out
}

/// Whether `etc/systemd/system/<link>` exists under `root` (a symlink to
/// the unit's path on the host, so not followed).
fn enabled(root: &Path, link: &str) -> bool {
    std::fs::symlink_metadata(root.join("etc/systemd/system").join(link)).is_ok()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Rewrites the absolute paths of an installed config to point under `root`.
fn reroot(file: &Path, root: &Path, prefixes: &[&str]) {
    let mut text = std::fs::read_to_string(file).unwrap();
    for p in prefixes {
        assert!(text.contains(p), "{} names no {p}:\n{text}", file.display());
        text = text.replace(p, &format!("\"{}{}", root.display(), &p[1..]));
    }
    std::fs::write(file, text).unwrap();
}

/// `systemd-analyze verify` on units installed under `root`, with `command`
/// (the path their ExecStart= names) re-rooted: verify checks that it exists.
/// (`verify --root` would also need systemd's own units in the root.)
fn verify_units(root: &Path, units: &[&str], command: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        let p = dir.path().join(unit);
        std::fs::write(
            &p,
            text.replace(command, &format!("{}{command}", root.display())),
        )
        .unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("flotilla"),
        "systemd-analyze verify {units:?}:\n{text}"
    );
}

/// Polls `f` until it returns `Some`, for at most a minute.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The installed reporter, serving until dropped.
struct Served {
    child: std::process::Child,
    url: String,
    admin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let r = ureq::get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.admin))
            .call()
            .ok()?;
        serde_json::from_reader(r.into_reader()).ok()
    }
}

/// Starts `<root>/usr/bin/flotilla-reporter serve` with the installed
/// config, re-rooted, on 127.0.0.1:0 (it prints `listening on ADDR` first).
fn serve_installed_reporter(root: &Path) -> Served {
    let config = root.join("etc/flotilla/reporter.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // The unit hands the token file over with LoadCredential=; here the
    // file itself stands in for the credential.
    let text = text
        .replace(
            "/run/credentials/flotilla-reporter.service/admin.token",
            "/etc/flotilla/reporter-admin.token",
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let text = format!("{text}manifest_refresh = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    reroot(
        &config,
        root,
        &["\"/var/lib/flotilla-reporter/", "\"/etc/flotilla/"],
    );
    std::fs::create_dir_all(root.join("var/lib/flotilla-reporter")).unwrap();
    let mut child = Command::new(root.join("usr/bin/flotilla-reporter"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("FLOTILLA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let admin = std::fs::read_to_string(root.join("etc/flotilla/reporter-admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    Served {
        child,
        url: format!("http://{addr}"),
        admin,
    }
}

/// One agent pass, as the timer's service runs it.
fn pass(root: &Path) -> String {
    let out = Command::new(root.join("opt/flotilla/current/flotilla-agent"))
        .arg("run")
        .arg("--config")
        .arg(root.join("etc/flotilla/agent.toml"))
        .env("FLOTILLA_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agent pass failed:\n{err}");
    err
}

fn current(root: &Path) -> String {
    std::fs::read_link(root.join("opt/flotilla/current"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A fleet with releases 1.0.0 and 2.0.0 of a real (stripped) agent in
/// its store, 1.0.0 rolled out on `stable`, and a stripped reporter build:
/// what both formats' tests package.
struct Setup {
    f: Fleet,
    tmp: PathBuf,
    v1: PathBuf,
    reporter_bin: PathBuf,
    store: String,
    dist: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let f = Fleet::rooted(&["release"], 1);
        let tmp = f.tmp.path().to_owned();
        let v1 = stripped(&bins::agent("v1"), &tmp, "agent-1.0.0");
        let v2 = stripped(&bins::agent("v2"), &tmp, "agent-2.0.0");
        let reporter_bin = stripped(&bins::reporter(), &tmp, "flotilla-reporter");
        let store = f.store_url();
        for (version, file) in [("1.0.0", &v1), ("2.0.0", &v2)] {
            f.add_release(version, &std::fs::read(file).unwrap());
        }
        let dist = tmp.join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        let s = Setup {
            f,
            tmp,
            v1,
            reporter_bin,
            store,
            dist,
        };
        s.roll("1.0.0");
        s
    }

    /// Rolls `version` out on stable, signs and publishes.
    fn roll(&self, version: &str) {
        self.f.ok(&[
            "rollout",
            "set",
            "--channel",
            "stable",
            "--release",
            version,
            "--start",
            "2020-01-01T00:00:00Z",
        ]);
        self.f.ok(&["sign", "--key", &self.f.key("release")]);
        self.f.ok(&["publish", "--store", &self.store]);
    }

    /// `package --type <kind> --reporter`; the path written.
    fn reporter_package(&self, kind: &str) -> PathBuf {
        let out = self.f.cmd(&[
            "package",
            "--type",
            kind,
            "--reporter",
            "--binary",
            self.reporter_bin.to_str().unwrap(),
            "--version",
            "0.1.0",
            "--manifest",
            self.f.store.join("manifest.json").to_str().unwrap(),
            "--out",
            self.dist.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }

    /// A one-use enrollment token made with the installed reporter.
    fn enrollment_token(&self, rroot: &Path) -> PathBuf {
        let enroll = sh(Command::new(rroot.join("usr/bin/flotilla-reporter"))
            .args(["token", "create", "--expires", "1h", "--uses", "1", "--db"])
            .arg(rroot.join("var/lib/flotilla-reporter/db.sqlite")));
        let file = self.tmp.join("enroll.token");
        std::fs::write(&file, &enroll).unwrap();
        common::chmod(&file, 0o600);
        file
    }

    /// `package --type <kind>` for hosts reading the store at `web`,
    /// reporting to `reporter` with `token`; the path written (mode 0600).
    fn agent_package(&self, kind: &str, web: &str, reporter: &str, token: &Path) -> PathBuf {
        let out = self.f.cmd(&[
            "package",
            "--type",
            kind,
            "--channel",
            "stable",
            "--store",
            &self.store,
            "--source-url",
            web,
            "--reporter-url",
            reporter,
            "--enrollment-token-file",
            token.to_str().unwrap(),
            "--label",
            "role=web",
            "--label",
            "site=ams1",
            "--out",
            self.dist.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert_eq!(mode(&path), 0o600, "the package holds the enrollment token");
        path
    }
}

/// What the installed reporter package must have set up under `rroot`
/// (its postinst run): the admin token, the service user, the enabled
/// unit, a config the reporter reads, and the unit's exposure.
fn check_installed_reporter(rroot: &Path) {
    let token = rroot.join("etc/flotilla/reporter-admin.token");
    assert_eq!(mode(&token), 0o600, "the admin token is root's alone");
    assert_eq!(std::fs::metadata(&token).unwrap().uid(), 0);
    assert!(std::fs::read_to_string(&token).unwrap().trim().len() >= 32);
    assert!(
        std::fs::read_to_string(rroot.join("etc/passwd"))
            .unwrap()
            .contains("flotilla-reporter:"),
        "systemd-sysusers made the service user"
    );
    assert!(
        enabled(rroot, "multi-user.target.wants/flotilla-reporter.service"),
        "postinst enables the service"
    );
    // The settings parse as the reporter reads them.
    flotilla_reporter::settings::FileSettings::load(&rroot.join("etc/flotilla/reporter.toml"))
        .unwrap();
    verify_units(
        rroot,
        &["flotilla-reporter.service"],
        "/usr/bin/flotilla-reporter",
    );
}

/// What the installed agent package must have set up under `aroot` (its
/// postinst run): 1.0.0 seeded as the agent's first version, the token
/// 0600, the state dir 0700, the timer enabled, the root and the config;
/// the units verify.
fn check_installed_agent(s: &Setup, aroot: &Path, web: &str) {
    assert_eq!(current(aroot), "versions/1.0.0");
    assert_eq!(
        std::fs::read(aroot.join("opt/flotilla/versions/1.0.0/flotilla-agent")).unwrap(),
        std::fs::read(&s.v1).unwrap(),
        "the installed version is the verified build"
    );
    assert_eq!(
        mode(&aroot.join("opt/flotilla/versions/1.0.0/flotilla-agent")),
        0o755
    );
    assert_eq!(mode(&aroot.join("etc/flotilla/enroll.token")), 0o600);
    assert_eq!(mode(&aroot.join("var/lib/flotilla")), 0o700);
    assert!(
        enabled(aroot, "timers.target.wants/flotilla-agent.timer"),
        "postinst enables the timer"
    );
    assert_eq!(
        std::fs::read(aroot.join("etc/flotilla/root.json")).unwrap(),
        std::fs::read(s.f.path("root/1.root.json")).unwrap()
    );
    let config = std::fs::read_to_string(aroot.join("etc/flotilla/agent.toml")).unwrap();
    assert!(
        config.contains(r#"labels = { "role" = "web", "site" = "ams1" }"#),
        "{config}"
    );
    assert!(config.contains(&format!("url = \"{web}\"")), "{config}");
    verify_units(
        aroot,
        &[
            "flotilla-agent.service",
            "flotilla-agent.timer",
            "flotilla-agent-rollback.service",
        ],
        "/opt/flotilla/",
    );
}

/// The agent started from the files installed under `aroot` enrolls with
/// `reporter`, then takes 2.0.0 when it rolls out, in /opt/flotilla, which
/// the package does not own. Returns the agent's id.
fn enrolls_and_takes_an_update(s: &Setup, aroot: &Path, reporter: &Served) -> String {
    reroot(
        &aroot.join("etc/flotilla/agent.toml"),
        aroot,
        &[
            "\"/etc/flotilla/",
            "\"/var/lib/flotilla\"",
            "\"/opt/flotilla\"",
        ],
    );
    pass(aroot);
    let id = std::fs::read_to_string(aroot.join("var/lib/flotilla/agent_id"))
        .unwrap()
        .trim()
        .to_owned();
    let agent = wait_for("the agent's report", || {
        reporter
            .get(&format!("/api/v1/agents/{id}"))
            .filter(|a| a["version"] == "1.0.0")
    });
    assert_eq!(agent["channel"], "stable");
    assert_eq!(agent["labels"]["role"], "web");

    s.roll("2.0.0");
    wait_for("the reporter to read serial 2", || {
        reporter
            .get("/api/v1/rollouts")
            .filter(|r| r.to_string().contains("2.0.0"))
    });
    wait_for("the agent to take 2.0.0", || {
        pass(aroot);
        (current(aroot) == "versions/2.0.0").then_some(())
    });
    pass(aroot); // the new version's health check
    wait_for("the reporter to see 2.0.0", || {
        reporter
            .get(&format!("/api/v1/agents/{id}"))
            .filter(|a| a["version"] == "2.0.0")
    });
    id
}

/// After a reinstall over an agent that updated itself: still 2.0.0.
fn check_kept_its_update(aroot: &Path) {
    assert_eq!(current(aroot), "versions/2.0.0");
    assert!(aroot
        .join("opt/flotilla/versions/2.0.0/flotilla-agent")
        .exists());
}

/// After removal: the units and their links are gone, the state and the
/// agent's versions stay.
fn check_removed_keeping_state(aroot: &Path) {
    assert!(!aroot
        .join("usr/lib/systemd/system/flotilla-agent.timer")
        .exists());
    assert!(!enabled(aroot, "timers.target.wants/flotilla-agent.timer"));
    assert!(aroot.join("var/lib/flotilla/agent_id").exists());
    assert!(aroot
        .join("opt/flotilla/versions/2.0.0/flotilla-agent")
        .exists());
}

#[test]
fn agent_and_reporter_packages_install_and_the_agent_enrolls_and_takes_an_update() {
    let s = Setup::new();
    let tmp = s.tmp.clone();

    // The reporter package, checked and installed.
    let reporter_deb = s.reporter_package("deb");
    assert_eq!(
        reporter_deb.file_name().unwrap(),
        "flotilla-reporter_0.1.0_amd64.deb"
    );
    let reporter_lintian = lintian(reporter_deb.clone());
    let info = sh(Command::new("dpkg-deb").arg("--info").arg(&reporter_deb));
    for field in [
        "Package: flotilla-reporter",
        "Version: 0.1.0",
        "Architecture: amd64",
        "Depends: libc6",
    ] {
        assert!(info.contains(field), "no {field:?} in:\n{info}");
    }
    let listed = contents(&reporter_deb);
    assert!(
        listed.iter().all(|(_, owner, _)| owner == "root/root"),
        "{listed:?}"
    );
    for (m, path) in [
        ("-rwxr-xr-x", "./usr/bin/flotilla-reporter"),
        ("-rw-r--r--", "./etc/flotilla/reporter.toml"),
        ("-rw-r--r--", "./etc/flotilla/reporter-root.json"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/flotilla-reporter.service",
        ),
        ("-rw-r--r--", "./usr/lib/sysusers.d/flotilla-reporter.conf"),
    ] {
        assert!(
            listed.iter().any(|(mm, _, p)| mm == m && p == path),
            "no {m} {path} in {listed:?}"
        );
    }
    let rroot = tmp.join("reporter-root");
    dpkg_root(&rroot);
    dpkg(&rroot, &["-i", reporter_deb.to_str().unwrap()]);
    check_installed_reporter(&rroot);
    let unit = rroot.join("usr/lib/systemd/system/flotilla-reporter.service");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&security.stdout),
        String::from_utf8_lossy(&security.stderr)
    );
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("flotilla-reporter.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        score <= MAX_REPORTER_EXPOSURE,
        "exposure {score} above {MAX_REPORTER_EXPOSURE}:\n{text}"
    );

    let reporter = serve_installed_reporter(&rroot);
    let enroll_file = s.enrollment_token(&rroot);

    // The agent package, served over HTTP as the store would be.
    let web = http::Server::start(&s.f.store);
    let agent_deb = s.agent_package("deb", &web.url(), &reporter.url, &enroll_file);
    assert_eq!(
        agent_deb.file_name().unwrap(),
        "flotilla-agent_1.0.0_amd64.deb"
    );
    let agent_lintian = lintian(agent_deb.clone());
    let listed = contents(&agent_deb);
    assert!(
        listed.iter().all(|(_, owner, _)| owner == "root/root"),
        "{listed:?}"
    );
    for (m, path) in [
        ("-rwxr-xr-x", "./usr/lib/flotilla-agent/flotilla-agent"),
        ("-rw-r--r--", "./etc/flotilla/agent.toml"),
        ("-rw-r--r--", "./etc/flotilla/root.json"),
        ("-rw-------", "./etc/flotilla/enroll.token"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/flotilla-agent.service",
        ),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/flotilla-agent.timer",
        ),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/flotilla-agent-rollback.service",
        ),
    ] {
        assert!(
            listed.iter().any(|(mm, _, p)| mm == m && p == path),
            "no {m} {path} in {listed:?}"
        );
    }
    assert!(
        !listed
            .iter()
            .any(|(_, _, p)| p.starts_with("./opt/") || p.starts_with("./var/")),
        "the package must not own the agent's versions or state: {listed:?}"
    );
    let control = sh(Command::new("dpkg-deb")
        .arg("--field")
        .arg(&agent_deb)
        .arg("Package")
        .arg("Version"));
    assert_eq!(control, "Package: flotilla-agent\nVersion: 1.0.0\n");

    let aroot = tmp.join("agent-root");
    dpkg_root(&aroot);
    dpkg(&aroot, &["-i", agent_deb.to_str().unwrap()]);
    check_installed_agent(&s, &aroot, &web.url());

    enrolls_and_takes_an_update(&s, &aroot, &reporter);

    // Installing the package again (an upgrade, or a reinstall) leaves the
    // agent where it updated itself: dpkg never fights it.
    dpkg(&aroot, &["-i", agent_deb.to_str().unwrap()]);
    check_kept_its_update(&aroot);

    // Remove keeps the state and the agent's versions; purge deletes them.
    dpkg(&aroot, &["--remove", "flotilla-agent"]);
    check_removed_keeping_state(&aroot);
    dpkg(&aroot, &["--purge", "flotilla-agent"]);
    for gone in [
        "var/lib/flotilla",
        "opt/flotilla",
        "etc/flotilla/agent.toml",
        "etc/flotilla/enroll.token",
    ] {
        assert!(!aroot.join(gone).exists(), "purge left {gone}");
    }

    agent_lintian.join().unwrap();
    reporter_lintian.join().unwrap();
}

/// `rpmlint` on a package: no errors but those `filters` name (an
/// rpmlintrc, each with its reason).
fn rpmlint(pkg: PathBuf, filters: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("rpmlintrc");
        std::fs::write(&rc, filters).unwrap();
        let out = Command::new("rpmlint")
            .arg("-r")
            .arg(&rc)
            .arg(&pkg)
            .output()
            .expect(
                "rpmlint must be installed (Debian package `rpmlint`; scripts/test installs it)",
            );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(" 0 errors") && !text.lines().any(|l| l.contains(": E: ")),
            "rpmlint {}:\n{text}{}",
            pkg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// What rpmlint reports that both packages mean to do.
const RPMLINT_FILTERS: &str = "\
# Not signed with OpenPGP: the agent build inside is verified against the
# fleet's root before packaging, and by the agent on every update; an
# operator's dnf repository signs its packages with rpmsign.
addFilter(r'no-signature')
";

/// And the agent package's own.
const RPMLINT_AGENT_FILTERS: &str = "\
# Not signed with OpenPGP: as RPMLINT_FILTERS says.
addFilter(r'no-signature')
# The enrollment token is a secret: only root may read it.
addFilter(r'non-readable /etc/flotilla/enroll.token')
";

/// An empty rpm database under `root`.
fn rpm_root(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    sh(Command::new("rpm").arg("--root").arg(root).arg("--initdb"));
}

/// `rpm --root <root> <args> --nodeps --noscripts`: the scriptlets would
/// run chrooted in a root with no shell; [`scriptlet`] runs them on the
/// host instead, as the .deb test has dpkg do. libc is not in the empty
/// database, hence --nodeps.
fn rpm(root: &Path, args: &[&str]) -> String {
    sh(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(args)
        .args(["--nodeps", "--noscripts"]))
}

/// Runs the scriptlet `tag` (POSTIN, PREUN, POSTUN) of the package `pkg`
/// on the host with rpm's argument `arg` and DPKG_ROOT=`root`, which the
/// scripts honour for every path (and tell systemd offline).
fn scriptlet(pkg: &Path, tag: &str, root: &Path, arg: &str) {
    let script = sh(Command::new("rpm")
        .args(["-qp", "--queryformat"])
        .arg(format!("%{{{tag}}}"))
        .arg(pkg));
    assert!(script.contains("set -e"), "no {tag} scriptlet: {script:?}");
    sh(Command::new("/bin/sh")
        .args(["-c", &script, "sh", arg])
        .env("DPKG_ROOT", root));
}

/// `rpm -qlvp`: (mode, owner, group, path) of every entry.
fn rpm_contents(pkg: &Path) -> Vec<(String, String, String, String)> {
    sh(Command::new("rpm").arg("-qlvp").arg(pkg))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_owned(),
                f[2].to_owned(),
                f[3].to_owned(),
                f[f.len() - 1].to_owned(),
            )
        })
        .collect()
}

/// `rpm -qp --queryformat` on `pkg`.
fn rpm_query(pkg: &Path, format: &str) -> String {
    sh(Command::new("rpm")
        .args(["-qp", "--queryformat", format])
        .arg(pkg))
}

/// Checks an rpm's header, digests, owners, modes, config files and
/// scriptlets; `files` are (mode, path) it must hold.
fn check_rpm(pkg: &Path, name: &str, files: &[(&str, &str)], config: &[&str]) {
    assert_eq!(
        rpm_query(pkg, "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}"),
        format!(
            "{name} {} 1 x86_64 Apache-2.0",
            if name == "flotilla-agent" {
                "1.0.0"
            } else {
                "0.1.0"
            }
        )
    );
    let k = sh(Command::new("rpm").arg("-K").arg(pkg));
    assert!(k.contains("digests OK"), "rpm -K: {k}");
    let listed = rpm_contents(pkg);
    assert!(
        listed.iter().all(|(_, u, g, _)| u == "root" && g == "root"),
        "{listed:?}"
    );
    for (m, path) in files {
        assert!(
            listed.iter().any(|(mm, _, _, p)| mm == m && p == path),
            "no {m} {path} in {listed:?}"
        );
    }
    assert!(
        !listed.iter().any(|(_, _, _, p)| p.starts_with("/opt")
            || p.starts_with("/var")
            || p.contains("lintian")
            || ["/etc", "/usr", "/usr/lib", "/usr/lib/systemd/system"].contains(&p.as_str())),
        "the package owns only its own files and directories: {listed:?}"
    );
    let flags = rpm_query(pkg, "[%{FILEFLAGS:fflags} %{FILENAMES}\n]");
    let configs: Vec<&str> = flags
        .lines()
        .filter_map(|l| l.strip_prefix("cn "))
        .collect();
    assert_eq!(configs, config, "%config(noreplace) files:\n{flags}");
    let scripts = sh(Command::new("rpm").args(["-qp", "--scripts"]).arg(pkg));
    for s in [
        "postinstall scriptlet (using /bin/sh)",
        "preuninstall scriptlet (using /bin/sh)",
        "postuninstall scriptlet (using /bin/sh)",
    ] {
        assert!(scripts.contains(s), "no {s:?} in:\n{scripts}");
    }
}

#[test]
fn rpm_packages_install_and_the_agent_enrolls_and_takes_an_update() {
    let s = Setup::new();
    let tmp = s.tmp.clone();

    let reporter_rpm = s.reporter_package("rpm");
    assert_eq!(
        reporter_rpm.file_name().unwrap(),
        "flotilla-reporter-0.1.0-1.x86_64.rpm"
    );
    let reporter_lint = rpmlint(reporter_rpm.clone(), RPMLINT_FILTERS);
    check_rpm(
        &reporter_rpm,
        "flotilla-reporter",
        &[
            ("-rwxr-xr-x", "/usr/bin/flotilla-reporter"),
            (
                "-rw-r--r--",
                "/usr/lib/systemd/system/flotilla-reporter.service",
            ),
            ("-rw-r--r--", "/usr/lib/sysusers.d/flotilla-reporter.conf"),
            ("drwxr-xr-x", "/etc/flotilla"),
        ],
        &[
            "/etc/flotilla/reporter-root.json",
            "/etc/flotilla/reporter.toml",
        ],
    );
    let rroot = tmp.join("reporter-root");
    rpm_root(&rroot);
    rpm(&rroot, &["-i", reporter_rpm.to_str().unwrap()]);
    scriptlet(&reporter_rpm, "POSTIN", &rroot, "1");
    check_installed_reporter(&rroot);
    let reporter = serve_installed_reporter(&rroot);
    let enroll_file = s.enrollment_token(&rroot);

    let web = http::Server::start(&s.f.store);
    let agent_rpm = s.agent_package("rpm", &web.url(), &reporter.url, &enroll_file);
    assert_eq!(
        agent_rpm.file_name().unwrap(),
        "flotilla-agent-1.0.0-1.x86_64.rpm"
    );
    let agent_lint = rpmlint(agent_rpm.clone(), RPMLINT_AGENT_FILTERS);
    check_rpm(
        &agent_rpm,
        "flotilla-agent",
        &[
            ("-rwxr-xr-x", "/usr/lib/flotilla-agent/flotilla-agent"),
            ("-rw-r--r--", "/etc/flotilla/agent.toml"),
            ("-rw-r--r--", "/etc/flotilla/root.json"),
            ("-rw-------", "/etc/flotilla/enroll.token"),
            (
                "-rw-r--r--",
                "/usr/lib/systemd/system/flotilla-agent.service",
            ),
            ("-rw-r--r--", "/usr/lib/systemd/system/flotilla-agent.timer"),
            (
                "-rw-r--r--",
                "/usr/lib/systemd/system/flotilla-agent-rollback.service",
            ),
        ],
        &[
            "/etc/flotilla/agent.toml",
            "/etc/flotilla/enroll.token",
            "/etc/flotilla/root.json",
        ],
    );

    let aroot = tmp.join("agent-root");
    rpm_root(&aroot);
    rpm(&aroot, &["-i", agent_rpm.to_str().unwrap()]);
    scriptlet(&agent_rpm, "POSTIN", &aroot, "1");
    check_installed_agent(&s, &aroot, &web.url());
    // rpm's own record of what it installed matches the files.
    rpm(&aroot, &["-V", "flotilla-agent"]);

    enrolls_and_takes_an_update(&s, &aroot, &reporter);

    // Reinstalling (as an upgrade: %post with 2) leaves the agent where it
    // updated itself; rpm never fights it.
    rpm(
        &aroot,
        &["-U", "--replacepkgs", agent_rpm.to_str().unwrap()],
    );
    scriptlet(&agent_rpm, "POSTIN", &aroot, "2");
    check_kept_its_update(&aroot);

    // Erase (%preun and %postun with 0) keeps the state and the versions:
    // rpm has no purge.
    scriptlet(&agent_rpm, "PREUN", &aroot, "0");
    rpm(&aroot, &["-e", "flotilla-agent"]);
    scriptlet(&agent_rpm, "POSTUN", &aroot, "0");
    check_removed_keeping_state(&aroot);
    assert!(aroot.join("var/lib/flotilla").is_dir());

    agent_lint.join().unwrap();
    reporter_lint.join().unwrap();
}

#[test]
fn refuses_to_package_a_build_the_store_changed_or_a_manifest_that_does_not_verify() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    let out_dir = f.tmp.path().join("dist");
    std::fs::create_dir_all(&out_dir).unwrap();
    let args = [
        "package",
        "--type",
        "deb",
        "--channel",
        "stable",
        "--store",
        &f.store_url(),
        "--source-url",
        "https://updates.example.com/fleet/",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    // Deterministic: the same inputs make the same bytes.
    f.ok(&args);
    let deb = out_dir.join("flotilla-agent_1.0.0_amd64.deb");
    let first = std::fs::read(&deb).unwrap();
    f.ok(&args);
    assert_eq!(std::fs::read(&deb).unwrap(), first, "two builds differ");
    std::fs::remove_file(&deb).unwrap();
    let mut rpm_args = args;
    rpm_args[2] = "rpm";
    f.ok(&rpm_args);
    let rpm = out_dir.join("flotilla-agent-1.0.0-1.x86_64.rpm");
    let first = std::fs::read(&rpm).unwrap();
    f.ok(&rpm_args);
    assert_eq!(std::fs::read(&rpm).unwrap(), first, "two rpm builds differ");
    std::fs::remove_file(&rpm).unwrap();

    // The store's copy of the build is not what was signed.
    let artifact = f
        .store
        .join(format!("flotilla-agent/1.0.0/{TARGET}/flotilla-agent"));
    // Same size, other bytes: the SHA-256 tells.
    std::fs::write(&artifact, b"AGENT 1.0.0").unwrap();
    let e = f.fails(&args);
    assert!(
        e.contains("but 11 bytes with sha256") && e.contains("refusing to package release 1.0.0"),
        "{e}"
    );
    assert!(!deb.exists(), "nothing is written");
    // Longer: refused once past the signed size, never read whole.
    std::fs::write(&artifact, b"agent 1.0.0 with a backdoor").unwrap();
    let e = f.fails(&args);
    assert!(
        e.contains("longer than the 11 bytes that were signed"),
        "{e}"
    );
    assert!(!deb.exists(), "nothing is written");
    std::fs::write(&artifact, b"agent 1.0.0").unwrap();

    // A manifest whose payload was edited after signing.
    let signed = f.read("signed/manifest.json");
    f.edit_signed_payload(|m| m["channels"]["stable"]["paused"] = true.into());
    let e = f.fails(&args);
    assert!(
        e.contains("signed/manifest.json") && e.contains("refusing to package"),
        "{e}"
    );
    assert!(!deb.exists(), "nothing is written");

    // The channel must be in the signed manifest.
    f.write("signed/manifest.json", &signed);
    let mut bad = args;
    bad[4] = "nightly";
    let e = f.fails(&bad);
    assert!(
        e.contains("--channel nightly") && e.contains("stable"),
        "{e}"
    );
}

#[test]
fn package_help_teaches() {
    let out = Command::new(common::bin())
        .args(["package", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "--type <TYPE>",
        "--reporter",
        "--enrollment-token-file",
        "--label <KEY=VALUE>",
        "apt install",
        "lintian",
        "dnf install",
        "rpm -K",
    ] {
        assert!(help.contains(s), "package --help lacks {s:?}:\n{help}");
    }
}
