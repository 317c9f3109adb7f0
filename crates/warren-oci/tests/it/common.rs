//! Layer builders and fixtures shared by the tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};
use warren_oci::{BlobCache, Digest, Image, ImageConfig, Layer, OciError, UnpackLimits};

pub(crate) const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const TAR_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Builds a tar layer with raw header fields, so that hostile names (`..`, absolute paths) and
/// link targets the `tar` crate's safe setters refuse can be written.
pub(crate) struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub(crate) fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, kind: EntryType, mode: u32, link: Option<&str>, size: u64) -> Header {
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            assert!(
                path.len() < gnu.name.len(),
                "test path too long for a raw header"
            );
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    /// Appends an entry with full control over the header.
    pub(crate) fn raw(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_with(path, data, 0o644, 0, 0)
    }

    pub(crate) fn file_with(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut h = Self::header(path, EntryType::Regular, mode, None, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.raw(h, data)
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(Self::header(path, EntryType::Directory, mode, None, 0), &[])
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(path, EntryType::Symlink, 0o777, Some(target), 0),
            &[],
        )
    }

    pub(crate) fn symlink_owned(&mut self, path: &str, target: &str, uid: u64) -> &mut Self {
        let mut h = Self::header(path, EntryType::Symlink, 0o777, Some(target), 0);
        h.set_uid(uid);
        h.set_gid(uid);
        self.raw(h, &[])
    }

    pub(crate) fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(path, EntryType::Link, 0o644, Some(target), 0),
            &[],
        )
    }

    pub(crate) fn node(&mut self, path: &str, kind: EntryType) -> &mut Self {
        let mut h = Self::header(path, kind, 0o666, None, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        self.raw(h, &[])
    }

    /// A file with a PAX `SCHILY.xattr.*` record before it.
    pub(crate) fn file_with_xattr(&mut self, path: &str, xattr: &str, value: &[u8]) -> &mut Self {
        let key = format!("SCHILY.xattr.{xattr}");
        self.b
            .append_pax_extensions([(key.as_str(), value)])
            .unwrap();
        self.file(path, b"x")
    }

    pub(crate) fn tar(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }

    pub(crate) fn gzip(&mut self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.tar()).unwrap();
        gz.finish().unwrap()
    }

    pub(crate) fn zstd(&mut self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 3).unwrap()
    }
}

/// A temporary workspace: `<tmp>/cache`, `<tmp>/dest` (what is unpacked into), and
/// `<tmp>/outside/canary` (what must never change).
pub(crate) struct Fixture {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) cache: BlobCache,
}

pub(crate) const CANARY: &[u8] = b"canary: must not change";

impl Fixture {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(&tmp.path().join("cache")).unwrap();
        std::fs::create_dir(tmp.path().join("dest")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/canary"), CANARY).unwrap();
        std::fs::write(tmp.path().join("canary"), CANARY).unwrap();
        Fixture { tmp, cache }
    }

    pub(crate) fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    pub(crate) fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Puts the layers in the cache and describes them as an image.
    pub(crate) fn image(&self, layers: &[(Vec<u8>, &str)]) -> Image {
        let layers = layers
            .iter()
            .map(|(bytes, media_type)| {
                let digest = Digest::of(bytes);
                self.cache
                    .insert(&digest, &bytes[..], bytes.len() as u64, "test layer")
                    .unwrap();
                Layer {
                    digest,
                    media_type: (*media_type).into(),
                    size: bytes.len() as u64,
                }
            })
            .collect();
        Image {
            reference: "test".into(),
            manifest_digest: Digest::of(b"manifest"),
            config_digest: Digest::of(b"config"),
            config: ImageConfig::default(),
            layers,
        }
    }

    pub(crate) fn unpack(
        &self,
        layers: &[(Vec<u8>, &str)],
    ) -> Result<warren_oci::UnpackStats, OciError> {
        self.unpack_with(layers, &UnpackLimits::default())
    }

    pub(crate) fn unpack_with(
        &self,
        layers: &[(Vec<u8>, &str)],
        limits: &UnpackLimits,
    ) -> Result<warren_oci::UnpackStats, OciError> {
        let image = self.image(layers);
        warren_oci::unpack(&image, &self.cache, &self.dest(), limits)
    }

    /// Asserts that nothing but `dest/` (and the cache) appeared or changed in the temp dir.
    pub(crate) fn assert_outside_intact(&self) {
        assert_eq!(
            std::fs::read(self.tmp.path().join("canary")).unwrap(),
            CANARY
        );
        assert_eq!(
            std::fs::read(self.outside().join("canary")).unwrap(),
            CANARY
        );
        let mut top: Vec<_> = names(self.tmp.path());
        top.sort();
        assert_eq!(
            top,
            ["cache", "canary", "dest", "outside"],
            "something appeared next to dest"
        );
        assert_eq!(
            names(&self.outside()),
            ["canary"],
            "something appeared in outside/"
        );
    }

    pub(crate) fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dest().join(rel)).unwrap()
    }
}

pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
