//! The fake's file system: a map from absolute path to bytes, directories implied by paths.

use std::collections::BTreeMap;

use warren_types::agent::{AgentError, ErrorKind, FileInfo, FileKind};

use crate::DriverError;

pub(super) fn not_found(path: &str) -> DriverError {
    AgentError::new(ErrorKind::NotFound, format!("{path}: not found")).into()
}

pub(super) fn info(name: &str, kind: FileKind, size: u64) -> FileInfo {
    FileInfo {
        name: name.to_owned(),
        kind,
        size,
        mode: if kind == FileKind::Dir { 0o755 } else { 0o644 },
        mtime_ns: 1_700_000_000_000_000_000,
        uid: 0,
        gid: 0,
    }
}

/// Whether `path` is a directory of `files` (a prefix of some file's path).
pub(super) fn is_dir(files: &BTreeMap<String, Vec<u8>>, path: &str) -> bool {
    let prefix = format!("{}/", path.trim_end_matches('/'));
    path == "/" || files.keys().any(|k| k.starts_with(&prefix))
}

/// The immediate children of `dir`.
pub(super) fn children(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Vec<FileInfo> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut seen = BTreeMap::new();
    for (k, v) in files.range(prefix.clone()..) {
        let Some(rest) = k.strip_prefix(&prefix) else {
            break;
        };
        match rest.split_once('/') {
            Some((d, _)) => {
                seen.entry(d.to_owned())
                    .or_insert_with(|| info(d, FileKind::Dir, 0));
            }
            None => {
                seen.insert(rest.to_owned(), info(rest, FileKind::File, v.len() as u64));
            }
        }
    }
    seen.into_values().collect()
}
