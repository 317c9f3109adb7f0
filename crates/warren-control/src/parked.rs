//! SSE command streams waiting for their client's acknowledgement (LANGSMITH-API.md §4.5).
//!
//! After about a MiB of unacknowledged output the API ends an SSE response with `ack_required`
//! and parks the command's stream here, still attached to the agent but no longer read: the
//! agent's buffer fills, the command's pipe fills, and the command waits. The client's
//! `resume` with the same offsets takes the stream back and output continues from exactly
//! there, so nothing is dropped however much the command prints, and memory stays bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::command::CommandStream;
use crate::state::lock;

/// How long a parked stream waits for its resume before it is dropped (the command then
/// detaches and runs on; a later resume attaches from the agent's buffer).
const PARK_TTL: Duration = Duration::from_secs(60);
/// Most streams parked at once; the oldest goes first past this.
const MAX_PARKED: usize = 1024;

struct Entry {
    stream: CommandStream,
    cursors: [u64; 2],
    at: Instant,
}

/// Parked streams by (sandbox id, command id).
#[derive(Default)]
pub(crate) struct Parked(Mutex<HashMap<(String, String), Entry>>);

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("streams", &lock(&self.0).len())
            .finish()
    }
}

impl Parked {
    /// Parks a stream whose client has everything before `cursors` (stdout, stderr).
    pub(crate) fn park(&self, stream: CommandStream, cursors: [u64; 2]) {
        let Some((command_id, _)) = stream.started() else {
            return;
        };
        let key = (stream.sandbox_id().to_owned(), command_id.to_owned());
        let mut map = lock(&self.0);
        map.retain(|_, e| e.at.elapsed() < PARK_TTL);
        if map.len() >= MAX_PARKED
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key,
            Entry {
                stream,
                cursors,
                at: Instant::now(),
            },
        );
    }

    /// Drops streams whose client never came back, so an abandoned stream neither keeps its
    /// sandbox from idling nor keeps a `kill_on_disconnect` command alive.
    pub(crate) fn expire(&self) {
        lock(&self.0).retain(|_, e| e.at.elapsed() < PARK_TTL);
    }

    /// Takes back a parked stream if the client resumes exactly where it was parked. A resume
    /// from other offsets drops it: the client wants a replay the agent's buffer must serve.
    pub(crate) fn take(
        &self,
        sandbox_id: &str,
        command_id: &str,
        cursors: [u64; 2],
    ) -> Option<CommandStream> {
        let mut map = lock(&self.0);
        let entry = map.remove(&(sandbox_id.to_owned(), command_id.to_owned()))?;
        (entry.cursors == cursors && entry.at.elapsed() < PARK_TTL).then_some(entry.stream)
    }
}
