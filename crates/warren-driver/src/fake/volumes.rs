//! The fake's volumes: a size and a file map each. A sandbox whose spec names a missing volume
//! fails to boot, as with the jail; the files are not shared with the sandboxes' own.

use std::collections::BTreeMap;

use super::FakeDriver;
use crate::{DriverError, FailureKind, SandboxSpec, is_volume_id};

/// One volume of the fake.
#[derive(Debug, Default, Clone)]
pub(super) struct FakeVolume {
    size_bytes: u64,
    files: BTreeMap<String, Vec<u8>>,
}

fn storage_error(reason: &str, detail: String) -> DriverError {
    DriverError::failed(FailureKind::Storage, reason, detail)
}

fn check_id(id: &str) -> Result<(), DriverError> {
    if is_volume_id(id) {
        Ok(())
    } else {
        Err(storage_error(
            "invalid volume id",
            format!("fake volume id {id:?}"),
        ))
    }
}

impl FakeDriver {
    pub(super) fn create_volume_now(&self, id: &str, size_bytes: u64) -> Result<(), DriverError> {
        check_id(id)?;
        let mut inner = self.inner();
        inner.calls.push(format!("create-volume {id} {size_bytes}"));
        if inner.volumes.contains_key(id) {
            return Err(storage_error(
                "the volume exists",
                format!("fake volume {id} exists"),
            ));
        }
        inner.volumes.insert(
            id.to_owned(),
            FakeVolume {
                size_bytes,
                ..FakeVolume::default()
            },
        );
        Ok(())
    }

    pub(super) fn clone_volume_now(
        &self,
        src: &str,
        dst: &str,
        size_bytes: u64,
    ) -> Result<(), DriverError> {
        check_id(src)?;
        check_id(dst)?;
        let mut inner = self.inner();
        inner
            .calls
            .push(format!("clone-volume {src} {dst} {size_bytes}"));
        let files = match inner.volumes.get(src) {
            Some(v) => v.files.clone(),
            None => {
                return Err(storage_error(
                    "no such volume",
                    format!("fake clone of {src}"),
                ));
            }
        };
        if inner.volumes.contains_key(dst) {
            return Err(storage_error(
                "the volume exists",
                format!("fake volume {dst} exists"),
            ));
        }
        inner
            .volumes
            .insert(dst.to_owned(), FakeVolume { size_bytes, files });
        Ok(())
    }

    pub(super) fn resize_volume_now(&self, id: &str, size_bytes: u64) -> Result<(), DriverError> {
        check_id(id)?;
        let mut inner = self.inner();
        inner.calls.push(format!("resize-volume {id} {size_bytes}"));
        match inner.volumes.get_mut(id) {
            Some(v) => {
                v.size_bytes = size_bytes;
                Ok(())
            }
            None => Err(storage_error(
                "no such volume",
                format!("fake resize of {id}"),
            )),
        }
    }

    pub(super) fn delete_volume_now(&self, id: &str) -> Result<(), DriverError> {
        check_id(id)?;
        let mut inner = self.inner();
        inner.calls.push(format!("delete-volume {id}"));
        inner.volumes.remove(id);
        Ok(())
    }

    pub(super) fn volume_used_now(&self, id: &str) -> Option<u64> {
        let inner = self.inner();
        let v = inner.volumes.get(id)?;
        Some(v.files.values().map(|f| f.len() as u64).sum())
    }

    /// Fails the boot of a spec that names a missing volume.
    pub(super) fn check_volumes(&self, spec: &SandboxSpec) -> Result<(), DriverError> {
        let inner = self.inner();
        match spec
            .volumes
            .iter()
            .find(|m| !inner.volumes.contains_key(&m.volume_id))
        {
            Some(m) => Err(storage_error(
                "a volume of the sandbox does not exist",
                format!("fake boot with missing volume {}", m.volume_id),
            )),
            None => Ok(()),
        }
    }

    /// The size limit of a volume, if it exists.
    pub fn volume_size(&self, id: &str) -> Option<u64> {
        self.inner().volumes.get(id).map(|v| v.size_bytes)
    }

    /// Puts a file into a volume (the fake's sandboxes do not write into volumes).
    pub fn put_volume_file(&self, id: &str, path: &str, data: &[u8]) {
        if let Some(v) = self.inner().volumes.get_mut(id) {
            v.files.insert(path.to_owned(), data.to_vec());
        }
    }

    /// A file of a volume.
    pub fn volume_file(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        self.inner().volumes.get(id)?.files.get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use warren_types::{ImageRef, Limits, SandboxId};

    use crate::fake::FakeDriver;
    use crate::{Driver, SandboxSpec, VolumeMount};

    const A: &str = "0f8e2b9c-1111-4a2b-9c3d-000000000001";
    const B: &str = "0f8e2b9c-1111-4a2b-9c3d-000000000002";

    #[tokio::test]
    async fn volumes_are_created_cloned_resized_and_deleted() {
        let d = FakeDriver::new();
        d.create_volume(A, 1 << 20).await.unwrap();
        assert!(d.create_volume(A, 1 << 20).await.is_err(), "exists");
        assert!(d.create_volume("../etc", 1).await.is_err(), "bad id");
        assert_eq!(d.volume_used_bytes(A), Some(0));
        d.put_volume_file(A, "/f", b"hello");
        assert_eq!(d.volume_used_bytes(A), Some(5));

        d.clone_volume(A, B, 2 << 20).await.unwrap();
        assert_eq!(d.volume_file(B, "/f").as_deref(), Some(&b"hello"[..]));
        assert_eq!(d.volume_size(B), Some(2 << 20));
        d.put_volume_file(B, "/f", b"changed");
        assert_eq!(d.volume_file(A, "/f").as_deref(), Some(&b"hello"[..]));
        assert!(d.clone_volume(A, B, 1).await.is_err(), "dst exists");

        d.resize_volume(A, 3 << 20).await.unwrap();
        assert_eq!(d.volume_size(A), Some(3 << 20));
        d.delete_volume(A).await.unwrap();
        d.delete_volume(A).await.unwrap();
        assert_eq!(d.volume_used_bytes(A), None);
        assert!(d.resize_volume(A, 1).await.is_err());
        assert!(d.clone_volume(A, "abc", 1).await.is_err());
    }

    #[tokio::test]
    async fn a_sandbox_needs_its_volumes() {
        let d = FakeDriver::new();
        let mut spec = SandboxSpec {
            id: SandboxId::generate(),
            image: ImageRef::default_image(),
            limits: Limits::default(),
            trust: String::new(),
            tier: crate::Tier::Jail,
            volumes: vec![VolumeMount {
                volume_id: A.into(),
                mount_path: "/data".into(),
                read_only: false,
            }],
        };
        assert!(d.create(&spec).await.is_err());
        d.create_volume(A, 1 << 20).await.unwrap();
        d.create(&spec).await.unwrap();
        spec.volumes.clear();
        d.start(&spec).await.unwrap();
    }
}
