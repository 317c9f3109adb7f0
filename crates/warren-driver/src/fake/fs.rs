//! The fake's file system: a map from absolute path to bytes, directories implied by paths.

use std::collections::BTreeMap;

use warren_types::agent::{AgentError, ErrorKind, FileInfo, FileKind};

use crate::{DriverError, GlobQuery, GrepQuery, SearchHit, SearchResult};

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

/// The fake's glob: a suffix match on `*SUFFIX` patterns, enough to test the layers above,
/// which only carry the result.
pub(super) fn glob(files: &BTreeMap<String, Vec<u8>>, query: &GlobQuery) -> SearchResult {
    let root = format!("{}/", query.root.trim_end_matches('/'));
    let suffix = query
        .pattern
        .trim_start_matches("**/")
        .trim_start_matches('*');
    let mut out = SearchResult::default();
    for (path, data) in files.range(root.clone()..) {
        if !path.starts_with(&root) {
            break;
        }
        if path.ends_with(suffix) {
            if out.hits.len() >= query.limit as usize {
                out.truncated = Some("limit".into());
                break;
            }
            let i = info(path, FileKind::File, data.len() as u64);
            out.hits.push(SearchHit::Path {
                path: path.clone(),
                is_dir: false,
                size: i.size,
                mtime_ns: i.mtime_ns,
            });
        }
    }
    out
}

/// The fake's grep: lines containing the pattern, in files beneath the root.
pub(super) fn grep(files: &BTreeMap<String, Vec<u8>>, query: &GrepQuery) -> SearchResult {
    let root = format!("{}/", query.root.trim_end_matches('/'));
    let mut out = SearchResult::default();
    for (path, data) in files.range(root.clone()..) {
        if !path.starts_with(&root) {
            break;
        }
        for (i, line) in String::from_utf8_lossy(data).lines().enumerate() {
            if line.contains(&query.pattern) {
                if out.hits.len() >= query.limit as usize {
                    out.truncated = Some("limit".into());
                    return out;
                }
                out.hits.push(SearchHit::Line {
                    path: path.clone(),
                    line: i as u64 + 1,
                    text: line.to_owned(),
                    text_truncated: false,
                });
            }
        }
    }
    out
}
