//! Prometheus text metrics, kept deliberately small: counters by RPC and code,
//! an attestation latency histogram, cache size and time to the nearest expiry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// Counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    attest: Mutex<([u64; BUCKETS.len()], u64, f64)>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, rpc: &'static str, code: tonic::Code) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((rpc, format!("{code:?}"))).or_default() += 1;
        }
    }

    /// How many requests to `rpc` ended with `code`.
    pub fn count(&self, rpc: &str, code: tonic::Code) -> u64 {
        let code = format!("{code:?}");
        self.requests
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((r, c), _)| *r == rpc && *c == code)
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Records one attestation's latency.
    pub fn attestation(&self, secs: f64) {
        if let Ok(mut h) = self.attest.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.0[i] += 1;
                }
            }
            h.1 += 1;
            h.2 += secs;
        }
    }

    /// The text exposition.
    pub fn render(&self, cache_entries: usize, secs_to_expiry: Option<i64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE lanyard_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((rpc, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lanyard_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# TYPE lanyard_attestation_seconds histogram");
        if let Ok(h) = self.attest.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "lanyard_attestation_seconds_bucket{{le=\"{b}\"}} {}",
                    h.0[i]
                );
            }
            let _ = writeln!(
                out,
                "lanyard_attestation_seconds_bucket{{le=\"+Inf\"}} {}",
                h.1
            );
            let _ = writeln!(out, "lanyard_attestation_seconds_sum {}", h.2);
            let _ = writeln!(out, "lanyard_attestation_seconds_count {}", h.1);
        }
        let _ = writeln!(
            out,
            "# TYPE lanyard_cache_entries gauge\nlanyard_cache_entries {cache_entries}"
        );
        if let Some(s) = secs_to_expiry {
            let _ = writeln!(out, "# TYPE lanyard_credential_expiry_seconds gauge\nlanyard_credential_expiry_seconds {s}");
        }
        out
    }
}
