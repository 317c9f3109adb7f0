//! Ordinary layer semantics: compression, whiteouts, replacement, directory metadata.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::common::{Fixture, LayerBuilder, TAR, TAR_GZ, TAR_ZST, names};

#[test]
fn plain_gzip_and_zstd_layers_apply_in_order() {
    let f = Fixture::new();
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os", b"one")
        .file("a", b"a")
        .tar();
    let l2 = LayerBuilder::new()
        .file("etc/os", b"two")
        .file("b", b"b")
        .gzip();
    let l3 = LayerBuilder::new()
        .file("etc/os", b"three")
        .file("c", b"c")
        .zstd();
    let stats = f.unpack(&[(l1, TAR), (l2, TAR_GZ), (l3, TAR_ZST)]).unwrap();
    assert_eq!(stats.layers, 3);
    assert_eq!(stats.entries, 7);
    assert_eq!(f.read("etc/os"), b"three");
    assert_eq!(names(&f.dest()), ["a", "b", "c", "etc"]);
    f.assert_outside_intact();
}

#[test]
fn whiteouts_remove_lower_files_and_directories() {
    let f = Fixture::new();
    let lower = LayerBuilder::new()
        .file("a/1", b"1")
        .file("a/2", b"2")
        .file("b/x/deep", b"x")
        .symlink("s", "/a")
        .tar();
    let upper = LayerBuilder::new()
        .file("a/.wh.1", b"")
        .file(".wh.b", b"")
        // Removes the link, not the directory it points to.
        .file(".wh.s", b"")
        // Odd whiteouts naming the directory itself or its parent do nothing.
        .file("a/.wh..", b"")
        .file("a/.wh...", b"")
        .tar();
    f.unpack(&[(lower, TAR), (upper, TAR)]).unwrap();
    assert_eq!(names(&f.dest()), ["a"]);
    assert_eq!(names(&f.dest().join("a")), ["2"]);
    f.assert_outside_intact();
}

#[test]
fn opaque_whiteout_empties_lower_content_only() {
    let f = Fixture::new();
    let lower = LayerBuilder::new()
        .file("c/old", b"old")
        .file("c/sub/old", b"old")
        .file("keep/x", b"x")
        .tar();
    // The new entries come both before and after the marker, as tar order allows.
    let upper = LayerBuilder::new()
        .file("c/before", b"new")
        .file("c/sub/new", b"new")
        .file("c/.wh..wh..opq", b"")
        .file("c/after", b"new")
        .tar();
    f.unpack(&[(lower, TAR), (upper, TAR)]).unwrap();
    assert_eq!(names(&f.dest().join("c")), ["after", "before", "sub"]);
    assert_eq!(names(&f.dest().join("c/sub")), ["new"]);
    assert_eq!(names(&f.dest().join("keep")), ["x"]);
    f.assert_outside_intact();
}

#[test]
fn replacement_rules_and_directory_metadata() {
    let f = Fixture::new();
    let lower = LayerBuilder::new()
        .dir("d", 0o700)
        .file("d/keep", b"k")
        .dir("was_dir", 0o755)
        .file("was_dir/x", b"x")
        .file("was_file", b"f")
        .tar();
    let upper = LayerBuilder::new()
        // A directory over a directory keeps its content, takes the new mode.
        .dir("d", 0o751)
        .file("was_dir", b"now a file")
        .dir("was_file", 0o755)
        .tar();
    f.unpack(&[(lower, TAR), (upper, TAR)]).unwrap();
    let d = f.dest().join("d").metadata().unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o751);
    // Directory mtimes are set after the layer's writes into them.
    assert_eq!(d.mtime(), 1_600_000_000);
    assert_eq!(f.read("d/keep"), b"k");
    assert_eq!(f.read("was_dir"), b"now a file");
    assert!(f.dest().join("was_file").is_dir());
    // Parents a layer leaves out are created 0755 root.
    let f = Fixture::new();
    let layer = LayerBuilder::new().file("p/q/r", b"r").tar();
    f.unpack(&[(layer, TAR)]).unwrap();
    let p = f.dest().join("p").metadata().unwrap();
    assert_eq!((p.permissions().mode() & 0o7777, p.uid()), (0o755, 0));
}

#[test]
fn whiteout_of_a_very_deep_tree() {
    // Each entry's path stays under the 4096-byte limit, but symlinked parents let every entry
    // extend the tree: 3 steps of 1900 levels give a tree 5700 levels deep. Removing it must
    // neither recurse (stack overflow on a 2 MiB test thread) nor hold an fd per level.
    let f = Fixture::new();
    let levels = "a/".repeat(1900);
    let mut b = tar::Builder::new(Vec::new());
    let mut append = |kind: tar::EntryType, path: &str, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match link {
            Some(target) => b.append_link(&mut h, path, target).unwrap(),
            None => b.append_data(&mut h, path, &[][..]).unwrap(),
        }
    };
    append(tar::EntryType::Directory, &format!("d/{levels}"), None);
    let mut bottom = format!("d/{levels}");
    for step in 0..2 {
        append(
            tar::EntryType::Symlink,
            &format!("s{step}"),
            Some(&format!("/{bottom}")),
        );
        append(
            tar::EntryType::Directory,
            &format!("s{step}/{levels}"),
            None,
        );
        bottom = format!("s{step}/{levels}");
    }
    append(tar::EntryType::Regular, &format!("{bottom}/leaf"), None);
    let lower = b.into_inner().unwrap();
    let upper = LayerBuilder::new().file(".wh.d", b"").tar();
    let limits = warren_oci::UnpackLimits::default();
    f.unpack_with(&[(lower, TAR)], &limits).unwrap();
    let mut depth = 0;
    let mut p = f.dest().join("d");
    while let Ok(mut it) = std::fs::read_dir(&p) {
        match it.next() {
            Some(e) => p = e.unwrap().path(),
            None => break,
        }
        depth += 1;
        if depth > 2000 {
            break;
        }
    }
    assert!(
        depth > 1900,
        "tree was built ({depth} levels seen through plain paths)"
    );
    let image = f.image(&[(upper, TAR)]);
    warren_oci::unpack(&image, &f.cache, &f.dest(), &limits).unwrap();
    assert_eq!(names(&f.dest()), ["s0", "s1"]);
    f.assert_outside_intact();
}
