//! Pulls from a real registry: Debian's `docker-registry` (the CNCF distribution registry),
//! started on a free loopback port with a temporary storage directory, and killed at the end.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;
use serde_json::json;
use warren_oci::{BlobCache, Credentials, Digest, OciError, Phase, Progress, UnpackLimits};

use crate::common::{Fixture, LayerBuilder, TAR, TAR_GZ, names};

const REGISTRY_BIN: &str = "docker-registry";

/// A running registry; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// oci-client's own test credentials: `testuser` / `testpassword`, bcrypt as the registry wants.
const HTPASSWD: &str = "testuser:$2y$05$8/q2bfRcX74EuxGf0qOcSuhWDQJXrgWiy6Fi73/JM2tKC66qSrLve";

impl Registry {
    fn start() -> Registry {
        Registry::start_with(false)
    }

    /// Starts a registry; with `auth`, it requires HTTP basic auth from [`HTPASSWD`].
    fn start_with(auth: bool) -> Registry {
        let bin = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(REGISTRY_BIN))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "`{REGISTRY_BIN}` is not installed, so the registry pull test cannot run: \
                     install Debian's docker-registry package (scripts/deps.sh does)"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        // Ask the kernel for a free port, then hand it to the registry.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).unwrap();
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg._dir.path().join("registry.log"));
                panic!(
                    "docker-registry exited ({status}): {}",
                    log.unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes blobs and raw manifests with oci-client over plain HTTP.
struct Pusher {
    client: Client,
    host: String,
}

impl Pusher {
    fn new(reg: &Registry) -> Pusher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![reg.host()]),
            ..ClientConfig::default()
        });
        Pusher {
            client,
            host: reg.host(),
        }
    }

    /// Makes later pushes send `testuser`'s credentials.
    async fn login(&self) {
        let auth = RegistryAuth::Basic("testuser".into(), "testpassword".into());
        self.client.store_auth_if_needed(&self.host, &auth).await;
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), "test/app".into(), tag.into())
    }

    async fn blob(&self, bytes: &[u8], media_type: &str) -> serde_json::Value {
        let digest = Digest::of(bytes);
        self.client
            .push_blob(&self.reference("x"), bytes.to_vec(), digest.as_str())
            .await
            .unwrap();
        json!({ "mediaType": media_type, "digest": digest.as_str(), "size": bytes.len() })
    }

    async fn manifest(
        &self,
        tag: &str,
        body: &serde_json::Value,
        media_type: &str,
    ) -> serde_json::Value {
        let bytes = body.to_string().into_bytes();
        let digest = Digest::of(&bytes);
        let content_type = HeaderValue::from_str(media_type).unwrap();
        self.client
            .push_manifest_raw(&self.reference(tag), bytes.clone(), content_type)
            .await
            .unwrap();
        json!({ "mediaType": media_type, "digest": digest.as_str(), "size": bytes.len() })
    }

    async fn image(
        &self,
        tag: &str,
        config: serde_json::Value,
        layers: &[(Vec<u8>, &str)],
    ) -> serde_json::Value {
        let config = self
            .blob(
                config.to_string().as_bytes(),
                "application/vnd.oci.image.config.v1+json",
            )
            .await;
        let mut descs = Vec::new();
        for (bytes, media_type) in layers {
            descs.push(self.blob(bytes, media_type).await);
        }
        let manifest = json!({ "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": descs });
        self.manifest(tag, &manifest, "application/vnd.oci.image.manifest.v1+json")
            .await
    }
}

fn config(user: &str) -> serde_json::Value {
    json!({ "architecture": "amd64", "os": "linux",
        "config": { "User": user, "WorkingDir": "/work", "Env": ["PATH=/usr/local/bin:/usr/bin", "GREETING=hello world"],
                    "Entrypoint": ["/bin/app"], "Cmd": ["--serve"] },
        "rootfs": { "type": "layers", "diff_ids": [] } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pull_multi_arch_and_unpack() {
    let reg = Registry::start();
    let push = Pusher::new(&reg);
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"from-registry")
        .file("bin/app", b"#!/bin/sh\necho hi\n")
        .file("tmp/scratch", b"x")
        .gzip();
    let l2 = LayerBuilder::new()
        .file("tmp/.wh.scratch", b"")
        .dir("work", 0o755)
        .tar();
    let amd = push
        .image(
            "amd",
            config("1000:1000"),
            &[(l1.clone(), TAR_GZ), (l2, TAR)],
        )
        .await;
    let arm_layer = LayerBuilder::new().file("etc/hostname", b"arm").gzip();
    let arm = push
        .image("arm", config("arm"), &[(arm_layer, TAR_GZ)])
        .await;
    let mut entries = Vec::new();
    for (desc, arch) in [(arm, "arm64"), (amd.clone(), "amd64")] {
        let mut d = desc;
        d["platform"] = json!({ "architecture": arch, "os": "linux" });
        entries.push(d);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries });
    push.manifest("1", &index, "application/vnd.oci.image.index.v1+json")
        .await;

    let f = Fixture::new();
    let events = std::sync::Mutex::new(Vec::<Progress>::new());
    let record = |p: Progress| events.lock().unwrap().push(p);
    let reference = format!("{}/test/app:1", reg.host());
    let image = warren_oci::pull(&reference, None, &f.cache, &[], &record)
        .await
        .unwrap();
    assert_eq!(
        image.manifest_digest.as_str(),
        amd["digest"].as_str().unwrap()
    );
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(image.config.workdir.as_deref(), Some("/work"));
    assert!(
        image
            .config
            .env
            .contains(&("GREETING".into(), "hello world".into()))
    );
    assert_eq!(image.config.entrypoint, ["/bin/app"]);
    assert_eq!(image.config.cmd, ["--serve"]);
    let done: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.phase == Phase::Done)
        .cloned()
        .collect();
    assert_eq!(done.len(), 3, "config and two layers downloaded: {done:?}");
    assert!(done.iter().all(|p| p.done == p.total && p.total > 0));

    let stats = warren_oci::unpack(&image, &f.cache, &f.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(stats.layers, 2);
    assert_eq!(f.read("etc/hostname"), b"from-registry");
    assert_eq!(f.read("bin/app"), b"#!/bin/sh\necho hi\n");
    assert!(names(&f.dest().join("tmp")).is_empty(), "whiteout applied");
    assert!(f.dest().join("work").is_dir());

    // Pulling again reuses every blob.
    events.lock().unwrap().clear();
    let again = warren_oci::pull(&reference, None, &f.cache, &[], &record)
        .await
        .unwrap();
    assert_eq!(again, image);
    let ev = events.lock().unwrap();
    assert!(
        ev.iter()
            .all(|p| matches!(p.phase, Phase::Manifest | Phase::Cached)),
        "{ev:?}"
    );
    assert_eq!(ev.iter().filter(|p| p.phase == Phase::Cached).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_manifest_with_10000_layers_is_refused_before_download() {
    let reg = Registry::start();
    let push = Pusher::new(&reg);
    let layer = LayerBuilder::new().file("a", b"a").gzip();
    let layer_desc = push.blob(&layer, TAR_GZ).await;
    let config = push
        .blob(
            config("").to_string().as_bytes(),
            "application/vnd.oci.image.config.v1+json",
        )
        .await;
    let manifest = json!({ "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": vec![layer_desc; 10_000] });
    push.manifest(
        "huge",
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let reference = format!("{}/test/app:huge", reg.host());
    let err = warren_oci::pull(&reference, None, &cache, &[], &|_| {})
        .await
        .unwrap_err();
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
    let cached: Vec<PathBuf> = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(cached.is_empty(), "nothing was downloaded: {cached:?}");

    // A reference to a missing tag is a registry error naming the reference.
    let missing = format!("{}/test/app:nope", reg.host());
    let err = warren_oci::pull(&missing, None, &cache, &[], &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::Registry { .. }) && err.to_string().contains("app:nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_with_basic_auth_needs_credentials() {
    let reg = Registry::start_with(true);
    let push = Pusher::new(&reg);
    push.login().await;
    let layer = LayerBuilder::new()
        .file("secret", b"only with a password")
        .gzip();
    push.image("private", config("0"), &[(layer, TAR_GZ)]).await;
    let reference = format!("{}/test/app:private", reg.host());

    let f = Fixture::new();
    let err = warren_oci::pull(&reference, None, &f.cache, &[], &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Registry { .. }), "{err}");
    let wrong = Credentials {
        username: "testuser".into(),
        password: "wrong".into(),
    };
    let err = warren_oci::pull(&reference, Some(&wrong), &f.cache, &[], &|_| {}).await;
    assert!(err.is_err(), "wrong password accepted");
    assert!(
        !format!("{wrong:?}").contains("wrong"),
        "Debug shows the password"
    );

    let creds = Credentials {
        username: "testuser".into(),
        password: "testpassword".into(),
    };
    let image = warren_oci::pull(&reference, Some(&creds), &f.cache, &[], &|_| {})
        .await
        .unwrap();
    warren_oci::unpack(&image, &f.cache, &f.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(f.read("secret"), b"only with a password");
}
