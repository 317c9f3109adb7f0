//! Turning an `ExecSpec` into a running session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use warren_proto::{AgentError, ErrorKind, ExecSpec};

use crate::pty::{self, Io, SpawnRequest};
use crate::registry::{Agent, Lookup};
use crate::session::{Limits, Session};
use crate::users;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest command id accepted from a client.
const MAX_ID_LEN: usize = 256;

/// Whether `Exec` started a command or found one with the same id.
#[derive(Debug)]
pub(crate) enum Started {
    New(Arc<Session>),
    Existing(Arc<Session>),
}

/// Starts the command, or returns the session that already has the spec's `command_id`.
///
/// A failed start leaves no session behind: the caller answers `Error(SpawnFailed)` and a retry
/// with the same id tries again. An id whose session expired is refused with `SessionExpired`
/// rather than run a second time.
pub(crate) fn exec(agent: &Arc<Agent>, spec: ExecSpec) -> Result<Started, AgentError> {
    let id = match spec.command_id.clone() {
        Some(id) if id.is_empty() || id.len() > MAX_ID_LEN => {
            return Err(AgentError::new(
                ErrorKind::BadRequest,
                "command id must be 1 to 256 bytes",
            ));
        }
        Some(id) => id,
        None => uuid::Uuid::now_v7().simple().to_string(),
    };
    // The registry stays locked from the lookup to the registration so two concurrent Execs
    // with one id cannot both spawn. Spawning is synchronous and quick.
    let mut registry = agent.registry();
    match registry.lookup(&id) {
        Lookup::Found(s) => return Ok(Started::Existing(s)),
        Lookup::Expired => {
            return Err(AgentError::new(
                ErrorKind::SessionExpired,
                format!("command {id} finished and its session expired"),
            ));
        }
        Lookup::Unknown => {}
    }
    let plan = plan(&spec)?;
    let req = SpawnRequest {
        argv: &spec.argv,
        env: &plan.env,
        cwd: &plan.cwd,
        uid: plan.user.uid,
        gid: plan.user.gid,
        groups: &plan.user.groups,
        set_groups: agent.set_groups,
        io: match spec.pty {
            Some(size) => Io::Pty {
                rows: size.rows,
                cols: size.cols,
            },
            None => Io::Pipes { stdin: spec.stdin },
        },
    };
    let program = spec.argv.first().cloned().unwrap_or_default();
    let spawned = pty::spawn(&req).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        AgentError::new(
            ErrorKind::SpawnFailed,
            format!("failed to start {program}: {why}"),
        )
    })?;
    let limits = Limits {
        timeout: spec.timeout_ms.map(Duration::from_millis),
        idle_timeout: spec.idle_timeout_ms.map(Duration::from_millis),
        kill_on_disconnect: spec.kill_on_disconnect,
        ttl: spec.ttl_ms.map(Duration::from_millis),
    };
    let pid = spawned.pid;
    let mut spawned = spawned;
    if let Some(listener) = spawned.ownership.take() {
        tokio::spawn(crate::ownership::supervise(listener));
    }
    agent
        .adopt(&mut registry, id, spawned, limits)
        .map(Started::New)
        .map_err(|e| {
            // The command runs but cannot be watched; do not leave it running unobserved.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            AgentError::new(
                ErrorKind::SpawnFailed,
                format!("failed to watch {program}: {e}"),
            )
        })
}

struct Plan {
    user: users::User,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::BadRequest, msg)
}

fn spawn_failed(msg: impl Into<String>) -> AgentError {
    AgentError::new(ErrorKind::SpawnFailed, msg)
}

fn plan(spec: &ExecSpec) -> Result<Plan, AgentError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(bad("argv must name a program"));
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err(bad("argv contains a NUL byte"));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(bad(format!("invalid environment variable {k:?}")));
        }
    }
    let user = users::resolve(spec.user.as_deref()).map_err(|e| spawn_failed(e.to_string()))?;

    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), user.home.clone()),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("SHELL".into(), user.shell.clone()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    if spec.pty.is_some() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    for (k, v) in &spec.env {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1.clone_from(v),
            None => env.push((k.clone(), v.clone())),
        }
    }

    let cwd = match &spec.cwd {
        Some(cwd) => {
            if cwd.contains('\0') {
                return Err(bad("cwd contains a NUL byte"));
            }
            let p = PathBuf::from(cwd);
            if !p.is_absolute() {
                return Err(bad(format!("cwd {cwd} is not an absolute path")));
            }
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => p,
                Ok(_) => {
                    return Err(spawn_failed(format!(
                        "working directory {cwd} is not a directory"
                    )));
                }
                Err(_) => {
                    return Err(spawn_failed(format!(
                        "working directory {cwd} does not exist"
                    )));
                }
            }
        }
        None if Path::new(&user.home).is_dir() => PathBuf::from(&user.home),
        None => PathBuf::from("/"),
    };
    Ok(Plan { user, env, cwd })
}
