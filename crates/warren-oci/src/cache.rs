//! The content-addressed blob cache shared by every image: `<dir>/blobs/sha256/<hex>`.
//!
//! A blob only gets its final name after its bytes hashed to that name: it is written to a
//! temporary file in the same directory, hashed as it streams, and renamed into place. A name in
//! the cache is therefore a proof of content, and a cached blob is reused without re-reading it
//! from the network.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::OciError;

/// A `sha256:<64 lowercase hex>` digest. Digests come from manifests an attacker may write and
/// become file names in the cache, so nothing else is accepted (no other algorithm, no `/`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, OciError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| OciError::InvalidDigest(s.into()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(OciError::InvalidDigest(s.into()));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

/// The blob cache at `<dir>/blobs/sha256/`.
#[derive(Debug, Clone)]
pub struct BlobCache {
    blobs: PathBuf,
}

impl BlobCache {
    /// Opens the cache under `dir`, creating `blobs/sha256` (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<Self, OciError> {
        let blobs = dir.join("blobs").join("sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blobs)
            .map_err(|e| OciError::io("create blob cache", &blobs, e))?;
        Ok(BlobCache { blobs })
    }

    /// Where a blob lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is cached.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Opens a cached blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, OciError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OciError::BlobMissing {
                digest: digest.to_string(),
            },
            _ => OciError::io("open blob", path, e),
        })
    }

    /// Reads a whole cached blob, refusing one larger than `max` bytes.
    pub fn read_blob(&self, digest: &Digest, max: u64, what: &str) -> Result<Vec<u8>, OciError> {
        let file = self.open_blob(digest)?;
        read_limited(file, max, what).map_err(|e| match e {
            OciError::Io { op, source, .. } => OciError::io(op, self.path(digest), source),
            other => other,
        })
    }

    /// Starts writing a blob that must hash to `expected` and be at most `max` bytes long.
    pub fn writer(&self, expected: &Digest, max: u64, what: &str) -> Result<BlobWriter, OciError> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.blobs)
            .map_err(|e| OciError::io("create temporary blob", &self.blobs, e))?;
        Ok(BlobWriter {
            cache: self.clone(),
            tmp,
            hasher: Sha256::new(),
            written: 0,
            max,
            expected: Some(expected.clone()),
            what: what.to_owned(),
        })
    }

    /// Copies a blob in from a reader and checks it hashes to `expected`.
    pub fn insert(
        &self,
        expected: &Digest,
        reader: impl Read,
        max: u64,
        what: &str,
    ) -> Result<u64, OciError> {
        let mut w = self.writer(expected, max, what)?;
        w.copy_from(reader)?;
        let (_, len) = w.finish()?;
        Ok(len)
    }

    /// Copies in a blob whose digest is not known in advance (legacy `docker save` layers) and
    /// stores it under the digest of what was read.
    pub fn insert_computed(
        &self,
        reader: impl Read,
        max: u64,
        what: &str,
    ) -> Result<(Digest, u64), OciError> {
        let mut w = self.writer(&Digest(String::new()), max, what)?;
        w.expected = None;
        w.copy_from(reader)?;
        w.finish()
    }
}

/// A blob being written into the cache; [`BlobWriter::finish`] verifies and publishes it.
/// Dropping it unfinished deletes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    cache: BlobCache,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    max: u64,
    expected: Option<Digest>,
    what: String,
}

impl BlobWriter {
    /// Appends bytes, refusing to go past the size limit.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OciError> {
        self.written = self.written.saturating_add(bytes.len() as u64);
        if self.written > self.max {
            return Err(OciError::TooLarge {
                what: self.what.clone(),
                max: self.max,
            });
        }
        self.hasher.update(bytes);
        self.tmp
            .as_file_mut()
            .write_all(bytes)
            .map_err(|e| OciError::io("write blob", self.tmp.path(), e))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn copy_from(&mut self, mut reader: impl Read) -> Result<(), OciError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OciError::io("read blob source", &self.what, e)),
            };
            self.write(&buf[..n])?;
        }
    }

    /// Checks the digest, makes the file read-only and renames it into the cache.
    pub fn finish(self) -> Result<(Digest, u64), OciError> {
        let actual = Digest(format!("sha256:{:x}", self.hasher.finalize()));
        if let Some(expected) = &self.expected
            && *expected != actual
        {
            return Err(OciError::DigestMismatch {
                what: self.what,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let file = self.tmp.as_file();
        file.sync_all()
            .map_err(|e| OciError::io("sync blob", self.tmp.path(), e))?;
        file.set_permissions(fs::Permissions::from_mode(0o400))
            .map_err(|e| OciError::io("chmod blob", self.tmp.path(), e))?;
        let dest = self.cache.path(&actual);
        self.tmp
            .persist(&dest)
            .map_err(|e| OciError::io("rename blob", &dest, e.error))?;
        Ok((actual, self.written))
    }
}

/// Reads all of `reader`, refusing more than `max` bytes (without reading more than `max + 1`).
pub(crate) fn read_limited(reader: impl Read, max: u64, what: &str) -> Result<Vec<u8>, OciError> {
    let mut out = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| OciError::io("read", what, e))?;
    if out.len() as u64 > max {
        return Err(OciError::TooLarge {
            what: what.to_owned(),
            max,
        });
    }
    Ok(out)
}
