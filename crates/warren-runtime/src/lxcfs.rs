//! LXCFS: one instance per data dir, whose files show each sandbox its own memory limit, CPU
//! count and uptime in `/proc/meminfo`, `/proc/cpuinfo`, `/proc/stat`, `/proc/uptime` and
//! `/sys/devices/system/cpu` (the jail binds them in; see `warren_jail::JailSpec::lxcfs`).
//!
//! [`LxcfsSupervisor`] starts `lxcfs` on a mount point, restarts it with backoff if it dies,
//! and stops it at the end, unless sandboxes still use it: sandboxes outlive the daemon, and a
//! sandbox whose LXCFS went away reads "Transport endpoint is not connected" from those files
//! until it restarts (binds cannot be moved to a new instance). A daemon that finds a live
//! instance on its mount point at start adopts it for that reason. Without LXCFS, sandboxes
//! start all the same and see the host's figures there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

/// `f_type` of every FUSE filesystem (`FUSE_SUPER_MAGIC`).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The lxcfs 5 options: `--enable-cfs` derives the CPU count of `cpuinfo`, `stat` and
/// `sys/devices/system/cpu/online` from the CFS quota (the sandbox's CPU limit), not only from
/// its cpuset; `--enable-loadavg` gives each sandbox its own load average.
const LXCFS_ARGS: [&str; 3] = ["--foreground", "--enable-cfs", "--enable-loadavg"];

/// How long a started instance has to show its files.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait before a restart; the wait doubles after each quick death.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// An instance that ran this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often an adopted instance (not our child) is checked.
const ADOPTED_POLL: Duration = Duration::from_secs(5);

/// Whether an LXCFS instance answers on `mount`: a FUSE filesystem is mounted there and its
/// `proc/meminfo` can be looked up. Blocking, and it asks the FUSE daemon, so a hung instance
/// blocks the caller: see [`is_alive_within`].
pub fn is_alive(mount: &Path) -> bool {
    match rustix::fs::statfs(mount) {
        Ok(st) => st.f_type == FUSE_SUPER_MAGIC && mount.join("proc/meminfo").is_file(),
        Err(_) => false,
    }
}

/// [`is_alive`] on a blocking thread, giving up (dead) after `limit`.
pub async fn is_alive_within(mount: &Path, limit: Duration) -> bool {
    let m = mount.to_owned();
    matches!(
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || is_alive(&m))).await,
        Ok(Ok(true))
    )
}

/// Whether `mount` is a FUSE mount that no longer answers (its daemon died): the kernel
/// reports ENOTCONN, or the filesystem is there but its files are not.
fn is_dead_mount(mount: &Path) -> bool {
    match rustix::fs::statfs(mount) {
        Err(rustix::io::Errno::NOTCONN) => true,
        Ok(st) => st.f_type == FUSE_SUPER_MAGIC && !is_alive(mount),
        Err(_) => false,
    }
}

/// Detaches whatever is mounted on `mount` (lazily: open files keep a dead instance's
/// superblock, not the mount point).
fn detach(mount: &Path) {
    match rustix::mount::unmount(mount, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => tracing::info!(mount = %mount.display(), "detached a stale lxcfs mount"),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => {
            tracing::warn!(mount = %mount.display(), error = %e, "failed to detach a stale lxcfs mount");
        }
    }
}

/// Whether `lxcfs` is on `PATH`.
pub fn installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("lxcfs").is_file()))
}

/// Runs and watches one `lxcfs` on a mount point.
#[derive(Debug, Clone)]
pub struct LxcfsSupervisor {
    program: PathBuf,
    mount: PathBuf,
    pidfile: PathBuf,
}

impl LxcfsSupervisor {
    /// `lxcfs` from `PATH` on `mount`, with its pid file next to it (`<mount>.pid`).
    pub fn new(mount: PathBuf) -> Self {
        let mut pidfile = mount.clone().into_os_string();
        pidfile.push(".pid");
        Self {
            program: PathBuf::from("lxcfs"),
            mount,
            pidfile: pidfile.into(),
        }
    }

    /// The mount point (what the driver's `JailConfig::lxcfs` names).
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// Starts supervising on the current tokio runtime: adopts a live instance on the mount
    /// point or starts one, and keeps one running until [`LxcfsHandle::stop`].
    pub fn spawn(self) -> LxcfsHandle {
        let (stop_tx, stop_rx) = watch::channel(None);
        let mount = self.mount.clone();
        let task = tokio::spawn(self.supervise(stop_rx));
        LxcfsHandle {
            mount,
            stop: stop_tx,
            task,
        }
    }

    async fn supervise(self, mut stop: watch::Receiver<Option<bool>>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let began = Instant::now();
            let outcome = if is_alive_within(&self.mount, Duration::from_secs(2)).await {
                tracing::info!(mount = %self.mount.display(), "adopted the running lxcfs");
                self.watch_adopted(&mut stop).await
            } else {
                self.run_once(&mut stop).await
            };
            if let Some(keep) = outcome {
                self.finish(keep).await;
                return;
            }
            if began.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            tracing::warn!(mount = %self.mount.display(), retry_in_s = backoff.as_secs(), "lxcfs is down; sandboxes created meanwhile see the host's memory and CPUs");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                keep = wait_stop(&mut stop) => {
                    self.finish(keep).await;
                    return;
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Polls an instance a previous daemon left running. `Some(keep)` when asked to stop,
    /// `None` when it died.
    async fn watch_adopted(&self, stop: &mut watch::Receiver<Option<bool>>) -> Option<bool> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(ADOPTED_POLL) => {}
                keep = wait_stop(stop) => return Some(keep),
            }
            if !is_alive_within(&self.mount, Duration::from_secs(5)).await {
                return None;
            }
        }
    }

    /// Clears a stale mount, starts `lxcfs` and waits for it to exit. `Some(keep)` when asked
    /// to stop, `None` when it died or could not start.
    async fn run_once(&self, stop: &mut watch::Receiver<Option<bool>>) -> Option<bool> {
        let mount = self.mount.clone();
        let pidfile = self.pidfile.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&mount, &pidfile)).await;
        if let Ok(Err(e)) | Err(e) = prepared.map_err(std::io::Error::other) {
            tracing::error!(mount = %self.mount.display(), error = %e, "failed to prepare the lxcfs mount point");
            return None;
        }
        let mut child = match tokio::process::Command::new(&self.program)
            .args(LXCFS_ARGS)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg(&self.mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the daemon must not take the sandboxes'
            // views with it; `finish` decides whether it stops.
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %self.program.display(), error = %e, "failed to start lxcfs (is it installed? `warren doctor` checks)");
                return None;
            }
        };
        let pid = child.id();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(pid, %line, "lxcfs output");
                }
            });
        }
        let ready = wait_ready(&self.mount);
        tokio::pin!(ready);
        let mut announced = false;
        loop {
            tokio::select! {
                status = child.wait() => {
                    tracing::warn!(pid, status = ?status.ok(), mount = %self.mount.display(), "lxcfs exited");
                    return None;
                }
                alive = &mut ready, if !announced => {
                    announced = true;
                    if alive {
                        tracing::info!(pid, mount = %self.mount.display(), "lxcfs is up");
                    } else {
                        tracing::warn!(pid, mount = %self.mount.display(), "lxcfs started but shows no files yet");
                    }
                }
                keep = wait_stop(stop) => return Some(keep),
            }
        }
    }

    /// Ends supervision: leaves the instance running for the sandboxes that use it (`keep`),
    /// or stops it and clears the mount point.
    async fn finish(&self, keep: bool) {
        if keep {
            tracing::info!(mount = %self.mount.display(), "leaving lxcfs running: sandboxes use it");
            return;
        }
        let (mount, pidfile) = (self.mount.clone(), self.pidfile.clone());
        let _ = tokio::task::spawn_blocking(move || stop_instance(&mount, &pidfile)).await;
    }
}

/// Resolves with `keep` once a stop is asked for.
async fn wait_stop(stop: &mut watch::Receiver<Option<bool>>) -> bool {
    match stop.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or(false),
        // The handle is gone without a stop: stop, leaving the instance running.
        Err(_) => true,
    }
}

/// Waits for the mount to come alive; false after [`READY_TIMEOUT`].
async fn wait_ready(mount: &Path) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if is_alive_within(mount, Duration::from_secs(2)).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Before a start: a dead instance's mount is detached and its process, if it hangs on, killed;
/// the mount point exists.
fn prepare(mount: &Path, pidfile: &Path) -> std::io::Result<()> {
    if is_dead_mount(mount) {
        kill_recorded(pidfile, nix::sys::signal::Signal::SIGKILL);
        detach(mount);
    }
    std::fs::create_dir_all(mount)
}

/// SIGTERM, then SIGKILL after a second (lxcfs takes seconds to join its background threads
/// and keeps no state worth waiting for), then the mount is detached if still there.
fn stop_instance(mount: &Path, pidfile: &Path) {
    let Some(pid) = recorded_lxcfs(pidfile) else {
        if is_dead_mount(mount) || is_alive(mount) {
            detach(mount);
        }
        return;
    };
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_recorded(pidfile, nix::sys::signal::Signal::SIGKILL);
    if is_dead_mount(mount) || is_alive(mount) {
        detach(mount);
    }
    let _ = std::fs::remove_file(pidfile);
    tracing::info!(mount = %mount.display(), "stopped lxcfs");
}

/// The pid in the pid file, if that process is still an `lxcfs` (a recycled pid is not).
fn recorded_lxcfs(pidfile: &Path) -> Option<nix::unistd::Pid> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "lxcfs").then(|| nix::unistd::Pid::from_raw(pid))
}

fn kill_recorded(pidfile: &Path, signal: nix::sys::signal::Signal) {
    if let Some(pid) = recorded_lxcfs(pidfile) {
        let _ = nix::sys::signal::kill(pid, signal);
    }
}

/// A running supervisor.
#[derive(Debug)]
pub struct LxcfsHandle {
    mount: PathBuf,
    stop: watch::Sender<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl LxcfsHandle {
    /// Waits until the instance answers; false after `limit`.
    pub async fn ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if is_alive_within(&self.mount, Duration::from_secs(2)).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops supervising. With `keep_running` (sandboxes use the instance) it stays up for the
    /// next daemon to adopt; otherwise it is stopped and its mount point cleared.
    pub async fn stop(self, keep_running: bool) {
        let _ = self.stop.send(Some(keep_running));
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_neither_a_live_nor_a_dead_lxcfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: 1 kB\n").unwrap();
        assert!(!is_alive(dir.path()), "files alone are not a FUSE mount");
        assert!(!is_dead_mount(dir.path()));
        assert!(!is_alive(&dir.path().join("missing")));
    }

    #[test]
    fn the_pid_file_sits_next_to_the_mount_point_and_names_only_lxcfs() {
        let s = LxcfsSupervisor::new(PathBuf::from("/var/lib/warren/lxcfs"));
        assert_eq!(s.pidfile, PathBuf::from("/var/lib/warren/lxcfs.pid"));
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("lxcfs.pid");
        // Our own pid: alive, but not an lxcfs, so never signalled.
        std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(recorded_lxcfs(&pidfile), None);
    }
}
