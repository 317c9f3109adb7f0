//! The fake's images: a captured image is a copy of a sandbox's file map.

use std::collections::{BTreeMap, HashSet};

use warren_types::{ImageRef, SandboxId};

use super::{FakeBox, FakeDriver};
use crate::{BuildProgress, BuiltImage, DriverError, FailureKind, ImageSource, ImageStatus};

fn no_sandbox(what: &str) -> DriverError {
    DriverError::failed(
        FailureKind::Storage,
        "no such sandbox",
        format!("fake {what}"),
    )
}

impl FakeDriver {
    /// What `image_status` answers: what a test set, else present for the default image only.
    pub(super) fn status_of(&self, image: &ImageRef) -> ImageStatus {
        match self.inner().images.get(&image.to_string()) {
            Some(s) => s.clone(),
            None if *image == ImageRef::default_image() => ImageStatus::Present,
            None => ImageStatus::Missing,
        }
    }

    /// What `image_generation` answers: how often a test replaced the image.
    pub(super) fn generation_of(&self, image: &ImageRef) -> u64 {
        self.inner()
            .generations
            .get(&image.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn capture_now(&self, id: &SandboxId, image: &ImageRef) -> Result<(), DriverError> {
        let mut inner = self.inner();
        inner.calls.push(format!("capture {id} {image}"));
        let key = image.to_string();
        if inner.image_files.contains_key(&key) {
            return Err(DriverError::failed(
                FailureKind::Storage,
                "the image exists",
                format!("fake capture into existing {key}"),
            ));
        }
        let files: BTreeMap<String, Vec<u8>> = inner
            .boxes
            .get(id)
            .ok_or_else(|| no_sandbox("capture"))?
            .files
            .iter()
            .filter(|(p, _)| !p.starts_with("/tmp/"))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        inner.image_files.insert(key.clone(), files);
        inner.images.insert(key, ImageStatus::Present);
        Ok(())
    }

    pub(super) fn fork_now(&self, src: &SandboxId, dst: &SandboxId) -> Result<(), DriverError> {
        let mut inner = self.inner();
        inner.calls.push(format!("fork {src} {dst}"));
        match inner.fail_fork {
            Some(0) => {
                inner.fail_fork = None;
                return Err(DriverError::failed(
                    FailureKind::Storage,
                    "storage failed",
                    "fake fork failure",
                ));
            }
            Some(k) => inner.fail_fork = Some(k - 1),
            None => {}
        }
        let files = inner
            .boxes
            .get(src)
            .ok_or_else(|| no_sandbox("fork"))?
            .files
            .clone();
        inner.boxes.insert(
            dst.clone(),
            FakeBox {
                files,
                ..FakeBox::default()
            },
        );
        Ok(())
    }

    pub(super) fn remove_image_now(&self, image: &ImageRef) {
        let mut inner = self.inner();
        inner.calls.push(format!("remove-image {image}"));
        inner.image_files.remove(&image.to_string());
        inner.images.remove(&image.to_string());
    }

    pub(super) fn gc_images_now(&self, keep: &HashSet<ImageRef>) -> Vec<ImageRef> {
        let mut inner = self.inner();
        let gone: Vec<ImageRef> = inner
            .image_files
            .keys()
            .filter_map(|k| k.parse::<ImageRef>().ok())
            .filter(|i| i.name().starts_with("snapshot/") && !keep.contains(i))
            .collect();
        for i in &gone {
            inner.image_files.remove(&i.to_string());
            inner.images.remove(&i.to_string());
        }
        gone
    }

    /// A registry reference that contains `fail` fails; any other becomes an image holding
    /// `/etc/image-source` (the reference), with `USER nobody`, `WORKDIR /app`, `ENV FROM=fake`.
    pub(super) fn build_now(
        &self,
        image: &ImageRef,
        source: &ImageSource,
        progress: &BuildProgress,
    ) -> Result<BuiltImage, DriverError> {
        let reference = match source {
            ImageSource::Registry { reference, .. } => reference.clone(),
            ImageSource::Archive(p) => p.display().to_string(),
        };
        progress(format!("pulling {reference}"));
        let mut inner = self.inner();
        inner.calls.push(format!("build {image} {reference}"));
        if reference.contains("fail") {
            return Err(DriverError::failed(
                FailureKind::Storage,
                format!("failed to pull {reference}: manifest unknown"),
                "fake build failure",
            ));
        }
        let files = BTreeMap::from([("/etc/image-source".to_owned(), reference.into_bytes())]);
        inner.image_files.insert(image.to_string(), files);
        inner.images.insert(image.to_string(), ImageStatus::Present);
        Ok(BuiltImage {
            digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .into(),
            user: Some("nobody".into()),
            workdir: Some("/app".into()),
            env: vec![("FROM".into(), "fake".into())],
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
            unpacked_bytes: 1,
        })
    }
}
