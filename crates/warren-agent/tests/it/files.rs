//! File transfer, stat, listing, glob and grep.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use warren_proto::{
    AgentError, ErrorKind, FileKind, GREP_MAX_LINE, GlobMatch, GrepMatch, MAX_CHUNK_LEN, Request,
    Response, SEARCH_BATCH_LEN, SearchCut,
};

use crate::support::{Agent, Conn};

fn write(c: &mut Conn, path: &str, mode: Option<u32>, user: Option<&str>, data: &[u8]) -> Response {
    c.send(&Request::WriteFile {
        path: path.into(),
        mode,
        user: user.map(Into::into),
    });
    for chunk in data.chunks(MAX_CHUNK_LEN) {
        c.send(&Request::FileData {
            data: chunk.to_vec(),
        });
    }
    c.send(&Request::FileEnd);
    c.recv().unwrap()
}

/// Returns the FileInfo and the bytes, or the error.
fn read(
    c: &mut Conn,
    path: &str,
    offset: u64,
    len: Option<u64>,
) -> Result<(warren_proto::FileInfo, Vec<u8>), warren_proto::AgentError> {
    c.send(&Request::ReadFile {
        path: path.into(),
        offset,
        len,
        user: None,
    });
    let info = match c.recv().unwrap() {
        Response::FileInfo(i) => i,
        Response::Error(e) => return Err(e),
        other => panic!("{other:?}"),
    };
    let mut data = Vec::new();
    loop {
        match c.recv().unwrap() {
            Response::FileData { data: d } => {
                assert!(d.len() <= MAX_CHUNK_LEN);
                data.extend_from_slice(&d);
            }
            Response::FileEnd => return Ok((info, data)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn write_read_round_trip_with_binary_data_and_parents() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/blob.bin");
    let path_s = path.to_str().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut c = agent.conn();
    assert_eq!(
        write(&mut c, path_s, Some(0o600), Some("65534"), &data),
        Response::Ok
    );
    // The same connection carries another operation.
    let (info, back) = read(&mut c, path_s, 0, None).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        (info.kind, info.size, info.mode, info.uid),
        (FileKind::File, data.len() as u64, 0o600, 65534)
    );
    assert_eq!(info.name, path_s);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (65534, 65534, 0o600)
    );
    let parent = std::fs::metadata(dir.path().join("a/b")).unwrap();
    assert_eq!(parent.uid(), 65534, "created parents belong to the user");
    assert!(parent.is_dir());

    // Replace: atomic, default mode, no temp files left over.
    assert_eq!(write(&mut c, path_s, None, None, b"short"), Response::Ok);
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("blob.bin")]);
    // Empty file.
    assert_eq!(write(&mut c, path_s, None, None, b""), Response::Ok);
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn range_reads() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let p = path.to_str().unwrap();
    let mut c = agent.conn();
    assert_eq!(read(&mut c, p, 10, Some(5)).unwrap().1, data[10..15]);
    assert_eq!(
        read(&mut c, p, 70_000, Some(100_000)).unwrap().1,
        data[70_000..170_000]
    );
    assert_eq!(read(&mut c, p, 199_990, None).unwrap().1, data[199_990..]);
    assert_eq!(read(&mut c, p, 500_000, None).unwrap().1, b"");
    assert_eq!(read(&mut c, p, 0, Some(0)).unwrap().1, b"");
}

#[test]
fn error_kinds() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let mut c = agent.conn();

    let e = read(&mut c, &d, 0, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::IsADirectory);
    assert!(e.message.contains("is a directory"), "{}", e.message);
    assert_eq!(
        read(&mut c, &format!("{d}/missing"), 0, None)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        read(&mut c, &format!("{d}/file/x"), 0, None)
            .unwrap_err()
            .kind,
        ErrorKind::NotADirectory
    );
    assert_eq!(
        read(&mut c, "relative/path", 0, None).unwrap_err().kind,
        ErrorKind::BadRequest
    );
    assert_eq!(
        read(&mut c, "/a\0b", 0, None).unwrap_err().kind,
        ErrorKind::BadRequest
    );

    match write(&mut c, &d, None, None, b"data") {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::IsADirectory),
        other => panic!("{other:?}"),
    }
    match write(&mut c, &format!("{d}/file/below"), None, None, b"data") {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::NotADirectory),
        other => panic!("{other:?}"),
    }
    match write(&mut c, "no/slash", None, None, b"data") {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    // Reading as an unprivileged user applies that user's permissions.
    std::fs::set_permissions(
        dir.path().join("file"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    c.send(&Request::ReadFile {
        path: format!("{d}/file"),
        offset: 0,
        len: None,
        user: Some("65534".into()),
    });
    match c.recv().unwrap() {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::PermissionDenied),
        other => panic!("{other:?}"),
    }
    c.send(&Request::Ping);
    assert_eq!(c.recv(), Some(Response::Pong));
}

#[test]
fn disconnect_mid_write_leaves_the_target_alone() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep");
    std::fs::write(&path, b"original").unwrap();
    let mut c = agent.conn();
    c.send(&Request::WriteFile {
        path: path.to_str().unwrap().into(),
        mode: None,
        user: None,
    });
    c.send(&Request::FileData {
        data: b"partial".to_vec(),
    });
    drop(c);
    // The temp file goes away once the agent notices the disconnect.
    assert!(crate::support::eventually(5, || std::fs::read_dir(
        dir.path()
    )
    .unwrap()
    .count()
        == 1));
    assert_eq!(std::fs::read(&path).unwrap(), b"original");
}

#[test]
fn stat_and_list_dir() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("b.txt"), b"hello").unwrap();
    std::fs::create_dir(d.join("a-dir")).unwrap();
    std::os::unix::fs::symlink("b.txt", d.join("c-link")).unwrap();
    let mut c = agent.conn();
    c.send(&Request::ListDir {
        path: d.to_str().unwrap().into(),
    });
    match c.recv().unwrap() {
        Response::DirEntries { entries, truncated } => {
            assert!(!truncated);
            let got: Vec<(&str, FileKind)> =
                entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
            assert_eq!(
                got,
                vec![
                    ("a-dir", FileKind::Dir),
                    ("b.txt", FileKind::File),
                    ("c-link", FileKind::Symlink)
                ]
            );
            assert_eq!(entries[1].size, 5);
        }
        other => panic!("{other:?}"),
    }
    let link = d.join("c-link");
    c.send(&Request::Stat {
        path: link.to_str().unwrap().into(),
    });
    match c.recv().unwrap() {
        Response::FileInfo(i) => {
            assert_eq!(
                (i.kind, i.name.as_str()),
                (FileKind::Symlink, link.to_str().unwrap())
            );
            assert!(i.mtime_ns > 1_000_000_000 * 1_000_000_000);
        }
        other => panic!("{other:?}"),
    }
    c.send(&Request::Stat {
        path: d.join("nope").to_str().unwrap().into(),
    });
    assert!(matches!(c.recv().unwrap(), Response::Error(e) if e.kind == ErrorKind::NotFound));
    c.send(&Request::ListDir {
        path: d.join("b.txt").to_str().unwrap().into(),
    });
    assert!(matches!(c.recv().unwrap(), Response::Error(e) if e.kind == ErrorKind::NotADirectory));
}

#[test]
fn list_dir_is_bounded() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let n = warren_proto::MAX_DIR_ENTRIES + 5;
    for i in 0..n {
        std::fs::write(dir.path().join(format!("f{i:06}")), b"").unwrap();
    }
    let mut c = agent.conn();
    c.send(&Request::ListDir {
        path: dir.path().to_str().unwrap().into(),
    });
    match c.recv().unwrap() {
        Response::DirEntries { entries, truncated } => {
            assert!(truncated);
            assert_eq!(entries.len(), warren_proto::MAX_DIR_ENTRIES);
            assert_eq!(entries[0].name, "f000000");
            assert_eq!(
                entries.last().unwrap().name,
                format!("f{:06}", warren_proto::MAX_DIR_ENTRIES - 1)
            );
        }
        other => panic!("{other:?}"),
    }
}

type Found<T> = Result<(Vec<T>, Option<SearchCut>), AgentError>;

/// Collects a search's batches up to its `SearchEnd`, checking each frame's size bound.
fn search_frames<T>(c: &mut Conn, mut batch: impl FnMut(Response) -> Option<Vec<T>>) -> Found<T> {
    let mut all = Vec::new();
    loop {
        let resp = c.recv().unwrap();
        let size = warren_proto::encode(&resp).unwrap().len();
        match resp {
            Response::SearchEnd { truncated } => return Ok((all, truncated)),
            Response::Error(e) => {
                assert!(all.is_empty(), "an error ends a search before any batch");
                return Err(e);
            }
            other => {
                let matches = batch(other).expect("a batch of the right kind");
                assert!(!matches.is_empty(), "batches are never empty");
                assert!(
                    size <= SEARCH_BATCH_LEN + 16 || matches.len() == 1,
                    "batch of {size} bytes"
                );
                all.extend(matches);
            }
        }
    }
}

fn glob(
    c: &mut Conn,
    root: &Path,
    pattern: &str,
    limit: u32,
    user: Option<&str>,
) -> Found<GlobMatch> {
    c.send(&Request::Glob {
        root: root.to_str().unwrap().into(),
        pattern: pattern.into(),
        limit,
        user: user.map(Into::into),
    });
    search_frames(c, |r| match r {
        Response::GlobMatches { matches } => Some(matches),
        _ => None,
    })
}

fn grep(
    c: &mut Conn,
    root: &Path,
    pattern: &str,
    filter: Option<&str>,
    limit: u32,
    user: Option<&str>,
) -> Found<GrepMatch> {
    c.send(&Request::Grep {
        root: root.to_str().unwrap().into(),
        pattern: pattern.into(),
        glob: filter.map(Into::into),
        limit,
        user: user.map(Into::into),
    });
    search_frames(c, |r| match r {
        Response::GrepMatches { matches } => Some(matches),
        _ => None,
    })
}

/// Paths relative to `root`, in the order found.
fn rel<'a>(root: &Path, paths: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let prefix = format!("{}/", root.to_str().unwrap());
    paths
        .into_iter()
        .map(|p| {
            p.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{p} not under root"))
                .to_owned()
        })
        .collect()
}

/// A tree for the search tests, readable by everyone:
/// `a.py b.txt d/ d/c.py d/e/ d/e/f.py d/e/g.txt link -> d`.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(d.join("d/e")).unwrap();
    std::fs::write(d.join("a.py"), "needle one\nno\nneedle two\r\n").unwrap();
    std::fs::write(d.join("b.txt"), "hello").unwrap();
    std::fs::write(d.join("d/c.py"), "x needle").unwrap();
    std::fs::write(d.join("d/e/f.py"), "").unwrap();
    std::fs::write(d.join("d/e/g.txt"), "a\nb needle\n").unwrap();
    std::os::unix::fs::symlink("d", d.join("link")).unwrap();
    dir
}

#[test]
fn glob_matches_relative_paths_as_deep_as_the_pattern_reaches() {
    let agent = Agent::start();
    let dir = tree();
    let root = dir.path();
    let mut c = agent.conn();

    let (m, cut) = glob(&mut c, root, "*", 100, None).unwrap();
    assert_eq!(cut, None);
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["a.py", "b.txt", "d", "link"]
    );
    let kinds: Vec<bool> = m.iter().map(|m| m.is_dir).collect();
    assert_eq!(
        kinds,
        [false, false, true, false],
        "a symlink to a directory is no directory"
    );
    assert_eq!(m[1].size, 5);
    let md = std::fs::metadata(root.join("b.txt")).unwrap();
    assert_eq!(m[1].mtime_ns, md.mtime() * 1_000_000_000 + md.mtime_nsec());

    let (m, _) = glob(&mut c, root, "*.py", 100, None).unwrap();
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["a.py"],
        "* stays in one segment"
    );
    let (m, _) = glob(&mut c, root, "d/*.py", 100, None).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["d/c.py"]);
    // Breadth first, and never through the symlink.
    let (m, _) = glob(&mut c, root, "**/*.py", 100, None).unwrap();
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["a.py", "d/c.py", "d/e/f.py"]
    );
    let (m, _) = glob(&mut c, root, "**", 100, None).unwrap();
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        [
            "a.py",
            "b.txt",
            "d",
            "link",
            "d/c.py",
            "d/e",
            "d/e/f.py",
            "d/e/g.txt"
        ]
    );
    // A trailing slash on the root changes nothing.
    let slashed = PathBuf::from(format!("{}/", root.to_str().unwrap()));
    let (m, _) = glob(&mut c, &slashed, "d", 100, None).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["d"]);
    // Paths under `/` are not doubled up.
    let (m, _) = glob(&mut c, Path::new("/"), "tmp", 100, None).unwrap();
    assert_eq!(
        m.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
        ["/tmp"]
    );
}

#[test]
fn glob_limit_cuts_only_when_more_matched() {
    let agent = Agent::start();
    let dir = tree();
    let mut c = agent.conn();
    let (m, cut) = glob(&mut c, dir.path(), "**", 3, None).unwrap();
    assert_eq!((m.len(), cut), (3, Some(SearchCut::Limit)));
    let (m, cut) = glob(&mut c, dir.path(), "**", 8, None).unwrap();
    assert_eq!((m.len(), cut), (8, None));
    let (m, cut) = glob(&mut c, dir.path(), "**", 0, None).unwrap();
    assert_eq!((m.len(), cut), (0, Some(SearchCut::Limit)));
}

#[test]
fn grep_finds_lines_with_and_without_a_glob_filter() {
    let agent = Agent::start();
    let dir = tree();
    let root = dir.path();
    let mut c = agent.conn();
    let hits = |m: &[GrepMatch]| -> Vec<(String, u64, String)> {
        m.iter()
            .map(|m| {
                assert!(!m.text_truncated);
                (rel(root, [&m.path])[0].clone(), m.line, m.text.clone())
            })
            .collect()
    };
    let (m, cut) = grep(&mut c, root, "needle", None, 100, None).unwrap();
    assert_eq!(cut, None);
    assert_eq!(
        hits(&m),
        [
            ("a.py".into(), 1, "needle one".into()),
            ("a.py".into(), 3, "needle two".into()),
            ("d/c.py".into(), 1, "x needle".into()),
            ("d/e/g.txt".into(), 2, "b needle".into()),
        ]
    );
    // A bare filter matches basenames at any depth; one with `/` or `**` the relative path.
    let (m, _) = grep(&mut c, root, "needle", Some("*.py"), 100, None).unwrap();
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["a.py", "a.py", "d/c.py"]
    );
    let (m, _) = grep(&mut c, root, "needle", Some("d/*.py"), 100, None).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["d/c.py"]);
    let (m, _) = grep(&mut c, root, "needle", Some("**/*.txt"), 100, None).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["d/e/g.txt"]);
    let (m, cut) = grep(&mut c, root, "needle", None, 2, None).unwrap();
    assert_eq!((m.len(), cut), (2, Some(SearchCut::Limit)));
    let (m, cut) = grep(&mut c, root, "needle", None, 4, None).unwrap();
    assert_eq!((m.len(), cut), (4, None));
    // The literal pattern is no regex.
    let (m, _) = grep(&mut c, root, "needle.", None, 100, None).unwrap();
    assert!(m.is_empty());
}

#[test]
fn grep_skips_binary_and_oversized_files_and_clips_long_lines() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut early = b"needle\n".to_vec();
    early.push(0);
    std::fs::write(root.join("1-binary"), &early).unwrap();
    // A NUL past the first 8 KiB does not make a file binary.
    let mut late = b"needle late\n".to_vec();
    late.resize(warren_proto::GREP_BINARY_PROBE + 10, b'x');
    late.push(0);
    std::fs::write(root.join("2-late-nul"), &late).unwrap();
    let long = format!("needle {}", "é".repeat(GREP_MAX_LINE));
    std::fs::write(root.join("3-long"), format!("{long}\nshort needle\n")).unwrap();
    std::fs::write(root.join("4-latin1"), b"needle \xff caf\xe9\n").unwrap();
    let mut big = b"needle\n".to_vec();
    big.resize(
        usize::try_from(warren_proto::GREP_MAX_FILE).unwrap() + 1,
        b'\n',
    );
    std::fs::write(root.join("5-too-big"), &big).unwrap();
    let mut c = agent.conn();
    let (m, cut) = grep(&mut c, root, "needle", None, 100, None).unwrap();
    assert_eq!(cut, None);
    let got: Vec<(String, u64, bool)> = m
        .iter()
        .map(|m| (rel(root, [&m.path])[0].clone(), m.line, m.text_truncated))
        .collect();
    assert_eq!(
        got,
        [
            ("2-late-nul".into(), 1, false),
            ("3-long".into(), 1, true),
            ("3-long".into(), 2, false),
            ("4-latin1".into(), 1, false),
        ]
    );
    let clipped = &m[1].text;
    assert!(clipped.len() <= GREP_MAX_LINE && clipped.len() >= GREP_MAX_LINE - 1);
    assert!(long.starts_with(clipped.as_str()));
    assert_eq!(m[3].text, "needle \u{fffd} caf\u{fffd}");
}

#[test]
fn symlinks_are_never_followed() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/f.txt"), "needle").unwrap();
    std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", root.join("sub/back")).unwrap();
    std::os::unix::fs::symlink("sub/f.txt", root.join("alias.txt")).unwrap();
    let mut c = agent.conn();
    let (m, cut) = glob(&mut c, root, "**", 1000, None).unwrap();
    assert_eq!(cut, None);
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["alias.txt", "loop", "sub", "sub/back", "sub/f.txt"]
    );
    let (m, _) = grep(&mut c, root, "needle", None, 1000, None).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["sub/f.txt"]);
    // The root itself may be a symlink to a directory.
    let (m, _) = glob(&mut c, &root.join("loop"), "sub", 10, None).unwrap();
    assert_eq!(m.len(), 1);
}

/// Needs root: the agent takes the user's permissions for the walk and the reads.
#[test]
fn searches_use_the_users_permissions() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (sub, mode) in [("open", 0o755), ("closed", 0o700)] {
        std::fs::create_dir(root.join(sub)).unwrap();
        std::fs::write(root.join(sub).join("x.txt"), "needle").unwrap();
        std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(root.join("secret.txt"), "needle").unwrap();
    std::fs::set_permissions(
        root.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut c = agent.conn();
    let (m, cut) = glob(&mut c, root, "**", 100, Some("65534")).unwrap();
    assert_eq!(cut, None);
    assert_eq!(
        rel(root, m.iter().map(|m| &m.path)),
        ["closed", "open", "secret.txt", "open/x.txt"],
        "the unreadable directory is listed but not entered"
    );
    let (m, _) = grep(&mut c, root, "needle", None, 100, Some("65534")).unwrap();
    assert_eq!(rel(root, m.iter().map(|m| &m.path)), ["open/x.txt"]);
    // Root reads everything.
    let (m, _) = grep(&mut c, root, "needle", None, 100, None).unwrap();
    assert_eq!(m.len(), 3);
    let e = glob(&mut c, &root.join("closed"), "*", 100, Some("65534")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    let e = grep(&mut c, root, "needle", None, 100, Some("no-such-user")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
}

#[test]
fn unusable_roots_and_patterns_are_errors() {
    let agent = Agent::start();
    let dir = tree();
    let root = dir.path();
    let mut c = agent.conn();
    let e = glob(&mut c, &root.join("missing"), "*", 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = grep(&mut c, &root.join("missing"), "x", None, 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = glob(&mut c, &root.join("b.txt"), "*", 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotADirectory);
    let e = glob(&mut c, Path::new("relative"), "*", 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = glob(&mut c, root, "a[", 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = grep(&mut c, root, "x", Some("a["), 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = grep(&mut c, root, "", None, 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let long = PathBuf::from(format!("/{}", "a/".repeat(3000)));
    let e = glob(&mut c, &long, "*", 10, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    // The connection carries on after a failed search.
    c.send(&Request::Ping);
    assert_eq!(c.recv(), Some(Response::Pong));
}

/// Matches far beyond one frame's worth arrive in batches, each within its bound.
#[test]
fn large_results_stream_in_bounded_batches() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let line = format!("needle {}\n", "y".repeat(3990));
    std::fs::write(root.join("big.txt"), line.repeat(2000)).unwrap();
    let mut c = agent.conn();
    c.send(&Request::Grep {
        root: root.to_str().unwrap().into(),
        pattern: "needle".into(),
        glob: None,
        limit: u32::MAX,
        user: None,
    });
    let mut batches = 0;
    let (m, cut) = search_frames(&mut c, |r| match r {
        Response::GrepMatches { matches } => {
            batches += 1;
            Some(matches)
        }
        _ => None,
    })
    .unwrap();
    assert_eq!((m.len(), cut), (2000, None));
    assert!(batches > 100, "{batches} batches");
    assert!(m.iter().enumerate().all(|(i, m)| m.line == i as u64 + 1));
    c.send(&Request::Ping);
    assert_eq!(c.recv(), Some(Response::Pong));
}

/// A client that leaves mid-search costs the agent nothing lasting, and a search never holds up
/// other connections.
#[test]
fn leaving_mid_search_is_harmless() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let line = format!("needle {}\n", "z".repeat(1000));
    for i in 0..20 {
        std::fs::write(root.join(format!("f{i}")), line.repeat(5000)).unwrap();
    }
    for _ in 0..3 {
        let mut c = agent.conn();
        c.send(&Request::Grep {
            root: root.to_str().unwrap().into(),
            pattern: "needle".into(),
            glob: None,
            limit: u32::MAX,
            user: None,
        });
        assert!(matches!(c.recv(), Some(Response::GrepMatches { .. })));
        let mut other = agent.conn();
        other.send(&Request::Ping);
        assert_eq!(other.recv(), Some(Response::Pong));
        drop(c);
    }
    let mut c = agent.conn();
    let (m, cut) = grep(&mut c, root, "needle", None, 10, None).unwrap();
    assert_eq!((m.len(), cut), (10, Some(SearchCut::Limit)));
}
