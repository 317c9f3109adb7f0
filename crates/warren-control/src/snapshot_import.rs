//! Importing an image archive (`warren image import`, `POST {B}/snapshots/import`): the body (an
//! OCI image layout as a tar, or a `docker save` tarball) is spooled to a private file under
//! the data dir, then built like a pull, and the file removed when the build ends. For hosts
//! that reach no registry.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::config::{ConfigError, defaults};
use crate::control::Control;
use crate::error::ControlError;
use crate::snapshot::SnapshotView;
use crate::snapshot_build::{BuildSnapshot, BuildSource};
use crate::store::Principal;

/// An archive being received. Dropped unfinished, its file is removed.
#[derive(Debug)]
pub struct ImageUpload {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    bytes: u64,
}

impl Drop for ImageUpload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io(what: &str, e: &std::io::Error) -> ControlError {
    tracing::warn!(error = %e, "image import: failed to {what}");
    ControlError::Unavailable(format!("the server failed to {what}"))
}

impl Control {
    /// The directory archives are spooled to (mode 0700).
    pub(crate) fn imports_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("imports")
    }

    /// Starts receiving an archive.
    pub async fn begin_image_import(&self, _p: &Principal) -> Result<ImageUpload, ControlError> {
        let dir = self.imports_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("create the imports directory", &e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(|e| io("protect the imports directory", &e))?;
        }
        let path = dir.join(format!("{}.tar", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|e| io("create the import file", &e))?;
        Ok(ImageUpload {
            file: Some(file),
            path,
            bytes: 0,
        })
    }

    /// Appends the next piece of the archive.
    pub async fn import_chunk(
        &self,
        up: &mut ImageUpload,
        data: &[u8],
    ) -> Result<(), ControlError> {
        up.bytes += data.len() as u64;
        if up.bytes > defaults::MAX_FS_CAPACITY_BYTES {
            return Err(
                ConfigError::Invalid("the archive is larger than any image may be".into()).into(),
            );
        }
        let Some(file) = up.file.as_mut() else {
            return Err(ControlError::Unavailable(
                "the import was already finished".into(),
            ));
        };
        file.write_all(data)
            .await
            .map_err(|e| io("write the import file", &e))
    }

    /// Ends the upload and builds a snapshot from the archive; the file goes when the build
    /// ends.
    pub async fn finish_image_import(
        self: &Arc<Self>,
        p: &Principal,
        mut up: ImageUpload,
        mut req: BuildSnapshot,
    ) -> Result<SnapshotView, ControlError> {
        if up.bytes == 0 {
            return Err(ConfigError::Invalid("the archive is empty".into()).into());
        }
        let Some(file) = up.file.as_mut() else {
            return Err(ControlError::Unavailable(
                "the import was already finished".into(),
            ));
        };
        // Flushed while the upload still owns the file: a caller that goes away meanwhile
        // drops the upload, and with it the file.
        if let Err(e) = file.flush().await {
            return Err(io("write the import file", &e));
        }
        drop(up.file.take());
        let path = up.path.clone();
        req.source = BuildSource::Archive(path.clone());
        match self.build_snapshot(p, req) {
            Ok(v) => Ok(v),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}
