//! Landlock (step 15 of the checklist in [`crate::run`]): after the last mount, since a
//! Landlock domain may not change mounts, and before seccomp.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::{JailError, LANDLOCK_REVIEWED_ABI, sys};

/// Landlock, enforced and checked: handles every filesystem right of the reviewed ABI
/// ([`LANDLOCK_REVIEWED_ABI`]) and grants them all beneath "/" (the sandbox's root after
/// pivot_root: it sees only its own tree anyway), plus the scopes: no abstract unix socket of,
/// and no signal to, a process outside the domain (another sandbox's, the host's). Paths outside
/// the root, reachable only through /proc magic links (e.g. `/proc/1/exe`, the host's agent
/// binary), get nothing but what is granted on the agent binary itself: read and execute,
/// which the exec right after needs (exec checks the file against the domain). Writing to it
/// stays denied (CVE-2019-5736 class). The agent's socket file lies outside the root and gets
/// no right at all; the agent holds only its listening fd.
///
/// Fails closed: on a kernel with the reviewed ABI or newer anything short of full enforcement
/// is an error. An older kernel enforces what it has (the report carries its ABI).
pub(crate) fn apply_landlock(agent: &OwnedFd) -> Result<(), JailError> {
    restrict_with_landlock(Path::new("/"), agent.as_fd(), sys::landlock_abi())
}

/// [`apply_landlock`] with the root to grant beneath as a parameter, so a test can confine a
/// throwaway process to a directory of its own.
fn restrict_with_landlock(
    root: &Path,
    agent: BorrowedFd<'_>,
    kernel_abi: u32,
) -> Result<(), JailError> {
    use ::landlock::{
        ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    };
    // The reviewed ABI: V6 brought IOCTL_DEV (granted, so ttys keep working) and the scopes.
    const _: () = assert!(ABI::V6 as u32 == LANDLOCK_REVIEWED_ABI);
    let abi = ABI::V6;
    let all = AccessFs::from_all(abi);
    let root = PathFd::new(root).map_err(JailError::LandlockPath)?;
    // Best effort only in building the ruleset, so an older kernel still gets the rights it
    // knows; the status below decides whether that is acceptable.
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(root, all)))
        .and_then(|r| {
            r.add_rule(PathBeneath::new(
                agent,
                AccessFs::Execute | AccessFs::ReadFile,
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(JailError::Landlock)?;
    landlock_verdict(kernel_abi, status.ruleset)
}

/// Whether the ruleset's enforcement is acceptable on a kernel with Landlock ABI `kernel_abi`.
fn landlock_verdict(kernel_abi: u32, status: ::landlock::RulesetStatus) -> Result<(), JailError> {
    use ::landlock::RulesetStatus;
    let short = |what: &str| JailError::Check {
        action: "enforce the landlock ruleset",
        found: format!("{what} on a kernel with landlock ABI {kernel_abi}"),
    };
    match status {
        RulesetStatus::FullyEnforced => Ok(()),
        _ if kernel_abi >= LANDLOCK_REVIEWED_ABI => Err(short("only partly enforced")),
        // An older kernel: its filesystem rights hold, the scopes it lacks do not.
        RulesetStatus::PartiallyEnforced => Ok(()),
        // No Landlock in the kernel: namespaces and seccomp are the jail.
        RulesetStatus::NotEnforced if kernel_abi == 0 => Ok(()),
        RulesetStatus::NotEnforced => Err(short("not enforced")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::path::PathBuf;

    use rustix::fs::{Mode, OFlags};

    use super::*;

    /// Environment variable through which [`landlock_probe_child`] gets its orders.
    const PROBE_ENV: &str = "WARREN_JAIL_LANDLOCK_PROBE";

    #[test]
    fn landlock_verdict_fails_closed_from_the_reviewed_abi() {
        use ::landlock::RulesetStatus::{FullyEnforced, NotEnforced, PartiallyEnforced};
        for abi in [LANDLOCK_REVIEWED_ABI, LANDLOCK_REVIEWED_ABI + 1] {
            assert!(landlock_verdict(abi, FullyEnforced).is_ok());
            assert!(landlock_verdict(abi, PartiallyEnforced).is_err());
            assert!(landlock_verdict(abi, NotEnforced).is_err());
        }
        assert!(landlock_verdict(3, PartiallyEnforced).is_ok());
        assert!(landlock_verdict(3, NotEnforced).is_err());
        assert!(landlock_verdict(0, NotEnforced).is_ok());
        let err = landlock_verdict(7, PartiallyEnforced).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to enforce the landlock ruleset: only partly enforced on a kernel with \
             landlock ABI 7"
        );
    }

    /// The ruleset of the jail, applied by a separate process (this test binary run again for
    /// [`landlock_probe_child`] only: the test process itself must stay unconfined): each
    /// operation is tried before and after, so a denial is Landlock's, not DAC's or a missing
    /// object's.
    #[test]
    fn landlock_denies_abstract_sockets_signals_and_writing_the_agent() {
        let abi = sys::landlock_abi();
        assert!(
            abi >= LANDLOCK_REVIEWED_ABI,
            "this kernel has landlock ABI {abi}; the jail's ruleset needs {LANDLOCK_REVIEWED_ABI} \
             (Linux 6.12) for its scopes, so this test cannot check them here"
        );
        let dir = std::env::temp_dir().join(format!("warren-landlock-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        // The "agent" lies outside the granted root, like the real one; DAC lets anyone write it.
        let agent = dir.join("agent");
        std::fs::write(&agent, b"#!/bin/true\n").unwrap();
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let name = format!("warren-landlock-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _listener = UnixListener::bind_addr(&addr).unwrap();
        let results = dir.join("results");

        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "inside::landlock::tests::landlock_probe_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                PROBE_ENV,
                format!(
                    "{}\n{}\n{}\n{}\n{}",
                    root.display(),
                    agent.display(),
                    name,
                    std::process::id(),
                    results.display()
                ),
            )
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&results).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "the probe failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<&str> = report.lines().collect();
        assert_eq!(
            got,
            [
                "before connect abstract: ok",
                "before signal outside: ok",
                "before write agent: ok",
                "landlock applied",
                "after connect abstract: EPERM",
                "after signal outside: EPERM",
                "after write agent: EACCES",
                "after read agent: ok",
                "after write inside root: ok",
            ],
            "{report}"
        );
    }

    /// The confined half of the test above; does nothing useful on its own.
    #[test]
    #[ignore = "run by landlock_denies_abstract_sockets_signals_and_writing_the_agent in a child"]
    fn landlock_probe_child() {
        let orders = std::env::var(PROBE_ENV)
            .expect("run only by landlock_denies_abstract_sockets_signals_and_writing_the_agent");
        let [root, agent, name, parent, results]: [&str; 5] =
            orders.lines().collect::<Vec<_>>().try_into().unwrap();
        let (root, agent) = (PathBuf::from(root), PathBuf::from(agent));
        let parent = rustix::process::Pid::from_raw(parent.parse().unwrap()).unwrap();
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let agent_fd =
            rustix::fs::open(&agent, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();

        let verdict = |r: std::io::Result<()>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => match e.raw_os_error() {
                Some(libc::EPERM) => "EPERM".to_owned(),
                Some(libc::EACCES) => "EACCES".to_owned(),
                _ => format!("{e}"),
            },
            Err(e) => format!("{e}"),
        };
        let connect = || UnixStream::connect_addr(&addr).map(drop);
        let signal = || rustix::process::test_kill_process(parent).map_err(std::io::Error::from);
        let write_agent = || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&agent)
                .map(drop)
        };
        // Opened before the ruleset: the confined process could not open it outside its root.
        let mut report = std::fs::File::create(results).unwrap();
        let mut lines = vec![
            format!("before connect abstract: {}", verdict(connect())),
            format!("before signal outside: {}", verdict(signal())),
            format!("before write agent: {}", verdict(write_agent())),
        ];
        restrict_with_landlock(&root, agent_fd.as_fd(), sys::landlock_abi()).unwrap();
        lines.push("landlock applied".to_owned());
        lines.push(format!("after connect abstract: {}", verdict(connect())));
        lines.push(format!("after signal outside: {}", verdict(signal())));
        lines.push(format!("after write agent: {}", verdict(write_agent())));
        let read_agent = std::fs::File::open(&agent).map(drop);
        lines.push(format!("after read agent: {}", verdict(read_agent)));
        let inside = std::fs::write(root.join("file"), b"x");
        lines.push(format!("after write inside root: {}", verdict(inside)));
        let mut text = lines.join("\n");
        text.push('\n');
        std::io::Write::write_all(&mut report, text.as_bytes()).unwrap();
    }
}
