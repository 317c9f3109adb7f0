//! File transfer, stat and listing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use warren_proto::{ErrorKind, FileKind, MAX_CHUNK_LEN, Request, Response};

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
