//! The agent's shared state: every command session by id and by pid, the ids of expired
//! sessions, and the reaping of exited children.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use warren_proto::CommandSummary;

use crate::pty;
use crate::session::{self, Limits, Session, lock};

/// How many expired command ids are remembered to answer `SessionExpired`.
const TOMBSTONES: usize = 10_000;

/// Where a command id stands.
#[derive(Debug)]
pub(crate) enum Lookup {
    Found(Arc<Session>),
    Expired,
    Unknown,
}

/// All sessions of this agent.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: HashMap<String, Arc<Session>>,
    by_pid: HashMap<u32, Arc<Session>>,
    expired: HashSet<String>,
    expired_order: VecDeque<String>,
}

impl Registry {
    pub(crate) fn lookup(&self, id: &str) -> Lookup {
        match self.sessions.get(id) {
            Some(s) => Lookup::Found(s.clone()),
            None if self.expired.contains(id) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    pub(crate) fn list(&self) -> Vec<CommandSummary> {
        let mut all: Vec<CommandSummary> = self.sessions.values().map(|s| s.summary()).collect();
        all.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        all
    }

    fn expire(&mut self, id: &str) {
        if self.sessions.remove(id).is_none() {
            return;
        }
        if self.expired.insert(id.to_owned()) {
            self.expired_order.push_back(id.to_owned());
        }
        while self.expired_order.len() > TOMBSTONES {
            if let Some(old) = self.expired_order.pop_front() {
                self.expired.remove(&old);
            }
        }
    }

    /// Routes the status of a reaped process to its session; statuses of orphans that were
    /// reparented to the agent are simply dropped.
    fn reaped(&mut self, pid: u32, code: i32, signal: Option<i32>) {
        if let Some(s) = self.by_pid.remove(&pid) {
            s.on_main_exit(code, signal);
        }
    }
}

/// The agent's shared state.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) registry: Mutex<Registry>,
    /// Whether this user namespace allows `setgroups`.
    pub(crate) set_groups: bool,
}

impl Agent {
    pub(crate) fn new(set_groups: bool) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::default()),
            set_groups,
        })
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Registers a freshly spawned command and starts its tasks. Must run on the runtime and in
    /// the same turn as the spawn, before the reaper can see the pid.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        registry: &mut Registry,
        id: String,
        spawned: pty::Spawned,
        limits: Limits,
    ) -> std::io::Result<Arc<Session>> {
        let pid = spawned.pid;
        let stdout = Arc::new(pty::register(spawned.stdout)?);
        let stderr = spawned.stderr.map(pty::register).transpose()?.map(Arc::new);
        let stdin = spawned.stdin.map(pty::register).transpose()?.map(Arc::new);
        let pty_fd = spawned.is_pty.then(|| stdout.clone());
        let session = Arc::new(Session::new(
            id.clone(),
            pid,
            limits,
            spawned.is_pty,
            stdin,
            pty_fd,
        ));
        registry.sessions.insert(id.clone(), session.clone());
        registry.by_pid.insert(pid, session.clone());
        let agent = Arc::downgrade(self);
        session::start(&session, stdout, stderr, move || {
            if let Some(agent) = agent.upgrade() {
                agent.registry().expire(&id);
            }
        });
        Ok(session)
    }

    /// Reaps every child that has exited.
    pub(crate) fn reap(&self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.route(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    let n = sig as i32;
                    self.route(pid, 128 + n, Some(n));
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    fn route(&self, pid: Pid, code: i32, signal: Option<i32>) {
        if let Ok(pid) = u32::try_from(pid.as_raw()) {
            self.registry().reaped(pid, code, signal);
        }
    }
}
