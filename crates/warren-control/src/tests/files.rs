//! Files: upload and read, errors as the agent reports them, path resolution, glob and grep.

use super::support::harness;
use crate::{
    ConfigError, ControlError, CreateSandbox, ErrorKind, FileKind, FileOp, Glob, Grep, RunConfig,
    SearchHit,
};

async fn put(h: &super::support::Harness, id: &str, path: &str, chunks: &[&[u8]]) -> String {
    let up = h.unfinished_upload(id, path, chunks).await;
    let abs = up.path.clone();
    h.control.finish_upload(&h.admin, up).await.unwrap();
    abs
}

async fn read_all(body: &mut crate::FileBody) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.chunks.recv().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn an_upload_is_read_back_whole_and_in_ranges() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let abs = put(
        &h,
        &rec.id,
        "/data/big.bin",
        &[&big[..70_000], &big[70_000..]],
    )
    .await;
    assert_eq!(abs, "/data/big.bin");
    assert_eq!(
        h.fake.file(&rec.runtime_id, "/data/big.bin"),
        Some(big.clone())
    );

    let file = h
        .control
        .open_file(&h.admin, &rec.id, "/data/big.bin")
        .await
        .unwrap();
    assert_eq!(file.path, "/data/big.bin");
    assert_eq!(file.info.kind, FileKind::File);
    assert_eq!(file.info.size, big.len() as u64);
    let mut body = h
        .control
        .read_file(&h.admin, file, 0, big.len() as u64)
        .await
        .unwrap();
    assert!(read_all(&mut body).await == big, "the bytes differ");

    let file = h
        .control
        .open_file(&h.admin, &rec.id, "/data/big.bin")
        .await
        .unwrap();
    let mut body = h.control.read_file(&h.admin, file, 1000, 10).await.unwrap();
    assert_eq!(read_all(&mut body).await, &big[1000..1010]);

    assert_eq!(h.audited("file.write").len(), 1);
    let reads = h.audited("file.read");
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].detail.as_deref(), Some("/data/big.bin"));
}

#[tokio::test]
async fn an_unfinished_upload_changes_nothing() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    put(&h, &rec.id, "/etc/motd", &[b"old"]).await;
    let up = h.unfinished_upload(&rec.id, "/etc/motd", &[b"new"]).await;
    drop(up);
    tokio::task::yield_now().await;
    assert_eq!(
        h.fake.file(&rec.runtime_id, "/etc/motd"),
        Some(b"old".to_vec())
    );
}

#[tokio::test]
async fn missing_files_and_directories_are_file_errors_with_the_kind() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    put(&h, &rec.id, "/data/a.txt", &[b"a"]).await;
    let e = h
        .control
        .open_file(&h.admin, &rec.id, "/nope")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ControlError::File {
                op: FileOp::Read,
                kind: ErrorKind::NotFound,
                path,
                ..
            } if path == "/nope"
        ),
        "{e:?}"
    );
    let e = h
        .control
        .open_file(&h.admin, &rec.id, "/data")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ControlError::File {
                op: FileOp::Read,
                kind: ErrorKind::IsADirectory,
                ..
            }
        ),
        "{e:?}"
    );
    let e = h
        .control
        .upload(&h.admin, &rec.id, "/data")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ControlError::File {
                op: FileOp::Write,
                kind: ErrorKind::IsADirectory,
                ..
            }
        ),
        "{e:?}"
    );
    // A file error is the tenant's, not the sandbox's: it stays ready.
    assert_eq!(h.record(&rec.id).status, warren_types::SandboxStatus::Ready);
}

#[tokio::test]
async fn relative_paths_resolve_against_the_work_dir_or_root() {
    let h = harness().await;
    let plain = h.sandbox(&h.admin, "plain").await;
    let abs = put(&h, &plain.id, "notes.txt", &[b"x"]).await;
    assert_eq!(abs, "/root/notes.txt");
    assert_eq!(
        h.fake.file(&plain.runtime_id, "/root/notes.txt"),
        Some(b"x".to_vec())
    );

    let srv = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("srv".into()),
                run_config: Some(RunConfig {
                    work_dir: Some("/srv/app/".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    let abs = put(&h, &srv.id, "sub/conf.toml", &[b"y"]).await;
    assert_eq!(abs, "/srv/app/sub/conf.toml");
    let file = h
        .control
        .open_file(&h.admin, &srv.id, "sub/conf.toml")
        .await
        .unwrap();
    assert_eq!(file.path, "/srv/app/sub/conf.toml");
    let hits = h
        .control
        .glob(
            &h.admin,
            &srv.id,
            Glob {
                path: Some("sub".into()),
                pattern: "*.toml".into(),
                limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.hits.len(), 1, "{hits:?}");
}

#[tokio::test]
async fn empty_or_nul_paths_and_patterns_are_invalid() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let invalid = |e: ControlError| {
        assert!(
            matches!(e, ControlError::Config(ConfigError::Invalid(_))),
            "{e:?}"
        );
    };
    invalid(
        h.control
            .open_file(&h.admin, &rec.id, "")
            .await
            .unwrap_err(),
    );
    invalid(
        h.control
            .open_file(&h.admin, &rec.id, "a\0b")
            .await
            .unwrap_err(),
    );
    invalid(h.control.upload(&h.admin, &rec.id, "").await.unwrap_err());
    invalid(
        h.control
            .glob(&h.admin, &rec.id, Glob::default())
            .await
            .unwrap_err(),
    );
    invalid(
        h.control
            .grep(&h.admin, &rec.id, Grep::default())
            .await
            .unwrap_err(),
    );
}

#[tokio::test]
async fn glob_finds_paths_and_respects_its_limit() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    for p in ["/w/a.rs", "/w/b.rs", "/w/sub/c.rs", "/w/d.txt", "/x/e.rs"] {
        put(&h, &rec.id, p, &[b"fn main() {}\n"]).await;
    }
    let all = h
        .control
        .glob(
            &h.admin,
            &rec.id,
            Glob {
                path: Some("/w".into()),
                pattern: "**/*.rs".into(),
                limit: None,
            },
        )
        .await
        .unwrap();
    let paths: Vec<&str> = all
        .hits
        .iter()
        .map(|hit| match hit {
            SearchHit::Path { path, .. } => path.as_str(),
            SearchHit::Line { .. } => panic!("a glob returns paths"),
        })
        .collect();
    assert_eq!(paths, ["/w/a.rs", "/w/b.rs", "/w/sub/c.rs"]);
    assert_eq!(all.truncated, None);
    let cut = h
        .control
        .glob(
            &h.admin,
            &rec.id,
            Glob {
                path: Some("/w".into()),
                pattern: "*.rs".into(),
                limit: Some(2),
            },
        )
        .await
        .unwrap();
    assert_eq!(cut.hits.len(), 2);
    assert_eq!(cut.truncated.as_deref(), Some("limit"));
}

#[tokio::test]
async fn grep_finds_lines_and_respects_its_limit() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    put(
        &h,
        &rec.id,
        "/src/a.py",
        &[b"import os\nTODO one\nx = 1\nTODO two\n"],
    )
    .await;
    put(&h, &rec.id, "/src/b.py", &[b"TODO three\n"]).await;
    let all = h
        .control
        .grep(
            &h.admin,
            &rec.id,
            Grep {
                path: Some("/src".into()),
                pattern: "TODO".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<(&str, u64, &str)> = all
        .hits
        .iter()
        .map(|hit| match hit {
            SearchHit::Line {
                path, line, text, ..
            } => (path.as_str(), *line, text.as_str()),
            SearchHit::Path { .. } => panic!("a grep returns lines"),
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("/src/a.py", 2, "TODO one"),
            ("/src/a.py", 4, "TODO two"),
            ("/src/b.py", 1, "TODO three"),
        ]
    );
    assert_eq!(all.truncated, None);
    let cut = h
        .control
        .grep(
            &h.admin,
            &rec.id,
            Grep {
                path: Some("/src".into()),
                pattern: "TODO".into(),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cut.hits.len(), 1);
    assert_eq!(cut.truncated.as_deref(), Some("limit"));
}

#[tokio::test]
async fn file_operations_wake_a_stopped_sandbox_and_its_files_survive() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    put(&h, &rec.id, "/keep.txt", &[b"kept"]).await;
    h.control.stop(&h.admin, &rec.id).await.unwrap();
    let file = h
        .control
        .open_file(&h.admin, &rec.id, "/keep.txt")
        .await
        .unwrap();
    let mut body = h.control.read_file(&h.admin, file, 0, 100).await.unwrap();
    assert_eq!(read_all(&mut body).await, b"kept");
    assert_eq!(h.calls("start", &rec), 1);
}
