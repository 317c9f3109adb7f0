//! Importing an image from an OCI image layout directory or a `docker save` tarball.
//!
//! Both are read through one [`Source`]: a directory (files opened in-root, so a layout whose
//! blobs are symlinks cannot make Warren read host files) or an uncompressed tarball indexed
//! once so that any member can be read by seeking. The same limits as a registry pull apply,
//! and layers are verified into the [`BlobCache`] exactly as downloaded ones are.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use serde::Deserialize;

use crate::cache::{BlobCache, Digest, read_limited};
use crate::error::OciError;
use crate::manifest::{self, MAX_CONFIG_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES, Parsed};
use crate::unpack::clean;
use crate::{Image, Layer};

/// Most members a `docker save` tarball may have; real ones have a few per layer.
const MAX_ARCHIVE_MEMBERS: usize = 100_000;
/// Media type given to `docker save` layers, whatever their compression; unpacking looks at
/// the bytes.
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports the image at `path` into `cache`: an OCI image layout directory (`oci-layout`,
/// `index.json`, `blobs/`), or a `docker save` tarball (legacy `manifest.json` with layer tars,
/// or the OCI layout newer Docker writes inside the tar). An index resolves to linux/amd64.
pub fn import(path: &Path, cache: &BlobCache) -> Result<Image, OciError> {
    let meta = std::fs::metadata(path).map_err(|e| OciError::io("stat", path, e))?;
    let source: Box<dyn Source> = if meta.is_dir() {
        Box::new(DirSource::open(path)?)
    } else {
        Box::new(TarSource::index(path)?)
    };
    let archive_err = |reason: &str| OciError::Archive {
        path: path.into(),
        reason: reason.into(),
    };
    let image = if source.size("index.json")?.is_some() {
        import_oci(source.as_ref(), path, cache)?
    } else if source.size("manifest.json")?.is_some() {
        import_docker(source.as_ref(), path, cache)?
    } else {
        return Err(archive_err("neither index.json nor manifest.json found"));
    };
    tracing::info!(
        path = %path.display(),
        reference = %image.reference,
        manifest = %image.manifest_digest,
        layers = image.layers.len(),
        "imported image"
    );
    Ok(image)
}

/// Files of an archive by their cleaned relative path.
trait Source {
    /// The member's size, or `None` if it does not exist.
    fn size(&self, name: &str) -> Result<Option<u64>, OciError>;
    /// Opens the member for reading.
    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError>;
}

fn read_member(src: &dyn Source, name: &str, max: u64) -> Result<Vec<u8>, OciError> {
    if src.size(name)?.is_some_and(|s| s > max) {
        return Err(OciError::TooLarge {
            what: name.to_owned(),
            max,
        });
    }
    read_limited(src.open(name)?, max, name)
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn import_oci(src: &dyn Source, path: &Path, cache: &BlobCache) -> Result<Image, OciError> {
    let shown = path.display().to_string();
    let index = read_member(src, "index.json", MAX_MANIFEST_BYTES)?;
    let Parsed::Index(entries) = manifest::parse(&index, "index.json")? else {
        return Err(OciError::Archive {
            path: path.into(),
            reason: "index.json is no index".into(),
        });
    };
    let mut chosen = manifest::select_platform(&entries, &shown)?.clone();
    let reference = chosen
        .annotations
        .as_ref()
        .and_then(|a| {
            a.get(REF_NAME)
                .or_else(|| a.get("io.containerd.image.name"))
        })
        .cloned()
        .unwrap_or(shown.clone());
    // index.json may point at a per-platform index (multi-platform `docker save`): one level.
    for depth in 0..2 {
        let digest = Digest::parse(&chosen.digest)?;
        manifest::check_size(&chosen, MAX_MANIFEST_BYTES, "manifest")?;
        let bytes = read_member(src, &blob_name(&digest), MAX_MANIFEST_BYTES)?;
        verify(&bytes, &digest, "manifest")?;
        match manifest::parse(&bytes, "manifest")? {
            Parsed::Index(inner) if depth == 0 => {
                chosen = manifest::select_platform(&inner, &shown)?.clone();
            }
            Parsed::Index(_) => break,
            Parsed::Manifest(m) => {
                let config_bytes =
                    read_member(src, &blob_name(&m.config_digest), MAX_CONFIG_BYTES)?;
                verify(&config_bytes, &m.config_digest, "image config")?;
                let config = manifest::parse_config(&config_bytes)?;
                cache.insert(
                    &m.config_digest,
                    &config_bytes[..],
                    MAX_CONFIG_BYTES,
                    "config",
                )?;
                for layer in &m.layers {
                    if !cache.contains(&layer.digest) {
                        let what = format!("layer {}", layer.digest);
                        let reader = src.open(&blob_name(&layer.digest))?;
                        cache.insert(&layer.digest, reader, layer.size, &what)?;
                    }
                }
                return Ok(Image {
                    reference,
                    manifest_digest: digest,
                    config_digest: m.config_digest,
                    config,
                    layers: m.layers,
                });
            }
        }
    }
    Err(OciError::UnsupportedMediaType {
        what: shown,
        media_type: "nested image index".into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Legacy `docker save`: `manifest.json` names the config and layer tars by path. Digests are
/// computed (or checked, where the path is `blobs/sha256/<hex>`), and the image's identity is the
/// digest of an OCI manifest synthesised from them, since the tarball carries none.
fn import_docker(src: &dyn Source, path: &Path, cache: &BlobCache) -> Result<Image, OciError> {
    let bytes = read_member(src, "manifest.json", MAX_MANIFEST_BYTES)?;
    let list: Vec<DockerManifest> =
        serde_json::from_slice(&bytes).map_err(|e| OciError::json("manifest.json", e))?;
    let [m] = <[DockerManifest; 1]>::try_from(list).map_err(|list| OciError::Archive {
        path: path.into(),
        reason: format!(
            "manifest.json lists {} images; exactly one is supported",
            list.len()
        ),
    })?;
    if m.layers.len() > MAX_LAYERS {
        return Err(OciError::TooManyLayers {
            count: m.layers.len(),
            max: MAX_LAYERS,
        });
    }
    let config_name = clean_name(&m.config);
    let config_bytes = read_member(src, &config_name, MAX_CONFIG_BYTES)?;
    let config_digest = Digest::of(&config_bytes);
    if let Some(expected) = digest_from_name(&config_name) {
        verify(&config_bytes, &expected, "image config")?;
    }
    let config = manifest::parse_config(&config_bytes)?;
    cache.insert(
        &config_digest,
        &config_bytes[..],
        MAX_CONFIG_BYTES,
        "config",
    )?;

    let mut layers = Vec::with_capacity(m.layers.len());
    for name in &m.layers {
        let name = clean_name(name);
        let size = src.size(&name)?.ok_or_else(|| OciError::Archive {
            path: path.into(),
            reason: format!("layer {name} is missing"),
        })?;
        let what = format!("layer {name}");
        let (digest, size) = match digest_from_name(&name) {
            Some(d) if cache.contains(&d) => (d, size),
            Some(d) => (d.clone(), cache.insert(&d, src.open(&name)?, size, &what)?),
            None => cache.insert_computed(src.open(&name)?, size, &what)?,
        };
        layers.push(Layer {
            digest,
            media_type: DOCKER_LAYER.into(),
            size,
        });
    }
    let synthesized = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest.as_str(), "size": config_bytes.len() },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": l.digest.as_str(), "size": l.size })).collect::<Vec<_>>(),
    });
    let reference = m
        .repo_tags
        .and_then(|t| t.into_iter().next())
        .unwrap_or_else(|| path.display().to_string());
    Ok(Image {
        reference,
        manifest_digest: Digest::of(synthesized.to_string().as_bytes()),
        config_digest,
        config,
        layers,
    })
}

fn verify(bytes: &[u8], expected: &Digest, what: &str) -> Result<(), OciError> {
    let actual = Digest::of(bytes);
    if actual != *expected {
        return Err(OciError::DigestMismatch {
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn clean_name(name: &str) -> String {
    clean(name.as_bytes()).to_string_lossy().into_owned()
}

/// `blobs/sha256/<hex>` names its own digest.
fn digest_from_name(name: &str) -> Option<Digest> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// An OCI layout directory; members are opened with `RESOLVE_IN_ROOT` below it.
struct DirSource {
    root: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl DirSource {
    fn open(path: &Path) -> Result<Self, OciError> {
        let root = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| OciError::io("open layout", path, e.into()))?;
        Ok(DirSource {
            root,
            path: path.to_owned(),
        })
    }

    fn file(&self, name: &str) -> Result<Option<File>, OciError> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        match openat2(&self.root, clean_name(name), flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(OciError::io("open", self.path.join(name), e.into())),
        }
    }
}

impl Source for DirSource {
    fn size(&self, name: &str) -> Result<Option<u64>, OciError> {
        let Some(f) = self.file(name)? else {
            return Ok(None);
        };
        let meta = f
            .metadata()
            .map_err(|e| OciError::io("stat", self.path.join(name), e))?;
        Ok(meta.is_file().then_some(meta.len()))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError> {
        match self.file(name)? {
            Some(f) => Ok(Box::new(f)),
            None => Err(OciError::Archive {
                path: self.path.clone(),
                reason: format!("{name} is missing"),
            }),
        }
    }
}

/// Where a member of a tarball is.
#[derive(Debug, Clone)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink or hard link to another member (older `docker save` links duplicate layers).
    Link(String),
}

/// An uncompressed tarball, indexed by one pass over its headers.
struct TarSource {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl TarSource {
    fn index(path: &Path) -> Result<Self, OciError> {
        let file = File::open(path).map_err(|e| OciError::io("open", path, e))?;
        let bad = |e: std::io::Error| OciError::Archive {
            path: path.into(),
            reason: format!("not an uncompressed tarball: {e}"),
        };
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if members.len() >= MAX_ARCHIVE_MEMBERS {
                return Err(OciError::Archive {
                    path: path.into(),
                    reason: format!("more than {MAX_ARCHIVE_MEMBERS} members"),
                });
            }
            let name = clean_name(&String::from_utf8_lossy(&entry.path_bytes()));
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let member = match (entry.header().entry_type(), link) {
                (tar::EntryType::Regular, _) => Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                (tar::EntryType::Symlink, Some(target)) => {
                    let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                    Member::Link(clean_name(&format!("{}/{target}", dir.display())))
                }
                (tar::EntryType::Link, Some(target)) => Member::Link(clean_name(&target)),
                _ => continue,
            };
            members.insert(name, member);
        }
        Ok(TarSource {
            path: path.to_owned(),
            members,
        })
    }

    /// Follows links (a few hops at most) to the member holding the bytes.
    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = name.to_owned();
        for _ in 0..8 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => name = target.clone(),
            }
        }
        None
    }
}

impl Source for TarSource {
    fn size(&self, name: &str) -> Result<Option<u64>, OciError> {
        Ok(self.find(&clean_name(name)).map(|(_, size)| size))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError> {
        let (offset, size) = self
            .find(&clean_name(name))
            .ok_or_else(|| OciError::Archive {
                path: self.path.clone(),
                reason: format!("{name} is missing"),
            })?;
        let mut file = File::open(&self.path).map_err(|e| OciError::io("open", &self.path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| OciError::io("seek", &self.path, e))?;
        Ok(Box::new(file.take(size)))
    }
}
