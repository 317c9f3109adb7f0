//! Shared set-up for tests with real sandboxes: root, a btrfs pool, the default image and the
//! static helper binaries are all required, and a missing one fails the test with the reason.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use warren_driver::VolumeMount;
use warren_proto::{ExecSpec, ExitStatus, Request, Response, Stream};
use warren_runtime::{AgentConn, JailConfig, JailDriver, SandboxHandle, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId};

/// Data dir the tests use: `WARREN_TEST_DATA_DIR`, else `/var/lib/warren-test`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("WARREN_TEST_DATA_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/warren-test"), PathBuf::from)
}

/// Directory with the static `warren-agent` and `warren-jailer` (`WARREN_BIN_DIR`, else
/// `target/release` of this workspace, where scripts/build.sh installs them).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("WARREN_BIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release"),
        PathBuf::from,
    )
}

/// The driver, opened once per test binary, with the default image present.
pub fn driver() -> &'static JailDriver {
    static DRIVER: OnceLock<JailDriver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "sandbox tests need root (namespaces, cgroups, btrfs): run them as root"
        );
        let bin = bin_dir();
        for b in ["warren-agent", "warren-jailer"] {
            assert!(
                bin.join(b).is_file(),
                "{} is missing: run scripts/build.sh first (or set WARREN_BIN_DIR)",
                bin.join(b).display()
            );
        }
        let mut cfg = JailConfig::new(data_dir(), &bin);
        cfg.pool_bytes = 16 << 30;
        let driver = JailDriver::open(cfg).expect("open the jail driver");
        // Parallel test binaries share the data dir: one builds the image, the others wait.
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(data_dir().join(".image-build.lock"))
            .unwrap();
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        warren_runtime::image::ensure_default_image(driver.storage(), &mut |_| {})
            .expect("build the default image (needs mmdebstrap and Debian's package mirror)");
        driver
    })
}

/// A sandbox that is destroyed when dropped, also when the test fails.
pub struct TestSandbox {
    pub handle: SandboxHandle,
}

impl TestSandbox {
    pub async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::with_spec(&spec_with(limits, Vec::new())).await
    }

    /// A sandbox of the default image with default limits and these volumes.
    pub async fn with_volumes(volumes: Vec<VolumeMount>) -> Self {
        Self::with_spec(&spec_with(Limits::default(), volumes)).await
    }

    pub async fn with_spec(spec: &SandboxSpec) -> Self {
        let handle = driver().create(spec).await.expect("create sandbox");
        Self { handle }
    }

    pub fn id(&self) -> &SandboxId {
        &self.handle.id
    }

    pub async fn conn(&self) -> AgentConn {
        driver()
            .connect(&self.handle)
            .await
            .expect("connect to agent")
    }

    /// Runs `bash -c script` to completion.
    pub async fn sh(&self, script: &str) -> Output {
        self.exec(ExecSpec {
            argv: bash(script),
            ..Default::default()
        })
        .await
    }

    /// Runs a Python script with the image's python3 to completion.
    pub async fn python(&self, script: &str) -> Output {
        self.exec(ExecSpec {
            argv: vec!["python3".into(), "-c".into(), script.into()],
            ..Default::default()
        })
        .await
    }

    /// Runs a command to completion and collects its output.
    pub async fn exec(&self, spec: ExecSpec) -> Output {
        let mut conn = self.conn().await;
        conn.send(&Request::Exec(spec)).await.unwrap();
        collect(&mut conn).await
    }

    pub async fn destroy(self) {
        let handle = self.handle.clone();
        std::mem::forget(self);
        driver()
            .destroy(&handle.id, Some(&handle))
            .await
            .expect("destroy sandbox");
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Drop cannot await: tear down on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(driver().destroy(&handle.id, Some(&handle)));
        })
        .join();
    }
}

/// A spec of the default image with a fresh id.
pub fn spec_with(limits: Limits, volumes: Vec<VolumeMount>) -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        image: ImageRef::default_image(),
        limits,
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes,
    }
}

pub fn bash(script: &str) -> Vec<String> {
    vec!["/bin/bash".into(), "-c".into(), script.into()]
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitStatus,
}

impl Output {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.exit.code
    }
}

/// Reads frames until `Exit`, with a generous overall deadline.
pub async fn collect(conn: &mut AgentConn) -> Output {
    let fut = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        loop {
            match conn.recv().await.expect("read from agent") {
                Some(Response::Started { .. }) => {}
                Some(Response::Output {
                    stream: Stream::Stdout,
                    data,
                    ..
                }) => {
                    stdout.extend_from_slice(&data);
                }
                Some(Response::Output {
                    stream: Stream::Stderr,
                    data,
                    ..
                }) => {
                    stderr.extend_from_slice(&data);
                }
                Some(Response::Exit(exit)) => {
                    return Output {
                        stdout,
                        stderr,
                        exit,
                    };
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("command finished in time")
}
