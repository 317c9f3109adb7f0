//! `Glob` and `Grep`: one breadth-first walk of the sandbox's tree per request, with the user's
//! permissions, bounded by the limits in `warren_proto::search` (which also states the exact
//! semantics). Matches leave in batches as they are found, through a short queue the
//! connection drains: the walk never runs further ahead of the client than that queue, and
//! stops once the client is gone. Everything in this module blocks; callers run it off the
//! runtime.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{Metadata, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use globset::{GlobBuilder, GlobMatcher};
use tokio::sync::mpsc;
use warren_proto::{
    AgentError, ErrorKind, GREP_BINARY_PROBE, GREP_MAX_BYTES, GREP_MAX_FILE, GREP_MAX_FILES,
    GREP_MAX_LINE, GREP_MAX_TEXT, GlobMatch, GrepMatch, MAX_MATCHES, Response, SEARCH_BATCH_LEN,
    SEARCH_MAX_DEPTH, SEARCH_MAX_ROOT_LEN, SearchCut, WALK_BUDGET, WALK_QUEUE_MAX,
};

use crate::files;

/// Batches waiting for the connection to send them.
pub(crate) const QUEUE: usize = 4;

/// The outcome of a search that ran: the bound that cut it short, if any.
type Outcome = Result<Option<SearchCut>, AgentError>;

/// A kind of match and the frame that carries a batch of them.
pub(crate) trait Batch: Send + Sized + 'static {
    fn wire_len(&self) -> usize;
    fn frame(batch: Vec<Self>) -> Response;
}

impl Batch for GlobMatch {
    fn wire_len(&self) -> usize {
        GlobMatch::wire_len(self)
    }
    fn frame(matches: Vec<Self>) -> Response {
        Response::GlobMatches { matches }
    }
}

impl Batch for GrepMatch {
    fn wire_len(&self) -> usize {
        GrepMatch::wire_len(self)
    }
    fn frame(matches: Vec<Self>) -> Response {
        Response::GrepMatches { matches }
    }
}

/// Collects matches into batches of about [`SEARCH_BATCH_LEN`] encoded bytes and queues them.
#[derive(Debug)]
pub(crate) struct Sink<T> {
    tx: mpsc::Sender<Response>,
    batch: Vec<T>,
    len: usize,
}

impl<T: Batch> Sink<T> {
    fn new(tx: mpsc::Sender<Response>) -> Self {
        Self {
            tx,
            batch: Vec::new(),
            len: 0,
        }
    }

    /// Adds a match; `false` once the client is gone.
    fn push(&mut self, m: T) -> bool {
        let cost = m.wire_len();
        if self.len + cost > SEARCH_BATCH_LEN && !self.flush() {
            return false;
        }
        self.len += cost;
        self.batch.push(m);
        true
    }

    /// Queues the pending batch, waiting while the queue is full; `false` once the client is
    /// gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return !self.gone();
        }
        self.len = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tx.blocking_send(T::frame(batch)).is_ok()
    }

    fn gone(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Runs a search as `user` and queues its frames: batches, then `SearchEnd`, or a lone `Error`.
pub(crate) fn run<T: Batch>(
    user: Option<&str>,
    tx: mpsc::Sender<Response>,
    search: impl FnOnce(&mut Sink<T>) -> Outcome + Send,
) {
    let mut sink = Sink::new(tx);
    let outcome = files::resolve_user(user).and_then(|user| {
        files::as_user(&user, || Ok(search(&mut sink))).unwrap_or_else(|e| {
            Err(AgentError::new(
                ErrorKind::Io,
                format!("failed to search as {}: {e}", user.name),
            ))
        })
    });
    let end = match outcome {
        Ok(truncated) => {
            if !sink.flush() {
                return;
            }
            Response::SearchEnd { truncated }
        }
        Err(e) => Response::Error(e),
    };
    let _ = sink.tx.blocking_send(end);
}

/// `Glob`: entries whose path relative to `root` matches `pattern`.
pub(crate) fn glob(root: &str, pattern: &str, limit: u32, sink: &mut Sink<GlobMatch>) -> Outcome {
    let matcher = compile_glob(pattern)?;
    let limit = cap(limit);
    let mut walk = Walk::new(root, depth_for(pattern))?;
    let mut found = 0;
    loop {
        // Checked before each directory (and, by grep, each file): listing and reading are the
        // work worth saving.
        if sink.gone() {
            return Ok(None);
        }
        let Some(entries) = walk.next_dir()? else {
            return Ok(walk.cut);
        };
        for e in entries.into_iter().filter(|e| matcher.is_match(&e.rel)) {
            if found >= limit {
                return Ok(Some(SearchCut::Limit));
            }
            found += 1;
            let m = GlobMatch {
                path: e.path.to_string_lossy().into_owned(),
                is_dir: e.md.is_dir(),
                size: e.md.size(),
                mtime_ns: files::mtime_ns(&e.md),
            };
            if !sink.push(m) {
                return Ok(None);
            }
        }
    }
}

/// What a grep has spent so far.
#[derive(Debug, Default)]
struct Spent {
    matches: usize,
    files: usize,
    bytes: u64,
    text: usize,
}

/// `Grep`: lines containing `pattern` in the regular files under `root`, optionally only in
/// files matching `glob`.
pub(crate) fn grep(
    root: &str,
    pattern: &str,
    glob: Option<&str>,
    limit: u32,
    sink: &mut Sink<GrepMatch>,
) -> Outcome {
    if pattern.is_empty() {
        return Err(bad("pattern must not be empty"));
    }
    // A bare pattern like `*.py` matches basenames at any depth; one with `/` or `**` matches
    // the path relative to the root.
    let filter = match glob {
        Some(g) => Some((compile_glob(g)?, g.contains('/') || g.contains("**"))),
        None => None,
    };
    let limit = cap(limit);
    let mut walk = Walk::new(root, SEARCH_MAX_DEPTH)?;
    let mut spent = Spent::default();
    let mut line = Vec::new();
    loop {
        // Checked before each directory (and, by grep, each file): listing and reading are the
        // work worth saving.
        if sink.gone() {
            return Ok(None);
        }
        let Some(entries) = walk.next_dir()? else {
            return Ok(walk.cut);
        };
        let files = entries
            .iter()
            .filter(|e| e.md.is_file() && e.md.size() <= GREP_MAX_FILE);
        for e in files {
            if let Some((m, by_path)) = &filter {
                let target = if *by_path {
                    e.rel.as_str()
                } else {
                    e.rel.rsplit('/').next().unwrap_or(&e.rel)
                };
                if !m.is_match(target) {
                    continue;
                }
            }
            if sink.gone() {
                return Ok(None);
            }
            if spent.files >= GREP_MAX_FILES {
                return Ok(Some(SearchCut::FilesRead));
            }
            let budget = GREP_MAX_BYTES - spent.bytes;
            if budget == 0 {
                return Ok(Some(SearchCut::BytesRead));
            }
            spent.files += 1;
            let target = Target {
                path: &e.path,
                max: budget.min(GREP_MAX_FILE),
                pattern,
                limit,
            };
            if let Some(stop) = grep_file(&target, &mut spent, &mut line, sink) {
                return Ok(stop);
            }
            // One huge line must not pin its buffer for the rest of the search.
            line.clear();
            line.shrink_to(64 << 10);
        }
    }
}

/// One file to grep.
#[derive(Debug)]
struct Target<'a> {
    path: &'a OsString,
    /// Most bytes to read from it.
    max: u64,
    pattern: &'a str,
    limit: usize,
}

/// Greps one file; `Some` when the search must stop (with its cut; `None` when the client is
/// gone). A file that cannot be opened is skipped; one that fails midway counts the lines
/// before the failure.
fn grep_file(
    t: &Target<'_>,
    spent: &mut Spent,
    line: &mut Vec<u8>,
    sink: &mut Sink<GrepMatch>,
) -> Option<Option<SearchCut>> {
    // O_NOFOLLOW: the walk saw a regular file here, and a symlink swapped in since is not
    // followed. O_NONBLOCK: nor does a FIFO swapped in hang the search.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(t.path);
    let file = opened.ok()?;
    if !file.metadata().is_ok_and(|md| md.is_file()) {
        return None;
    }
    let mut file = file.take(t.max);
    let mut head = Vec::new();
    let probed = (&mut file)
        .take(GREP_BINARY_PROBE as u64)
        .read_to_end(&mut head);
    if probed.is_err() || head.contains(&0) {
        spent.bytes += t.max - file.limit();
        return None;
    }
    let mut reader = BufReader::with_capacity(64 << 10, head.as_slice().chain(file));
    let stop = grep_lines(t, &mut reader, spent, line, sink);
    spent.bytes += t.max - reader.get_ref().get_ref().1.limit();
    stop
}

fn grep_lines(
    t: &Target<'_>,
    reader: &mut impl BufRead,
    spent: &mut Spent,
    line: &mut Vec<u8>,
    sink: &mut Sink<GrepMatch>,
) -> Option<Option<SearchCut>> {
    let path = t.path.to_string_lossy().into_owned();
    let mut number: u64 = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        number += 1;
        let text = String::from_utf8_lossy(strip_line_end(line));
        if !text.contains(t.pattern) {
            continue;
        }
        if spent.matches >= t.limit {
            return Some(Some(SearchCut::Limit));
        }
        let (text, clipped) = clip_line(&text);
        spent.text += text.len();
        if spent.text > GREP_MAX_TEXT {
            return Some(Some(SearchCut::ResponseSize));
        }
        spent.matches += 1;
        let m = GrepMatch {
            path: path.clone(),
            line: number,
            text: text.to_owned(),
            text_truncated: clipped,
        };
        if !sink.push(m) {
            return Some(None);
        }
    }
}

/// A line without its `\n`, and without a `\r` before that, as `str::lines` splits.
fn strip_line_end(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    }
}

/// `line` cut to at most [`GREP_MAX_LINE`] bytes at a character boundary; `true` if cut.
fn clip_line(line: &str) -> (&str, bool) {
    if line.len() <= GREP_MAX_LINE {
        return (line, false);
    }
    let mut end = GREP_MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    (&line[..end], true)
}

fn cap(limit: u32) -> usize {
    usize::try_from(limit).map_or(MAX_MATCHES, |l| l.min(MAX_MATCHES))
}

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

/// `*` and `?` stay within one path segment; `**` crosses segments.
fn compile_glob(pattern: &str) -> Result<GlobMatcher, AgentError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        // The error's kind, not the error: its message repeats the whole pattern.
        .map_err(|e| bad(format!("invalid glob pattern: {}", e.kind())))
}

/// How many levels below the root a pattern can match: one per segment, all with `**`.
fn depth_for(pattern: &str) -> usize {
    if pattern.contains("**") {
        SEARCH_MAX_DEPTH
    } else {
        pattern.split('/').count()
    }
}

/// One directory entry met by a walk.
#[derive(Debug)]
struct Entry {
    /// Absolute path, byte for byte.
    path: OsString,
    /// Path relative to the root, names decoded lossily (what patterns are matched against).
    rel: String,
    /// From `lstat`: a symlink is itself, not what it points to.
    md: Metadata,
}

/// A breadth-first walk that hands out one directory's entries at a time, holding at most that
/// directory's entries and the queue of directories still to list.
#[derive(Debug)]
struct Walk {
    /// Directories to list: absolute path (empty for `/`), path relative to the root, depth.
    queue: VecDeque<(OsString, String, usize)>,
    max_depth: usize,
    visited: usize,
    /// Why the walk stopped early or left something out, if it did.
    cut: Option<SearchCut>,
}

impl Walk {
    fn new(root: &str, max_depth: usize) -> Result<Self, AgentError> {
        if root.len() > SEARCH_MAX_ROOT_LEN {
            return Err(bad("root path is too long"));
        }
        files::check_path(root)?;
        let root = OsString::from(root.trim_end_matches('/'));
        Ok(Self {
            queue: VecDeque::from([(root, String::new(), 0)]),
            max_depth,
            visited: 0,
            cut: None,
        })
    }

    /// The entries of the next directory, or `None` when the walk is done or its budget is
    /// spent. Only the root failing to list is an error; other directories that cannot be
    /// listed are skipped.
    fn next_dir(&mut self) -> Result<Option<Vec<Entry>>, AgentError> {
        while let Some((dir, rel, depth)) = self.queue.pop_front() {
            if self.visited >= WALK_BUDGET {
                self.cut = Some(SearchCut::EntriesVisited);
                return Ok(None);
            }
            let dir_path = if dir.is_empty() {
                OsString::from("/")
            } else {
                dir.clone()
            };
            let (names, more) = match files::first_names(dir_path.as_ref()) {
                Ok(listed) => listed,
                Err(e) if depth == 0 => {
                    return Err(files::io_error(&e, &dir_path.to_string_lossy()));
                }
                Err(_) => continue,
            };
            if more {
                self.cut.get_or_insert(SearchCut::DirectoryTooLarge);
            }
            let room = WALK_BUDGET - self.visited;
            if names.len() > room {
                self.cut = Some(SearchCut::EntriesVisited);
            }
            let mut out = Vec::with_capacity(names.len().min(room));
            for name in names.into_iter().take(room) {
                let mut path = dir.clone();
                path.push("/");
                path.push(&name);
                // An entry removed while listing is simply left out.
                let Ok(md) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                self.visited += 1;
                let name = name.to_string_lossy();
                let child_rel = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                if md.is_dir() && depth + 1 < self.max_depth {
                    if self.queue.len() < WALK_QUEUE_MAX {
                        self.queue
                            .push_back((path.clone(), child_rel.clone(), depth + 1));
                    } else {
                        self.cut = Some(SearchCut::DirectoriesQueued);
                    }
                }
                out.push(Entry {
                    path,
                    rel: child_rel,
                    md,
                });
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn glob_depth_follows_the_pattern() {
        assert_eq!(depth_for("*"), 1);
        assert_eq!(depth_for("src/*.rs"), 2);
        assert_eq!(depth_for("**/*.rs"), SEARCH_MAX_DEPTH);
        assert!(compile_glob("*.py").unwrap().is_match("a.py"));
        assert!(
            !compile_glob("*.py").unwrap().is_match("d/a.py"),
            "* stays within one segment"
        );
        assert!(compile_glob("**/*.py").unwrap().is_match("d/e/a.py"));
        let e = compile_glob("a[").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(!e.message.contains("a["), "{}", e.message);
    }

    #[test]
    fn long_lines_are_clipped_at_a_character_boundary() {
        let short = "needle";
        assert_eq!(clip_line(short), (short, false));
        let long = "é".repeat(GREP_MAX_LINE);
        let (clipped, cut) = clip_line(&long);
        assert!(cut);
        assert!(clipped.len() <= GREP_MAX_LINE && clipped.len() >= GREP_MAX_LINE - 1);
        assert!(clipped.chars().all(|c| c == 'é'));
    }

    #[test]
    fn lines_split_as_str_lines_does() {
        for text in [
            "",
            "a",
            "a\n",
            "a\r\nb",
            "a\rb\r",
            "\n\n",
            "x\r\n\r\n",
            "é\r",
        ] {
            let mut r = BufReader::new(text.as_bytes());
            let mut ours = Vec::new();
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).unwrap() > 0 {
                ours.push(String::from_utf8(strip_line_end(&buf).to_vec()).unwrap());
                buf.clear();
            }
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    /// With the client gone a search stops before its next file: here it would otherwise find a
    /// match over a zero limit and report the cut.
    #[test]
    fn a_search_stops_once_the_client_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "needle").unwrap();
        let root = dir.path().to_str().unwrap();
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut sink = Sink::new(tx);
        assert_eq!(
            grep(root, "needle", None, 0, &mut sink).unwrap(),
            Some(SearchCut::Limit)
        );
        drop(rx);
        assert_eq!(grep(root, "needle", None, 0, &mut sink).unwrap(), None);
        let mut sink = Sink::new(mpsc::channel(QUEUE).0);
        assert_eq!(glob(root, "*", 0, &mut sink).unwrap(), None);
    }

    #[test]
    fn limits_are_capped() {
        assert_eq!(cap(3), 3);
        assert_eq!(cap(u32::MAX), MAX_MATCHES);
    }
}
