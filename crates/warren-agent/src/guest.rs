//! Guest mode (`--vport PATH`): the agent as PID 1 of a microVM, exec'd by the initramfs after
//! `switch_root`, serving the host over the VM's virtio-serial port.
//!
//! The jailer prepares a jail's /dev/pts, /dev/shm and hostname; in a VM nobody else does, so
//! [`setup`] does it from the kernel command line. Nothing here may kill PID 1 (that panics the
//! guest kernel): every setup step that fails is skipped, and the port is retried forever.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::mount::{MsFlags, mount};
use rustix::fs::{Mode, OFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::mux;
use crate::registry::Agent;

/// /dev/shm's size when the command line does not say.
const DEFAULT_SHM_BYTES: u64 = 64 << 20;
/// How long the port may take to appear (the initramfs makes its /dev/virtio-ports link).
const PORT_WAIT: Duration = Duration::from_secs(30);

/// What the host says on the kernel command line (`warren.KEY=VALUE` words).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BootParams {
    pub(crate) shm_bytes: Option<u64>,
    pub(crate) hostname: Option<String>,
    pub(crate) nameserver: Option<std::net::Ipv4Addr>,
    /// The guest's address on its link to the host, when it has one.
    pub(crate) address: Option<std::net::Ipv4Addr>,
}

impl BootParams {
    /// Unknown or malformed words are ignored: the command line also carries the kernel's own.
    pub(crate) fn parse(cmdline: &str) -> Self {
        let mut p = Self::default();
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "warren.shm" => p.shm_bytes = value.parse().ok(),
                "warren.hostname" if !value.is_empty() && value.len() <= 64 => {
                    p.hostname = Some(value.to_owned());
                }
                "warren.nameserver" => p.nameserver = value.parse().ok(),
                "warren.ip" => {
                    p.address = value.split_once('/').map_or(value, |(a, _)| a).parse().ok();
                }
                _ => {}
            }
        }
        p
    }
}

/// Mounts and names what a sandbox expects before any command runs.
pub(crate) fn setup() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = BootParams::parse(&cmdline);
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // A private devpts instance: ptys of commands get gid 5 (tty) and mode 620 as on any
    // distribution, and /dev/ptmx must lead to this instance, not the kernel's initial one.
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        nosuid_noexec,
        Some("newinstance,ptmxmode=0666,gid=5,mode=620"),
    );
    let _ = std::fs::File::create_new("/dev/ptmx");
    let _ = mount(
        Some("/dev/pts/ptmx"),
        "/dev/ptmx",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    let _ = std::fs::create_dir_all("/dev/shm");
    let shm = params.shm_bytes.unwrap_or(DEFAULT_SHM_BYTES);
    let _ = mount(
        Some("shm"),
        "/dev/shm",
        Some("tmpfs"),
        nosuid_noexec | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={shm}").as_str()),
    );
    if let Some(name) = &params.hostname {
        let _ = nix::unistd::sethostname(name);
        name_self(
            name,
            params.address.unwrap_or(warren_proto::OFFLINE_ADDRESS),
        );
    }
    if let Some(ns) = params.nameserver {
        crate::write_resolv_conf(ns);
    }
}

/// Writes the guest's `/etc/hostname` and its own line in `/etc/hosts` (the same text the
/// runtime binds into a jail), so that its name resolves with or without a network. They are the
/// tenant's files, kept across boots: each is edited only when it is a small regular file.
fn name_self(hostname: &str, address: std::net::Ipv4Addr) {
    let text = format!("{hostname}\n");
    let _ = crate::etc::edit(
        Path::new("/etc/hostname"),
        crate::etc::Links::Refuse,
        false,
        |now| (now != text).then(|| text.clone()),
    );
    let _ = crate::etc::edit(
        Path::new("/etc/hosts"),
        crate::etc::Links::Refuse,
        true,
        |now| {
            let wanted = warren_proto::hosts_file(Some(now), hostname, address.into());
            (now != wanted).then_some(wanted)
        },
    );
}

/// Serves the host over the port at `path` for as long as the VM runs.
pub(crate) async fn serve(agent: Arc<Agent>, path: &Path) -> anyhow::Result<()> {
    let port = Arc::new(open_port(path).await?);
    mux::serve_port(&agent, || PortIo(Arc::clone(&port))).await
}

/// Opens the port once: it is exclusive-open, and the same descriptor outlives every host
/// connection (qemu's chardev reconnects behind it).
async fn open_port(path: &Path) -> anyhow::Result<AsyncFd<OwnedFd>> {
    let deadline = Instant::now() + PORT_WAIT;
    let fd = loop {
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(e) if Instant::now() > deadline => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("failed to open {}", path.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    crate::pty::register(fd).with_context(|| format!("failed to poll {}", path.display()))
}

/// The virtio port as a tokio byte stream. Each session gets its own handle on the one
/// descriptor; only one session runs at a time.
#[derive(Debug)]
struct PortIo(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for PortIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for PortIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The port is never shut down: it outlives the session that ends here.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_take_warren_words_and_ignore_the_rest() {
        let p = BootParams::parse(
            "quiet panic=-1 warren.shm=1048576 warren.hostname=vmtest \
             warren.nameserver=10.0.2.3 warren.ip=10.0.2.15/24 hold",
        );
        assert_eq!(
            p,
            BootParams {
                shm_bytes: Some(1 << 20),
                hostname: Some("vmtest".into()),
                nameserver: Some(std::net::Ipv4Addr::new(10, 0, 2, 3)),
                address: Some(std::net::Ipv4Addr::new(10, 0, 2, 15)),
            }
        );
        let bad = BootParams::parse(
            "warren.shm=lots warren.nameserver=::1 warren.hostname= warren.ip=10.0.2/24",
        );
        assert_eq!(bad, BootParams::default());
    }
}
