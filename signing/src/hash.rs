//! Streaming SHA-256 + size.
//!
//! Artifacts are hashed in fixed-size chunks while they stream past (from a
//! file, an upload or a download), never read whole into memory. The `sha2`
//! crate detects SHA-NI at run time and uses it, which keeps pace with
//! `openssl dgst -sha256` (see `scripts/bench`, figure `hash_512mib`).

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Chunk size used when hashing a reader.
pub const CHUNK: usize = 1 << 20;

/// The SHA-256 (lowercase hex) and byte count of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashSummary {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Number of bytes hashed.
    pub size: u64,
}

/// An incremental hasher that also counts bytes.
#[derive(Clone, Default)]
pub struct StreamingHasher {
    hasher: Sha256,
    size: u64,
}

impl StreamingHasher {
    /// A new hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes and returns digest and size.
    pub fn finish(self) -> HashSummary {
        HashSummary {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
        }
    }
}

/// Hashes everything `reader` yields, one [`CHUNK`] at a time.
pub fn hash_reader<R: Read>(mut reader: R) -> io::Result<HashSummary> {
    let mut hasher = StreamingHasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// A writer that hashes what passes through it to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: StreamingHasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: StreamingHasher::new(),
        }
    }

    /// Returns the inner writer and the summary of what was written.
    pub fn finish(self) -> (W, HashSummary) {
        (self.inner, self.hasher.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Returns true if `s` is 64 lowercase or uppercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let s = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            s.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.size, 3);
    }

    /// A reader that yields `n` bytes of a pattern without allocating them.
    struct Pattern {
        left: u64,
        pos: u64,
    }
    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.left) as usize;
            for b in buf[..n].iter_mut() {
                *b = (self.pos % 251) as u8;
                self.pos += 1;
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn streams_in_chunks_and_matches_writer() {
        let total = 3 * CHUNK as u64 + 17;
        let a = hash_reader(Pattern {
            left: total,
            pos: 0,
        })
        .unwrap();
        assert_eq!(a.size, total);
        let mut w = HashingWriter::new(io::sink());
        io::copy(
            &mut Pattern {
                left: total,
                pos: 0,
            },
            &mut w,
        )
        .unwrap();
        let (_, b) = w.finish();
        assert_eq!(a, b);
    }

    #[test]
    fn hex_check() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }
}
