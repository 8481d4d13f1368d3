//! The README's walkthrough, run as written: every `sh` block after
//! "## Setting up a real fleet", in order, as one bash script, against local
//! stand-ins. The substitutions below are the only differences, and each
//! must still match the README (a stale one fails the test), so neither the
//! README nor this test can drift from the tools.
//!
//! Stand-ins: the git remote is a bare repo (`file://`); S3 is `s3s-fs` on
//! loopback (`scripts/test` installs it); `updates.example.com` is that
//! bucket's directory; the reporter listens on a free loopback port; `/etc`,
//! `/var` and `~` are temp dirs; the agent installs under `--prefix`;
//! `systemctl` is skipped (no systemd in a test). The PostgreSQL section
//! runs against the test server `scripts/test` starts
//! (`FLOTILLA_TEST_PG_URL`, see reporter/tests/common/pg.rs): its superuser
//! stands in for `postgres`, the role and database get names of their own,
//! and the server's CA is put where the README says it is. Without a server
//! (and without `FLOTILLA_REQUIRE_PG`) that section is left out.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const S3_KEY: &str = "flotilla-readme";
const S3_SECRET: &str = "flotilla-readme-secret";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds the three binaries (dev profile, this test's target dir) and
/// copies them into `bin`, so later builds cannot change them underneath.
fn build_bins(bin: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet", "--bins"])
        .args([
            "-p",
            "flotilla-publisher",
            "-p",
            "flotilla-reporter",
            "-p",
            "flotilla-agent",
        ])
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("FLOTILLA_VERSION")
        .env_remove("FLOTILLA_DEMO_FAILING_MIGRATION")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the binaries failed");
    fs::create_dir_all(bin).unwrap();
    for name in ["flotilla-publisher", "flotilla-reporter", "flotilla-agent"] {
        fs::copy(target_dir().join("debug").join(name), bin.join(name)).unwrap();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `s3s-fs` serving `data` (bucket `updates` inside) on a loopback port.
fn start_s3(data: &Path, log: &Path) -> (Killed, u16) {
    fs::create_dir_all(data.join("updates")).unwrap();
    let port = free_port();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
        .arg(data)
        .stdout(Stdio::from(fs::File::create(log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs is on PATH (scripts/test installs it)");
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.0.try_wait().unwrap().is_none(), "s3s-fs exited");
        assert!(Instant::now() < deadline, "s3s-fs does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// The README's walkthrough: the `sh` blocks after the heading, in order.
fn walkthrough(readme: &str) -> String {
    let start = readme
        .find("## Setting up a real fleet")
        .expect("the README has the heading");
    let mut script = String::new();
    let mut in_block = false;
    for line in readme[start..].lines() {
        if in_block {
            if line.trim_start().starts_with("```") {
                in_block = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim() == "```sh" {
            in_block = true;
        }
    }
    script
}

/// The README's PostgreSQL section, up to the next heading.
const PG_SECTION: &str = "### Several reporters over PostgreSQL";

/// The test server: URL, password file, CA file; `None` when there is none
/// and none is required.
fn test_pg() -> Option<(String, String, String)> {
    let Ok(url) = std::env::var("FLOTILLA_TEST_PG_URL") else {
        assert!(
            std::env::var_os("FLOTILLA_REQUIRE_PG").is_none(),
            "FLOTILLA_REQUIRE_PG is set but FLOTILLA_TEST_PG_URL is not"
        );
        eprintln!("no PostgreSQL test server: the README's PostgreSQL section is SKIPPED");
        return None;
    };
    let var =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} with FLOTILLA_TEST_PG_URL"));
    Some((
        url,
        var("FLOTILLA_TEST_PG_PASSWORD_FILE"),
        var("FLOTILLA_TEST_PG_CA_FILE"),
    ))
}

/// `readme` without its PostgreSQL section.
fn without_pg_section(readme: &str) -> String {
    let start = readme
        .find(PG_SECTION)
        .expect("the README has the PostgreSQL section");
    let end = readme[start + PG_SECTION.len()..]
        .find("\n### ")
        .map_or(readme.len(), |i| start + PG_SECTION.len() + i);
    format!("{}{}", &readme[..start], &readme[end..])
}

#[test]
fn the_readme_walkthrough_runs_against_local_stand_ins() {
    let mut readme = fs::read_to_string(workspace().join("README.md")).unwrap();
    let pg = test_pg();
    if pg.is_none() {
        readme = without_pg_section(&readme);
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bin = t.join("bin");
    build_bins(&bin);
    // The release file is another build than the installed one, as in life;
    // any file will do for the publisher.
    let release_file = t.join("release/flotilla-agent");
    fs::create_dir_all(release_file.parent().unwrap()).unwrap();
    fs::copy(bin.join("flotilla-agent"), &release_file).unwrap();

    let s3 = t.join("s3");
    let (_s3, s3_port) = start_s3(&s3, &t.join("s3s-fs.log"));
    let remote = t.join("remote/fleet.git");
    let out = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&remote)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reporter_port = free_port();
    let replica_ports = [free_port(), free_port()];
    let host = t.join("host");
    for d in ["home", "work", "etc", "var/lib", "host/etc/flotilla"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }

    let td = t.display().to_string();
    let mut subs: Vec<(&str, String)> = Vec::new();
    let mut pg_prelude = String::new();
    if let Some((url, password_file, ca_file)) = &pg {
        // postgres://USER@HOST:PORT/DB?QUERY: the server's HOST:PORT.
        let host_port = url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(hp, _)| hp.to_owned())
            .expect("FLOTILLA_TEST_PG_URL: postgres://USER@HOST:PORT/DB");
        let unique = format!("{}_{}", std::process::id(), free_port());
        subs.extend([
            (
                "sudo -u postgres psql",
                format!("PGPASSWORD=$(cat {password_file}) psql '{url}'"),
            ),
            ("flotilla_reporter", format!("flotilla_reporter_{unique}")),
            ("flotilla_reports", format!("flotilla_reports_{unique}")),
            ("db.example.com:5432", host_port),
            ("127.0.0.1:8081", format!("127.0.0.1:{}", replica_ports[0])),
            ("127.0.0.1:8082", format!("127.0.0.1:{}", replica_ports[1])),
        ]);
        // The CA of the database's certificate, where the README has it.
        pg_prelude = format!(
            "mkdir -p {td}/etc/flotilla-reporter\ncp {ca_file} {td}/etc/flotilla-reporter/db-ca.crt\n"
        );
    }
    subs.extend([
        (
            "https://git.example.com/ops/fleet.git",
            format!("file://{}", remote.display()),
        ),
        (
            "https://updates.example.com/fleet/manifest.json",
            format!("{}/updates/fleet/manifest.json", s3.display()),
        ),
        (
            "https://updates.example.com/fleet/",
            format!("file://{}/updates/fleet/", s3.display()),
        ),
        (
            "https://reporter.example.com",
            format!("http://127.0.0.1:{reporter_port}"),
        ),
        ("127.0.0.1:8080", format!("127.0.0.1:{reporter_port}")),
        (
            "/etc/flotilla-reporter",
            format!("{td}/etc/flotilla-reporter"),
        ),
        (
            "/var/lib/flotilla-reporter",
            format!("{td}/var/lib/flotilla-reporter"),
        ),
        (
            "/etc/flotilla/",
            format!("{}/etc/flotilla/", host.display()),
        ),
        (
            "target/release/flotilla-agent",
            release_file.display().to_string(),
        ),
        (
            "target/release/flotilla-reporter",
            bin.join("flotilla-reporter").display().to_string(),
        ),
        // Packages install into a throwaway root (dpkg --root, the
        // maintainer scripts under DPKG_ROOT), not onto this machine.
        ("apt install ./", "deb_install ./".into()),
        (
            "flotilla-agent install",
            format!("flotilla-agent install --prefix {}", host.display()),
        ),
        (
            "flotilla-agent status",
            format!(
                "flotilla-agent --config {}/etc/flotilla/agent.toml status",
                host.display()
            ),
        ),
        // The reporter runs in the foreground: in the background here.
        (
            "flotilla-reporter serve",
            "background flotilla-reporter serve".into(),
        ),
        ("systemctl ", ": skipped: systemctl ".into()),
    ]);
    let mut script = walkthrough(&readme);
    for (from, to) in &subs {
        assert!(
            script.contains(from),
            "the README no longer says {from:?}: update this test's stand-ins"
        );
        script = script.replace(from, to);
    }
    let commands = script
        .lines()
        .filter(|l| l.trim_start().starts_with("flotilla-") || l.contains(" flotilla-"))
        .count();
    assert!(commands >= 30, "only {commands} flotilla commands found");

    let prelude = format!(
        r#"set -euo pipefail
# Starts a reporter and waits until it listens (on its --listen port).
background() {{
  local port={reporter_port} prev=
  for a in "$@"; do [ "$prev" = --listen ] && port=${{a##*:}}; prev=$a; done
  "$@" >> {td}/reporter.log 2>&1 &
  local pid=$!
  echo $pid >> {td}/reporter.pids
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
    kill -0 $pid || {{ cat {td}/reporter.log; exit 1; }}
    sleep 0.05
  done
}}
deb_install() {{
  mkdir -p {td}/debroot/var/lib/dpkg/info {td}/debroot/var/lib/dpkg/updates
  touch {td}/debroot/var/lib/dpkg/status
  dpkg --root={td}/debroot --force-script-chrootless --force-not-root --force-depends \
    --log=/dev/null -i "$1"
}}
trap '[ -f {td}/reporter.pids ] && kill $(cat {td}/reporter.pids)' EXIT
{pg_prelude}set -x
"#
    );
    let script_file = t.join("walkthrough.sh");
    fs::write(&script_file, format!("{prelude}{script}")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script_file)
        .current_dir(t.join("work"))
        .env("PATH", path)
        .env("HOME", t.join("home"))
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_ALLOW_HTTP", "true")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .env_remove("FLOTILLA_REPORTER_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed (script: {}):\n--- stderr (trace)\n{stderr}\n--- stdout\n{stdout}\n--- reporter\n{}",
        script_file.display(),
        fs::read_to_string(t.join("reporter.log")).unwrap_or_default()
    );

    // Shown with --nocapture: what a reader of the README would see.
    eprintln!("{stdout}");
    // What the walkthrough left behind is what the README says it makes.
    let fleet = t.join("work/fleet");
    assert!(fleet.join("root/2.root.json").exists(), "keys were rotated");
    assert!(s3.join("updates/fleet/manifest.json").exists());
    let remote_log = Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args(["log", "--oneline", "main"])
        .output()
        .unwrap();
    let remote_log = String::from_utf8_lossy(&remote_log.stdout);
    assert!(
        remote_log.contains("release 1.4.0 to stable"),
        "{remote_log}"
    );
    assert!(host.join("etc/flotilla/agent.toml").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(host.join("etc/flotilla/enroll.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The packages installed: the agent's first version, the reporter's
    // admin token (0600).
    let debroot = t.join("debroot");
    assert!(debroot
        .join("opt/flotilla/versions/1.4.0/flotilla-agent")
        .exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(debroot.join("etc/flotilla/reporter-admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // status printed the rollout's waves; the API listed agents as JSON.
    assert!(stdout.contains("stable"), "{stdout}");
    assert!(stdout.contains("\"agents\""), "{stdout}");
}
