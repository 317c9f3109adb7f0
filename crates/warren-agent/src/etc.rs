//! The few files of the sandbox's `/etc` the agent keeps: the resolver, the machine id and the
//! line for its own hostname. They are in the tenant's root, which outlives restarts, so each
//! is opened once without blocking (a FIFO there must not hang PID 1), checked on that
//! descriptor (a regular file of at most [`MAX_BYTES`]; anything else is left alone), and
//! written only when its content must change.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest such file the agent reads or rewrites.
pub(crate) const MAX_BYTES: u64 = 1 << 20;

/// Whether the path may be a symlink to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Follow one (images link `/etc/resolv.conf` elsewhere; it is all inside the jail).
    Follow,
    /// Leave a symlink alone.
    Refuse,
}

/// Opens `path` (creating it empty, mode 0644, when `create`), hands its text to `change`, and
/// writes what that returns; `None` writes nothing. Returns whether it wrote.
pub(crate) fn edit(
    path: &Path,
    links: Links,
    create: bool,
    change: impl FnOnce(&str) -> Option<String>,
) -> io::Result<bool> {
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o644)
        .custom_flags(flags)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Ok(false);
    }
    let Some(bytes) = read_capped(&file, MAX_BYTES)? else {
        // It grew since it was measured: left alone like any file past the limit.
        return Ok(false);
    };
    // Bytes that are not UTF-8 (a tenant's) read as U+FFFD rather than stop the edit.
    let current = String::from_utf8_lossy(&bytes);
    let Some(wanted) = change(&current) else {
        return Ok(false);
    };
    overwrite(&file, wanted.as_bytes(), &bytes)?;
    Ok(true)
}

/// The whole of `file` from its start (whatever its offset), or `None` if it holds more than
/// `cap` bytes.
pub(crate) fn read_capped(file: &File, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let (mut all, mut chunk) = (Vec::new(), vec![0; 64 << 10]);
    loop {
        match file.read_at(&mut chunk, all.len() as u64) {
            Ok(0) => return Ok(Some(all)),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if all.len() as u64 > cap {
            return Ok(None);
        }
    }
}

/// Replaces the whole content of `file` (read as `old`) with `new`. Should that fail part way
/// (a full disk), `old` goes back rather than the file staying cut short.
pub(crate) fn overwrite(file: &File, new: &[u8], old: &[u8]) -> io::Result<()> {
    let put = |data: &[u8]| {
        file.set_len(0)?;
        file.write_all_at(data, 0)
    };
    put(new).inspect_err(|_| {
        let _ = put(old);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(text: &'static str) -> impl FnOnce(&str) -> Option<String> {
        move |now| (now != text).then(|| text.to_owned())
    }

    #[test]
    fn writes_only_a_regular_small_file_and_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // Missing: created only when asked.
        assert!(edit(&p, Links::Refuse, false, replace("a\n")).is_err());
        assert!(edit(&p, Links::Refuse, true, replace("a\n")).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\n");
        // Shorter content leaves no tail of the longer one.
        std::fs::write(&p, "a much longer text\n").unwrap();
        assert!(edit(&p, Links::Refuse, false, replace("a\n")).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\n");
        // Nothing to change: nothing written.
        assert!(!edit(&p, Links::Refuse, false, replace("a\n")).unwrap());
        // Too big: left alone.
        let big = "x".repeat(usize::try_from(MAX_BYTES).unwrap() + 1);
        std::fs::write(&p, &big).unwrap();
        assert!(!edit(&p, Links::Refuse, false, replace("a\n")).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().len(), big.len());
    }

    #[test]
    fn a_fifo_or_a_refused_link_is_left_alone_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(!edit(&fifo, Links::Follow, true, replace("a\n")).unwrap());
        let target = dir.path().join("target");
        std::fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(edit(&link, Links::Refuse, true, replace("new\n")).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old\n");
        assert!(edit(&link, Links::Follow, true, replace("new\n")).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
    }
}
