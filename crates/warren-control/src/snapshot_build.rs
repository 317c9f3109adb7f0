//! Building a snapshot from an OCI/Docker image (`POST {B}/snapshots`): the record is
//! `building` at once, the pull and the safe unpack run in the background, and the image's
//! USER, WORKDIR and ENV become the snapshot's run_config under the request's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use warren_driver::{BuiltImage, ImageSource};
use warren_types::RunConfig;

use crate::config::{ConfigError, defaults, validate_resources, validate_run_config};
use crate::control::{Control, error_chain, now};
use crate::error::ControlError;
use crate::snapshot::{SnapshotView, snapshot_image, validate_snapshot_name, validate_tag};
use crate::store::{Principal, SnapshotRecord, SnapshotStatus};

/// A build request.
#[derive(Debug, Clone, Default)]
pub struct BuildSnapshot {
    /// Name of the new snapshot.
    pub name: String,
    /// Where its files come from.
    pub source: BuildSource,
    /// Disk size of sandboxes booted from it, and the most its files may take.
    pub fs_capacity_bytes: Option<u64>,
    /// Tag; the image reference's own tag, else `latest`.
    pub tag: Option<String>,
    /// Registry credentials to pull with.
    pub registry_id: Option<String>,
    /// Layered over the image's USER, WORKDIR and ENV.
    pub run_config: Option<RunConfig>,
    /// Free text.
    pub description: Option<String>,
    /// Labels its sandboxes inherit.
    pub labels: Option<BTreeMap<String, String>>,
}

/// Where a snapshot build's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource {
    /// An image reference, pulled from its registry.
    Image(String),
    /// An OCI layout directory or `docker save` tarball on the server's host (the CLI's
    /// `warren image import`; never from the HTTP API).
    Archive(PathBuf),
}

impl Default for BuildSource {
    fn default() -> Self {
        Self::Image(String::new())
    }
}

/// The tag an image reference names (`repo:tag`, not a digest), if any.
fn reference_tag(reference: &str) -> Option<&str> {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty())
}

fn check_reference(reference: &str) -> Result<(), ControlError> {
    let ok = !reference.is_empty()
        && reference.len() <= 512
        && !reference.starts_with(['-', '/'])
        && reference.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!("invalid docker_image {reference:?}")).into())
    }
}

impl Control {
    /// Starts building a snapshot; returns its record, `building`.
    pub fn build_snapshot(
        self: &Arc<Self>,
        p: &Principal,
        req: BuildSnapshot,
    ) -> Result<SnapshotView, ControlError> {
        validate_snapshot_name(&req.name)?;
        let mut registry_id = None;
        let (source, docker_image, own_tag) = match &req.source {
            BuildSource::Image(r) => {
                check_reference(r)?;
                let credentials = match &req.registry_id {
                    Some(reg) => {
                        let (id, creds) = self.registry_credentials(p, reg, r)?;
                        registry_id = Some(id);
                        creds
                    }
                    None => None,
                };
                (
                    ImageSource::Registry {
                        reference: r.clone(),
                        credentials,
                    },
                    Some(r.clone()),
                    reference_tag(r).map(str::to_owned),
                )
            }
            BuildSource::Archive(path) => (ImageSource::Archive(path.clone()), None, None),
        };
        let tag = req.tag.or(own_tag).unwrap_or_else(|| "latest".into());
        validate_tag(&tag)?;
        if let Some(rc) = &req.run_config {
            validate_run_config(rc)?;
        }
        let fs_capacity_bytes = req.fs_capacity_bytes.unwrap_or(defaults::FS_CAPACITY_BYTES);
        validate_resources(None, None, Some(fs_capacity_bytes))?;
        let t = now();
        let record = SnapshotRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            name: req.name,
            status: SnapshotStatus::Building,
            status_message: None,
            fs_capacity_bytes,
            fs_used_bytes: None,
            docker_image,
            image_digest: None,
            source_sandbox_id: None,
            registry_id,
            run_config: RunConfig::default(),
            labels: req.labels.unwrap_or_default(),
            description: req.description,
            carried: crate::carry::Carried::default(),
            created_by: p.user_id.clone(),
            created_at: t,
            updated_at: t,
        };
        self.publish(&record, &tag)?;
        self.audit(
            Some(p),
            "snapshot.build",
            Some(&record.id),
            Some(format!(
                "{}:{tag} from {}",
                record.name,
                record.docker_image.as_deref().unwrap_or("an archive")
            )),
        );
        let this = self.clone();
        let rec = record.clone();
        let overlay = req.run_config.unwrap_or_default();
        tokio::spawn(async move { this.run_build(rec, source, overlay).await });
        Ok(SnapshotView {
            record,
            tags: vec![tag],
        })
    }

    async fn run_build(&self, mut rec: SnapshotRecord, source: ImageSource, overlay: RunConfig) {
        let id = rec.id.clone();
        let progress = {
            let progress = self.build_progress.clone();
            let id = id.clone();
            move |line: String| {
                progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id.clone(), line);
            }
        };
        let image = snapshot_image(&id);
        let result = self
            .driver
            .build_image(&image, &source, rec.fs_capacity_bytes, &progress)
            .await;
        // An archive spooled by an import is gone with its build.
        if let ImageSource::Archive(path) = &source
            && path.starts_with(self.imports_dir())
        {
            let _ = std::fs::remove_file(path);
        }
        self.build_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        match result {
            Ok(built) => {
                rec.status = SnapshotStatus::Ready;
                rec.status_message = None;
                rec.image_digest = Some(built.digest.clone());
                rec.fs_used_bytes = Some(built.unpacked_bytes);
                rec.run_config = image_run_config(&built).layered(&overlay);
                tracing::info!(snapshot = %rec.name, snapshot_id = %id, digest = %built.digest, "snapshot built");
            }
            Err(e) => {
                tracing::warn!(snapshot = %rec.name, snapshot_id = %id, error = %error_chain(&e), "snapshot build failed");
                rec.status = SnapshotStatus::Failed;
                rec.status_message = Some(e.public_reason());
            }
        }
        rec.updated_at = now();
        // A snapshot deleted while it built stays deleted, and so do its files.
        match self.store.get_snapshot(&id) {
            Ok(Some(_)) => {
                if let Err(e) = self.store.put_snapshot(&rec) {
                    tracing::error!(snapshot_id = %id, error = %error_chain(&e), "failed to record a finished build");
                }
            }
            _ => {
                let _ = self.driver.remove_image(&image).await;
            }
        }
    }

    /// The progress line of a build this process runs.
    pub(crate) fn build_progress_of(&self, id: &str) -> Option<String> {
        self.build_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

/// The image's own USER, WORKDIR and ENV as a run_config.
fn image_run_config(b: &BuiltImage) -> RunConfig {
    RunConfig {
        user: b.user.clone().filter(|u| !u.is_empty()),
        work_dir: b.workdir.clone().filter(|w| w.starts_with('/')),
        env_vars: b.env.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::reference_tag;

    #[test]
    fn the_tag_of_a_reference_is_its_last_components() {
        assert_eq!(reference_tag("python:3.12-slim"), Some("3.12-slim"));
        assert_eq!(reference_tag("127.0.0.1:5000/team/app:1"), Some("1"));
        assert_eq!(reference_tag("127.0.0.1:5000/team/app"), None);
        assert_eq!(reference_tag("debian@sha256:abc"), None);
        assert_eq!(reference_tag("debian:12@sha256:abc"), Some("12"));
    }
}
