//! A small blocking client for the agent and a handle on a running agent process.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warren_proto::{
    ExecSpec, ExitStatus, PROTOCOL_VERSION, Request, Response, Stream, read_frame, write_frame,
};

/// A running agent listening on a socket in a temp dir; killed on drop.
pub struct Agent {
    child: Child,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        // WARREN_AGENT_BIN runs the suite against another build (e.g. the static release one).
        let bin = std::env::var_os("WARREN_AGENT_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_warren-agent")),
            PathBuf::from,
        );
        // WARREN_AGENT_WRAP runs it under a wrapper, e.g. `unshare -p -f --mount-proc` to make
        // it PID 1 (tests that look at host pids then do not apply).
        let wrap = std::env::var("WARREN_AGENT_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--listen")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "agent did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            sock,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection that has not shaken hands.
    pub fn raw(&self) -> Conn {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn { s }
    }

    /// A connection after a successful handshake.
    pub fn conn(&self) -> Conn {
        let mut c = self.raw();
        c.send(&Request::Hello {
            version: PROTOCOL_VERSION,
        });
        match c.recv() {
            Some(Response::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("handshake: {other:?}"),
        }
        c
    }

    /// Runs a command to completion and collects its output.
    pub fn run(&self, spec: ExecSpec) -> Collected {
        let mut c = self.conn();
        c.send(&Request::Exec(spec));
        c.started();
        c.collect()
    }

    pub fn sh(&self, script: &str) -> Collected {
        self.run(sh(script))
    }

    /// The agent's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Waits until `f` holds, for up to `secs` seconds.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub struct Conn {
    pub s: UnixStream,
}

#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<ExitStatus>,
    /// First offset seen per stream (resume point of an attach).
    pub first_offsets: [Option<u64>; 2],
}

impl Collected {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.exit.expect("command did not exit").code
    }
}

impl Conn {
    pub fn send(&mut self, req: &Request) {
        write_frame(&mut self.s, req).unwrap();
    }

    pub fn recv(&mut self) -> Option<Response> {
        read_frame(&mut self.s).unwrap()
    }

    /// Expects `Started` and returns (command_id, pid).
    pub fn started(&mut self) -> (String, u32) {
        match self.recv() {
            Some(Response::Started { command_id, pid }) => (command_id, pid),
            other => panic!("expected Started, got {other:?}"),
        }
    }

    pub fn exec(&mut self, spec: ExecSpec) -> (String, u32) {
        self.send(&Request::Exec(spec));
        self.started()
    }

    /// Reads output until Exit (or the connection closes), checking offsets are contiguous.
    pub fn collect(&mut self) -> Collected {
        let mut c = Collected::default();
        let mut next = [None::<u64>; 2];
        loop {
            match self.recv() {
                Some(Response::Output {
                    stream,
                    offset,
                    data,
                }) => {
                    let i = match stream {
                        Stream::Stdout => 0,
                        Stream::Stderr => 1,
                    };
                    if let Some(n) = next[i] {
                        assert_eq!(offset, n, "offsets must be contiguous");
                    } else {
                        c.first_offsets[i] = Some(offset);
                    }
                    assert!(data.len() <= warren_proto::MAX_CHUNK_LEN);
                    next[i] = Some(offset + data.len() as u64);
                    if i == 0 {
                        c.stdout.extend_from_slice(&data)
                    } else {
                        c.stderr.extend_from_slice(&data)
                    }
                }
                Some(Response::Exit(status)) => {
                    c.exit = Some(status);
                    assert!(self.recv().is_none(), "the agent closes after Exit");
                    return c;
                }
                None => return c,
                Some(other) => panic!("unexpected frame {other:?}"),
            }
        }
    }
}
