//! A driver that isolates nothing: sandboxes are entries in a map, files live in memory and
//! commands are a tiny script language run by tasks of this process. It exists so the control
//! plane, the API and the CLI can be tested without root, a kernel or a jail; nothing a tenant
//! controls should ever reach it.
//!
//! Commands are the `-c` script of an [`ExecSpec`] (its last argument), split on `;`:
//! `echo TEXT` (stdout `TEXT\n`), `echoerr TEXT` (stderr), `exit N`, `repeat N TEXT` (TEXT
//! N times on stdout), `sleep MS`, `cat` (stdin to stdout until it closes), `pwd` (the cwd),
//! `env NAME` (a variable). Anything else writes `fake: command not found` and exits 127.
//!
//! Ports: [`ECHO_PORT`] echoes every byte back (an in-memory pipe, bounded like a socket
//! buffer); every other port is refused, like a loopback nothing listens on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, watch};
use warren_types::agent::{AgentError, CommandSummary, ErrorKind, FileInfo, FileKind};
use warren_types::{ImageRef, SandboxId};

mod fs;
mod images;
mod knobs;
mod net;
mod script;
mod volumes;

use fs::{children, info, is_dir, not_found};
pub use net::ECHO_PORT;
use script::{Cmd, feed, run_script};

use crate::{
    BoxFuture, CommandChannel, CommandEvent, CommandOpen, Driver, DriverError, FailureKind,
    FileRead, FileWrite, GlobQuery, GrepQuery, ImageStatus, PortStream, ReadRange, SandboxHandle,
    SandboxSpec, SearchResult, Tier,
};

type VolumeResult = Result<(), DriverError>;
type VolumeFuture<'a> = BoxFuture<'a, VolumeResult>;

/// Largest output chunk the fake sends, like the real agent.
const CHUNK: usize = 64 * 1024;

/// The in-memory driver. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeDriver {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    boxes: HashMap<SandboxId, FakeBox>,
    images: HashMap<String, ImageStatus>,
    generations: HashMap<String, u64>,
    /// Files of captured images, by image.
    image_files: HashMap<String, BTreeMap<String, Vec<u8>>>,
    volumes: HashMap<String, volumes::FakeVolume>,
    fail_create: Option<String>,
    fail_start: Option<String>,
    fail_destroys: u32,
    fail_stops: u32,
    /// Counts down the fork copies to the one that fails ([`FakeDriver::fail_fork_copy`]).
    fail_fork: Option<u32>,
    calls: Vec<String>,
    next_pid: u32,
    /// Whether it offers the vm tier ([`FakeDriver::offer_vm`]).
    vm: bool,
    /// Creates wait until this reads `true` ([`FakeDriver::hold_creates`]).
    create_gate: Option<watch::Receiver<bool>>,
}

#[derive(Debug, Default)]
struct FakeBox {
    running: bool,
    pid: u32,
    oom_kills: u64,
    files: BTreeMap<String, Vec<u8>>,
    commands: HashMap<String, Arc<Cmd>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unreachable_box() -> DriverError {
    DriverError::Unreachable("the fake sandbox is not running".into())
}

impl FakeDriver {
    /// An empty driver whose default image is present.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the driver offer the vm tier (it refuses it until then, as a host without the
    /// VMM root does).
    pub fn offer_vm(&self) {
        self.inner().vm = true;
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn boot(&self, spec: &SandboxSpec, fresh: bool) -> Result<SandboxHandle, DriverError> {
        self.check_volumes(spec)?;
        let mut inner = self.inner();
        let verb = if fresh { "create" } else { "start" };
        inner.calls.push(format!("{verb} {}", spec.id));
        let fail = if fresh {
            inner.fail_create.take()
        } else {
            inner.fail_start.take()
        };
        if let Some(reason) = fail {
            return Err(DriverError::failed(
                FailureKind::Other,
                &reason,
                reason.clone(),
            ));
        }
        inner.next_pid += 1;
        let pid = 1000 + inner.next_pid;
        let files = inner
            .image_files
            .get(&spec.image.to_string())
            .cloned()
            .unwrap_or_default();
        let b = inner.boxes.entry(spec.id.clone()).or_default();
        if fresh {
            *b = FakeBox {
                files,
                ..FakeBox::default()
            };
        }
        b.running = true;
        b.pid = pid;
        b.commands.clear();
        Ok(SandboxHandle {
            id: spec.id.clone(),
            tier: spec.tier,
            pid,
            start_time: u64::from(pid),
            agent_socket: PathBuf::from(format!("fake/{}", spec.id)),
            slot: pid,
            env: vec![("FAKE_PROXY".into(), "1".into())],
        })
    }

    /// The sandbox behind a handle, if it still runs as that handle says.
    fn with_box<T>(
        &self,
        handle: &SandboxHandle,
        f: impl FnOnce(&mut FakeBox) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let mut inner = self.inner();
        match inner.boxes.get_mut(&handle.id) {
            Some(b) if b.running && b.pid == handle.pid => f(b),
            _ => Err(unreachable_box()),
        }
    }
}

impl Driver for FakeDriver {
    fn tier_support(&self, tier: Tier) -> Result<(), String> {
        match tier {
            Tier::Jail => Ok(()),
            Tier::Vm if self.inner().vm => Ok(()),
            Tier::Vm => Err("this host has no microVM tier (the fake driver)".into()),
        }
    }

    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, DriverError>> {
        Box::pin(async move {
            self.pass_create_gate().await;
            self.boot(spec, true)
        })
    }

    fn start<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, DriverError>> {
        Box::pin(async move { self.boot(spec, false) })
    }

    fn stop<'a>(
        &'a self,
        id: &'a SandboxId,
        _handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            takes_time().await;
            let mut inner = self.inner();
            inner.calls.push(format!("stop {id}"));
            if inner.fail_stops > 0 {
                inner.fail_stops -= 1;
                return Err(DriverError::failed(
                    FailureKind::StopTimeout,
                    "the sandbox's processes did not stop",
                    "fake stop failure",
                ));
            }
            if let Some(b) = inner.boxes.get_mut(id) {
                b.running = false;
                for cmd in b.commands.drain().map(|(_, c)| c) {
                    cmd.lose();
                }
            }
            Ok(())
        })
    }

    fn destroy<'a>(
        &'a self,
        id: &'a SandboxId,
        _handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            takes_time().await;
            let mut inner = self.inner();
            inner.calls.push(format!("destroy {id}"));
            if inner.fail_destroys > 0 {
                inner.fail_destroys -= 1;
                return Err(DriverError::failed(
                    FailureKind::Storage,
                    "storage failed",
                    "fake destroy failure",
                ));
            }
            inner.boxes.remove(id);
            Ok(())
        })
    }

    fn has_storage(&self, id: &SandboxId) -> bool {
        self.inner().boxes.contains_key(id)
    }

    fn image_generation(&self, image: &ImageRef) -> u64 {
        self.generation_of(image)
    }

    fn image_status(&self, image: &ImageRef) -> ImageStatus {
        self.status_of(image)
    }

    fn capture<'a>(
        &'a self,
        id: &'a SandboxId,
        image: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            takes_time().await;
            self.capture_now(id, image)
        })
    }

    fn fork_storage<'a>(
        &'a self,
        src: &'a SandboxId,
        dst: &'a SandboxId,
        _disk_bytes: u64,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            // Copies started together are seen to overlap: every start is logged before any
            // copy.
            self.inner().calls.push(format!("fork-start {dst}"));
            takes_time().await;
            self.fork_now(src, dst)
        })
    }

    fn remove_image<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            takes_time().await;
            self.remove_image_now(image);
            Ok(())
        })
    }

    fn build_image<'a>(
        &'a self,
        image: &'a ImageRef,
        source: &'a crate::ImageSource,
        _max_bytes: u64,
        progress: &'a crate::BuildProgress,
    ) -> BoxFuture<'a, Result<crate::BuiltImage, DriverError>> {
        Box::pin(async move { self.build_now(image, source, progress) })
    }

    fn gc_images<'a>(
        &'a self,
        keep: &'a HashSet<ImageRef>,
    ) -> BoxFuture<'a, Result<Vec<ImageRef>, DriverError>> {
        Box::pin(async move { Ok(self.gc_images_now(keep)) })
    }

    fn create_volume<'a>(&'a self, id: &'a str, size: u64) -> BoxFuture<'a, VolumeResult> {
        Box::pin(async move {
            takes_time().await;
            self.create_volume_now(id, size)
        })
    }

    fn clone_volume<'a>(&'a self, src: &'a str, dst: &'a str, size: u64) -> VolumeFuture<'a> {
        Box::pin(async move {
            takes_time().await;
            self.clone_volume_now(src, dst, size)
        })
    }

    fn resize_volume<'a>(&'a self, id: &'a str, size: u64) -> BoxFuture<'a, VolumeResult> {
        Box::pin(async move { self.resize_volume_now(id, size) })
    }

    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, VolumeResult> {
        Box::pin(async move {
            takes_time().await;
            self.delete_volume_now(id)
        })
    }

    fn volume_used_bytes(&self, id: &str) -> Option<u64> {
        self.volume_used_now(id)
    }

    fn gc<'a>(
        &'a self,
        keep: &'a HashSet<SandboxId>,
    ) -> BoxFuture<'a, Result<Vec<SandboxId>, DriverError>> {
        Box::pin(async move {
            let mut inner = self.inner();
            let gone: Vec<SandboxId> = inner
                .boxes
                .keys()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect();
            for id in &gone {
                inner.boxes.remove(id);
                inner.calls.push(format!("gc {id}"));
            }
            Ok(gone)
        })
    }

    fn is_running(&self, handle: &SandboxHandle) -> bool {
        self.inner()
            .boxes
            .get(&handle.id)
            .is_some_and(|b| b.running && b.pid == handle.pid)
    }

    fn oom_kills(&self, id: &SandboxId) -> Option<u64> {
        self.inner().boxes.get(id).map(|b| b.oom_kills)
    }

    fn command<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        open: CommandOpen,
    ) -> BoxFuture<'a, Result<CommandChannel, DriverError>> {
        Box::pin(async move {
            // The agent answers after a round trip.
            takes_time().await;
            // Like the agent, an attach to an unknown command opens and fails as its first
            // event.
            if let CommandOpen::Attach { command_id, .. } = &open {
                let known = self.with_box(handle, |b| Ok(b.commands.contains_key(command_id)))?;
                if !known {
                    let (tx, events) = mpsc::channel(1);
                    let (input, _) = mpsc::channel(1);
                    let e = AgentError::new(
                        ErrorKind::CommandNotFound,
                        format!("command '{command_id}' not found"),
                    );
                    let _ = tx.send(CommandEvent::Error(e)).await;
                    return Ok(CommandChannel { events, input });
                }
            }
            let (cmd, offsets, kill_on_disconnect, new) =
                self.with_box(handle, |b| match open {
                    CommandOpen::Exec(spec) => {
                        let id = spec
                            .command_id
                            .clone()
                            .unwrap_or_else(|| format!("cmd-{}", b.commands.len() + 1));
                        if let Some(c) = b.commands.get(&id) {
                            return Ok((c.clone(), [0, 0], spec.kill_on_disconnect, None));
                        }
                        let (input, rx) = mpsc::unbounded_channel();
                        let cmd = Arc::new(Cmd {
                            pid: 100 + u32::try_from(b.commands.len()).unwrap_or(u32::MAX - 100),
                            state: Mutex::default(),
                            changed: watch::channel(0).0,
                            input,
                        });
                        b.commands.insert(id.clone(), cmd.clone());
                        let k = spec.kill_on_disconnect;
                        Ok((cmd, [0, 0], k, Some((id, spec, rx))))
                    }
                    CommandOpen::Attach {
                        command_id,
                        stdout_offset,
                        stderr_offset,
                    } => match b.commands.get(&command_id) {
                        Some(c) => Ok((c.clone(), [stdout_offset, stderr_offset], false, None)),
                        None => Err(AgentError::new(
                            ErrorKind::CommandNotFound,
                            format!("command '{command_id}' not found"),
                        )
                        .into()),
                    },
                })?;
            let command_id = match &new {
                Some((id, _, _)) => id.clone(),
                None => lock(&self.inner)
                    .boxes
                    .get(&handle.id)
                    .and_then(|b| b.commands.iter().find(|(_, c)| Arc::ptr_eq(c, &cmd)))
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default(),
            };
            if let Some((_, spec, rx)) = new {
                tokio::spawn(run_script(cmd.clone(), spec, rx));
            }
            let (tx, events) = mpsc::channel(16);
            let (input, input_rx) = mpsc::channel(16);
            let _ = tx
                .send(CommandEvent::Started {
                    command_id,
                    pid: cmd.pid,
                })
                .await;
            tokio::spawn(feed(cmd, offsets, tx, input_rx, kill_on_disconnect));
            Ok(CommandChannel { events, input })
        })
    }

    fn list_commands<'a>(
        &'a self,
        handle: &'a SandboxHandle,
    ) -> BoxFuture<'a, Result<Vec<CommandSummary>, DriverError>> {
        Box::pin(async move {
            self.with_box(handle, |b| {
                Ok(b.commands
                    .iter()
                    .map(|(id, c)| {
                        let st = c.state();
                        CommandSummary {
                            command_id: id.clone(),
                            pid: c.pid,
                            exit: st.exit,
                            stdout_len: st.out[0].len() as u64,
                            stderr_len: st.out[1].len() as u64,
                            attached: 0,
                        }
                    })
                    .collect())
            })
        })
    }

    fn read_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        range: ReadRange,
    ) -> BoxFuture<'a, Result<FileRead, DriverError>> {
        Box::pin(async move {
            let (file_info, bytes) = self.with_box(handle, |b| {
                if let Some(data) = b.files.get(&range.path) {
                    return Ok((
                        info(&range.path, FileKind::File, data.len() as u64),
                        data.clone(),
                    ));
                }
                if is_dir(&b.files, &range.path) {
                    return Ok((info(&range.path, FileKind::Dir, 0), Vec::new()));
                }
                Err(not_found(&range.path))
            })?;
            let start = usize::try_from(range.offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let len = range
                .len
                .map_or(bytes.len(), |l| usize::try_from(l).unwrap_or(usize::MAX));
            let end = bytes.len().min(start.saturating_add(len));
            let (tx, body) = mpsc::channel(4);
            let data = bytes[start..end].to_vec();
            tokio::spawn(async move {
                for piece in data.chunks(CHUNK) {
                    if tx.send(Ok(piece.to_vec())).await.is_err() {
                        return;
                    }
                }
            });
            Ok(FileRead {
                info: file_info,
                body,
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
        _user: Option<String>,
    ) -> BoxFuture<'a, Result<FileWrite, DriverError>> {
        Box::pin(async move {
            self.with_box(handle, |b| {
                if is_dir(&b.files, &path) {
                    return Err(AgentError::new(
                        ErrorKind::IsADirectory,
                        format!("{path} is a directory"),
                    )
                    .into());
                }
                Ok(())
            })?;
            let (writer, mut end) = FileWrite::channel();
            let this = self.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                while let Some(chunk) = end.chunks.recv().await {
                    data.extend_from_slice(&chunk);
                }
                if end.commit.await.is_err() {
                    return; // abandoned: the target stays as it was
                }
                let r = this.with_box(&handle, |b| {
                    b.files.insert(path, data);
                    Ok(())
                });
                let _ = end.done.send(r);
            });
            Ok(writer)
        })
    }

    fn list_dir<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
    ) -> BoxFuture<'a, Result<(Vec<FileInfo>, bool), DriverError>> {
        Box::pin(async move {
            self.with_box(handle, |b| {
                if !is_dir(&b.files, &path) {
                    return Err(not_found(&path));
                }
                Ok((children(&b.files, &path), false))
            })
        })
    }

    fn glob<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GlobQuery,
    ) -> BoxFuture<'a, Result<SearchResult, DriverError>> {
        Box::pin(async move { self.with_box(handle, |b| Ok(fs::glob(&b.files, &query))) })
    }

    fn grep<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GrepQuery,
    ) -> BoxFuture<'a, Result<SearchResult, DriverError>> {
        Box::pin(async move { self.with_box(handle, |b| Ok(fs::grep(&b.files, &query))) })
    }

    fn connect_port<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream, DriverError>> {
        Box::pin(async move {
            self.with_box(handle, |_| Ok(()))?;
            self.inner()
                .calls
                .push(format!("connect {} {port}", handle.id));
            net::dial(port)
        })
    }
}

/// Storage work takes time, as the real driver's does (it runs on a blocking thread): the
/// operation yields once, so a caller can be cut off mid-operation, and operations started
/// together overlap.
async fn takes_time() {
    tokio::task::yield_now().await;
}
