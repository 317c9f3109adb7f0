use super::*;
use crate::client::test_server::TestServer;

#[test]
fn cp_locations() {
    assert_eq!(
        parse_location("box:/app/x.txt"),
        Location::Remote {
            sandbox: "box".into(),
            path: "/app/x.txt".into()
        }
    );
    assert_eq!(
        parse_location("box:rel"),
        Location::Remote {
            sandbox: "box".into(),
            path: "rel".into()
        }
    );
    assert_eq!(parse_location("./a:b"), Location::Local("./a:b".into()));
    assert_eq!(
        parse_location("/tmp/a:b"),
        Location::Local("/tmp/a:b".into())
    );
    assert_eq!(parse_location(":x"), Location::Local(":x".into()));
    assert_eq!(
        parse_location("file.txt"),
        Location::Local("file.txt".into())
    );
    assert_eq!(parse_location("-"), Location::Local("-".into()));
}

#[test]
fn cp_targets_into_directories() {
    assert_eq!(upload_target("dir/a.txt", "/tmp/").unwrap(), "/tmp/a.txt");
    assert_eq!(upload_target("a.txt", "/tmp/b.txt").unwrap(), "/tmp/b.txt");
    assert_eq!(upload_target("a.txt", "").unwrap(), "a.txt");
    assert!(upload_target("-", "/tmp/").is_err());
    assert_eq!(upload_target("-", "/tmp/x").unwrap(), "/tmp/x");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        download_target("/etc/hosts", d).unwrap(),
        dir.path().join("hosts")
    );
    assert_eq!(
        download_target("/etc/hosts", "out/").unwrap(),
        PathBuf::from("out/hosts")
    );
    assert_eq!(
        download_target("/etc/hosts", "copy").unwrap(),
        PathBuf::from("copy")
    );
    assert!(download_target("/", d).is_err());
}

#[tokio::test]
async fn files_round_trip_byte_exact() {
    let srv = TestServer::start().await;
    srv.sandbox("box").await;
    let c = srv.client();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.bin");
    // Bigger than any one read or chunk, so the streaming paths loop; every byte value, so
    // nothing is decoded as text on the way.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let src = src.to_str().unwrap();

    upload(&c, src, "box", "/app/").await.unwrap();
    upload(&c, src, "box", "/app/renamed.bin").await.unwrap();

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    download(&c, "box", "/app/renamed.bin", out.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("renamed.bin")).unwrap(), data);
    let copy = out.join("copy.bin");
    download(&c, "box", "/app/data.bin", copy.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), data);

    let e = download(&c, "box", "/nope", out.join("x").to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "failed to download box:/nope: File '/nope' not found"
    );
    // Nothing half-written is left behind.
    let mut left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["copy.bin", "renamed.bin"]);

    let e = upload(&c, dir.path().to_str().unwrap(), "box", "/app/")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    let e = upload(&c, src, "missing", "/app/").await.unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'missing' not found");
}
