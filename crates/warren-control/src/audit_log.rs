//! The audit log's writer: entries appended off the request path, in order.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::store::{AuditEntry, SqliteStore, Store};

/// Most entries written in one transaction.
const MAX_BATCH: usize = 512;

/// The audit log's writer. In the daemon, a thread of its own appends the entries, as many as
/// are queued in one transaction, so no request waits on the database: a write there can
/// stall for milliseconds behind the host filesystem's journal while sandboxes' disks commit,
/// and every API call and command appends an entry. Entries keep the order they were queued
/// in. Readers of the log flush first, so a caller reads what it just did; what is lost to a
/// `kill -9` is at most what was queued in the last [`GATHER`].
#[derive(Debug)]
pub(crate) struct AuditLog {
    store: Arc<SqliteStore>,
    /// `None`: written in the caller (a short-lived client, or no thread could be started).
    queue: Option<Sender<Queued>>,
}

#[derive(Debug)]
enum Queued {
    Entry(AuditEntry),
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

impl AuditLog {
    pub(crate) fn new(store: Arc<SqliteStore>, background: bool) -> Self {
        let queue = background
            .then(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let writer = store.clone();
                match std::thread::Builder::new()
                    .name("warren-audit".into())
                    .spawn(move || write_queued(&writer, &rx))
                {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to start the audit writer; entries are written inline");
                        None
                    }
                }
            })
            .flatten();
        Self { store, queue }
    }

    pub(crate) fn append(&self, entry: AuditEntry) {
        let entry = match &self.queue {
            Some(q) => match q.send(Queued::Entry(entry)) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(Queued::Entry(e))) => e,
                Err(_) => return,
            },
            None => entry,
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, action = %entry.action, "failed to append to the audit log");
        }
    }

    /// Returns once every entry queued so far is written.
    pub(crate) fn flush(&self) {
        if let Some(q) = &self.queue {
            let (done, written) = sync_channel(1);
            if q.send(Queued::Flush(done)).is_ok() {
                let _ = written.recv();
            }
        }
    }
}

/// How long the writer gathers entries after the first before it writes them, unless a flush
/// or a full batch comes first. An entry is queued as its request starts (a command's `exec`
/// just before the command is spawned): written at once, its commit took a CPU from the
/// command's own start on a small host. Gathered, it lands after a short command is done, and
/// a burst of requests shares one commit.
const GATHER: Duration = Duration::from_millis(10);

/// The writer thread: ends when the log is dropped, after writing what it holds.
fn write_queued(store: &SqliteStore, queue: &Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let deadline = Instant::now() + GATHER;
        let mut entries = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Queued::Entry(e) => entries.push(e),
                Queued::Flush(done) => flushes.push(done),
            }
            next = if entries.len() >= MAX_BATCH {
                None
            } else if flushes.is_empty() {
                // Until the deadline; a closed queue ends the wait (and then the thread).
                let left = deadline.saturating_duration_since(Instant::now());
                queue.recv_timeout(left).ok()
            } else {
                // A reader waits: what is queued already goes with it, nothing more.
                queue.try_recv().ok()
            };
        }
        if !entries.is_empty()
            && let Err(e) = store.append_audits(&entries)
        {
            tracing::error!(error = %e, entries = entries.len(), "failed to append to the audit log");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rfc3339;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: rfc3339(std::time::SystemTime::now()),
            workspace_id: None,
            user_id: None,
            action: "test".into(),
            target: None,
            detail: Some(i.to_string()),
        }
    }

    #[test]
    fn queued_entries_are_written_in_order_and_a_flush_waits_for_them() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let log = AuditLog::new(store.clone(), true);
        assert!(log.queue.is_some(), "the writer thread did not start");
        let n = MAX_BATCH * 2 + 7;
        for i in 0..n {
            log.append(entry(i));
        }
        log.flush();
        let got = store.list_audit(None, 0, 10_000).unwrap();
        let details: Vec<String> = got.into_iter().filter_map(|e| e.detail).collect();
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(details, want);
    }

    #[test]
    fn without_a_thread_entries_are_written_before_append_returns() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let log = AuditLog::new(store.clone(), false);
        log.append(entry(1));
        assert_eq!(store.list_audit(None, 0, 10).unwrap().len(), 1);
    }

    fn eventually_written(store: &SqliteStore, n: usize) -> bool {
        (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            store.list_audit(None, 0, 100).unwrap().len() == n
        })
    }

    #[test]
    fn gathered_entries_are_written_without_a_flush_and_when_the_log_goes() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let log = AuditLog::new(store.clone(), true);
        log.append(entry(1));
        log.append(entry(2));
        assert!(
            eventually_written(&store, 2),
            "not written after the gather window"
        );
        log.append(entry(3));
        drop(log);
        assert!(
            eventually_written(&store, 3),
            "the last entry was lost with the log"
        );
    }
}
