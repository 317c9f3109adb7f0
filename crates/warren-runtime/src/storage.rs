//! Copy-on-write storage: images, snapshots and sandbox root filesystems as btrfs subvolumes.
//!
//! Layout under the data dir:
//! ```text
//! <data>/warren.btrfs             sparse loop image, only when <data> is not on btrfs
//! <data>/fs/                      the btrfs filesystem (loop mount, or a plain dir on a btrfs host)
//!   images/<name@tag>/            read-only subvolume per image
//!   images/.build-*/              an image being built (deleted at open if a build was killed)
//!   sandboxes/<id>/rootfs/        writable snapshot of the image: O(1), own inodes per sandbox
//!   sandboxes/<id>/rw/            subvolume: tmp/ (mounted at /tmp; persistent, not captured),
//!                                 certs/ (mounted over /etc/ssl/certs), and hosts and
//!                                 hostname (bound over /etc's, rewritten at each boot)
//!   sandboxes/<id>/etc/           machine-id and resolv.conf, bound read-only over the rootfs's
//!   sandboxes/<id>/rootfs/tmp/    nested subvolume instead, in a VM's rootfs (see TmpLayout)
//!   volumes/<id>/                 subvolume per volume, mounted into sandboxes (see `volumes`)
//! ```
//! The rootfs and rw (or nested /tmp) subvolumes each carry a qgroup limit of the sandbox's disk size: writing
//! past it fails with EDQUOT inside, and nothing outside is affected.
//!
//! Quotas are btrfs simple quotas (Linux 6.7+): an extent is charged to the subvolume that wrote
//! it, so a fresh snapshot uses nothing and its limit caps what the sandbox itself writes (the
//! image it shares is charged to the image). Full qgroups would walk the backrefs of every
//! shared extent at each transaction commit: with many snapshots of one image that made each
//! create and delete cost 50 ms to seconds. On older kernels, or a host filesystem that already
//! runs full qgroups, those are used instead.

mod error;
mod images;
mod names;
mod open;
mod own;
mod pool;
mod rootfs;
mod store;
mod volumes;

pub use error::StorageError;
pub use pool::{
    POOL_IMAGE, PRIVATE_DIR, PRIVATE_FILE, is_formatted_pool, loop_device_of, loop_direct_io,
    make_private_dir, make_private_file, pool_mount_flags, pool_quota_mode,
};
pub(crate) use rootfs::read_ahead;
pub(crate) use store::BuildState;
pub use store::{BtrfsStorage, Storage, TmpLayout};
