//! Counters and a latency histogram, rendered in the Prometheus text format. Written by hand:
//! a dozen atomics and one render function are smaller than a metrics registry.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    unauthenticated: AtomicU64,
    /// When the last line about unauthenticated requests was logged, and the count then.
    unauthenticated_logged: Mutex<Option<(Instant, u64)>>,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    connections_timed_out: AtomicU64,
    connections_open: AtomicU64,
    egress_allowed: AtomicU64,
    egress_denied: AtomicU64,
    egress_bytes_up: AtomicU64,
    egress_bytes_down: AtomicU64,
    tunnel_streams_opened: AtomicU64,
    tunnel_streams_refused: AtomicU64,
    tunnel_streams_open: AtomicU64,
    tunnel_bytes_up: AtomicU64,
    tunnel_bytes_down: AtomicU64,
    service_requests: AtomicU64,
    service_refused: AtomicU64,
    service_bytes_up: AtomicU64,
    service_bytes_down: AtomicU64,
}

/// At most one log line about unauthenticated requests per this interval.
const UNAUTHENTICATED_LOG_EVERY: Duration = Duration::from_secs(10);

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

    /// Records a connection through the egress proxy.
    pub fn egress(&self, allowed: bool, bytes_up: u64, bytes_down: u64) {
        let c = if allowed {
            &self.egress_allowed
        } else {
            &self.egress_denied
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.egress_bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
        self.egress_bytes_down
            .fetch_add(bytes_down, Ordering::Relaxed);
    }

    /// Records a tunnel stream connected to its sandbox port.
    pub fn tunnel_opened(&self) {
        self.tunnel_streams_opened.fetch_add(1, Ordering::Relaxed);
        self.tunnel_streams_open.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a tunnel stream refused (nothing listening, a port or sandbox not allowed).
    pub fn tunnel_refused(&self) {
        self.tunnel_streams_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a tunnel stream closed after carrying these bytes.
    pub fn tunnel_closed(&self, bytes_up: u64, bytes_down: u64) {
        let _ = self
            .tunnel_streams_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.tunnel_bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
        self.tunnel_bytes_down
            .fetch_add(bytes_down, Ordering::Relaxed);
    }

    /// Records a service URL request that reached its sandbox port.
    pub fn service_opened(&self) {
        self.service_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a service URL request or download link refused (a bad, expired, foreign or
    /// revoked token).
    pub fn service_refused(&self) {
        self.service_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a proxied service request's bytes when its connection closes.
    pub fn service_closed(&self, bytes_up: u64, bytes_down: u64) {
        self.service_bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
        self.service_bytes_down
            .fetch_add(bytes_down, Ordering::Relaxed);
    }

    /// Records an API request.
    pub fn api_request(&self) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request refused for a missing or unknown API key. Returns how many such
    /// requests arrived since the last logged one when a log line is due (at most one per
    /// [`UNAUTHENTICATED_LOG_EVERY`]), so a flood of them costs a counter, not a log line each.
    pub fn unauthenticated_request(&self) -> Option<u64> {
        let total = self.unauthenticated.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .unauthenticated_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some((at, _)) if now.duration_since(at) < UNAUTHENTICATED_LOG_EVERY => None,
            Some((_, logged)) => {
                *last = Some((now, total));
                Some(total - logged)
            }
            None => {
                *last = Some((now, total));
                Some(1)
            }
        }
    }

    /// Takes a slot for a new connection if fewer than `cap` are open; the caller releases it
    /// with [`Metrics::connection_closed`]. A refusal is counted as a rejected connection.
    pub fn try_open_connection(&self, cap: usize) -> bool {
        let cap = u64::try_from(cap).unwrap_or(u64::MAX);
        let taken = self
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        let counter = if taken {
            &self.connections_accepted
        } else {
            &self.connections_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        taken
    }

    /// Releases a slot taken by [`Metrics::try_open_connection`].
    pub fn connection_closed(&self) {
        let _ = self
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Records a connection closed because its request head did not arrive in time (a
    /// slow or idle client).
    pub fn connection_timed_out(&self) {
        self.connections_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Ordering::Acquire)
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
        let _ = writeln!(
            o,
            "# HELP warren_egress_connections_total Sandbox connections through the egress proxy, by decision."
        );
        let _ = writeln!(o, "# TYPE warren_egress_connections_total counter");
        for (decision, c) in [
            ("allowed", &self.egress_allowed),
            ("denied", &self.egress_denied),
        ] {
            let _ = writeln!(
                o,
                "warren_egress_connections_total{{decision=\"{decision}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP warren_egress_bytes_total Bytes sandboxes sent (up) and received (down) through the egress proxy."
        );
        let _ = writeln!(o, "# TYPE warren_egress_bytes_total counter");
        let _ = writeln!(
            o,
            "warren_egress_bytes_total{{direction=\"up\"}} {}",
            get(&self.egress_bytes_up)
        );
        let _ = writeln!(
            o,
            "warren_egress_bytes_total{{direction=\"down\"}} {}",
            get(&self.egress_bytes_down)
        );
        let _ = writeln!(
            o,
            "# HELP warren_tunnel_streams_total Tunnel streams by outcome: opened (connected to the sandbox port) or refused."
        );
        let _ = writeln!(o, "# TYPE warren_tunnel_streams_total counter");
        for (outcome, c) in [
            ("opened", &self.tunnel_streams_opened),
            ("refused", &self.tunnel_streams_refused),
        ] {
            let _ = writeln!(
                o,
                "warren_tunnel_streams_total{{outcome=\"{outcome}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP warren_tunnel_streams_open Tunnel streams open now."
        );
        let _ = writeln!(o, "# TYPE warren_tunnel_streams_open gauge");
        let _ = writeln!(
            o,
            "warren_tunnel_streams_open {}",
            self.tunnel_streams_open.load(Ordering::Acquire)
        );
        let _ = writeln!(
            o,
            "# HELP warren_tunnel_bytes_total Bytes sent to (up) and received from (down) sandbox ports through tunnels, counted when a stream closes."
        );
        let _ = writeln!(o, "# TYPE warren_tunnel_bytes_total counter");
        let _ = writeln!(
            o,
            "warren_tunnel_bytes_total{{direction=\"up\"}} {}",
            get(&self.tunnel_bytes_up)
        );
        let _ = writeln!(
            o,
            "warren_tunnel_bytes_total{{direction=\"down\"}} {}",
            get(&self.tunnel_bytes_down)
        );
        let _ = writeln!(
            o,
            "# HELP warren_service_requests_total Service URL requests by outcome: proxied to the sandbox port, or refused for their token."
        );
        let _ = writeln!(o, "# TYPE warren_service_requests_total counter");
        for (outcome, v) in [
            ("proxied", &self.service_requests),
            ("refused", &self.service_refused),
        ] {
            let _ = writeln!(
                o,
                "warren_service_requests_total{{outcome=\"{outcome}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(
            o,
            "# HELP warren_service_bytes_total Bytes sent to (up) and received from (down) sandbox ports through service URLs."
        );
        let _ = writeln!(o, "# TYPE warren_service_bytes_total counter");
        for (dir, v) in [
            ("up", &self.service_bytes_up),
            ("down", &self.service_bytes_down),
        ] {
            let _ = writeln!(
                o,
                "warren_service_bytes_total{{direction=\"{dir}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(o, "# HELP warren_api_requests_total API requests served.");
        let _ = writeln!(o, "# TYPE warren_api_requests_total counter");
        let _ = writeln!(o, "warren_api_requests_total {}", get(&self.api_requests));
        let _ = writeln!(
            o,
            "# HELP warren_api_unauthenticated_total Requests refused for a missing or unknown API key."
        );
        let _ = writeln!(o, "# TYPE warren_api_unauthenticated_total counter");
        let _ = writeln!(
            o,
            "warren_api_unauthenticated_total {}",
            get(&self.unauthenticated)
        );
        let _ = writeln!(
            o,
            "# HELP warren_connections_total Connections by outcome: accepted, rejected (over the cap, answered 503), timed_out (no request head in time)."
        );
        let _ = writeln!(o, "# TYPE warren_connections_total counter");
        for (outcome, c) in [
            ("accepted", &self.connections_accepted),
            ("rejected", &self.connections_rejected),
            ("timed_out", &self.connections_timed_out),
        ] {
            let _ = writeln!(
                o,
                "warren_connections_total{{outcome=\"{outcome}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP warren_connections_open Client connections open now."
        );
        let _ = writeln!(o, "# TYPE warren_connections_open gauge");
        let _ = writeln!(o, "warren_connections_open {}", get(&self.connections_open));
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

    #[test]
    fn connection_cap_admits_up_to_the_cap_and_counts_refusals() {
        let m = Metrics::default();
        assert!(m.try_open_connection(2));
        assert!(m.try_open_connection(2));
        assert!(
            !m.try_open_connection(2),
            "a third connection is over the cap"
        );
        m.connection_closed();
        assert!(
            m.try_open_connection(2),
            "a closed connection frees its slot"
        );
        m.connection_timed_out();
        let text = m.render(&[]);
        assert!(
            text.contains("warren_connections_total{outcome=\"accepted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("warren_connections_total{outcome=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("warren_connections_total{outcome=\"timed_out\"} 1"),
            "{text}"
        );
        assert!(text.contains("warren_connections_open 2"), "{text}");
    }

    #[test]
    fn unauthenticated_requests_are_counted_each_and_logged_once_per_interval() {
        let m = Metrics::default();
        assert_eq!(m.unauthenticated_request(), Some(1), "the first is logged");
        for _ in 0..999 {
            assert_eq!(
                m.unauthenticated_request(),
                None,
                "the rest are only counted"
            );
        }
        assert!(
            m.render(&[])
                .contains("warren_api_unauthenticated_total 1000")
        );
        // Pretend the last line is old: the next one reports everything since.
        *m.unauthenticated_logged.lock().unwrap() =
            Some((Instant::now() - UNAUTHENTICATED_LOG_EVERY, 1));
        assert_eq!(m.unauthenticated_request(), Some(1000));
    }
}
