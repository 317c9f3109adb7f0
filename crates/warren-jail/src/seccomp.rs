//! The sandbox's seccomp filters, compiled from `seccomp/x86_64.json` by `build.rs` (see
//! `seccomp/POLICY.md` for what the policy allows and why).
//!
//! Four filters are installed, `MAIN`, `CLONE3`, `BTRFS_IOCTL` (which refuses the btrfs
//! ioctls that `MAIN`'s general ioctl rule would let through), then `NETLINK_AUDIT` (which
//! turns `MAIN`'s EPERM for audit sockets into the EPROTONOSUPPORT of a kernel without audit). The kernel runs every filter of a process
//! and keeps the most restrictive action; between two `ERRNO` results it keeps the one of the
//! most recently installed filter (seccomp(2), "the first-seen action value of highest
//! precedence", filters run newest first). So `clone3` gets `CLONE3`'s ENOSYS instead of
//! `MAIN`'s EPERM, and glibc falls back to `clone`, whose flags `MAIN` can inspect.

use crate::JailError;

mod filters {
    include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));
}

pub(crate) use filters::{BTRFS_IOCTL, CLONE3, MAIN, NETLINK_AUDIT};

/// Installs the filters on the calling thread. Last step before exec: from here on the
/// allowlist applies to the jail itself.
pub(crate) fn install() -> Result<(), JailError> {
    for (filter, program) in [
        ("main", MAIN),
        ("clone3", CLONE3),
        ("btrfs_ioctl", BTRFS_IOCTL),
        ("netlink_audit", NETLINK_AUDIT),
    ] {
        seccompiler::apply_filter(program)
            .map_err(|source| JailError::Seccomp { filter, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Runs the compiled programs in a small classic-BPF interpreter, so the policy's promises
    //! are checked on the bytes the kernel will get, not on the JSON.

    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;

    /// `struct seccomp_data` for one call.
    struct Call {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    fn call(nr: i64, args: &[u64]) -> Call {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        Call {
            nr: u32::try_from(nr).unwrap(),
            arch: AUDIT_ARCH_X86_64,
            args: a,
        }
    }

    /// Loads a 32-bit word of `seccomp_data` (little endian) at `offset`.
    fn load(c: &Call, offset: u32) -> u32 {
        match offset {
            0 => c.nr,
            4 => c.arch,
            8 | 12 => 0,
            16..=63 => {
                let i = usize::try_from((offset - 16) / 8).unwrap();
                let word = c.args[i];
                if offset.is_multiple_of(8) {
                    u32::try_from(word & 0xffff_ffff).unwrap()
                } else {
                    u32::try_from(word >> 32).unwrap()
                }
            }
            other => panic!("load outside seccomp_data: {other}"),
        }
    }

    /// Runs one classic BPF program; supports the instructions seccompiler emits.
    fn run(program: &[seccompiler::sock_filter], c: &Call) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        for _ in 0..program.len() + 1 {
            let insn = &program[pc];
            let (jt, jf, k) = (usize::from(insn.jt), usize::from(insn.jf), insn.k);
            pc += 1;
            match insn.code {
                0x20 => acc = load(c, k),                         // ld  [k]
                0x54 => acc &= k,                                 // and #k
                0x05 => pc += usize::try_from(k).unwrap(),        // ja  k
                0x15 => pc += if acc == k { jt } else { jf },     // jeq
                0x25 => pc += if acc > k { jt } else { jf },      // jgt
                0x35 => pc += if acc >= k { jt } else { jf },     // jge
                0x45 => pc += if acc & k != 0 { jt } else { jf }, // jset
                0x06 => return k,                                 // ret
                other => panic!("unsupported BPF instruction {other:#x}"),
            }
        }
        panic!("BPF program did not return");
    }

    /// What the kernel decides with every filter installed: the most restrictive action, and
    /// between equal actions the newest filter's.
    fn verdict(c: &Call) -> u32 {
        let newest_first = [
            run(NETLINK_AUDIT, c),
            run(BTRFS_IOCTL, c),
            run(CLONE3, c),
            run(MAIN, c),
        ];
        let rank = |ret: u32| -> i32 { (ret & 0xffff_0000).cast_signed() };
        let mut best = newest_first[0];
        for &ret in &newest_first[1..] {
            if rank(ret) < rank(best) {
                best = ret;
            }
        }
        best
    }

    fn errno(e: i32) -> u32 {
        RET_ERRNO | e.cast_unsigned()
    }

    fn assert_verdict(c: &Call, want: u32, what: &str) {
        let got = verdict(c);
        assert_eq!(got, want, "{what}: got {got:#x}, want {want:#x}");
    }

    #[test]
    fn ordinary_work_is_allowed() {
        for (nr, what) in [
            (libc::SYS_read, "read"),
            (libc::SYS_write, "write"),
            (libc::SYS_openat, "openat"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_wait4, "wait4"),
            (libc::SYS_setuid, "setuid"),
            (libc::SYS_setgroups, "setgroups"),
            (libc::SYS_capset, "capset"),
            (libc::SYS_setsid, "setsid"),
            (libc::SYS_epoll_pwait2, "epoll_pwait2"),
            (libc::SYS_getrandom, "getrandom"),
            (libc::SYS_memfd_create, "memfd_create"),
            (libc::SYS_pidfd_open, "pidfd_open"),
            (libc::SYS_rseq, "rseq"),
            (libc::SYS_arch_prctl, "arch_prctl"),
            (libc::SYS_landlock_create_ruleset, "landlock_create_ruleset"),
        ] {
            assert_verdict(&call(nr, &[]), RET_ALLOW, what);
        }
    }

    #[test]
    fn sockets_only_of_the_allowed_families() {
        let socket = |domain: u64, protocol: u64| call(libc::SYS_socket, &[domain, 1, protocol]);
        for (domain, what) in [(1, "AF_UNIX"), (2, "AF_INET"), (10, "AF_INET6")] {
            assert_verdict(&socket(domain, 0), RET_ALLOW, what);
        }
        assert_verdict(&socket(16, 0), RET_ALLOW, "AF_NETLINK/NETLINK_ROUTE");
        assert_verdict(&socket(16, 6), errno(libc::EPERM), "NETLINK_XFRM");
        assert_verdict(&socket(16, 12), errno(libc::EPERM), "NETLINK_NETFILTER");
        // What a kernel without audit answers, so groupadd and useradd carry on.
        assert_verdict(
            &socket(16, 9),
            errno(libc::EPROTONOSUPPORT),
            "NETLINK_AUDIT",
        );
        for (domain, what) in [
            (38, "AF_ALG (Copy Fail)"),
            (15, "AF_KEY"),
            (33, "AF_RXRPC"),
            (17, "AF_PACKET"),
            (40, "AF_VSOCK"),
            (21, "AF_RDS"),
            (30, "AF_TIPC"),
            (0, "AF_UNSPEC"),
        ] {
            assert_verdict(&socket(domain, 0), errno(libc::EPERM), what);
        }
        // The kernel reads the family as an int: junk in the upper half changes nothing.
        assert_verdict(
            &socket((1 << 32) | 38, 0),
            errno(libc::EPERM),
            "AF_ALG, high bits",
        );
        let pair = |domain: u64| call(libc::SYS_socketpair, &[domain, 1, 0, 0]);
        assert_verdict(&pair(1), RET_ALLOW, "socketpair(AF_UNIX)");
        assert_verdict(&pair(2), errno(libc::EPERM), "socketpair(AF_INET)");
    }

    #[test]
    fn clone_without_namespaces_only_and_clone3_falls_back() {
        let clone = |flags: u64| call(libc::SYS_clone, &[flags]);
        let sigchld = 17;
        assert_verdict(&clone(sigchld), RET_ALLOW, "fork");
        assert_verdict(&clone(0x4000 | 0x100 | sigchld), RET_ALLOW, "vfork");
        assert_verdict(&clone(0x003d_0f00), RET_ALLOW, "pthread_create");
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
            0x80, // CLONE_NEWTIME
        ] {
            let flags = u64::from(flag.cast_unsigned()) | sigchld;
            assert_verdict(
                &clone(flags),
                errno(libc::EPERM),
                &format!("clone {flag:#x}"),
            );
        }
        assert_verdict(&call(libc::SYS_clone3, &[]), errno(libc::ENOSYS), "clone3");
        // Without the second filter it would be EPERM, and glibc would not fall back.
        assert_eq!(run(MAIN, &call(libc::SYS_clone3, &[])), errno(libc::EPERM));
    }

    #[test]
    fn escape_hatches_are_denied() {
        for (nr, what) in [
            (libc::SYS_unshare, "unshare"),
            (libc::SYS_setns, "setns"),
            (libc::SYS_mount, "mount"),
            (libc::SYS_umount2, "umount2"),
            (libc::SYS_pivot_root, "pivot_root"),
            (libc::SYS_chroot, "chroot"),
            (libc::SYS_fsopen, "fsopen"),
            (libc::SYS_fsmount, "fsmount"),
            (libc::SYS_fsconfig, "fsconfig"),
            (libc::SYS_move_mount, "move_mount"),
            (libc::SYS_open_tree, "open_tree"),
            (libc::SYS_mount_setattr, "mount_setattr"),
            (libc::SYS_io_uring_setup, "io_uring_setup"),
            (libc::SYS_io_uring_enter, "io_uring_enter"),
            (libc::SYS_io_uring_register, "io_uring_register"),
            (libc::SYS_bpf, "bpf"),
            (libc::SYS_perf_event_open, "perf_event_open"),
            (libc::SYS_userfaultfd, "userfaultfd"),
            (libc::SYS_keyctl, "keyctl"),
            (libc::SYS_add_key, "add_key"),
            (libc::SYS_request_key, "request_key"),
            (libc::SYS_kexec_load, "kexec_load"),
            (libc::SYS_kexec_file_load, "kexec_file_load"),
            (libc::SYS_init_module, "init_module"),
            (libc::SYS_finit_module, "finit_module"),
            (libc::SYS_delete_module, "delete_module"),
            (libc::SYS_ptrace, "ptrace"),
            (libc::SYS_process_vm_readv, "process_vm_readv"),
            (libc::SYS_process_vm_writev, "process_vm_writev"),
            (libc::SYS_kcmp, "kcmp"),
            (libc::SYS_pidfd_getfd, "pidfd_getfd"),
            (libc::SYS_open_by_handle_at, "open_by_handle_at"),
            (libc::SYS_name_to_handle_at, "name_to_handle_at"),
            (libc::SYS_acct, "acct"),
            (libc::SYS_quotactl, "quotactl"),
            (libc::SYS_swapon, "swapon"),
            (libc::SYS_swapoff, "swapoff"),
            (libc::SYS_reboot, "reboot"),
            (libc::SYS_settimeofday, "settimeofday"),
            (libc::SYS_clock_settime, "clock_settime"),
            (libc::SYS_clock_adjtime, "clock_adjtime"),
            (libc::SYS_adjtimex, "adjtimex"),
            (libc::SYS_syslog, "syslog"),
            (libc::SYS_iopl, "iopl"),
            (libc::SYS_ioperm, "ioperm"),
            (libc::SYS_lookup_dcookie, "lookup_dcookie"),
            (libc::SYS_fanotify_init, "fanotify_init"),
            (libc::SYS_uselib, "uselib"),
            (libc::SYS_move_pages, "move_pages"),
            (libc::SYS_mbind, "mbind"),
            (libc::SYS_sethostname, "sethostname"),
        ] {
            assert_verdict(&call(nr, &[]), errno(libc::EPERM), what);
        }
    }

    #[test]
    fn btrfs_ioctls_are_denied_but_reflink_copies_are_not() {
        let ioctl = |cmd: u64| call(libc::SYS_ioctl, &[3, cmd]);
        // BTRFS_IOC_SUBVOL_CREATE, SNAP_CREATE_V2, SUBVOL_CREATE_V2, QGROUP_LIMIT, QUOTA_CTL.
        for cmd in [
            0x5000_940e,
            0x5000_9417,
            0x5000_9418,
            0x8030_942b,
            0xc010_9428,
        ] {
            assert_verdict(&ioctl(cmd), errno(libc::EPERM), &format!("ioctl {cmd:#x}"));
            // Junk in the upper half of the register does not change what the kernel reads.
            assert_verdict(
                &ioctl(cmd | 0xdead_0000_0000),
                errno(libc::EPERM),
                &format!("ioctl {cmd:#x} with a dirty upper half"),
            );
        }
        // FICLONE, FICLONERANGE, FIDEDUPERANGE, and terminal ioctls.
        for cmd in [0x4004_9409, 0x4020_940d, 0xc018_9436, 0x5401, 0x5413] {
            assert_verdict(&ioctl(cmd), RET_ALLOW, &format!("ioctl {cmd:#x}"));
        }
    }

    #[test]
    fn the_denied_list_of_the_policy_file_is_denied() {
        // build.rs checked the names against seccompiler's syscall table and the allowlist;
        // this runs the compiled programs for every name of the list, numbered independently
        // of seccompiler (libc's table), with zero and with junk arguments.
        assert!(
            filters::DENIED.len() >= 78,
            "the policy lost denied syscalls"
        );
        let mut numbers = std::collections::BTreeSet::new();
        for name in filters::DENIED {
            let nr = syscall_number(name).unwrap_or_else(|| {
                panic!("no x86_64 number for denied syscall {name}: add it to syscall_number")
            });
            assert!(
                numbers.insert(nr),
                "{name} shares number {nr} with another name"
            );
            let want = if *name == "clone3" {
                errno(libc::ENOSYS)
            } else {
                errno(libc::EPERM)
            };
            assert_verdict(&call(nr, &[]), want, name);
            assert_verdict(
                &call(nr, &[u64::MAX; 6]),
                want,
                &format!("{name}, junk arguments"),
            );
        }
        assert_eq!(numbers.len(), filters::DENIED.len());
    }

    /// x86_64 numbers of the denied syscalls. libc lacks a few: those come from the kernel's
    /// arch/x86/entry/syscalls/syscall_64.tbl.
    fn syscall_number(name: &str) -> Option<i64> {
        Some(match name {
            "unshare" => libc::SYS_unshare,
            "setns" => libc::SYS_setns,
            "mount" => libc::SYS_mount,
            "umount2" => libc::SYS_umount2,
            "pivot_root" => libc::SYS_pivot_root,
            "chroot" => libc::SYS_chroot,
            "fsopen" => libc::SYS_fsopen,
            "fsmount" => libc::SYS_fsmount,
            "fsconfig" => libc::SYS_fsconfig,
            "fspick" => libc::SYS_fspick,
            "move_mount" => libc::SYS_move_mount,
            "open_tree" => libc::SYS_open_tree,
            "mount_setattr" => libc::SYS_mount_setattr,
            "io_uring_setup" => libc::SYS_io_uring_setup,
            "io_uring_enter" => libc::SYS_io_uring_enter,
            "io_uring_register" => libc::SYS_io_uring_register,
            "bpf" => libc::SYS_bpf,
            "perf_event_open" => libc::SYS_perf_event_open,
            "userfaultfd" => libc::SYS_userfaultfd,
            "keyctl" => libc::SYS_keyctl,
            "add_key" => libc::SYS_add_key,
            "request_key" => libc::SYS_request_key,
            "kexec_load" => libc::SYS_kexec_load,
            "kexec_file_load" => libc::SYS_kexec_file_load,
            "init_module" => libc::SYS_init_module,
            "finit_module" => libc::SYS_finit_module,
            "delete_module" => libc::SYS_delete_module,
            "ptrace" => libc::SYS_ptrace,
            "process_vm_readv" => libc::SYS_process_vm_readv,
            "process_vm_writev" => libc::SYS_process_vm_writev,
            "kcmp" => libc::SYS_kcmp,
            "pidfd_getfd" => libc::SYS_pidfd_getfd,
            "open_by_handle_at" => libc::SYS_open_by_handle_at,
            "name_to_handle_at" => libc::SYS_name_to_handle_at,
            "acct" => libc::SYS_acct,
            "quotactl" => libc::SYS_quotactl,
            "quotactl_fd" => libc::SYS_quotactl_fd,
            "swapon" => libc::SYS_swapon,
            "swapoff" => libc::SYS_swapoff,
            "reboot" => libc::SYS_reboot,
            "settimeofday" => libc::SYS_settimeofday,
            "clock_settime" => libc::SYS_clock_settime,
            "clock_adjtime" => libc::SYS_clock_adjtime,
            "adjtimex" => libc::SYS_adjtimex,
            "syslog" => libc::SYS_syslog,
            "iopl" => libc::SYS_iopl,
            "ioperm" => libc::SYS_ioperm,
            "lookup_dcookie" => libc::SYS_lookup_dcookie,
            "fanotify_init" => libc::SYS_fanotify_init,
            "uselib" => libc::SYS_uselib,
            "modify_ldt" => libc::SYS_modify_ldt,
            "move_pages" => libc::SYS_move_pages,
            "migrate_pages" => libc::SYS_migrate_pages,
            "mbind" => libc::SYS_mbind,
            "set_mempolicy" => libc::SYS_set_mempolicy,
            "get_mempolicy" => libc::SYS_get_mempolicy,
            "set_mempolicy_home_node" => libc::SYS_set_mempolicy_home_node,
            "process_madvise" => libc::SYS_process_madvise,
            "sethostname" => libc::SYS_sethostname,
            "setdomainname" => libc::SYS_setdomainname,
            "vhangup" => libc::SYS_vhangup,
            "clone3" => libc::SYS_clone3,
            "nfsservctl" => libc::SYS_nfsservctl,
            "sysfs" => libc::SYS_sysfs,
            "_sysctl" => libc::SYS__sysctl,
            "ustat" => libc::SYS_ustat,
            "afs_syscall" => libc::SYS_afs_syscall,
            "tuxcall" => libc::SYS_tuxcall,
            "security" => libc::SYS_security,
            "getpmsg" => libc::SYS_getpmsg,
            "putpmsg" => libc::SYS_putpmsg,
            "vserver" => libc::SYS_vserver,
            "create_module" => 174,
            "get_kernel_syms" => 177,
            "query_module" => 178,
            "lsm_get_self_attr" => 459,
            "lsm_set_self_attr" => 460,
            "lsm_list_modules" => 461,
            _ => return None,
        })
    }

    #[test]
    fn terminal_injection_ioctls_are_denied() {
        let ioctl = |cmd: u64| call(libc::SYS_ioctl, &[0, cmd, 0]);
        assert_verdict(&ioctl(0x5401), RET_ALLOW, "TCGETS");
        assert_verdict(&ioctl(0x5414), RET_ALLOW, "TIOCSWINSZ");
        assert_verdict(&ioctl(0x540e), RET_ALLOW, "TIOCSCTTY");
        assert_verdict(&ioctl(0x5412), errno(libc::EPERM), "TIOCSTI");
        assert_verdict(&ioctl(0x541c), errno(libc::EPERM), "TIOCLINUX");
        // cmd is an unsigned int in the kernel: the upper half cannot smuggle TIOCSTI past.
        assert_verdict(
            &ioctl((1 << 32) | 0x5412),
            errno(libc::EPERM),
            "TIOCSTI, high bits",
        );
    }

    #[test]
    fn personality_only_takes_the_docker_values() {
        let personality = |p: u64| call(libc::SYS_personality, &[p]);
        for p in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_verdict(&personality(p), RET_ALLOW, &format!("personality {p:#x}"));
        }
        assert_verdict(
            &personality(0x0040_0000),
            errno(libc::EPERM),
            "READ_IMPLIES_EXEC",
        );
        assert_verdict(
            &personality(0x0004_0000),
            errno(libc::EPERM),
            "ADDR_NO_RANDOMIZE",
        );
    }

    #[test]
    fn other_abis_are_killed_or_refused() {
        let mut i386 = call(libc::SYS_read, &[]);
        i386.arch = AUDIT_ARCH_I386;
        assert_eq!(verdict(&i386), RET_KILL_PROCESS, "i386 int 0x80");
        // x32 shares the x86_64 arch value but sets bit 30 of the number: nothing matches.
        let x32 = Call {
            nr: X32_SYSCALL_BIT | u32::try_from(libc::SYS_read).unwrap(),
            arch: AUDIT_ARCH_X86_64,
            args: [0; 6],
        };
        assert_eq!(verdict(&x32), errno(libc::EPERM), "x32 read");
    }

    #[test]
    fn unknown_syscalls_get_eperm() {
        assert_verdict(&call(999, &[]), errno(libc::EPERM), "syscall 999");
    }
}
