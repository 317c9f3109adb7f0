//! Applying an image's layers, in order, to a destination directory.
//!
//! Layers are untrusted. Paths are cleaned lexically the way Docker does (`..` cannot climb above
//! the root, a leading `/` is dropped) and then resolved by the kernel inside the destination
//! (see [`root`]). Sizes are counted on the decompressed stream as it is read, so a bomb stops
//! at the limit rather than after it has filled the disk.

mod entry;
mod root;

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::cache::BlobCache;
use crate::error::{LayerError, OciError};
use crate::{Image, Layer};

use root::Root;

/// Caps on what unpacking an image may produce, over all of its layers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most uncompressed tar bytes (headers and contents) read from all layers.
    pub max_bytes: u64,
    /// Most tar entries over all layers (whiteouts and skipped entries count).
    pub max_entries: u64,
    /// Longest entry path or link target, in bytes.
    pub max_path_len: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
            max_path_len: 4096,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Layers applied.
    pub layers: usize,
    /// Tar entries read.
    pub entries: u64,
    /// Uncompressed tar bytes read.
    pub bytes: u64,
    /// Entries skipped on purpose (device nodes, FIFOs, unknown types).
    pub skipped: u64,
}

/// Applies `image`'s layers from `cache` to `dest`, an existing (normally empty) directory.
///
/// Paths never leave `dest`; device nodes and FIFOs are skipped; setuid and setgid bits are
/// dropped; xattrs (so also file capabilities) are not applied; owners above 65535 become 65534.
pub fn unpack(
    image: &Image,
    cache: &BlobCache,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, OciError> {
    let root = Root::open(dest).map_err(|e| OciError::io("open destination", dest, e))?;
    let mut state = State {
        root,
        limits: *limits,
        stats: UnpackStats::default(),
        read: Rc::new(Cell::new(0)),
        written_in_layer: HashSet::new(),
        dir_times: Vec::new(),
    };
    for layer in &image.layers {
        let blob = cache.open_blob(&layer.digest)?;
        apply_layer(&mut state, layer, blob)?;
        state.stats.layers += 1;
    }
    state.stats.bytes = state.read.get();
    tracing::info!(
        image = %image.reference,
        dest = %dest.display(),
        layers = state.stats.layers,
        entries = state.stats.entries,
        bytes = state.stats.bytes,
        skipped = state.stats.skipped,
        "unpacked image"
    );
    Ok(state.stats)
}

/// What is carried from entry to entry and layer to layer.
#[derive(Debug)]
struct State {
    root: Root,
    limits: UnpackLimits,
    stats: UnpackStats,
    /// Uncompressed bytes read so far, over all layers; shared with the [`Counted`] reader.
    read: Rc<Cell<u64>>,
    /// Cleaned paths (and their ancestors) this layer has written: an opaque whiteout clears
    /// only what lower layers left.
    written_in_layer: HashSet<PathBuf>,
    /// Directory mtimes, set when the layer is done (writing into a directory changes it).
    dir_times: Vec<(PathBuf, i64)>,
}

fn apply_layer(state: &mut State, layer: &Layer, blob: std::fs::File) -> Result<(), OciError> {
    let err = |entry: Option<String>, reason| OciError::Layer {
        layer: layer.digest.to_string(),
        entry,
        reason,
    };
    let stream = decompress(blob, &layer.media_type).map_err(|r| err(None, r))?;
    let counted = Counted {
        inner: stream,
        read: state.read.clone(),
        max: state.limits.max_bytes,
    };
    let mut archive = tar::Archive::new(counted);
    state.written_in_layer.clear();
    state.dir_times.clear();
    tracing::debug!(layer = %layer.digest, media_type = %layer.media_type, "applying layer");

    let entries = archive
        .entries()
        .map_err(|e| err(None, state.read_error(e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| err(None, state.read_error(e)))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        state.stats.entries += 1;
        if state.stats.entries > state.limits.max_entries {
            let reason = LayerError::TooManyEntries {
                max: state.limits.max_entries,
            };
            return Err(err(Some(name), reason));
        }
        entry::apply(state, entry)
            .map_err(|r| match r {
                LayerError::Io { .. } if state.read.get() > state.limits.max_bytes => {
                    LayerError::TooManyBytes {
                        max: state.limits.max_bytes,
                    }
                }
                other => other,
            })
            .map_err(|r| err(Some(name), r))?;
    }
    for (path, mtime) in std::mem::take(&mut state.dir_times) {
        entry::set_dir_time(&state.root, &path, mtime)
            .map_err(|r| err(Some(path.display().to_string()), r))?;
    }
    Ok(())
}

impl State {
    /// A tar read error, or the byte limit if that is what cut the stream.
    fn read_error(&self, e: io::Error) -> LayerError {
        if self.read.get() > self.limits.max_bytes {
            LayerError::TooManyBytes {
                max: self.limits.max_bytes,
            }
        } else {
            LayerError::Io {
                op: "read layer",
                source: e,
            }
        }
    }
}

/// Picks the decompressor from the stream's first bytes, as Docker does: registries and
/// `docker save` are not always truthful about compression, but the magic numbers are.
fn decompress(blob: std::fs::File, media_type: &str) -> Result<Box<dyn Read>, LayerError> {
    let mut buf = BufReader::with_capacity(128 * 1024, blob);
    let head = buf.fill_buf().map_err(LayerError::io("read layer"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zstd = zstd::stream::read::Decoder::with_buffer(buf)
            .map_err(LayerError::io("start zstd decoder"))?;
        Ok(Box::new(zstd))
    } else if media_type.contains("tar") {
        Ok(Box::new(buf))
    } else {
        Err(LayerError::MediaType(media_type.to_owned()))
    }
}

/// Counts decompressed bytes and fails the read that would go past the limit.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.max.saturating_sub(self.read.get());
        // Ask for one byte more than the budget so that going over is noticed, not truncated.
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read.set(self.read.get() + n as u64);
        if self.read.get() > self.max {
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// Cleans a tar path the way Docker does (`filepath.Clean("/" + name)`): empty and `.`
/// components vanish, `..` removes the previous component and stops at the root. The result is
/// relative to the destination; empty means the root itself.
pub(crate) fn clean(raw: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = PathBuf::new();
    for p in parts {
        out.push(std::ffi::OsStr::from_bytes(p));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;
    use std::path::Path;

    #[test]
    fn clean_keeps_paths_inside() {
        assert_eq!(clean(b"../../etc/passwd"), Path::new("etc/passwd"));
        assert_eq!(clean(b"/etc/./passwd"), Path::new("etc/passwd"));
        assert_eq!(clean(b"a/../../b"), Path::new("b"));
        assert_eq!(clean(b"./"), Path::new(""));
        assert_eq!(clean(b"a//b/"), Path::new("a/b"));
    }
}
