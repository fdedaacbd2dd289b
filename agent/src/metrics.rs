//! Prometheus text metrics, kept deliberately small: counters by RPC and code,
//! an attestation latency histogram, cache size and time to the nearest expiry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::admission::Admission;

const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// Every RPC the agent serves, in the order of the counter table.
const RPCS: [&str; 8] = [
    "FetchX509SVID",
    "FetchX509Bundles",
    "FetchJWTSVID",
    "FetchJWTBundles",
    "ValidateJWTSVID",
    "FetchCredentials",
    "GetNonce",
    "SignPublicKey",
];
/// gRPC status codes 0..=16.
const CODES: usize = 17;

/// Counters and histograms. Request counters are lock-free: they sit on every call.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; CODES]; RPCS.len()],
    attest: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    connections: OnceLock<Arc<Admission>>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, rpc: &'static str, code: tonic::Code) {
        if let (Some(r), Some(c)) = (
            RPCS.iter().position(|x| *x == rpc),
            usize::try_from(code as i32).ok(),
        ) {
            if let Some(counter) = self.requests[r].get(c) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many requests to `rpc` ended with `code`.
    pub fn count(&self, rpc: &str, code: tonic::Code) -> u64 {
        RPCS.iter()
            .position(|x| *x == rpc)
            .and_then(|r| self.requests[r].get(usize::try_from(code as i32).ok()?))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Reports the Workload API socket's connection counts from now on.
    pub fn track_connections(&self, admission: Arc<Admission>) {
        let _ = self.connections.set(admission);
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
        for (rpc, row) in RPCS.iter().zip(&self.requests) {
            for (code, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let code = tonic::Code::from_i32(i32::try_from(code).unwrap_or(2));
                    let _ = writeln!(
                        out,
                        "lanyard_requests_total{{rpc=\"{rpc}\",code=\"{code:?}\"}} {n}"
                    );
                }
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
        if let Some(a) = self.connections.get() {
            let _ = writeln!(
                out,
                "# TYPE lanyard_connections_open gauge\nlanyard_connections_open {}",
                a.open()
            );
            let _ = writeln!(
                out,
                "# TYPE lanyard_connections_refused_total counter\nlanyard_connections_refused_total {}",
                a.refused()
            );
            let _ = writeln!(
                out,
                "# TYPE lanyard_connections_idle_closed_total counter\nlanyard_connections_idle_closed_total {}",
                a.idle_closed()
            );
            let _ = writeln!(
                out,
                "# TYPE lanyard_streams_refused_total counter\nlanyard_streams_refused_total {}",
                a.streams_refused()
            );
        }
        if let Some(s) = secs_to_expiry {
            let _ = writeln!(out, "# TYPE lanyard_credential_expiry_seconds gauge\nlanyard_credential_expiry_seconds {s}");
        }
        out
    }
}
