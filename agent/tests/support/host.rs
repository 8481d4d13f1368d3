//! A simulated host: a config, a trust root, a state dir and an install dir
//! in a temp dir, with an agent build installed as `current`. Passes run the
//! real binary through `install_dir/current/flotilla-agent`, as the systemd
//! unit does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_protocol::{Event, EventKind, EventStatus};

/// One host.
pub struct Host {
    /// Its directory.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The state dir.
    pub state_dir: PathBuf,
    /// The install dir.
    pub install_dir: PathBuf,
}

impl Host {
    /// A host in `dir` running `bin` (version `version`), with a config whose
    /// `[source]` table body is `source` (e.g. `git = "file://…"`), artifacts
    /// from `base_url`, and `extra` TOML appended (e.g. a `[reporter]` table).
    pub fn new(
        dir: &Path,
        bin: &Path,
        version: &str,
        trust_root: &Path,
        source: &str,
        base_url: &str,
        extra: &str,
    ) -> Host {
        let h = Host {
            dir: dir.to_owned(),
            config: dir.join("etc/agent.toml"),
            state_dir: dir.join("state"),
            install_dir: dir.join("opt"),
        };
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::copy(trust_root, dir.join("etc/root.json")).unwrap();
        let cfg = format!(
            "config_schema = 3\nagent_id = \"host-{}\"\nchannel = \"stable\"\ntrust_root = \"{}\"\nstate_dir = \"{}\"\ninstall_dir = \"{}\"\n\n[source]\n{source}\n\n[artifacts]\nbase_url = \"{base_url}\"\n\n[update]\nhealth_attempts = 2\nstall_timeout = \"2s\"\nconnect_timeout = \"2s\"\n{extra}",
            dir.file_name().unwrap().to_string_lossy(),
            dir.join("etc/root.json").display(),
            h.state_dir.display(),
            h.install_dir.display(),
        );
        fs::write(&h.config, cfg).unwrap();
        let vdir = h.install_dir.join("versions").join(version);
        fs::create_dir_all(&vdir).unwrap();
        fs::copy(bin, vdir.join("flotilla-agent")).unwrap();
        for link in ["current", "previous"] {
            std::os::unix::fs::symlink(
                Path::new("versions").join(version),
                h.install_dir.join(link),
            )
            .unwrap();
        }
        h
    }

    /// Runs `current/flotilla-agent <args…>` with extra environment.
    pub fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.install_dir.join("current/flotilla-agent"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("FLOTILLA_FAULT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output_retrying_busy(&mut cmd)
    }

    /// One pass; panics unless it exits 0. Returns stdout.
    pub fn pass(&self) -> String {
        let out = self.agent(&["run"], &[]);
        assert!(
            out.status.success(),
            "pass failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The version `current` points at.
    pub fn current(&self) -> String {
        let t = fs::read_link(self.install_dir.join("current")).unwrap();
        t.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// What `current/flotilla-agent version` says.
    pub fn running_version(&self) -> String {
        let out = self.agent(&["version"], &[]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    }

    /// `state.json`.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.state_dir.join("state.json")).unwrap()).unwrap()
    }

    /// Every event in the spool.
    pub fn events(&self) -> Vec<Event> {
        let Ok(text) = fs::read_to_string(self.state_dir.join("spool/events.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Events of one kind and status.
    pub fn events_of(&self, kind: EventKind, status: EventStatus) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind && e.status == status)
            .collect()
    }

    /// Installed versions.
    pub fn installed(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.install_dir.join("versions"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Runs `cmd`, retrying while exec says "Text file busy": the binary was
/// just copied, and a child forked meanwhile by another test thread may still
/// hold the writing descriptor for an instant.
pub fn output_retrying_busy(cmd: &mut Command) -> Output {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
            other => return other.unwrap(),
        }
    }
    cmd.output().unwrap()
}
