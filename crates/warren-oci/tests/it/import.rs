//! Import from OCI layout directories and `docker save` tarballs.

use std::path::Path;

use serde_json::json;
use warren_oci::{Digest, OciError, UnpackLimits};

use crate::common::{Fixture, LayerBuilder, TAR, TAR_GZ, names};

fn config_json(user: &str) -> Vec<u8> {
    json!({
        "architecture": "amd64", "os": "linux",
        "config": { "User": user, "WorkingDir": "/srv", "Env": ["PATH=/usr/bin", "MODE=test"],
                    "Cmd": ["/bin/app"] },
        "rootfs": { "type": "layers", "diff_ids": [] }
    })
    .to_string()
    .into_bytes()
}

fn write_blob(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let d = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    json!({ "digest": d.as_str(), "size": bytes.len() })
}

fn with_type(mut d: serde_json::Value, media_type: &str) -> serde_json::Value {
    d["mediaType"] = media_type.into();
    d
}

/// Writes an image (config + layers) and returns its manifest descriptor.
fn write_image(dir: &Path, user: &str, layers: &[(Vec<u8>, &str)]) -> serde_json::Value {
    let config = with_type(
        write_blob(dir, &config_json(user)),
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<_> = layers
        .iter()
        .map(|(b, t)| with_type(write_blob(dir, b), t))
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers,
    });
    with_type(
        write_blob(dir, manifest.to_string().as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
    )
}

fn write_layout(dir: &Path, manifests: Vec<serde_json::Value>) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": manifests });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

fn platform(mut d: serde_json::Value, arch: &str) -> serde_json::Value {
    d["platform"] = json!({ "architecture": arch, "os": "linux" });
    d
}

#[test]
fn oci_layout_picks_linux_amd64_and_unpacks() {
    let f = Fixture::new();
    let layout = f.tmp.path().join("outside/layout");
    std::fs::create_dir(&layout).unwrap();
    let arm = write_image(
        &layout,
        "arm",
        &[(LayerBuilder::new().file("arch", b"arm64").tar(), TAR)],
    );
    let l1 = LayerBuilder::new()
        .file("bin/app", b"app")
        .file("arch", b"?")
        .gzip();
    let l2 = LayerBuilder::new().file("arch", b"amd64").tar();
    let amd = write_image(&layout, "1000:1000", &[(l1, TAR_GZ), (l2, TAR)]);
    let mut amd_entry = platform(amd.clone(), "amd64");
    amd_entry["annotations"] = json!({ "org.opencontainers.image.ref.name": "example:1" });
    write_layout(&layout, vec![platform(arm, "arm64"), amd_entry]);

    let image = warren_oci::import(&layout, &f.cache).unwrap();
    assert_eq!(image.reference, "example:1");
    assert_eq!(
        image.manifest_digest.as_str(),
        amd["digest"].as_str().unwrap()
    );
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(image.config.workdir.as_deref(), Some("/srv"));
    assert_eq!(image.config.env[1], ("MODE".into(), "test".into()));
    assert_eq!(image.layers.len(), 2);
    warren_oci::unpack(&image, &f.cache, &f.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(f.read("arch"), b"amd64");
    assert_eq!(f.read("bin/app"), b"app");
}

#[test]
fn oci_layout_with_10000_layers_is_refused_before_reading_blobs() {
    let f = Fixture::new();
    let layout = f.tmp.path().join("outside/layout");
    std::fs::create_dir(&layout).unwrap();
    let config = with_type(
        write_blob(&layout, &config_json("")),
        "application/vnd.oci.image.config.v1+json",
    );
    let fake = json!({ "mediaType": TAR_GZ, "size": 1,
        "digest": format!("sha256:{}", "0".repeat(64)) });
    let manifest = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": vec![fake; 10_000] });
    let desc = with_type(
        write_blob(&layout, manifest.to_string().as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
    );
    write_layout(&layout, vec![desc]);
    let err = warren_oci::import(&layout, &f.cache).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooManyLayers {
                count: 10_000,
                max: 128
            }
        ),
        "{err}"
    );
    assert!(
        names(&f.tmp.path().join("cache/blobs/sha256")).is_empty(),
        "nothing was cached"
    );
}

#[test]
fn oci_layout_blob_with_wrong_content_is_refused() {
    let f = Fixture::new();
    let layout = f.tmp.path().join("outside/layout");
    std::fs::create_dir(&layout).unwrap();
    let layer = LayerBuilder::new().file("a", b"a").tar();
    let desc = write_image(&layout, "", &[(layer.clone(), TAR)]);
    write_layout(&layout, vec![desc]);
    // Tamper with the layer after the manifest was written.
    let path = layout.join("blobs/sha256").join(Digest::of(&layer).hex());
    let mut tampered = layer.clone();
    tampered[600] ^= 1;
    std::fs::write(path, tampered).unwrap();
    let err = warren_oci::import(&layout, &f.cache).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert!(!f.cache.contains(&Digest::of(&layer)));
}

/// A tarball of `files` (path, bytes) plus symlinks (path, target).
fn tarball(path: &Path, files: &[(String, Vec<u8>)], links: &[(&str, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn legacy_docker_save_tarball() {
    let f = Fixture::new();
    let config = config_json("app");
    let config_hex = Digest::of(&config).hex().to_owned();
    let l1 = LayerBuilder::new().file("etc/hostname", b"legacy").tar();
    let l2 = LayerBuilder::new().file("etc/motd", b"hi").tar();
    let manifest = json!([{ "Config": format!("{config_hex}.json"), "RepoTags": ["legacy:latest"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"] }]);
    let tar_path = f.tmp.path().join("outside/save.tar");
    tarball(
        &tar_path,
        &[
            ("manifest.json".into(), manifest.to_string().into_bytes()),
            (format!("{config_hex}.json"), config),
            ("aaa/layer.tar".into(), l1.clone()),
            ("bbb/layer.tar".into(), l2),
        ],
        // Older docker links a repeated layer to its first copy.
        &[("ccc/layer.tar", "../aaa/layer.tar")],
    );
    let image = warren_oci::import(&tar_path, &f.cache).unwrap();
    assert_eq!(image.reference, "legacy:latest");
    assert_eq!(image.config.user.as_deref(), Some("app"));
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.layers[0].digest, Digest::of(&l1));
    assert_eq!(image.layers[2].digest, Digest::of(&l1));
    warren_oci::unpack(&image, &f.cache, &f.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(f.read("etc/hostname"), b"legacy");
    assert_eq!(f.read("etc/motd"), b"hi");
}

#[test]
fn docker_save_tarball_with_oci_layout() {
    let f = Fixture::new();
    // Build a layout directory, then pack it (plus a manifest.json) the way docker 25+ does.
    let layout = f.tmp.path().join("outside/staging");
    std::fs::create_dir(&layout).unwrap();
    let layer = LayerBuilder::new().file("hello", b"oci in tar").gzip();
    let desc = write_image(&layout, "", &[(layer, TAR_GZ)]);
    write_layout(&layout, vec![desc.clone()]);
    let mut files = Vec::new();
    for name in ["oci-layout", "index.json"] {
        files.push((name.to_owned(), std::fs::read(layout.join(name)).unwrap()));
    }
    for blob in names(&layout.join("blobs/sha256")) {
        files.push((
            format!("blobs/sha256/{blob}"),
            std::fs::read(layout.join("blobs/sha256").join(&blob)).unwrap(),
        ));
    }
    files.push(("manifest.json".into(), b"[]".to_vec()));
    let tar_path = f.tmp.path().join("outside/save.tar");
    tarball(&tar_path, &files, &[]);
    std::fs::remove_dir_all(&layout).unwrap();

    let image = warren_oci::import(&tar_path, &f.cache).unwrap();
    assert_eq!(
        image.manifest_digest.as_str(),
        desc["digest"].as_str().unwrap()
    );
    warren_oci::unpack(&image, &f.cache, &f.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(f.read("hello"), b"oci in tar");
}
