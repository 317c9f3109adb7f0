//! The microVM's initramfs with the agent in it.
//!
//! The kernel unpacks every cpio archive concatenated in the initrd, compressed or not
//! (Documentation/driver-api/early-userspace/buffer-format.rst), so the agent is added by
//! appending a second, uncompressed archive to the prebuilt one instead of rebuilding it.
//! The initramfs `/init` then finds `/warren-agent` and execs it as the guest's PID 1.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// Writes `out` = the bytes of `base` (a gzip'd newc cpio, copied as is), NULs up to a multiple
/// of 4 bytes, then an uncompressed newc archive holding `agent` as the regular file `warren-agent` (mode 0755,
/// owned by root). `out` is replaced atomically: a VM booting from it never sees half a file.
pub(crate) fn write_initrd(base: &Path, agent: &Path, out: &Path) -> std::io::Result<()> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        let base_len = std::io::copy(&mut File::open(base)?, &mut w)?;
        // The kernel looks for the next archive's "070701" only at an offset that is a multiple
        // of 4 and skips NULs to get there (init/initramfs.c, unpack_to_rootfs); a gzip
        // stream ends wherever it ends.
        let pad = usize::try_from(base_len.next_multiple_of(4) - base_len).unwrap_or(0);
        w.write_all(&[0; 3][..pad])?;
        let mut data = Vec::new();
        File::open(agent)?.read_to_end(&mut data)?;
        w.write_all(&newc_archive("warren-agent", 0o100_755, &data)?)?;
        w.flush()?;
    }
    // qemu runs as the sandbox's unprivileged ids and must read it; a temp file starts 0600.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(out).map_err(|e| e.error)?;
    Ok(())
}

/// One file and the trailer as a newc ("070701") cpio archive. The format is a 110-byte ASCII
/// header of 8-digit hex fields, the NUL-terminated name padded to 4 bytes, then the data padded
/// to 4 bytes; writing it by hand takes a dozen lines, against a crate inside the trust boundary
/// of every VM's boot.
fn newc_archive(name: &str, mode: u32, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let size = u32::try_from(data.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large for cpio")
    })?;
    let mut out = Vec::with_capacity(data.len() + 512);
    newc_entry(&mut out, 1, name, mode, 1, data, size);
    newc_entry(&mut out, 2, "TRAILER!!!", 0, 1, &[], 0);
    Ok(out)
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    name: &str,
    mode: u32,
    nlink: u32,
    data: &[u8],
    size: u32,
) {
    let namesize = name.len() + 1;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check: uid, gid and mtime 0 keep the archive reproducible.
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, uid, gid, data) of each entry, read back by the format's rules.
    fn parse(mut buf: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut entries = Vec::new();
        while !buf.is_empty() {
            let h = &buf[..110];
            assert_eq!(&h[..6], b"070701");
            let field = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let (mode, uid, gid, size, namesize) = (
                field(1),
                field(2),
                field(3),
                field(6) as usize,
                field(11) as usize,
            );
            let name_end = 110 + namesize;
            assert_eq!(buf[name_end - 1], 0, "name is NUL-terminated");
            let name = String::from_utf8(buf[110..name_end - 1].to_vec()).unwrap();
            let data_start = align(name_end);
            let data = buf[data_start..data_start + size].to_vec();
            buf = &buf[align(data_start + size)..];
            entries.push((name, mode, uid, gid, data));
        }
        entries
    }

    #[test]
    fn appends_the_agent_as_a_newc_archive_after_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio.gz");
        let agent = dir.path().join("agent");
        let out = dir.path().join("initrd");
        // Odd lengths, so every padding rule is exercised.
        std::fs::write(&base, b"\x1f\x8bnot really gzip").unwrap();
        std::fs::write(&agent, b"\x7fELF agent bytes").unwrap();
        std::fs::write(&out, b"an older initrd").unwrap();
        write_initrd(&base, &agent, &out).unwrap();

        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.starts_with(b"\x1f\x8bnot really gzip"));
        // 17 bytes of base, 3 NULs to the next multiple of 4.
        assert_eq!(&bytes[17..20], &[0, 0, 0]);
        let archive = &bytes[20..];
        assert_eq!(archive.len() % 4, 0);
        let entries = parse(archive);
        assert_eq!(
            entries,
            vec![
                (
                    "warren-agent".into(),
                    0o100_755,
                    0,
                    0,
                    b"\x7fELF agent bytes".to_vec()
                ),
                ("TRAILER!!!".into(), 0, 0, 0, vec![]),
            ]
        );
        // Only `out` was written: no temp file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["agent", "base.cpio.gz", "initrd"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    /// The archive as GNU cpio reads it, where cpio is installed (the format test above does
    /// not depend on it).
    #[test]
    fn cpio_lists_the_archive() {
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-it", "-v"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return;
        };
        let archive = newc_archive("warren-agent", 0o100_755, b"12345").unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.starts_with("-rwxr-xr-x"), "{listing}");
        assert!(listing.trim_end().ends_with("warren-agent"), "{listing}");
        assert_eq!(listing.lines().count(), 1);
    }
}
