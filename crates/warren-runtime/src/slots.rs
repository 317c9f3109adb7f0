//! uid/gid range slots: each sandbox owns one 65536-id range on the host, never shared while the
//! sandbox exists. A slot is a file created with O_EXCL, so allocation is atomic across every
//! process using the data dir and survives restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::io_error::IoError;

/// Slot bookkeeping failures.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Every slot is taken.
    #[error("no free uid range: {0} sandboxes exist")]
    Exhausted(u32),
    /// The slot directory could not be used.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// The slot directory.
#[derive(Debug)]
pub(crate) struct Slots {
    dir: PathBuf,
    count: u32,
}

impl Slots {
    pub(crate) fn open(dir: &Path, count: u32) -> Result<Self, SlotError> {
        std::fs::create_dir_all(dir).map_err(|source| {
            SlotError::Io(IoError {
                action: "create the uid slot dir",
                path: dir.to_owned(),
                source,
            })
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            count,
        })
    }

    /// Claims a free slot for `owner`.
    pub(crate) fn allocate(&self, owner: &str) -> Result<u32, SlotError> {
        // Start at a random slot so concurrent allocators rarely contend on the same files.
        let start = u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .unwrap_or([0; 4]),
        ) % self.count;
        for i in 0..self.count {
            let n = (start + i) % self.count;
            let path = self.dir.join(n.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(|source| {
                        SlotError::Io(IoError {
                            action: "record the owner of the uid slot",
                            path: path.clone(),
                            source,
                        })
                    })?;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(SlotError::Io(IoError {
                        action: "claim the uid slot",
                        path,
                        source,
                    }));
                }
            }
        }
        Err(SlotError::Exhausted(self.count))
    }

    /// Frees every slot `owner` holds. Not holding one is not an error.
    pub(crate) fn release_owner(&self, owner: &str) -> Result<(), SlotError> {
        for (n, o) in self.list()? {
            if o == owner {
                let path = self.dir.join(n.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(SlotError::Io(IoError {
                            action: "release the uid slot",
                            path,
                            source,
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every held slot and its owner.
    pub(crate) fn list(&self) -> Result<Vec<(u32, String)>, SlotError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| {
            SlotError::Io(IoError {
                action: "list the uid slots in",
                path: self.dir.clone(),
                source,
            })
        })?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(e.path()).ok()?;
                Some((n, owner))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 3).unwrap();
        let a = slots.allocate("a").unwrap();
        let b = slots.allocate("b").unwrap();
        let c = slots.allocate("c").unwrap();
        let mut all = vec![a, b, c];
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2]);
        assert!(matches!(slots.allocate("d"), Err(SlotError::Exhausted(3))));
        slots.release_owner("b").unwrap();
        assert_eq!(slots.allocate("d").unwrap(), b);
    }
}
