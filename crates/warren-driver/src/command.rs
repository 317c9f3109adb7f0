//! A command's two directions between the control plane and a sandbox's agent.

use tokio::sync::mpsc;
use warren_types::agent::{AgentError, ExecSpec, ExitStatus, PtySize, Stream};

/// What to open: a new command, or an attachment to one the agent holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOpen {
    /// Run a command (idempotent on `command_id`: a known id attaches instead).
    Exec(ExecSpec),
    /// Attach to a command, replaying its output from these byte offsets.
    Attach {
        /// The command's id.
        command_id: String,
        /// First stdout byte wanted.
        stdout_offset: u64,
        /// First stderr byte wanted.
        stderr_offset: u64,
    },
}

/// One thing a command did, in order: `Started`, then `Output`s, then one `Exit` or `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// The command runs (or ran).
    Started {
        /// Its id.
        command_id: String,
        /// Its main process's pid inside the sandbox.
        pid: u32,
    },
    /// Output bytes at a byte offset of their stream.
    Output {
        /// Which stream.
        stream: Stream,
        /// Offset of `data[0]` since the command started.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The command ended; nothing follows.
    Exit(ExitStatus),
    /// The agent refused or failed the command; nothing follows.
    Error(AgentError),
    /// The connection to the agent broke (the sandbox stopped, or the agent misbehaved); the
    /// command may still run, and a later attach may reach it.
    Lost(String),
}

/// What a client sends to an attached command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandInput {
    /// Bytes for its stdin (or PTY).
    Data(Vec<u8>),
    /// End of stdin.
    CloseStdin,
    /// Kill its process group.
    Kill,
    /// Send a signal to its process group.
    Signal(i32),
    /// Resize its PTY.
    Resize(PtySize),
}

/// An open command. Events arrive in order with back-pressure: a consumer that stops reading
/// slows the command down rather than growing memory. Dropping the channel detaches; the
/// command keeps running in the agent unless it asked to be killed on disconnect.
#[derive(Debug)]
pub struct CommandChannel {
    /// What the command does.
    pub events: mpsc::Receiver<CommandEvent>,
    /// What the client sends it.
    pub input: mpsc::Sender<CommandInput>,
}
