//! Counters and a latency histogram, rendered in the Prometheus text format. Written by hand:
//! a dozen atomics and one render function are smaller than a metrics registry.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the create-latency histogram buckets.
const CREATE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    create_buckets: [AtomicU64; 11],
    create_count: AtomicU64,
    create_sum_us: AtomicU64,
    create_failures: AtomicU64,
    commands: AtomicU64,
    stdout_bytes: AtomicU64,
    stderr_bytes: AtomicU64,
    api_requests: AtomicU64,
}

impl Metrics {
    /// Records one successful sandbox boot.
    pub fn observe_create(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in CREATE_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.create_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.create_count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.create_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Records a failed boot.
    pub fn create_failed(&self) {
        self.create_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a command start.
    pub fn command_started(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// Records output bytes sent to clients.
    pub fn streamed(&self, stdout: bool, bytes: u64) {
        let c = if stdout {
            &self.stdout_bytes
        } else {
            &self.stderr_bytes
        };
        c.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records an API request.
    pub fn api_request(&self) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric; `states` are sandbox counts per status.
    pub fn render(&self, states: &[(&str, u64)]) -> String {
        let mut o = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(o, "# HELP warren_sandboxes Sandboxes by state.");
        let _ = writeln!(o, "# TYPE warren_sandboxes gauge");
        for (state, n) in states {
            let _ = writeln!(o, "warren_sandboxes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP warren_sandbox_create_seconds Time from request to ready."
        );
        let _ = writeln!(o, "# TYPE warren_sandbox_create_seconds histogram");
        for (i, bound) in CREATE_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "warren_sandbox_create_seconds_bucket{{le=\"{bound}\"}} {}",
                get(&self.create_buckets[i])
            );
        }
        let count = get(&self.create_count);
        let _ = writeln!(
            o,
            "warren_sandbox_create_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[allow(clippy::cast_precision_loss)] // a sum of microseconds fits f64's 52 bits for years
        let sum = get(&self.create_sum_us) as f64 / 1e6;
        let _ = writeln!(o, "warren_sandbox_create_seconds_sum {sum}");
        let _ = writeln!(o, "warren_sandbox_create_seconds_count {count}");
        let _ = writeln!(
            o,
            "# HELP warren_sandbox_create_failures_total Failed sandbox boots."
        );
        let _ = writeln!(o, "# TYPE warren_sandbox_create_failures_total counter");
        let _ = writeln!(
            o,
            "warren_sandbox_create_failures_total {}",
            get(&self.create_failures)
        );
        let _ = writeln!(o, "# HELP warren_commands_total Commands started.");
        let _ = writeln!(o, "# TYPE warren_commands_total counter");
        let _ = writeln!(o, "warren_commands_total {}", get(&self.commands));
        let _ = writeln!(
            o,
            "# HELP warren_streamed_bytes_total Output bytes sent to clients."
        );
        let _ = writeln!(o, "# TYPE warren_streamed_bytes_total counter");
        let _ = writeln!(
            o,
            "warren_streamed_bytes_total{{stream=\"stdout\"}} {}",
            get(&self.stdout_bytes)
        );
        let _ = writeln!(
            o,
            "warren_streamed_bytes_total{{stream=\"stderr\"}} {}",
            get(&self.stderr_bytes)
        );
        let _ = writeln!(o, "# HELP warren_api_requests_total API requests served.");
        let _ = writeln!(o, "# TYPE warren_api_requests_total counter");
        let _ = writeln!(o, "warren_api_requests_total {}", get(&self.api_requests));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_create(Duration::from_millis(20));
        m.observe_create(Duration::from_millis(700));
        let text = m.render(&[("ready", 2)]);
        assert!(
            text.contains("warren_sandbox_create_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("warren_sandbox_create_seconds_bucket{le=\"1\"} 2"),
            "{text}"
        );
        assert!(text.contains("warren_sandbox_create_seconds_count 2"));
        assert!(text.contains("warren_sandboxes{state=\"ready\"} 2"));
    }
}
