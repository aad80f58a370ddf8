//! Counters for `/metrics`, in Prometheus text format. Plain atomics:
//! the knock path only ever adds one, and a scrape reads them all.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::teapot::Reason;

/// Upper bounds (seconds) of the reload-duration histogram buckets.
const RELOAD_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

#[derive(Debug, Default)]
pub struct Metrics {
    issues: AtomicU64,
    rejections: [AtomicU64; Reason::ALL.len()],
    unavailable_queue: AtomicU64,
    unavailable_door: AtomicU64,
    reloads_failed: AtomicU64,
    reload_buckets: [AtomicU64; RELOAD_BUCKETS.len()],
    reload_count: AtomicU64,
    reload_micros: AtomicU64,
    used: AtomicU64,
    withdrawn: AtomicU64,
}

/// What a scrape reports about one door besides the counters.
pub struct DoorGauge {
    pub index: usize,
    pub knockd_up: bool,
}

impl Metrics {
    pub fn issue(&self) {
        self.issues.fetch_add(1, Relaxed);
    }

    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejections[i].fetch_add(1, Relaxed);
    }

    pub fn unavailable(&self, queue_timeout: bool) {
        let counter = if queue_timeout {
            &self.unavailable_queue
        } else {
            &self.unavailable_door
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn reload(&self, took: Result<Duration, ()>) {
        let Ok(took) = took else {
            self.reloads_failed.fetch_add(1, Relaxed);
            return;
        };
        let secs = took.as_secs_f64();
        for (bound, bucket) in RELOAD_BUCKETS.iter().zip(&self.reload_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.reload_count.fetch_add(1, Relaxed);
        self.reload_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn used(&self) {
        self.used.fetch_add(1, Relaxed);
    }

    pub fn withdrawn(&self) {
        self.withdrawn.fetch_add(1, Relaxed);
    }

    pub fn rejections(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejections[i].load(Relaxed)
    }

    /// The exposition text. `busy` is the number of leased doors.
    pub fn render(&self, busy: usize, doors: &[DoorGauge]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "knock_otp_issues_total",
            "Sequences handed out.",
            self.issues.load(Relaxed),
        );
        counter(
            "knock_otp_sequences_used_total",
            "Issued sequences knockd marked used.",
            self.used.load(Relaxed),
        );
        counter(
            "knock_otp_sequences_expired_total",
            "Issued sequences withdrawn unused after ttl_secs.",
            self.withdrawn.load(Relaxed),
        );
        counter(
            "knock_otp_reload_failures_total",
            "knockd reloads that failed or were not confirmed.",
            self.reloads_failed.load(Relaxed),
        );
        let _ = write!(
            out,
            "# HELP knock_otp_rejections_total Requests answered with the teapot, by reason.\n# TYPE knock_otp_rejections_total counter\n"
        );
        for (reason, n) in Reason::ALL.iter().zip(&self.rejections) {
            let _ = writeln!(
                out,
                "knock_otp_rejections_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP knock_otp_unavailable_total Verified requests answered 503, by reason.\n# TYPE knock_otp_unavailable_total counter\n"
        );
        let _ = writeln!(
            out,
            "knock_otp_unavailable_total{{reason=\"queue-timeout\"}} {}",
            self.unavailable_queue.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "knock_otp_unavailable_total{{reason=\"door-failed\"}} {}",
            self.unavailable_door.load(Relaxed)
        );
        self.render_reloads(&mut out);
        let _ = write!(
            out,
            "# HELP knock_otp_doors_busy Doors holding an issued, unused sequence.\n# TYPE knock_otp_doors_busy gauge\nknock_otp_doors_busy {busy}\n"
        );
        let _ = write!(
            out,
            "# HELP knock_otp_knockd_up Whether the door's knockd runs and took its last reload.\n# TYPE knock_otp_knockd_up gauge\n"
        );
        for d in doors {
            let _ = writeln!(
                out,
                "knock_otp_knockd_up{{door=\"{}\"}} {}",
                d.index,
                u8::from(d.knockd_up)
            );
        }
        out
    }

    fn render_reloads(&self, out: &mut String) {
        let name = "knock_otp_reload_duration_seconds";
        let _ = write!(
            out,
            "# HELP {name} Time from writing a door file to knockd re-opening it.\n# TYPE {name} histogram\n"
        );
        for (bound, n) in RELOAD_BUCKETS.iter().zip(&self.reload_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", n.load(Relaxed));
        }
        let count = self.reload_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.reload_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_what_happened() {
        let m = Metrics::default();
        m.issue();
        m.reject(Reason::BadCode);
        m.reject(Reason::BadCode);
        m.reload(Ok(Duration::from_micros(800)));
        m.reload(Err(()));
        let text = m.render(
            1,
            &[DoorGauge {
                index: 0,
                knockd_up: true,
            }],
        );
        assert!(text.contains("knock_otp_issues_total 1\n"));
        assert!(text.contains("knock_otp_rejections_total{reason=\"bad-code\"} 2\n"));
        assert!(text.contains("knock_otp_reload_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("knock_otp_reload_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("knock_otp_reload_failures_total 1\n"));
        assert!(text.contains("knock_otp_doors_busy 1\n"));
        assert!(text.contains("knock_otp_knockd_up{door=\"0\"} 1\n"));
    }
}
