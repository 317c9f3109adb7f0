//! The fake agent's filesystem: a map from normalized absolute path to file bytes or an explicit
//! directory. A directory also exists implicitly while any path lies below it, the way the real
//! agent creates missing parents when it writes a file.

use std::collections::BTreeMap;

use warren_proto::{AgentError, ErrorKind, FileInfo, FileKind, MAX_DIR_ENTRIES};

#[derive(Debug, Clone)]
enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime_ns: i64,
    },
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
}

/// One sandbox's files; they outlive stops and starts, like a root filesystem.
#[derive(Debug)]
pub(crate) struct Files {
    nodes: BTreeMap<String, Node>,
}

impl Default for Files {
    /// The directories tests usually expect an image to have.
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        for dir in ["/tmp", "/root", "/home"] {
            nodes.insert(
                dir.to_owned(),
                Node::Dir {
                    mode: if dir == "/tmp" { 0o1777 } else { 0o755 },
                    mtime_ns: 0,
                },
            );
        }
        Self { nodes }
    }
}

/// `path` made absolute-canonical: no empty, `.` or `..` components, no trailing slash.
pub(crate) fn normalize(path: &str) -> Result<String, AgentError> {
    if !path.starts_with('/') {
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            format!("{path}: path must be absolute"),
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn not_found(path: &str) -> AgentError {
    AgentError::new(
        ErrorKind::NotFound,
        format!("{path}: no such file or directory"),
    )
}

/// Prefix every path strictly below `dir` starts with.
fn child_prefix(dir: &str) -> String {
    if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    }
}

impl Files {
    fn info(&self, path: &str, name: String) -> Option<FileInfo> {
        let (kind, size, mode, mtime_ns) = match self.nodes.get(path) {
            Some(Node::File {
                data,
                mode,
                mtime_ns,
            }) => (FileKind::File, data.len() as u64, *mode, *mtime_ns),
            Some(Node::Dir { mode, mtime_ns }) => (FileKind::Dir, 0, *mode, *mtime_ns),
            None if path == "/" || self.has_children(path) => (FileKind::Dir, 0, 0o755, 0),
            None => return None,
        };
        Some(FileInfo {
            name,
            kind,
            size,
            mode,
            mtime_ns,
            uid: 0,
            gid: 0,
        })
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = child_prefix(dir);
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Fails when a proper ancestor of `path` is a file.
    fn check_parents(&self, path: &str) -> Result<(), AgentError> {
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            let parent = &path[..at + 1 + i];
            if matches!(self.nodes.get(parent), Some(Node::File { .. })) {
                return Err(AgentError::new(
                    ErrorKind::NotADirectory,
                    format!("{path}: a parent is not a directory"),
                ));
            }
            at += 1 + i;
        }
        Ok(())
    }

    /// Metadata of `path`; `name` is the path as asked.
    pub(crate) fn stat(&self, path: &str) -> Result<FileInfo, AgentError> {
        let p = normalize(path)?;
        self.check_parents(&p)?;
        self.info(&p, path.to_owned())
            .ok_or_else(|| not_found(path))
    }

    /// Metadata and contents of a regular file.
    pub(crate) fn read(&self, path: &str) -> Result<(FileInfo, Vec<u8>), AgentError> {
        let info = self.stat(path)?;
        match self.nodes.get(&normalize(path)?) {
            Some(Node::File { data, .. }) => Ok((info, data.clone())),
            _ => Err(AgentError::new(
                ErrorKind::IsADirectory,
                format!("{path}: is a directory"),
            )),
        }
    }

    /// Replaces (or creates) a regular file; a new file gets `mode`, default 0o644.
    pub(crate) fn write(
        &mut self,
        path: &str,
        data: Vec<u8>,
        mode: Option<u32>,
    ) -> Result<(), AgentError> {
        let p = normalize(path)?;
        self.check_parents(&p)?;
        let mode = match self.info(&p, String::new()) {
            Some(FileInfo {
                kind: FileKind::Dir,
                ..
            }) => {
                return Err(AgentError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory"),
                ));
            }
            Some(existing) => existing.mode,
            None => mode.unwrap_or(0o644) & 0o7777,
        };
        self.nodes.insert(
            p,
            Node::File {
                data,
                mode,
                mtime_ns: now_ns(),
            },
        );
        Ok(())
    }

    /// Entries directly below `path`, sorted by name.
    pub(crate) fn list(&self, path: &str) -> Result<(Vec<FileInfo>, bool), AgentError> {
        let info = self.stat(path)?;
        if info.kind != FileKind::Dir {
            return Err(AgentError::new(
                ErrorKind::NotADirectory,
                format!("{path}: not a directory"),
            ));
        }
        let prefix = child_prefix(&normalize(path)?);
        // A set, not a dedup: "b-x" sorts between "b" and "b/c".
        let names: std::collections::BTreeSet<&str> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next())
            .collect();
        let truncated = names.len() > MAX_DIR_ENTRIES;
        let entries = names
            .into_iter()
            .take(MAX_DIR_ENTRIES)
            .filter_map(|name| self.info(&format!("{prefix}{name}"), name.to_owned()))
            .collect();
        Ok((entries, truncated))
    }
}
