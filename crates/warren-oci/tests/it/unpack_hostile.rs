//! Hostile layers: every one tries to write, link or chown outside the destination.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tar::EntryType;
use warren_oci::{LayerError, OciError, UnpackLimits};

use crate::common::{CANARY, Fixture, LayerBuilder, TAR, TAR_GZ, TAR_ZST};

// These tests never name real host paths: every escape attempt aims at the fixture's own
// canaries (`<tmp>/canary`, `<tmp>/outside/canary`), so a broken unpacker damages only them and
// the test fails instead of the host.

#[test]
fn dotdot_and_absolute_paths_land_inside_dest() {
    let f = Fixture::new();
    // `/<tmp>/outside/canary`: the absolute host path of a canary.
    let abs = f.outside().join("canary").to_str().unwrap().to_owned();
    let layer = LayerBuilder::new()
        .file("../canary", b"overwritten?")
        .file("../../../../outside/canary", b"overwritten?")
        .file(&abs, b"abs")
        .file("a/../../b.txt", b"b")
        .dir("../", 0o700)
        .tar();
    f.unpack(&[(layer, TAR)]).unwrap();
    f.assert_outside_intact();
    // Docker's rule: the path is cleaned as if rooted at dest.
    assert_eq!(f.read("canary"), b"overwritten?");
    assert_eq!(f.read("outside/canary"), b"overwritten?");
    assert_eq!(f.read(&abs[1..]), b"abs");
    assert_eq!(f.read("b.txt"), b"b");
    // The root entry does not change dest's own mode.
    assert_eq!(
        f.dest().metadata().unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn symlinks_out_of_root_are_followed_inside_dest() {
    let f = Fixture::new();
    // The `x -> /etc` then `x/passwd` attack, with the test's own outside/ directory standing
    // in for /etc: the image ships a directory at that path, and the write must land there.
    let outside = f.outside().to_str().unwrap().to_owned();
    let outside_rel = &outside[1..];
    let mut lower = LayerBuilder::new();
    let mut prefix = String::new();
    for part in outside_rel.split('/') {
        prefix = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}/{part}")
        };
        lower.dir(&prefix, 0o755);
    }
    let lower = lower
        .dir("usr/lib", 0o755)
        .symlink("x", &outside)
        .symlink("lib", "usr/lib")
        .symlink("up", "..")
        .symlink("deep", "../../../../../../../..")
        .symlink("rootlink", "/")
        .tar();
    let upper = LayerBuilder::new()
        .file("x/canary", b"through x")
        .file("lib/libc.so", b"elf")
        .file("up/canary", b"through up")
        .file(
            &format!("rootlink/{outside_rel}/via-root"),
            b"through rootlink",
        )
        .file(&format!("deep/{outside_rel}/via-deep"), b"through deep")
        .tar();
    f.unpack(&[(lower, TAR), (upper, TAR_GZ)]).unwrap();
    f.assert_outside_intact();
    assert_eq!(f.read(&format!("{outside_rel}/canary")), b"through x");
    assert_eq!(f.read("usr/lib/libc.so"), b"elf");
    assert_eq!(f.read("canary"), b"through up");
    assert_eq!(
        f.read(&format!("{outside_rel}/via-root")),
        b"through rootlink"
    );
    assert_eq!(f.read(&format!("{outside_rel}/via-deep")), b"through deep");
    // The links themselves are kept verbatim for the sandbox.
    assert_eq!(
        std::fs::read_link(f.dest().join("x")).unwrap().to_str(),
        Some(outside.as_str())
    );

    // The same link and write in one layer, with no such directory in the image: resolved
    // inside dest, the link dangles, and the write fails rather than leaving dest.
    let f2 = Fixture::new();
    let target = f2.outside();
    let layer = LayerBuilder::new()
        .symlink("host", target.to_str().unwrap())
        .file("host/canary", b"pwned")
        .tar();
    let res = f2.unpack(&[(layer, TAR)]);
    assert!(
        res.is_err(),
        "write through a dangling in-root symlink must fail: {res:?}"
    );
    f2.assert_outside_intact();
}

#[test]
fn symlink_then_file_replaces_link_not_target() {
    // A later layer writing a file at the symlink's own path replaces the link, it does not
    // write through it.
    let f = Fixture::new();
    let lower = LayerBuilder::new().symlink("canary", "../canary").tar();
    let upper = LayerBuilder::new().file("canary", b"inside").tar();
    f.unpack(&[(lower, TAR), (upper, TAR)]).unwrap();
    f.assert_outside_intact();
    assert!(
        f.dest()
            .join("canary")
            .symlink_metadata()
            .unwrap()
            .is_file()
    );
    assert_eq!(f.read("canary"), b"inside");
}

#[test]
fn hard_links_only_to_files_inside_dest() {
    let good = Fixture::new();
    let layer = LayerBuilder::new()
        .file("a", b"data")
        .hardlink("b", "/a")
        .tar();
    good.unpack(&[(layer, TAR)]).unwrap();
    let (a, b) = (good.dest().join("a"), good.dest().join("b"));
    assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());

    // OUT stands for the absolute path of the fixture's own outside/ directory.
    for target in [
        "../canary",
        "../../../outside/canary",
        "OUT/canary",
        "via/canary",
        "dir",
    ] {
        let f = Fixture::new();
        let abs = f.outside().join("canary");
        let target = target.replace("OUT", f.outside().to_str().unwrap());
        let layer = LayerBuilder::new()
            .dir("dir", 0o755)
            .symlink("via", abs.parent().unwrap().to_str().unwrap())
            .hardlink("evil", &target)
            .tar();
        let err = f.unpack(&[(layer, TAR)]).unwrap_err();
        assert!(
            matches!(
                &err,
                OciError::Layer {
                    reason: LayerError::BadHardLink { .. },
                    ..
                }
            ),
            "hard link to {target}: {err}"
        );
        assert!(
            err.to_string().contains("evil"),
            "error names the entry: {err}"
        );
        f.assert_outside_intact();
        assert_eq!(
            abs.metadata().unwrap().nlink(),
            1,
            "host file gained a link ({target})"
        );
    }
}

#[test]
fn devices_skipped_setuid_stripped_xattrs_ignored() {
    let f = Fixture::new();
    let layer = LayerBuilder::new()
        .node("dev/null", EntryType::Char)
        .node("dev/sda", EntryType::Block)
        .node("fifo", EntryType::Fifo)
        .file_with("bin/su", b"elf", 0o4755, 0, 0)
        .file_with("bin/wall", b"elf", 0o2755, 0, 5)
        .dir("tmp", 0o1777)
        .file_with_xattr("bin/ping", "security.capability", b"\x01\x00\x00\x02")
        .file_with_xattr("bin/tagged", "user.tag", b"v")
        .tar();
    let stats = f.unpack(&[(layer, TAR)]).unwrap();
    assert_eq!(stats.skipped, 3);
    assert!(!f.dest().join("dev/null").exists());
    assert!(!f.dest().join("dev/sda").exists());
    assert!(!f.dest().join("fifo").exists());
    let mode = |p: &str| f.dest().join(p).metadata().unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/su"), 0o755);
    assert_eq!(mode("bin/wall"), 0o755);
    assert_eq!(mode("tmp"), 0o1777, "sticky bit is kept");
    for p in ["bin/ping", "bin/tagged"] {
        let path = f.dest().join(p);
        let mut buf = [0u8; 64];
        let cap = rustix::fs::lgetxattr(&path, "security.capability", &mut buf);
        assert_eq!(
            cap,
            Err(rustix::io::Errno::NODATA),
            "{p} has a capability xattr"
        );
        let n = rustix::fs::llistxattr(&path, &mut buf).unwrap();
        assert_eq!(n, 0, "{p} has xattrs");
    }
    f.assert_outside_intact();
}

#[test]
fn ownership_modes_and_times_never_follow_symlinks() {
    let f = Fixture::new();
    let host_file = f.outside().join("canary");
    let before = host_file.metadata().unwrap();
    let layer = LayerBuilder::new()
        .file_with("owned", b"x", 0o640, 1000, 1001)
        .file_with("big", b"x", 0o600, 100_000, 4_000_000_000)
        .symlink_owned("link", host_file.to_str().unwrap(), 4242)
        .symlink_owned("rel", "../outside/canary", 4343)
        .tar();
    f.unpack(&[(layer, TAR)]).unwrap();
    let m = f.dest().join("owned").metadata().unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(m.mtime(), 1_600_000_000);
    let m = f.dest().join("big").metadata().unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (65534, 65534),
        "ids above 65535 map to 65534"
    );
    let l = f.dest().join("link").symlink_metadata().unwrap();
    assert_eq!((l.uid(), l.gid()), (4242, 4242));
    assert_eq!(l.mtime(), 1_600_000_000);
    let after = host_file.metadata().unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode())
    );
    assert_eq!(after.mtime(), before.mtime());
    f.assert_outside_intact();
}

#[test]
fn gzip_bomb_stops_at_the_byte_limit() {
    let f = Fixture::new();
    // 64 MiB of zeros in one file compresses to a few dozen KiB.
    let zeros = vec![0u8; 64 << 20];
    let bomb = LayerBuilder::new().file("zeros", &zeros).gzip();
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        ..UnpackLimits::default()
    };
    let err = f.unpack_with(
        &[(bomb, "application/vnd.oci.image.layer.v1.tar+gzip")],
        &limits,
    );
    let err = err.unwrap_err();
    assert!(
        matches!(
            &err,
            OciError::Layer {
                reason: LayerError::TooManyBytes { .. },
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("sha256:") && msg.contains("zeros") && msg.contains("limit"),
        "{msg}"
    );
    // It stopped while streaming: at most the budget reached the disk.
    let written = f
        .dest()
        .join("zeros")
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= 1 << 20, "{written} bytes written");
    f.assert_outside_intact();

    // zstd the same way, with a budget spread over two layers.
    let f = Fixture::new();
    let small = LayerBuilder::new().file("a", &[1u8; 600 << 10]).zstd();
    let bomb = LayerBuilder::new().file("zeros", &zeros).zstd();
    let err = f
        .unpack_with(&[(small, TAR_ZST), (bomb, TAR_ZST)], &limits)
        .unwrap_err();
    assert!(err.to_string().contains("decompression bomb"), "{err}");
    assert_eq!(
        CANARY,
        &std::fs::read(f.tmp.path().join("canary")).unwrap()[..]
    );
}

#[test]
fn entry_count_and_path_length_limits() {
    let f = Fixture::new();
    let mut b = LayerBuilder::new();
    for i in 0..10 {
        b.file(&format!("f{i}"), b"x");
    }
    let limits = UnpackLimits {
        max_entries: 5,
        ..UnpackLimits::default()
    };
    let err = f.unpack_with(&[(b.tar(), TAR)], &limits).unwrap_err();
    assert!(matches!(
        &err,
        OciError::Layer {
            reason: LayerError::TooManyEntries { .. },
            ..
        }
    ));

    let f = Fixture::new();
    let limits = UnpackLimits {
        max_path_len: 32,
        ..UnpackLimits::default()
    };
    let long = "d/".repeat(20) + "f";
    let layer = LayerBuilder::new().file(&long, b"x").tar();
    let err = f.unpack_with(&[(layer.clone(), TAR)], &limits).unwrap_err();
    assert!(matches!(
        &err,
        OciError::Layer {
            reason: LayerError::PathTooLong { .. },
            ..
        }
    ));
    let link = LayerBuilder::new().symlink("l", &long).tar();
    let err = f.unpack_with(&[(link, TAR)], &limits).unwrap_err();
    assert!(matches!(
        &err,
        OciError::Layer {
            reason: LayerError::PathTooLong { .. },
            ..
        }
    ));
    f.unpack(&[(layer, TAR)]).unwrap();
}
