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
        self.rejections[slot(reason)].fetch_add(1, Relaxed);
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
        self.rejections[slot(reason)].load(Relaxed)
    }

    /// The exposition text. `busy` is the number of leased doors.
    pub fn render(&self, busy: usize, doors: &[DoorGauge]) -> String {
        let mut out = String::new();
        let counters = [
            (
                "knock_otp_issues_total",
                "Sequences handed out.",
                &self.issues,
            ),
            (
                "knock_otp_sequences_used_total",
                "Issued sequences knockd marked used.",
                &self.used,
            ),
            (
                "knock_otp_sequences_expired_total",
                "Issued sequences withdrawn unused after ttl_secs.",
                &self.withdrawn,
            ),
            (
                "knock_otp_reload_failures_total",
                "knockd reloads that failed or were not confirmed.",
                &self.reloads_failed,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }

        let name = "knock_otp_rejections_total";
        header(
            &mut out,
            name,
            "counter",
            "Requests answered with the teapot, by reason.",
        );
        for (reason, n) in Reason::ALL.iter().zip(&self.rejections) {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }

        let name = "knock_otp_unavailable_total";
        header(
            &mut out,
            name,
            "counter",
            "Verified requests answered 503, by reason.",
        );
        for (reason, n) in [
            ("queue-timeout", &self.unavailable_queue),
            ("door-failed", &self.unavailable_door),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }

        self.render_reloads(&mut out);

        let name = "knock_otp_doors_busy";
        header(
            &mut out,
            name,
            "gauge",
            "Doors holding an issued, unused sequence.",
        );
        let _ = writeln!(out, "{name} {busy}");

        let name = "knock_otp_knockd_up";
        header(
            &mut out,
            name,
            "gauge",
            "Whether the door's knockd runs and took its last reload.",
        );
        for d in doors {
            let _ = writeln!(
                out,
                "{name}{{door=\"{}\"}} {}",
                d.index,
                u8::from(d.knockd_up)
            );
        }
        out
    }

    fn render_reloads(&self, out: &mut String) {
        let name = "knock_otp_reload_duration_seconds";
        let help = "Time from asking knockd to reload a door to its confirmed reload.";
        header(out, name, "histogram", help);
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

/// The counter of a rejection reason.
fn slot(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

/// The `# HELP` and `# TYPE` lines that open a metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
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
