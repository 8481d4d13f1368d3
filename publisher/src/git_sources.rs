//! The fleet repo's sources as of a git revision, for `plan`: which base a
//! pull request is compared with, and what its `fleet.toml`, `releases/`,
//! `channels/` and `pins.toml` said there.
//!
//! Read with the `git` command-line tool (as `init` makes its first commit),
//! which CI runners and operators' machines have: `git ls-tree` lists the
//! source files of the revision and `git cat-file --batch` reads them, with
//! no checkout and no change to the work tree. The fleet repo may be a
//! subdirectory of the git repository; paths are taken relative to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flotilla_protocol::Sources;

use crate::{Error, Result};

/// A resolved git revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The full commit id.
    pub commit: String,
    /// How it was chosen, for the reader: `origin/main`, `merge-base of
    /// HEAD and origin/main`.
    pub how: String,
}

impl Revision {
    /// `3f2a1c09e1 (merge-base of HEAD and origin/main)`.
    pub fn describe(&self) -> String {
        let short = &self.commit[..self.commit.len().min(10)];
        format!("{short} ({})", self.how)
    }
}

/// Resolves `rev` (a branch, tag, commit id, `HEAD~1`, …) to a commit.
pub fn resolve(dir: &Path, rev: &str) -> Result<Revision> {
    let commit = git_text(
        dir,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )
    .map_err(|e| Error::Git(format!("--base/--head {rev:?} is not a commit here: {e}")))?;
    Ok(Revision {
        commit,
        how: rev.to_owned(),
    })
}

/// The default base of a pull request: the merge-base of `HEAD` with
/// `origin/main`, else with `main`.
pub fn default_base(dir: &Path) -> Result<Revision> {
    git_text(dir, &["rev-parse", "--git-dir"]).map_err(|e| {
        Error::Git(format!(
            "{} is not in a git repository, and `plan` and `verify --base` compare the fleet repo with a git revision: {e}",
            dir.display()
        ))
    })?;
    for candidate in ["origin/main", "main"] {
        let exists = git_text(
            dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{candidate}^{{commit}}"),
            ],
        )
        .is_ok();
        if !exists {
            continue;
        }
        let commit = git_text(dir, &["merge-base", "HEAD", candidate]).map_err(|e| {
            Error::Git(format!(
                "HEAD and {candidate} have no merge-base (a shallow clone? fetch the history, \
                 e.g. actions/checkout with fetch-depth: 0), or give --base REF: {e}"
            ))
        })?;
        return Ok(Revision {
            commit,
            how: format!("merge-base of HEAD and {candidate}"),
        });
    }
    Err(Error::Usage(
        "neither origin/main nor main exists in this repository; give --base REF (e.g. --base origin/master)".into(),
    ))
}

/// The sources at `rev`'s commit, or `None` if it has no `fleet.toml`
/// there (the fleet repo did not exist yet).
pub fn sources_at(dir: &Path, rev: &Revision) -> Result<Option<Sources>> {
    let found = files_at(
        dir,
        rev,
        &["fleet.toml", "pins.toml", "releases", "channels"],
        is_source,
    )?;
    if !found.iter().any(|(r, _)| r == "fleet.toml") {
        return Ok(None);
    }
    let mut files = Vec::with_capacity(found.len());
    for (rel, bytes) in found {
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Git(format!("{rel} at {} is not UTF-8", rev.describe())))?;
        files.push((PathBuf::from(rel), text));
    }
    Sources::from_files(files).map(Some).map_err(|p| {
        Error::Git(format!(
            "the fleet sources at {} do not validate:\n{p}",
            rev.describe()
        ))
    })
}

/// The files under `paths` (relative to the fleet repo) at `rev`'s commit
/// that `keep` accepts, as (relative path, bytes), read without a checkout.
pub fn files_at(
    dir: &Path,
    rev: &Revision,
    paths: &[&str],
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>> {
    let prefix = git_text(dir, &["rev-parse", "--show-prefix"])?;
    let mut args = vec!["ls-tree", "-r", "-z", "--name-only", &rev.commit, "--"];
    args.extend_from_slice(paths);
    let listed = git(dir, &args, None)?;
    let rels: Vec<String> = listed
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| keep(n))
        .collect();
    if rels.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = String::new();
    for r in &rels {
        input.push_str(&format!("{}:{prefix}{r}\n", rev.commit));
    }
    let out = git(dir, &["cat-file", "--batch"], Some(input.into_bytes()))?;
    let blobs = parse_batch(&out, rels.len()).map_err(|e| {
        Error::Git(format!(
            "reading {} at {}: {e}",
            paths.join(", "),
            rev.describe()
        ))
    })?;
    Ok(rels.into_iter().zip(blobs).collect())
}

/// The files `Sources::load_dir` reads: `fleet.toml`, `pins.toml`,
/// `releases/*.toml`, `channels/*.toml`.
fn is_source(rel: &str) -> bool {
    match rel.split_once('/') {
        None => rel == "fleet.toml" || rel == "pins.toml",
        Some((dir, name)) => {
            matches!(dir, "releases" | "channels") && !name.contains('/') && name.ends_with(".toml")
        }
    }
}

/// Splits `git cat-file --batch` output into `n` blobs.
fn parse_batch(out: &[u8], n: usize) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut r = BufReader::new(out);
    let mut texts = Vec::with_capacity(n);
    for _ in 0..n {
        let mut header = String::new();
        r.read_line(&mut header).map_err(|e| e.to_string())?;
        let fields: Vec<&str> = header.split_whitespace().collect();
        let size: usize = match fields.as_slice() {
            [_, "blob", size] => size.parse().map_err(|_| format!("bad header {header:?}"))?,
            _ => return Err(format!("unexpected answer {:?}", header.trim_end())),
        };
        let mut body = vec![0; size + 1];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        body.pop(); // the newline after each object
        texts.push(body);
    }
    Ok(texts)
}

fn git_text(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git(dir, args, None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Runs `git -C dir args`, feeding `stdin`; its stdout, or an error with
/// its stderr.
fn git(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Git(format!("cannot run git (is it installed?): {e}")))?;
    // Write from a thread: git answers while it reads, and a full stdout
    // pipe would otherwise stop both.
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || pipe.write_all(&bytes))),
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Git(format!("git {}: {e}", args.join(" "))))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if !out.status.success() {
        return Err(Error::Git(format!(
            "`git {}` in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_load_dir_reads_are_sources() {
        for yes in [
            "fleet.toml",
            "pins.toml",
            "releases/1.0.0.toml",
            "channels/stable.toml",
        ] {
            assert!(is_source(yes), "{yes}");
        }
        for no in [
            "README.md",
            "releases/notes.md",
            "channels/old/stable.toml",
            "root/1.root.json",
            "signed/manifest.json",
        ] {
            assert!(!is_source(no), "{no}");
        }
    }

    fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn reads_a_fleet_repo_in_a_subdirectory_at_a_revision() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path();
        let fleet = top.join("ops/fleet");
        std::fs::create_dir_all(fleet.join("channels")).unwrap();
        std::fs::write(fleet.join("fleet.toml"), "name = \"first\"\n").unwrap();
        run(top, &["init", "-q", "-b", "main"]);
        run(top, &["add", "-A"]);
        run(top, &["commit", "-q", "-m", "one"]);
        std::fs::write(fleet.join("fleet.toml"), "name = \"second\"\n").unwrap();
        run(top, &["checkout", "-q", "-b", "change"]);
        run(top, &["commit", "-q", "-am", "two"]);

        let base = default_base(&fleet).unwrap();
        assert_eq!(base.how, "merge-base of HEAD and main");
        let s = sources_at(&fleet, &base).unwrap().unwrap();
        assert_eq!(s.fleet.name, "first");
        let head = resolve(&fleet, "HEAD").unwrap();
        assert_eq!(
            sources_at(&fleet, &head).unwrap().unwrap().fleet.name,
            "second"
        );
        // The top of the git repo has no fleet.toml.
        assert_eq!(sources_at(top, &head).unwrap(), None);
        assert!(resolve(&fleet, "no-such-branch").is_err());
    }

    #[test]
    fn batch_output_is_split_by_size() {
        let out = b"aaaa blob 3\nx\ny\nbbbb blob 0\n\n";
        assert_eq!(parse_batch(out, 2).unwrap(), [b"x\ny".to_vec(), Vec::new()]);
        assert!(parse_batch(b"HEAD:x missing\n", 1)
            .unwrap_err()
            .contains("missing"));
    }
}
