//! The host <-> agent protocol.
//!
//! The host (`warren-runtime`) talks to `warren-agent`, PID 1 inside every sandbox, over a unix
//! stream socket (a vsock on the microVM tier later). Every connection carries length-prefixed
//! frames: a 4-byte big-endian length, then a postcard-encoded [`Request`] (host to agent) or
//! [`Response`] (agent to host). postcard is not self-describing, so any change to these types is
//! a protocol change and bumps [`PROTOCOL_VERSION`]. New variants go at the end of their enum:
//! the agent encodes and decodes its bulk frames by variant index (`warren-agent`'s `wire`).
//!
//! A connection starts with a handshake: the host sends [`Request::Hello`], the agent answers
//! [`Response::Hello`] or [`Response::Error`] with [`ErrorKind::VersionMismatch`]. Then the host
//! sends one operation; what follows depends on it:
//!
//! - [`Request::Exec`] / [`Request::Attach`]: the agent answers [`Response::Started`], then
//!   streams [`Response::Output`] frames and ends with one [`Response::Exit`] (or
//!   [`Response::Error`]) and closes. While attached the host may send [`Request::Input`],
//!   [`Request::CloseStdin`], [`Request::Kill`], [`Request::Signal`] and [`Request::Resize`].
//!   Closing the connection detaches; the command keeps running.
//! - [`Request::WriteFile`]: the host follows with [`Request::FileData`] frames and one
//!   [`Request::FileEnd`]; the agent answers [`Response::Ok`] or an error.
//! - [`Request::ReadFile`]: the agent answers [`Response::FileInfo`], then
//!   [`Response::FileData`] frames and one [`Response::FileEnd`].
//! - [`Request::Stat`] → [`Response::FileInfo`]; [`Request::ListDir`] → [`Response::DirEntries`].
//! - [`Request::DialTcp`]: the agent dials `127.0.0.1:port` (then `[::1]:port`) and answers
//!   [`Response::Ok`] (or an error: `ConnectionRefused`, `BadRequest` for port 0, `Io`), then the connection carries raw
//!   bytes both ways to the sandbox's TCP port (tunnels use this).
//! - [`Request::Glob`] / [`Request::Grep`]: the agent answers [`Response::GlobMatches`] /
//!   [`Response::GrepMatches`] batches (none when nothing matched), then one
//!   [`Response::SearchEnd`]. A search that cannot run (bad pattern, unusable root) is answered
//!   by a lone [`Response::Error`]; an `Error` after batches means the agent failed midway and
//!   the batches are to be discarded. Batches are
//!   bounded by [`SEARCH_BATCH_LEN`] and produced only as fast as the host reads them, so
//!   neither side holds more than a few batches however many matches there are; the whole
//!   search is bounded by the limits in [`search`]. Closing the connection stops the search.
//! - [`Request::ListCommands`] → [`Response::CommandList`]; [`Request::Ping`] → [`Response::Pong`].
//!
//! After the final frame of a `ReadFile`, `WriteFile`, `Stat`, `ListDir`, `Glob`, `Grep`,
//! `ListCommands` or `Ping`, the connection may carry another operation.
//!
//! The agent runs on the untrusted side: the host decodes every frame with a size bound
//! ([`MAX_FRAME_LEN`]) and typed decoding, never trusting lengths it did not check.

mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod request;
mod response;
pub mod search;
pub mod vmm;

pub use frame::{
    FrameDecoder, MAX_FRAME_LEN, ProtoError, body_len, decode, encode, read_frame, write_frame,
};
pub use request::Request;
pub use response::Response;
pub use search::{
    GREP_BINARY_PROBE, GREP_MAX_BYTES, GREP_MAX_FILE, GREP_MAX_FILES, GREP_MAX_LINE, GREP_MAX_TEXT,
    GlobMatch, GrepMatch, MAX_MATCHES, SEARCH_BATCH_LEN, SEARCH_MAX_DEPTH, SEARCH_MAX_ROOT_LEN,
    SearchCut, WALK_BUDGET, WALK_QUEUE_MAX,
};
pub use vmm::VmmSpec;
/// The data the messages carry live in `warren-types`, so the layers above the runtime use them
/// without speaking the protocol; a change to them is still a protocol change.
pub use warren_types::agent::{
    AgentError, CommandSummary, ErrorKind, ExecSpec, ExitReason, ExitStatus, FileInfo, FileKind,
    PtySize, Stream,
};

/// Bumped on every change to the wire types or their meaning.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest data payload the agent or host puts in one `Output` or `FileData` frame.
pub const MAX_CHUNK_LEN: usize = 64 * 1024;

/// Largest number of entries in one [`Response::DirEntries`] frame's worth of listing.
pub const MAX_DIR_ENTRIES: usize = 10_000;

#[cfg(test)]
mod tests;

/// The `/etc/hosts` an image starts with: loopback names only. Its sandboxes' own line is added
/// at each boot ([`hosts_file`]).
pub const HOSTS_BASE: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Ends the line of `/etc/hosts` that names the sandbox itself, so that the next boot (which
/// may give it another address, or, after a fork, another name) replaces that line alone.
pub const HOSTS_MARK: &str = "# Warren: this sandbox";

/// The address a sandbox without a network link names itself by, as Debian names a host
/// without a permanent address: its hostname must resolve offline too (`sudo`, Java's
/// `getLocalHost`, `socket.gethostbyname(socket.gethostname())`).
pub const OFFLINE_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 1, 1);

/// A sandbox's `/etc/hosts` for this boot: `current` (the file as the tenant left it, or
/// [`HOSTS_BASE`] when there is none or it is blank) without any line of an earlier boot's, then the line
/// naming `hostname` at `address`. The tenant's own lines stay, before it, so one of theirs for
/// the same name wins. The runtime writes it for a jail, the agent in a VM's guest: both must
/// write the same text.
pub fn hosts_file(current: Option<&str>, hostname: &str, address: std::net::IpAddr) -> String {
    let mut text = String::new();
    for line in current
        .filter(|c| !c.trim().is_empty())
        .unwrap_or(HOSTS_BASE)
        .lines()
        .filter(|l| !l.trim_end().ends_with(HOSTS_MARK))
    {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!("{address}\t{hostname}\t{HOSTS_MARK}\n"));
    text
}

/// The `/etc/resolv.conf` of a sandbox linked to the host: Warren's DNS on the host side of its
/// link, which resolves names through the egress proxy. The runtime binds it into a jail; the
/// agent writes it where nothing was bound (a VM's guest, an image whose resolv.conf is a
/// symlink): both must write the same text.
pub fn resolv_conf(nameserver: std::net::Ipv4Addr) -> String {
    format!(
        "# Written by Warren: names are resolved on the host by the egress proxy.\nnameserver {nameserver}\noptions timeout:2 attempts:2\n"
    )
}
