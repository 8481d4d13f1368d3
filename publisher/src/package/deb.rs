//! The `.deb` format, written with maintained crates (`ar`, `tar`,
//! `flate2`, `md-5`) rather than `dpkg-deb`, which a fresh build machine
//! lacks.
//!
//! A `.deb` is an `ar` archive of three members, in this order:
//!
//! ```text
//! debian-binary     "2.0\n"
//! control.tar.gz    ./control, ./md5sums, ./conffiles, maintainer scripts
//! data.tar.gz       the files, every parent directory listed before its children
//! ```
//!
//! The output is deterministic: entries are sorted, every owner is
//! root:root, every mtime is the one given (the release's), and gzip
//! carries no name or time of its own.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use md5::{Digest, Md5};

/// One thing the package installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file with its mode.
    File {
        /// The content.
        data: Vec<u8>,
        /// Permission bits (0o644, 0o755, 0o600).
        mode: u32,
    },
    /// A directory the package owns (parents of files are added anyway).
    Dir {
        /// Permission bits.
        mode: u32,
    },
}

/// Everything a `.deb` holds.
#[derive(Clone, Debug, Default)]
pub struct Deb {
    /// `control` fields in order; `Installed-Size` is added.
    pub control: Vec<(&'static str, String)>,
    /// Installed paths (absolute, `/usr/bin/x`) and what is there.
    pub files: BTreeMap<String, Entry>,
    /// Paths under `/etc` that dpkg must treat as configuration.
    pub conffiles: Vec<String>,
    /// Maintainer scripts by name (`postinst`, `prerm`, `postrm`).
    pub scripts: Vec<(&'static str, String)>,
    /// The mtime of every entry (seconds since the epoch).
    pub mtime: u64,
}

impl Deb {
    /// Adds a file.
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.files.insert(
            path.to_owned(),
            Entry::File {
                data: data.into(),
                mode,
            },
        );
    }

    /// Adds a file as a conffile.
    pub fn conffile(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.file(path, data, mode);
        self.conffiles.push(path.to_owned());
    }

    /// Every entry with the parent directories filled in, sorted by path.
    fn entries(&self) -> BTreeMap<String, Entry> {
        let mut all = self.files.clone();
        for path in self.files.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                all.entry(parent.to_owned())
                    .or_insert(Entry::Dir { mode: 0o755 });
                p = parent;
            }
        }
        all
    }

    /// `Installed-Size`: KiB of file content, as dpkg-gencontrol counts it
    /// (each file and directory rounded up to 1 KiB).
    fn installed_size(entries: &BTreeMap<String, Entry>) -> u64 {
        entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => (data.len() as u64).div_ceil(1024),
                Entry::Dir { .. } => 1,
            })
            .sum()
    }

    /// The `.deb` bytes.
    pub fn build(&self) -> std::io::Result<Vec<u8>> {
        let entries = self.entries();
        let mut control = String::new();
        for (k, v) in &self.control {
            control.push_str(&format!("{k}: {v}\n"));
        }
        control.push_str(&format!(
            "Installed-Size: {}\n",
            Self::installed_size(&entries)
        ));
        let mut md5sums = String::new();
        for (path, e) in &entries {
            if let Entry::File { data, .. } = e {
                let digest = Md5::digest(data);
                md5sums.push_str(&format!("{}  {}\n", hex(&digest), &path[1..]));
            }
        }
        let mut meta: Vec<(String, Entry)> = vec![
            ("control".into(), file(control, 0o644)),
            ("md5sums".into(), file(md5sums, 0o644)),
        ];
        if !self.conffiles.is_empty() {
            let mut c = self.conffiles.join("\n");
            c.push('\n');
            meta.push(("conffiles".into(), file(c, 0o644)));
        }
        for (name, text) in &self.scripts {
            meta.push(((*name).into(), file(text.clone(), 0o755)));
        }
        meta.sort_by(|a, b| a.0.cmp(&b.0));
        let control_tar = self.tar_gz(meta.iter().map(|(p, e)| (format!("./{p}"), e)))?;
        let data_tar = self.tar_gz(
            std::iter::once(("./".to_owned(), &Entry::Dir { mode: 0o755 }))
                .chain(entries.iter().map(|(p, e)| (format!(".{p}"), e))),
        )?;

        let mut out = Vec::new();
        {
            let mut ar = ar::Builder::new(&mut out);
            for (name, data) in [
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.gz", control_tar),
                ("data.tar.gz", data_tar),
            ] {
                let mut h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
                h.set_mtime(self.mtime);
                h.set_mode(0o100644);
                h.set_uid(0);
                h.set_gid(0);
                ar.append(&h, &data[..])?;
            }
        }
        Ok(out)
    }

    fn tar_gz<'a>(
        &self,
        entries: impl Iterator<Item = (String, &'a Entry)>,
    ) -> std::io::Result<Vec<u8>> {
        let gz: GzEncoder<Vec<u8>> = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, e) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_username("root")?;
            h.set_groupname("root")?;
            h.set_mtime(self.mtime);
            match e {
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    append(&mut tar, &mut h, &path, &data[..])?;
                }
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    let path = if path.ends_with('/') {
                        path
                    } else {
                        format!("{path}/")
                    };
                    append(&mut tar, &mut h, &path, std::io::empty())?;
                }
            }
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()
    }
}

/// Appends with the path written as given (`./usr/...`, as dpkg-deb writes
/// it; the tar crate's own path handling drops the `./`).
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    h: &mut tar::Header,
    path: &str,
    data: impl std::io::Read,
) -> std::io::Result<()> {
    if path.len() < 100 {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        tar.append(h, data)
    } else {
        tar.append_data(h, path, data)
    }
}

fn file(text: String, mode: u32) -> Entry {
    Entry::File {
        data: text.into_bytes(),
        mode,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Debian's architecture name for a Rust target triple, if it has one.
pub fn architecture(target: &str) -> Option<&'static str> {
    let arch = target.split('-').next()?;
    Some(match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7" => "armhf",
        "i686" | "i586" => "i386",
        "riscv64gc" => "riscv64",
        "powerpc64le" => "ppc64el",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// A gzip stream as Debian wants docs compressed: best compression, no
/// name, no time (so the package stays deterministic).
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(data)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Deb {
        let mut d = Deb {
            control: vec![("Package", "x".into()), ("Version", "1.0.0".into())],
            mtime: 1_700_000_000,
            ..Deb::default()
        };
        d.file("/usr/bin/x", b"bin".to_vec(), 0o755);
        d.conffile("/etc/x/x.toml", b"a = 1\n".to_vec(), 0o644);
        d.scripts.push(("postinst", "#!/bin/sh\nset -e\n".into()));
        d
    }

    #[test]
    fn parents_are_listed_and_the_build_is_deterministic() {
        let d = sample();
        let e = d.entries();
        assert!(e.contains_key("/usr") && e.contains_key("/usr/bin") && e.contains_key("/etc/x"));
        assert_eq!(d.build().unwrap(), d.build().unwrap());
        let deb = d.build().unwrap();
        assert!(deb.starts_with(b"!<arch>\ndebian-binary"));
    }

    #[test]
    fn architectures() {
        assert_eq!(architecture("x86_64-unknown-linux-gnu"), Some("amd64"));
        assert_eq!(architecture("aarch64-unknown-linux-musl"), Some("arm64"));
        assert_eq!(architecture("wasm32-unknown-unknown"), None);
    }
}
