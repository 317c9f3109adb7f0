//! The endpoints the commands call, one typed method each: the bodies sent and the answers read
//! are the server's own types from `warren-wire`. Calls that back a `--json` flag also return
//! the answer's text, printed as the server sent it.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use warren_wire::ops::{CreateKeyBody, CreatedKey, KeyList};
use warren_wire::sandbox::{CreateSandboxBody, Sandbox, SandboxList, SandboxStatusBody};
use warren_wire::secrets::{PutSecretBody, WorkspaceSecret};
use warren_wire::service::{ServiceGrantList, ServiceUrlBody};
use warren_wire::snapshot::{
    CaptureBody, CreateSnapshotBody, ForkBody, ForkList, Snapshot, SnapshotList, TagBody,
};

use super::{Client, DEFAULT_TIMEOUT};

/// Time the server gets beyond a create's own `timeout` to answer.
const CREATE_GRACE: Duration = Duration::from_secs(30);

/// How long a capture may take: the server copies the sandbox's root filesystem before it
/// answers (a copy-on-write snapshot, but it waits for the sandbox's writes to settle).
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(300);
/// An archive upload may be gigabytes over a slow link.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The largest page `GET {B}/snapshots` serves.
pub(crate) const SNAPSHOT_PAGE: u32 = 500;

impl Client {
    /// GET `{B}/boxes`.
    pub(crate) async fn list_sandboxes(&self) -> Result<(String, SandboxList)> {
        self.json(self.control(Method::GET, &["boxes"]), "sandbox list")
            .await
    }

    /// GET `{B}/boxes/{name}`.
    pub(crate) async fn get_sandbox(&self, name: &str) -> Result<Sandbox> {
        let rb = self.control(Method::GET, &["boxes", name]);
        Ok(self.json(rb, "sandbox object").await?.1)
    }

    /// POST `{B}/boxes`.
    pub(crate) async fn create_sandbox(
        &self,
        body: &CreateSandboxBody,
    ) -> Result<(String, Sandbox)> {
        let mut rb = self.control(Method::POST, &["boxes"]).json(body);
        if body.wait_for_ready != Some(false) {
            // The server holds the answer until the sandbox is ready, up to `timeout`.
            let wait = Duration::from_secs(body.timeout.unwrap_or(30));
            rb = rb.timeout(wait.saturating_add(CREATE_GRACE));
        }
        self.json(rb, "sandbox object").await
    }

    /// POST `{B}/boxes/{name}/service-url`: a token-mode or a login-mode answer, whose shapes
    /// differ, so it is read as JSON.
    pub(crate) async fn service_url(
        &self,
        name: &str,
        body: &ServiceUrlBody,
    ) -> Result<(String, serde_json::Value)> {
        let rb = self
            .control(Method::POST, &["boxes", name, "service-url"])
            .json(body);
        self.json(rb, "service URL").await
    }

    /// GET `{B}/boxes/{name}/service-urls`.
    pub(crate) async fn list_service_urls(&self, name: &str) -> Result<(String, ServiceGrantList)> {
        let rb = self.control(Method::GET, &["boxes", name, "service-urls"]);
        self.json(rb, "service URL list").await
    }

    /// DELETE `{B}/boxes/{name}/service-urls[?port=N]`.
    pub(crate) async fn revoke_service_urls(&self, name: &str, port: Option<u16>) -> Result<()> {
        let mut rb = self.control(Method::DELETE, &["boxes", name, "service-urls"]);
        if let Some(port) = port {
            rb = rb.query(&[("port", port)]);
        }
        self.send(rb).await?;
        Ok(())
    }

    /// DELETE `{B}/boxes/{name}`.
    pub(crate) async fn delete_sandbox(&self, name: &str) -> Result<()> {
        self.send(self.control(Method::DELETE, &["boxes", name]))
            .await?;
        Ok(())
    }

    /// POST `{B}/boxes/{name}/stop`.
    pub(crate) async fn stop_sandbox(&self, name: &str) -> Result<()> {
        self.send(self.control(Method::POST, &["boxes", name, "stop"]))
            .await?;
        Ok(())
    }

    /// POST `{B}/boxes/{name}/start`: the server answers once the sandbox is ready or has
    /// booted for a while; [`Client::sandbox_status`] tells which.
    pub(crate) async fn start_sandbox(&self, name: &str) -> Result<()> {
        self.send(self.control(Method::POST, &["boxes", name, "start"]))
            .await?;
        Ok(())
    }

    /// GET `{B}/boxes/{name}/status`.
    pub(crate) async fn sandbox_status(&self, name: &str) -> Result<SandboxStatusBody> {
        let rb = self.control(Method::GET, &["boxes", name, "status"]);
        Ok(self.json(rb, "status answer").await?.1)
    }

    /// POST `{B}/keys`.
    pub(crate) async fn create_key(&self, body: &CreateKeyBody) -> Result<CreatedKey> {
        let rb = self.control(Method::POST, &["keys"]).json(body);
        Ok(self.json(rb, "key").await?.1)
    }

    /// GET `{B}/keys`.
    pub(crate) async fn list_keys(&self) -> Result<(String, KeyList)> {
        self.json(self.control(Method::GET, &["keys"]), "key list")
            .await
    }

    /// DELETE `{B}/keys/{id}`.
    pub(crate) async fn revoke_key(&self, id: &str) -> Result<()> {
        self.send(self.control(Method::DELETE, &["keys", id]))
            .await?;
        Ok(())
    }

    /// POST `{B}/keys/service-token-key/rotate`.
    pub(crate) async fn rotate_service_key(&self) -> Result<()> {
        self.send(self.control(Method::POST, &["keys", "service-token-key", "rotate"]))
            .await?;
        Ok(())
    }

    /// GET `/api/v1/workspaces/current/secrets`.
    pub(crate) async fn list_secrets(
        &self,
        include_configs: bool,
    ) -> Result<(String, Vec<WorkspaceSecret>)> {
        let mut url = self.platform_url(&["workspaces", "current", "secrets"]);
        url.query_pairs_mut().append_pair(
            "include_configs",
            if include_configs { "true" } else { "false" },
        );
        let rb = self.request(Method::GET, url).timeout(DEFAULT_TIMEOUT);
        self.json(rb, "secret list").await
    }

    /// PUT `/api/v1/workspaces/current/secrets/{key}`.
    pub(crate) async fn put_secret(
        &self,
        key: &str,
        body: &PutSecretBody,
    ) -> Result<WorkspaceSecret> {
        let url = self.platform_url(&["workspaces", "current", "secrets", key]);
        let rb = self
            .request(Method::PUT, url)
            .timeout(DEFAULT_TIMEOUT)
            .json(body);
        Ok(self.json(rb, "secret").await?.1)
    }

    /// DELETE `/api/v1/workspaces/current/secrets/{key}`.
    pub(crate) async fn delete_secret(&self, key: &str) -> Result<()> {
        let url = self.platform_url(&["workspaces", "current", "secrets", key]);
        let rb = self.request(Method::DELETE, url).timeout(DEFAULT_TIMEOUT);
        self.send(rb).await?;
        Ok(())
    }

    /// GET `{B}/snapshots?limit=500[&name_contains=S]`.
    pub(crate) async fn list_snapshots(
        &self,
        name_contains: Option<&str>,
    ) -> Result<(String, SnapshotList)> {
        let mut url = self.url(&["snapshots"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &SNAPSHOT_PAGE.to_string());
            if let Some(s) = name_contains {
                q.append_pair("name_contains", s);
            }
        }
        let rb = self.request(Method::GET, url).timeout(DEFAULT_TIMEOUT);
        self.json(rb, "snapshot list").await
    }

    /// GET `{B}/snapshots/{ref}`: by id, `name` or `name:tag`.
    pub(crate) async fn get_snapshot(&self, reference: &str) -> Result<Snapshot> {
        let rb = self.control(Method::GET, &["snapshots", reference]);
        Ok(self.json(rb, "snapshot object").await?.1)
    }

    /// POST `{B}/snapshots`: starts a build from a Docker image; the answer is `building`.
    pub(crate) async fn create_snapshot(
        &self,
        body: &CreateSnapshotBody,
    ) -> Result<(String, Snapshot)> {
        let rb = self.control(Method::POST, &["snapshots"]).json(body);
        self.json(rb, "snapshot object").await
    }

    /// POST `{B}/boxes/{name}/snapshot`.
    pub(crate) async fn capture_snapshot(
        &self,
        sandbox: &str,
        body: &CaptureBody,
    ) -> Result<(String, Snapshot)> {
        let rb = self
            .control(Method::POST, &["boxes", sandbox, "snapshot"])
            .timeout(CAPTURE_TIMEOUT)
            .json(body);
        self.json(rb, "snapshot object").await
    }

    /// POST `{B}/snapshot-imports`: an image archive (a tar file) streamed as the body.
    pub(crate) async fn import_snapshot(
        &self,
        archive: &std::path::Path,
        name: &str,
        tag: Option<&str>,
        disk: Option<u64>,
    ) -> Result<(String, Snapshot)> {
        let file = tokio::fs::File::open(archive)
            .await
            .with_context(|| format!("failed to open {}", archive.display()))?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut url = self.url(&["snapshot-imports"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("name", name);
            if let Some(t) = tag {
                q.append_pair("tag", t);
            }
            if let Some(d) = disk {
                q.append_pair("fs_capacity_bytes", &d.to_string());
            }
        }
        let rb = self
            .request(Method::POST, url)
            .timeout(IMPORT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        self.json(rb, "snapshot object").await
    }

    /// DELETE `{B}/snapshots/{ref}`.
    pub(crate) async fn delete_snapshot(&self, reference: &str) -> Result<()> {
        self.send(self.control(Method::DELETE, &["snapshots", reference]))
            .await?;
        Ok(())
    }

    /// POST `{B}/snapshots/{ref}/tags`.
    pub(crate) async fn tag_snapshot(&self, reference: &str, body: &TagBody) -> Result<Snapshot> {
        let rb = self
            .control(Method::POST, &["snapshots", reference, "tags"])
            .json(body);
        Ok(self.json(rb, "snapshot object").await?.1)
    }

    /// POST `{B}/boxes/{name}/fork`.
    pub(crate) async fn fork_sandbox(
        &self,
        name: &str,
        body: &ForkBody,
    ) -> Result<(String, ForkList)> {
        let mut rb = self
            .control(Method::POST, &["boxes", name, "fork"])
            .json(body);
        if body.wait_for_ready != Some(false) {
            // The server copies the parent's files (as long as a capture may take), then
            // answers once every fork is ready, up to `timeout`.
            let wait = Duration::from_secs(body.timeout.unwrap_or(30));
            rb = rb.timeout(wait.saturating_add(CAPTURE_TIMEOUT));
        }
        self.json(rb, "fork list").await
    }
}
