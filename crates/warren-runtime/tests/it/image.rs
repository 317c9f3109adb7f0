//! The default image: what a Python or Node user expects in it, and a rebuild that replaces an
//! image without breaking sandboxes made from the old one.

use warren_runtime::Storage;
use warren_runtime::image::{default_image_is_current, default_image_recipe};
use warren_runtime::storage::TmpLayout;
use warren_types::{ImageRef, SandboxId};

use crate::support::{TestSandbox, driver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_image_has_node_npm_and_uv() {
    let sb = TestSandbox::new().await;
    for tool in ["node", "npm", "uv", "uvx"] {
        let out = sb.sh(&format!("{tool} --version")).await;
        assert_eq!(out.code(), 0, "{tool} --version: {}", out.err());
        assert!(
            out.out().trim().chars().any(|c| c.is_ascii_digit()),
            "{tool} --version printed {:?}",
            out.out()
        );
    }
    let out = sb
        .sh("command -v uv uvx; stat -c '%a %u %g' /usr/local/bin/uv")
        .await;
    assert_eq!(
        out.out(),
        "/usr/local/bin/uv\n/usr/local/bin/uvx\n755 0 0\n",
        "{}",
        out.err()
    );
    let out = sb.sh("node -e 'console.log(6 * 7)'").await;
    assert_eq!(
        (out.out().as_str(), out.code()),
        ("42\n", 0),
        "{}",
        out.err()
    );
    sb.destroy().await;
}

/// A minimal pure-Python wheel, written by the sandbox's own python3 into /tmp/wheels.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, os, zipfile
files = {
    "warren_probe/__init__.py": "ANSWER = 42\n",
    "warren_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: warren-probe\nVersion: 1.0\n",
    "warren_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(text.encode())}")
record.append("warren_probe-1.0.dist-info/RECORD,,")
files["warren_probe-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
os.makedirs("/tmp/wheels", exist_ok=True)
with zipfile.ZipFile("/tmp/wheels/warren_probe-1.0-py3-none-any.whl", "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_installs_as_root_without_breaking_system_packages() {
    let sb = TestSandbox::new().await;
    let out = sb.sh("ls /usr/lib/python3*/EXTERNALLY-MANAGED").await;
    assert_ne!(out.code(), 0, "the PEP 668 marker is there: {}", out.out());
    let out = sb.python(MAKE_WHEEL).await;
    assert_eq!(out.code(), 0, "make the wheel: {}", out.err());
    // No network in a sandbox yet: the wheel comes from a local dir.
    let out = sb
        .sh("python3 -m pip install --no-index --find-links /tmp/wheels warren-probe")
        .await;
    assert_eq!(out.code(), 0, "pip install: {}{}", out.out(), out.err());
    let out = sb
        .python("import warren_probe; print(warren_probe.ANSWER)")
        .await;
    assert_eq!(
        (out.out().as_str(), out.code()),
        ("42\n", 0),
        "{}",
        out.err()
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_image_has_apt_sources_certificates_and_its_recipe() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null")
        .await;
    assert!(out.out().contains(" bookworm main"), "{}", out.out());
    let out = sb
        .sh("test -s /etc/ssl/certs/ca-certificates.crt && command -v apt-get")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let out = sb.sh("cat /etc/warren-image").await;
    assert_eq!(out.out(), default_image_recipe());
    assert!(default_image_is_current(driver().storage()));
    sb.destroy().await;
}

/// Publishes a one-file image named `image` whose `/version` says `version`.
fn publish(image: &ImageRef, version: &str) {
    let storage = driver().storage();
    let build = storage.begin_image_build().unwrap();
    std::fs::write(build.join("version"), version).unwrap();
    std::fs::create_dir(build.join("tmp")).unwrap();
    storage.commit_image_build(&build, image).unwrap();
    assert!(!build.exists(), "the build's name is free again");
}

#[test]
fn rebuilt_image_replaces_the_old_one_and_its_sandboxes_keep_their_files() {
    let storage = driver().storage();
    let image: ImageRef = format!("test/replace:{}", std::process::id())
        .parse()
        .unwrap();
    assert_eq!(storage.image_generation(&image), 0, "no image yet");
    publish(&image, "old");
    let first = storage.image_generation(&image);
    assert_ne!(first, 0);
    let id = SandboxId::generate();
    let rootfs = storage
        .create_rootfs(&id, &image, 1 << 30, TmpLayout::Beside)
        .unwrap();

    publish(&image, "new");
    // Read off the disk: a warm pool sees the rebuild whichever process made it.
    let second = storage.image_generation(&image);
    assert!(second != first && second != 0, "{first} then {second}");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(storage.image_path(&image).join("version")), "new");
    assert_eq!(read(rootfs.join("version")), "old");
    let id2 = SandboxId::generate();
    let rootfs2 = storage
        .create_rootfs(&id2, &image, 1 << 30, TmpLayout::Beside)
        .unwrap();
    assert_eq!(read(rootfs2.join("version")), "new");

    // Each build of the image has one `rw` template, made at its first create; the rebuild's
    // replaced the first build's, and removing the image removes it.
    let templates = || -> Vec<String> {
        let prefix = format!("{}.", image.storage_name());
        std::fs::read_dir(storage.root().join("templates"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    let made = templates();
    assert_eq!(made.len(), 1, "{made:?}");
    let id3 = SandboxId::generate();
    storage
        .create_rootfs(&id3, &image, 1 << 30, TmpLayout::Beside)
        .unwrap();
    assert_eq!(templates(), made, "the template is made once per build");
    assert!(storage.tmp_path(&id3).is_dir());

    storage.destroy_rootfs(&id).unwrap();
    storage.destroy_rootfs(&id2).unwrap();
    storage.destroy_rootfs(&id3).unwrap();
    storage.remove_image(&image).unwrap();
    assert_eq!(templates(), Vec::<String>::new());
    assert_eq!(
        storage.image_generation(&image),
        0,
        "the name holds no image again"
    );
}

#[test]
fn an_image_whose_tmp_is_a_link_gets_its_tmp_in_the_rootfs() {
    let storage = driver().storage();
    let image: ImageRef = format!("test/tmplink:{}", std::process::id())
        .parse()
        .unwrap();
    let build = storage.begin_image_build().unwrap();
    std::fs::create_dir(build.join("var")).unwrap();
    std::os::unix::fs::symlink("/var", build.join("tmp")).unwrap();
    storage.commit_image_build(&build, &image).unwrap();
    let id = SandboxId::generate();
    let rootfs = storage
        .create_rootfs(&id, &image, 1 << 30, TmpLayout::Beside)
        .unwrap();
    assert!(
        warren_btrfs::is_subvolume(&rootfs.join("tmp")),
        "a nested /tmp"
    );
    assert!(!storage.rw_path(&id).exists());
    storage.destroy_rootfs(&id).unwrap();
    storage.remove_image(&image).unwrap();
}
