//! The btrfs ioctls (include/uapi/linux/btrfs.h) that the jail tier's storage needs and that no
//! maintained crate wraps: subvolume create, snapshot and delete (by name or by id), the search
//! of the root tree for nested subvolumes, quota groups. The `btrfs` CLI
//! costs a process per call and cannot create a subvolume with its quota limit in the same
//! transaction, nor enable simple quotas on Debian bookworm's btrfs-progs (6.2).
//!
//! ioctl numbers are reused by device drivers (systemd's btrfs-util.c warns about it): every
//! call first checks that the fd is on btrfs, so a wrong fd fails with ENOTTY instead of
//! reaching a driver.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
const BTRFS_IOCTL_MAGIC: u32 = 0x94;
/// `BTRFS_SUBVOL_NAME_MAX`: longest subvolume name, without the terminating NUL.
const SUBVOL_NAME_MAX: usize = 4039;
const PATH_NAME_MAX: usize = 4087;

const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
const BTRFS_SUBVOL_QGROUP_INHERIT: u64 = 1 << 2;
/// `BTRFS_SUBVOL_SPEC_BY_ID`: SNAP_DESTROY_V2 names the subvolume by id, not by name.
const BTRFS_SUBVOL_SPEC_BY_ID: u64 = 1 << 4;
const BTRFS_QGROUP_INHERIT_SET_LIMITS: u64 = 1 << 0;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;
/// `max_rfer` value that clears a limit (the kernel's CLEAR_VALUE).
const CLEAR_LIMIT: u64 = u64::MAX;

/// `BTRFS_QUOTA_CTL_*` commands.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum QuotaCtl {
    /// Full qgroups: every extent's sharing is tracked by backref walks at each commit.
    Enable = 1,
    Disable = 2,
    /// Simple quotas (Linux 6.7): an extent is charged to the subvolume that wrote it.
    EnableSimple = 4,
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_qgroup_inherit` with an empty `qgroups[]` tail.
#[repr(C)]
#[derive(Default)]
struct QgroupInherit {
    flags: u64,
    num_qgroups: u64,
    num_ref_copies: u64,
    num_excl_copies: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_vol_args_v2`, with the `{size, qgroup_inherit}` member of its first union
/// and the `name` member of its second.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    size: u64,
    qgroup_inherit: u64,
    unused: [u64; 2],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` with the `subvolid` member of its second union (the rest
/// of the union is padding here).
#[repr(C)]
struct VolArgsV2ById {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    subvolid: u64,
    pad: [u8; SUBVOL_NAME_MAX + 1 - 8],
}

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of a subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;

/// `BTRFS_ROOT_TREE_OBJECTID`: the tree that holds every subvolume's root item and references.
const ROOT_TREE_OBJECTID: u64 = 1;
/// `BTRFS_ROOT_REF_KEY`: an item keyed (parent subvolume id, ROOT_REF, child subvolume id).
const ROOT_REF_KEY: u32 = 156;

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    /// In: the most items to return; out: how many were returned.
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

const SEARCH_BUF_SIZE: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `struct btrfs_ioctl_search_args`: the key, then items as (header, data) pairs.
#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF_SIZE],
}

/// `struct btrfs_ioctl_search_header`, which precedes each item in the buffer (at any
/// alignment, so it is read field by field).
const SEARCH_HEADER_SIZE: usize = 32;

/// `struct btrfs_ioctl_fs_info_args`: 1024 bytes, `fsid` at offset 16.
#[repr(C, align(8))]
struct FsInfoArgs([u8; 1024]);

const _: () = {
    assert!(std::mem::size_of::<VolArgsV2>() == 4096);
    assert!(std::mem::size_of::<VolArgs>() == 4096);
    assert!(std::mem::size_of::<VolArgsV2ById>() == 4096);
    assert!(std::mem::offset_of!(VolArgsV2ById, subvolid) == 56);
    assert!(std::mem::size_of::<SearchKey>() == 104);
    assert!(std::mem::size_of::<SearchArgs>() == 4096);
    assert!(std::mem::size_of::<QgroupInherit>() == 72);
    assert!(std::mem::size_of::<QgroupLimitArgs>() == 48);
    assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
};

/// The kernel's `_IOC(dir, 0x94, nr, size)`.
const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    // Sizes are below 2^14 (the field's width); checked by the size asserts above.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    (dir << 30 | size << 16 | BTRFS_IOCTL_MAGIC << 8 | nr) as libc::c_ulong
}
const WRITE: u32 = 1;
const READ: u32 = 2;
const SNAP_DESTROY: libc::c_ulong = ioc(WRITE, 15, std::mem::size_of::<VolArgs>());
const SNAP_CREATE_V2: libc::c_ulong = ioc(WRITE, 23, std::mem::size_of::<VolArgsV2>());
const SUBVOL_CREATE_V2: libc::c_ulong = ioc(WRITE, 24, std::mem::size_of::<VolArgsV2>());
const TREE_SEARCH: libc::c_ulong = ioc(READ | WRITE, 17, std::mem::size_of::<SearchArgs>());
const SNAP_DESTROY_V2: libc::c_ulong = ioc(WRITE, 63, std::mem::size_of::<VolArgsV2ById>());
const INO_LOOKUP: libc::c_ulong = ioc(READ | WRITE, 18, std::mem::size_of::<InoLookupArgs>());
const SUBVOL_SETFLAGS: libc::c_ulong = ioc(WRITE, 26, std::mem::size_of::<u64>());
const FS_INFO: libc::c_ulong = ioc(READ, 31, std::mem::size_of::<FsInfoArgs>());
const QUOTA_CTL: libc::c_ulong = ioc(READ | WRITE, 40, std::mem::size_of::<QuotaCtlArgs>());
const QGROUP_LIMIT: libc::c_ulong = ioc(READ, 43, std::mem::size_of::<QgroupLimitArgs>());

fn ensure_btrfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    let st = rustix::fs::fstatfs(fd)?;
    if st.f_type & 0xffff_ffff != BTRFS_SUPER_MAGIC {
        return Err(io::Error::from_raw_os_error(libc::ENOTTY));
    }
    Ok(())
}

/// Copies a subvolume name into a zeroed, NUL-terminated array, refusing what the kernel would
/// resolve as anything but one new entry of the directory.
fn name_into(name: &[u8], dst: &mut [u8]) -> io::Result<()> {
    if name.is_empty()
        || name == b"."
        || name == b".."
        || name.len() >= dst.len()
        || name.iter().any(|b| *b == b'/' || *b == 0)
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    dst[..name.len()].copy_from_slice(name);
    Ok(())
}

fn inherit_limit(limit: u64) -> QgroupInherit {
    QgroupInherit {
        flags: BTRFS_QGROUP_INHERIT_SET_LIMITS,
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: limit,
            ..QgroupLimit::default()
        },
        ..QgroupInherit::default()
    }
}

/// Creates subvolume `name` in directory `dir`: a writable snapshot of `source` when given, an
/// empty subvolume otherwise; with `limit`, its quota group is limited to that many bytes in the
/// same transaction.
pub(crate) fn create(
    dir: BorrowedFd<'_>,
    name: &[u8],
    source: Option<BorrowedFd<'_>>,
    limit: Option<u64>,
) -> io::Result<()> {
    ensure_btrfs(dir)?;
    let mut args = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        size: 0,
        qgroup_inherit: 0,
        unused: [0; 2],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    let inherit = limit.map(inherit_limit);
    if let Some(inherit) = &inherit {
        args.flags |= BTRFS_SUBVOL_QGROUP_INHERIT;
        args.size = std::mem::size_of::<QgroupInherit>() as u64;
        args.qgroup_inherit = std::ptr::from_ref(inherit) as u64;
    }
    let request = match source {
        Some(src) => {
            ensure_btrfs(src)?;
            args.fd = i64::from(src.as_raw_fd());
            SNAP_CREATE_V2
        }
        None => SUBVOL_CREATE_V2,
    };
    // SAFETY: `dir` (and `source`) are open fds on btrfs (checked above), so the request number
    // means the btrfs ioctl. `args` is a correctly laid out, fully initialized
    // btrfs_ioctl_vol_args_v2 (size asserted at compile time) with a NUL-terminated name; when
    // QGROUP_INHERIT is set, `qgroup_inherit` points to `inherit`, which outlives the call and
    // is exactly `size` bytes with no trailing qgroup ids (num_qgroups = 0). The kernel only
    // reads both.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), request, &raw const args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes subvolume `name` in directory `dir` (its blocks are freed in the background).
pub(crate) fn destroy(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    ensure_btrfs(dir)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    // SAFETY: `dir` is an open fd on btrfs (checked); `args` is a fully initialized
    // btrfs_ioctl_vol_args with a NUL-terminated name, only read by the kernel.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), SNAP_DESTROY, &raw const args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes the subvolume with id `subvolid`, wherever in the filesystem of `fs` it is linked
/// (its blocks are freed in the background). Fails with ENOTEMPTY while it holds nested
/// subvolumes. `fs` must be on a mount without an idmapping: on an idmapped one the kernel only
/// deletes subvolumes directly beneath `fs`.
pub(crate) fn destroy_by_id(fs: BorrowedFd<'_>, subvolid: u64) -> io::Result<()> {
    ensure_btrfs(fs)?;
    if subvolid < FIRST_FREE_OBJECTID {
        // The top level (5) and the internal trees are never a sandbox's.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let args = VolArgsV2ById {
        fd: 0,
        transid: 0,
        flags: BTRFS_SUBVOL_SPEC_BY_ID,
        unused: [0; 4],
        subvolid,
        pad: [0; SUBVOL_NAME_MAX + 1 - 8],
    };
    // SAFETY: `fs` is an open fd on btrfs (checked), so the request number means the btrfs
    // ioctl; `args` is a fully initialized btrfs_ioctl_vol_args_v2 (size and the offset of
    // `subvolid` asserted at compile time) with SPEC_BY_ID set, only read by the kernel.
    let ret = unsafe { libc::ioctl(fs.as_raw_fd(), SNAP_DESTROY_V2, &raw const args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ids of the subvolumes linked directly beneath subvolume `parent` (anywhere in its
/// directory tree), from the ROOT_REF items of the root tree. Needs CAP_SYS_ADMIN.
pub(crate) fn child_subvolumes(fs: BorrowedFd<'_>, parent: u64) -> io::Result<Vec<u64>> {
    ensure_btrfs(fs)?;
    let mut children = Vec::new();
    let mut min_offset = 0;
    loop {
        let mut args = SearchArgs {
            key: SearchKey {
                tree_id: ROOT_TREE_OBJECTID,
                min_objectid: parent,
                max_objectid: parent,
                min_offset,
                max_offset: u64::MAX,
                min_transid: 0,
                max_transid: u64::MAX,
                min_type: ROOT_REF_KEY,
                max_type: ROOT_REF_KEY,
                nr_items: u32::MAX,
                ..SearchKey::default()
            },
            buf: [0; SEARCH_BUF_SIZE],
        };
        // SAFETY: `fs` is an open fd on btrfs (checked); `args` is a fully initialized
        // btrfs_ioctl_search_args of the size the request number encodes (asserted at compile
        // time), exclusively borrowed for the kernel to read the key and fill the buffer.
        let ret = unsafe { libc::ioctl(fs.as_raw_fd(), TREE_SEARCH, &raw mut args) };
        if ret == -1 {
            return Err(io::Error::last_os_error());
        }
        let items = parse_search_items(&args.buf, args.key.nr_items)?;
        let Some(last) = items.last().map(|i| i.offset) else {
            return Ok(children);
        };
        children.extend(
            items
                .iter()
                .filter(|i| i.objectid == parent && i.kind == ROOT_REF_KEY)
                .map(|i| i.offset),
        );
        // Keys are (objectid, type, offset) with the first two fixed: continue past the last.
        match last.checked_add(1) {
            Some(next) => min_offset = next,
            None => return Ok(children),
        }
    }
}

/// The key of one item of a tree search result.
#[derive(Debug, PartialEq, Eq)]
struct SearchItem {
    objectid: u64,
    kind: u32,
    offset: u64,
}

/// Reads the headers of the `count` items the kernel wrote into a search buffer.
fn parse_search_items(buf: &[u8], count: u32) -> io::Result<Vec<SearchItem>> {
    let u64_at = |at: usize| {
        buf.get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let u32_at = |at: usize| {
        buf.get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed tree search result");
    let mut items = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        // Header: transid, objectid, offset (u64), type, len (u32), in host byte order.
        let objectid = u64_at(at + 8).ok_or_else(malformed)?;
        let offset = u64_at(at + 16).ok_or_else(malformed)?;
        let kind = u32_at(at + 24).ok_or_else(malformed)?;
        let len = u32_at(at + 28).ok_or_else(malformed)?;
        at = at
            .checked_add(SEARCH_HEADER_SIZE + len as usize)
            .filter(|end| *end <= buf.len())
            .ok_or_else(malformed)?;
        items.push(SearchItem {
            objectid,
            kind,
            offset,
        });
    }
    Ok(items)
}

/// The id of the subvolume `fd` is in (which is also its level-0 quota group id).
pub(crate) fn subvolume_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    ensure_btrfs(fd)?;
    let mut args = InoLookupArgs {
        // 0: the subvolume of the fd, whose id the kernel writes back here.
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: `fd` is an open fd on btrfs (checked); `args` is a fully initialized
    // btrfs_ioctl_ino_lookup_args, exclusively borrowed for the kernel to read and fill.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), INO_LOOKUP, &raw mut args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(args.treeid)
}

/// Sets (or with `None` clears) the referenced-bytes limit of quota group `qgroupid`. The ioctl
/// starts a transaction in the subvolume of `fs`, reserving space there: `fs` must be in a
/// subvolume with room (the top level), not in the one at its limit.
pub(crate) fn set_limit(fs: BorrowedFd<'_>, qgroupid: u64, limit: Option<u64>) -> io::Result<()> {
    ensure_btrfs(fs)?;
    if qgroupid == 0 {
        // 0 would mean "the subvolume of `fs`".
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let args = QgroupLimitArgs {
        qgroupid,
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: limit.unwrap_or(CLEAR_LIMIT),
            ..QgroupLimit::default()
        },
    };
    // SAFETY: `fs` is an open fd on btrfs (checked); `args` is a fully initialized
    // btrfs_ioctl_qgroup_limit_args. The ioctl is declared _IOR but the kernel only reads it.
    let ret = unsafe { libc::ioctl(fs.as_raw_fd(), QGROUP_LIMIT, &raw const args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the subvolume `subvol` is the root of read-only.
pub(crate) fn set_read_only(subvol: BorrowedFd<'_>) -> io::Result<()> {
    ensure_btrfs(subvol)?;
    let flags: u64 = BTRFS_SUBVOL_RDONLY;
    // SAFETY: `subvol` is an open fd on btrfs (checked); the argument is a u64 the kernel reads.
    let ret = unsafe { libc::ioctl(subvol.as_raw_fd(), SUBVOL_SETFLAGS, &raw const flags) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Enables or disables quotas on the filesystem `fs` is on. Enabling commits a transaction.
pub(crate) fn quota_ctl(fs: BorrowedFd<'_>, cmd: QuotaCtl) -> io::Result<()> {
    ensure_btrfs(fs)?;
    let mut args = QuotaCtlArgs {
        cmd: cmd as u64,
        status: 0,
    };
    // SAFETY: `fs` is an open fd on btrfs (checked); `args` is a fully initialized
    // btrfs_ioctl_quota_ctl_args that the kernel may read and write, exclusively borrowed.
    let ret = unsafe { libc::ioctl(fs.as_raw_fd(), QUOTA_CTL, &raw mut args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The filesystem's id: the name of its directory under /sys/fs/btrfs.
pub(crate) fn fsid(fs: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    ensure_btrfs(fs)?;
    // Zeroed flags ask for no optional fields.
    let mut args = FsInfoArgs([0; 1024]);
    // SAFETY: `fs` is an open fd on btrfs (checked); `args` is 1024 zeroed, 8-aligned bytes,
    // the size of btrfs_ioctl_fs_info_args, exclusively borrowed for the kernel to fill.
    let ret = unsafe { libc::ioctl(fs.as_raw_fd(), FS_INFO, &raw mut args) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut id = [0; 16];
    id.copy_from_slice(&args.0[16..32]);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_uapi_header() {
        // Values of BTRFS_IOC_* as the C preprocessor computes them.
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(SUBVOL_CREATE_V2, 0x5000_9418);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
        assert_eq!(TREE_SEARCH, 0xd000_9411);
        assert_eq!(SNAP_DESTROY_V2, 0x5000_943f);
        assert_eq!(SUBVOL_SETFLAGS, 0x4008_941a);
        assert_eq!(FS_INFO, 0x8400_941f);
        assert_eq!(QUOTA_CTL, 0xc010_9428);
        assert_eq!(QGROUP_LIMIT, 0x8030_942b);
    }

    #[test]
    fn names_that_are_not_one_new_entry_are_refused() {
        let mut buf = [0u8; 16];
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", b"0123456789abcdef"] {
            assert!(name_into(bad, &mut buf).is_err(), "{bad:?}");
        }
        name_into(b"rootfs", &mut buf).unwrap();
        assert_eq!(&buf[..7], b"rootfs\0");
    }

    #[test]
    fn ioctls_refuse_fds_not_on_btrfs() {
        let dev = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        let err = fsid(dev.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        let err = child_subvolumes(dev.as_fd(), 5).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        let err = destroy_by_id(dev.as_fd(), 256).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }

    fn header(objectid: u64, kind: u32, offset: u64, len: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&7u64.to_ne_bytes());
        h.extend_from_slice(&objectid.to_ne_bytes());
        h.extend_from_slice(&offset.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&len.to_ne_bytes());
        h
    }

    #[test]
    fn search_results_are_read_at_any_alignment_and_bounded() {
        // Two ROOT_REF items whose data (18 bytes of btrfs_root_ref plus a name) leaves the
        // second header unaligned.
        let mut buf = header(256, ROOT_REF_KEY, 257, 21);
        buf.extend_from_slice(&[0; 21]);
        buf.extend(header(256, ROOT_REF_KEY, 300, 18));
        buf.extend_from_slice(&[0; 18]);
        let items = parse_search_items(&buf, 2).unwrap();
        assert_eq!(
            items,
            [
                SearchItem {
                    objectid: 256,
                    kind: ROOT_REF_KEY,
                    offset: 257
                },
                SearchItem {
                    objectid: 256,
                    kind: ROOT_REF_KEY,
                    offset: 300
                },
            ]
        );
        // A count or a length past the buffer is refused, not read out of bounds.
        assert!(parse_search_items(&buf, 3).is_err());
        let bad = header(256, ROOT_REF_KEY, 257, 4096);
        assert!(parse_search_items(&bad, 1).is_err());
    }
}
