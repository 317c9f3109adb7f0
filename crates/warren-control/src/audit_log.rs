//! The audit log's writer: entries appended off the request path, in order.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use crate::store::{AuditEntry, SqliteStore, Store};

/// Most entries written in one transaction.
const MAX_BATCH: usize = 512;

/// The audit log's writer. In the daemon, a thread of its own appends the entries, as many as
/// are queued in one transaction, so no request waits on the database: a write there can
/// stall for milliseconds behind the host filesystem's journal while sandboxes' disks commit,
/// and every API call and command appends an entry. Entries keep the order they were queued
/// in. Readers of the log flush first, so a caller reads what it just did; what is lost to a
/// `kill -9` is at most what was queued in that instant.
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

/// The writer thread: ends when the log is dropped.
fn write_queued(store: &SqliteStore, queue: &Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut entries = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Queued::Entry(e) => entries.push(e),
                Queued::Flush(done) => flushes.push(done),
            }
            next = if entries.len() < MAX_BATCH {
                queue.try_recv().ok()
            } else {
                None
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
}
