//! The real API on an ephemeral port, for the client's tests: `warren_api::router` over a
//! control plane with the fake driver (which isolates nothing, so no root is needed) and an
//! in-memory store. Its command language is the fake driver's (`echo`, `exit`, `repeat`, ...).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use warren_control::{Control, ControlConfig, ResourceLimits, SqliteStore};
use warren_driver::fake::FakeDriver;
use warren_wire::sandbox::{CreateSandboxBody, Sandbox};

use super::{Client, ConnArgs};

/// A running server; stops when dropped.
#[derive(Debug)]
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The first admin's key.
    pub(crate) admin_key: String,
    /// Shares its state with the driver the server runs on.
    pub(crate) fake: FakeDriver,
    task: tokio::task::JoinHandle<()>,
    /// The data dir, alive as long as the server.
    _dir: TempDir,
}

/// Limits no test reaches.
fn generous() -> ResourceLimits {
    ResourceLimits {
        max_vcpus: 64,
        max_mem_bytes: 1 << 40,
        max_fs_capacity_bytes: 1 << 40,
        pids: 4096,
        max_sandboxes: 1000,
        max_committed_mem_bytes: None,
        user_max_sandboxes: None,
        user_max_mem_bytes: None,
        reserve_mem_bytes: None,
        reserve_disk_bytes: 0,
    }
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let cfg = ControlConfig {
            default_pool: warren_control::pool::PoolSize::default(),
            default_tier: warren_control::Tier::Jail,
            data_dir: dir.path().to_owned(),
            public_url: format!("http://{addr}"),
            sweep_interval: Duration::from_secs(3600),
            egress: None,
            // The server's real key, so login-mode service URLs work as they do in `serve`.
            signer: Some(Arc::new(
                crate::egress::ServerSigner::load(dir.path(), &format!("http://{addr}"))
                    .expect("signing key"),
            )),
            service_domain: Some("localhost".into()),
            limits: generous(),
        };
        let fake = FakeDriver::new();
        let (control, admin_key) = Control::with_store(
            cfg,
            Arc::new(fake.clone()),
            SqliteStore::in_memory().expect("in-memory store"),
        )
        .await
        .expect("control plane");
        let admin_key = admin_key.expect("a fresh store makes an admin key");
        let app = warren_api::router(Arc::clone(&control));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            admin_key,
            fake,
            task,
            _dir: dir,
        }
    }

    /// A client with the admin's key.
    pub(crate) fn client(&self) -> Client {
        self.client_with(Some(&self.admin_key))
    }

    /// A client with this key, or none (and no key file to fall back to).
    pub(crate) fn client_with(&self, key: Option<&str>) -> Client {
        let conn = ConnArgs {
            url: self.url.clone(),
            api_key: key.map(str::to_owned),
        };
        Client::new(&conn, Path::new("/nonexistent")).expect("client")
    }

    /// Creates a ready sandbox through the API.
    pub(crate) async fn sandbox(&self, name: &str) -> Sandbox {
        let body = CreateSandboxBody {
            name: Some(name.into()),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let (_, sb) = self
            .client()
            .create_sandbox(&body)
            .await
            .expect("create sandbox");
        assert_eq!(sb.status, "ready", "{sb:?}");
        sb
    }
}

/// A client of some other server at `url` (a stub a test runs), with a dummy key.
pub(crate) fn client_for(url: &str) -> Client {
    let conn = ConnArgs {
        url: url.to_owned(),
        api_key: Some("test".into()),
    };
    Client::new(&conn, Path::new("/nonexistent")).expect("client")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
