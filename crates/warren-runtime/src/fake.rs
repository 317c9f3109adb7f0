//! A driver with no kernel, no root and no files, for tests of the layers above (the control
//! plane and the API). **It isolates nothing**: its sandboxes are entries in a map, their
//! processes are tokio tasks interpreting the tiny script language below, and their files are
//! an in-memory map. Never serve tenants with it.
//!
//! What it keeps real is the seam: [`FakeDriver::connect`] returns an [`AgentConn`] over a socket
//! pair whose other end speaks the `warren-proto` protocol with the agent's message flow, so the
//! code above runs its real client side. Tests can inject failures (`fail_*`, [`FakeDriver::crash`],
//! [`FakeDriver::set_oom_kills`]) and inspect what the driver was asked ([`FakeDriver::calls`],
//! [`FakeDriver::sandboxes`]).
//!
//! Handles report [`Tier::Jail`], the only tier there is: the layers above must behave as they do
//! for the jail. Their `agent_socket` names no file and their `pid` is a counter, not a host pid.
//! Not modelled: idle timeouts, session TTLs, users and permissions,
//! PTY sizes, `DialTcp` (always refused).
//!
//! # Commands
//!
//! The script is `argv[2]` when `argv[1]` is `-c` (the shape `["/bin/bash", "-c", "..."]` the
//! layers above send), otherwise the whole argv joined by spaces. It is a `;`-separated sequence
//! of steps:
//!
//! | step            | effect                                                              |
//! |-----------------|---------------------------------------------------------------------|
//! | `echo TEXT`     | `TEXT\n` to stdout                                                  |
//! | `echoerr TEXT`  | `TEXT\n` to stderr (stdout under a PTY)                             |
//! | `exit N`        | ends the command with code N                                        |
//! | `repeat N TEXT` | TEXT N times to stdout, in chunks of at most `MAX_CHUNK_LEN`        |
//! | `sleep MS`      | waits MS milliseconds                                               |
//! | `cat`           | copies stdin to stdout until `CloseStdin` (at once without stdin)   |
//! | `pwd`           | the spec's cwd (default `/`) and a newline                          |
//! | `env NAME`      | the spec's value of NAME and a newline; status 1 when unset         |
//! | anything else   | `fake: command not found\n` to stderr, status 127                   |
//!
//! The command's exit code is the status of its last step, as in a shell. `Kill` ends it with
//! code 137 and signal 9 ([`warren_proto::ExitReason::Killed`]), its `timeout_ms` the same way
//! with `Timeout`, and `Signal` with code 128 + the signal, as if it had no handler.

mod agent;
mod command;
mod files;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use warren_types::{ImageRef, SandboxId};

use crate::agent::{AgentConn, AgentConnError};
use crate::driver::{Driver, DriverError, SandboxHandle, SandboxSpec, Tier};
use crate::image::ImageStatus;
use crate::io_error::IoError;
use crate::storage::StorageError;
use agent::FakeAgent;
use files::Files;

/// How often each driver operation was called, failed ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeCalls {
    /// `create`.
    pub create: u32,
    /// `start`.
    pub start: u32,
    /// `stop`.
    pub stop: u32,
    /// `destroy`.
    pub destroy: u32,
    /// `gc`.
    pub gc: u32,
    /// `connect`.
    pub connect: u32,
}

/// The in-memory test driver. Clones share their sandboxes.
#[derive(Debug, Clone, Default)]
pub struct FakeDriver {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: BTreeMap<SandboxId, Sandbox>,
    /// Images whose status a test set; every other image but the default is missing.
    images: HashMap<ImageRef, ImageStatus>,
    fail_create: Option<String>,
    fail_start: Option<String>,
    fail_destroys: u32,
    fail_stops: u32,
    calls: FakeCalls,
    /// Last pid handed out; every boot gets a new one so stale handles are told apart.
    last_pid: u32,
}

#[derive(Debug)]
struct Sandbox {
    files: Arc<Mutex<Files>>,
    /// The running boot's pid and agent.
    boot: Option<(u32, Arc<FakeAgent>)>,
    oom_kills: u64,
}

impl Sandbox {
    fn halt(&mut self) {
        if let Some((_, agent)) = self.boot.take() {
            agent.shut_down();
        }
    }
}

/// The failure a test injected, shaped like the jail driver's storage failures.
fn injected_storage_failure(action: &'static str, id: &SandboxId) -> DriverError {
    let path = PathBuf::from("/fake").join(id.as_str());
    let e = IoError::at(action, &path)(std::io::Error::from_raw_os_error(libc::EIO));
    DriverError::Storage(StorageError::Io(e))
}

impl FakeDriver {
    /// A driver with no sandboxes, where only the default image is present.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole; a test that panicked elsewhere tore nothing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets what [`Self::image_status`] (and so `has_image` and `create`) says of `image`.
    pub fn set_image_status(&self, image: ImageRef, status: ImageStatus) {
        self.state().images.insert(image, status);
    }

    /// Whether sandboxes can be made from `image` now.
    pub fn image_status(&self, image: &ImageRef) -> ImageStatus {
        match self.state().images.get(image) {
            Some(status) => status.clone(),
            None if *image == ImageRef::default_image() => ImageStatus::Present,
            None => ImageStatus::Missing,
        }
    }

    /// The next `create` fails with `reason` as the jailer's message.
    pub fn fail_next_create(&self, reason: impl Into<String>) {
        self.state().fail_create = Some(reason.into());
    }

    /// The next `start` fails with `reason` as the jailer's message.
    pub fn fail_next_start(&self, reason: impl Into<String>) {
        self.state().fail_start = Some(reason.into());
    }

    /// The next `n` destroys fail with a storage error and leave the sandbox as it was (stopped).
    pub fn fail_destroys(&self, n: u32) {
        self.state().fail_destroys = n;
    }

    /// The next `n` stops fail with [`DriverError::StopTimeout`] and leave the sandbox running.
    pub fn fail_stops(&self, n: u32) {
        self.state().fail_stops = n;
    }

    /// The sandbox's processes end on their own: `is_running` turns false and `connect` fails.
    /// Its files stay.
    pub fn crash(&self, id: &SandboxId) {
        if let Some(sb) = self.state().sandboxes.get_mut(id) {
            sb.halt();
        }
    }

    /// Sets what [`Self::oom_kills`] reports for the sandbox.
    pub fn set_oom_kills(&self, id: &SandboxId, n: u64) {
        if let Some(sb) = self.state().sandboxes.get_mut(id) {
            sb.oom_kills = n;
        }
    }

    /// Times the OOM killer "fired" in the sandbox (0 unless a test set it).
    pub fn oom_kills(&self, id: &SandboxId) -> Result<u64, DriverError> {
        Ok(self.state().sandboxes.get(id).map_or(0, |sb| sb.oom_kills))
    }

    /// How often each operation was called.
    pub fn calls(&self) -> FakeCalls {
        self.state().calls
    }

    /// Every sandbox with storage, by id, and whether it is running.
    pub fn sandboxes(&self) -> Vec<(SandboxId, bool)> {
        self.state()
            .sandboxes
            .iter()
            .map(|(id, sb)| (id.clone(), sb.boot.is_some()))
            .collect()
    }

    /// A file of the sandbox, as its agent would read it.
    pub fn file(&self, id: &SandboxId, path: &str) -> Option<Vec<u8>> {
        let files = self.state().sandboxes.get(id)?.files.clone();
        let read = files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(path);
        read.ok().map(|(_, data)| data)
    }

    /// Boots the sandbox's agent and returns its handle.
    fn boot(state: &mut State, id: &SandboxId) -> SandboxHandle {
        state.last_pid += 1;
        let pid = state.last_pid;
        let sb = state
            .sandboxes
            .entry(id.clone())
            .or_insert_with(|| Sandbox {
                files: Arc::default(),
                boot: None,
                oom_kills: 0,
            });
        sb.halt();
        sb.boot = Some((pid, FakeAgent::new(sb.files.clone())));
        SandboxHandle {
            id: id.clone(),
            tier: Tier::Jail,
            pid,
            start_time: u64::from(pid),
            agent_socket: PathBuf::from("/fake").join(id.as_str()).join("agent.sock"),
            slot: 0,
        }
    }

    fn agent(&self, handle: &SandboxHandle) -> Option<Arc<FakeAgent>> {
        match &self.state().sandboxes.get(&handle.id)?.boot {
            Some((pid, agent)) if *pid == handle.pid => Some(agent.clone()),
            _ => None,
        }
    }
}

impl Driver for FakeDriver {
    fn tier(&self) -> Tier {
        Tier::Jail
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        let mut st = self.state();
        st.calls.create += 1;
        if let Some(reason) = st.fail_create.take() {
            return Err(DriverError::Jail(reason));
        }
        drop(st);
        if self.image_status(&spec.image) != ImageStatus::Present {
            return Err(StorageError::ImageMissing(spec.image.clone()).into());
        }
        let mut st = self.state();
        if st.sandboxes.contains_key(&spec.id) {
            return Err(StorageError::SandboxExists(spec.id.clone()).into());
        }
        Ok(Self::boot(&mut st, &spec.id))
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        let mut st = self.state();
        st.calls.start += 1;
        if !st.sandboxes.contains_key(&spec.id) {
            return Err(DriverError::NoStorage(spec.id.clone()));
        }
        if let Some(reason) = st.fail_start.take() {
            // A failed start leaves the sandbox stopped, as the jail driver's cleanup does.
            if let Some(sb) = st.sandboxes.get_mut(&spec.id) {
                sb.halt();
            }
            return Err(DriverError::Jail(reason));
        }
        Ok(Self::boot(&mut st, &spec.id))
    }

    async fn stop(
        &self,
        id: &SandboxId,
        _handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        let mut st = self.state();
        st.calls.stop += 1;
        if st.fail_stops > 0 {
            st.fail_stops -= 1;
            return Err(DriverError::StopTimeout(id.clone()));
        }
        if let Some(sb) = st.sandboxes.get_mut(id) {
            sb.halt();
        }
        Ok(())
    }

    async fn destroy(
        &self,
        id: &SandboxId,
        _handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        let mut st = self.state();
        st.calls.destroy += 1;
        if st.fail_destroys > 0 {
            st.fail_destroys -= 1;
            // The jail driver stops the sandbox before its storage fails.
            if let Some(sb) = st.sandboxes.get_mut(id) {
                sb.halt();
            }
            return Err(injected_storage_failure("delete the root filesystem", id));
        }
        if let Some(mut sb) = st.sandboxes.remove(id) {
            sb.halt();
        }
        Ok(())
    }

    fn has_storage(&self, id: &SandboxId) -> bool {
        self.state().sandboxes.contains_key(id)
    }

    fn has_image(&self, image: &ImageRef) -> bool {
        self.image_status(image) == ImageStatus::Present
    }

    async fn gc(&self, keep: &HashSet<SandboxId>) -> Result<Vec<SandboxId>, DriverError> {
        let mut st = self.state();
        st.calls.gc += 1;
        let gone: Vec<SandboxId> = st
            .sandboxes
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        for id in &gone {
            if let Some(mut sb) = st.sandboxes.remove(id) {
                sb.halt();
            }
        }
        Ok(gone)
    }

    fn is_running(&self, handle: &SandboxHandle) -> bool {
        self.agent(handle).is_some()
    }

    async fn connect(&self, handle: &SandboxHandle) -> Result<AgentConn, DriverError> {
        self.state().calls.connect += 1;
        let agent = self.agent(handle).ok_or_else(|| {
            AgentConnError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        })?;
        let (ours, theirs) = tokio::net::UnixStream::pair().map_err(AgentConnError::Connect)?;
        agent.serve(theirs);
        Ok(AgentConn::handshake(ours).await?)
    }
}
