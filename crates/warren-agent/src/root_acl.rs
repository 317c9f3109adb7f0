//! Root's access to what it gave away. Root in the sandbox holds no capabilities, so once it
//! hands a file or directory to another user (`dpkg-statoverride` makes `/etc/redis`
//! `redis:redis 2770`), root is just "other" to it and may lose access that a root anywhere
//! else keeps (dpkg then cannot stat its own conffile there). After the agent makes root's
//! chown or chmod of a file root does not own, it adds a POSIX ACL entry for uid 0 whose
//! rights the mask caps at the group's: root keeps what the group has, the mode bits (`ls -l`,
//! `stat`) do not change, and nothing is granted to anyone else. A file that already has an
//! ACL is left alone: that ACL is the tenant's.

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::{FileType, XattrFlags};

const ACL_XATTR: &str = "system.posix_acl_access";
/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// `ACL_UNDEFINED_ID`, for entries that name no one.
const NO_ID: u32 = u32::MAX;

/// The ACL that gives uid 0 the group's rights over a file of mode `mode` (low nine bits).
fn acl_for(mode: u32) -> Vec<u8> {
    let (u, g, o) = ((mode >> 6) & 7, (mode >> 3) & 7, mode & 7);
    // Entries sorted by tag, then id, as the kernel requires.
    let entries = [
        (USER_OBJ, u, NO_ID),
        (USER, 7, 0),
        (GROUP_OBJ, g, NO_ID),
        (MASK, g, NO_ID),
        (OTHER, o, NO_ID),
    ];
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&u16::try_from(perm).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Whether root, as "other", would have less than the group: only then is an entry needed.
fn needs_entry(mode: u32) -> bool {
    let (g, o) = ((mode >> 3) & 7, mode & 7);
    g & !o != 0
}

/// Adds root's entry to `target` (an O_PATH descriptor) when root does not own it and would
/// otherwise have less than its group. Best effort: a filesystem without ACLs keeps the plain
/// kernel behaviour.
pub(crate) fn keep_root_access(target: &OwnedFd) {
    let Ok(st) = rustix::fs::fstat(target) else {
        return;
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if st.st_uid == 0 || !matches!(kind, FileType::Directory | FileType::RegularFile) {
        return;
    }
    let mode = st.st_mode & 0o777;
    if !needs_entry(mode) {
        return;
    }
    // O_PATH descriptors take no xattr calls; the /proc link reaches the same inode.
    let path = format!("/proc/self/fd/{}", target.as_raw_fd());
    if rustix::fs::getxattr_query(path.as_str(), ACL_XATTR).is_ok_and(|n| n > 0) {
        return;
    }
    let _ = rustix::fs::setxattr(
        path.as_str(),
        ACL_XATTR,
        &acl_for(mode),
        XattrFlags::empty(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_caps_root_at_the_groups_rights_and_keeps_the_mode() {
        let acl = acl_for(0o750);
        assert_eq!(acl.len(), 4 + 5 * 8);
        let entry = |i: usize| {
            let e = &acl[4 + i * 8..4 + (i + 1) * 8];
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        };
        assert_eq!(entry(0), (USER_OBJ, 7, NO_ID));
        assert_eq!(entry(1), (USER, 7, 0));
        assert_eq!(entry(2), (GROUP_OBJ, 5, NO_ID));
        assert_eq!(
            entry(3),
            (MASK, 5, NO_ID),
            "the mask is the group's bits: the mode stays 750"
        );
        assert_eq!(entry(4), (OTHER, 0, NO_ID));
        assert!(needs_entry(0o2770 & 0o777));
        assert!(needs_entry(0o640));
        assert!(!needs_entry(0o755), "other already has all the group has");
        assert!(!needs_entry(0o700), "the group has nothing either");
    }
}
