//! What tests set and read on the fake: failures to inject, crashes, and what happened.

use warren_types::{ImageRef, SandboxId};

use super::FakeDriver;
use crate::ImageStatus;

impl FakeDriver {
    /// Sets what [`crate::Driver::image_status`] answers for `image` (default: present for the
    /// default image, missing for others).
    pub fn set_image_status(&self, image: &ImageRef, status: ImageStatus) {
        self.inner().images.insert(image.to_string(), status);
    }

    /// Replaces `image` in place, as a rebuild of the default image does: its generation
    /// ([`crate::Driver::image_generation`]) goes up by one.
    pub fn replace_image(&self, image: &ImageRef) {
        *self
            .inner()
            .generations
            .entry(image.to_string())
            .or_insert(0) += 1;
    }

    /// Creates from now on wait, before they boot, until the returned sender sends `true` (or
    /// is dropped): a test holds a boot in flight.
    pub fn hold_creates(&self) -> tokio::sync::watch::Sender<bool> {
        let (open, gate) = tokio::sync::watch::channel(false);
        self.inner().create_gate = Some(gate);
        open
    }

    /// Waits at the gate [`FakeDriver::hold_creates`] set, if any.
    pub(super) async fn pass_create_gate(&self) {
        let gate = self.inner().create_gate.clone();
        if let Some(mut gate) = gate {
            // A dropped sender opens the gate too.
            let _ = gate.wait_for(|open| *open).await;
        }
    }

    /// The next create fails with this reason.
    pub fn fail_next_create(&self, reason: &str) {
        self.inner().fail_create = Some(reason.to_owned());
    }

    /// The next start fails with this reason.
    pub fn fail_next_start(&self, reason: &str) {
        self.inner().fail_start = Some(reason.to_owned());
    }

    /// The next `n` destroys fail as a storage failure would.
    pub fn fail_destroys(&self, n: u32) {
        self.inner().fail_destroys = n;
    }

    /// Of the forks' copies from now on, the one numbered `k` (from 0) fails as a storage
    /// failure would, leaving nothing of itself.
    pub fn fail_fork_copy(&self, k: u32) {
        self.inner().fail_fork = Some(k);
    }

    /// The next `n` stops fail as a stop timeout would.
    pub fn fail_stops(&self, n: u32) {
        self.inner().fail_stops = n;
    }

    /// The sandbox's processes end as if it crashed: it is no longer running.
    pub fn crash(&self, id: &SandboxId) {
        if let Some(b) = self.inner().boxes.get_mut(id) {
            b.running = false;
            for cmd in b.commands.values() {
                cmd.lose();
            }
        }
    }

    /// Sets the sandbox's OOM-kill counter.
    pub fn set_oom_kills(&self, id: &SandboxId, n: u64) {
        if let Some(b) = self.inner().boxes.get_mut(id) {
            b.oom_kills = n;
        }
    }

    /// Every lifecycle call so far, as `"create <id>"`, `"stop <id>"`, ...
    pub fn calls(&self) -> Vec<String> {
        self.inner().calls.clone()
    }

    /// Sandboxes that have storage, with whether each runs.
    pub fn sandboxes(&self) -> Vec<(SandboxId, bool)> {
        let mut v: Vec<_> = self
            .inner()
            .boxes
            .iter()
            .map(|(id, b)| (id.clone(), b.running))
            .collect();
        v.sort();
        v
    }

    /// A file's contents in a sandbox.
    pub fn file(&self, id: &SandboxId, path: &str) -> Option<Vec<u8>> {
        self.inner().boxes.get(id)?.files.get(path).cloned()
    }
}
