//! `/metrics` through `prometheus-client`: OpenMetrics text with HELP and TYPE
//! for every family, `lanyard_build_info`, the standard `process_*` metrics,
//! and gRPC status codes spelled as gRPC spells them (`OK`, `PERMISSION_DENIED`).
//!
//! The request counters stay a table of atomics: they sit on every call, and a
//! label lookup per request would cost more than the count. Each scrape copies
//! them, with the gauges read at that moment, into a collector the library
//! encodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::admission::Admission;

/// The `Content-Type` of what [`Metrics::render`] and [`encode`] return.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The commit the binary was built from, for `lanyard_build_info`: set once by
/// the binary (whose build script knows it), so the library crates need no
/// build script of their own that reruns on every commit.
static COMMIT: OnceLock<&'static str> = OnceLock::new();

/// Records the commit for `lanyard_build_info` (the first call wins).
pub fn set_commit(commit: &'static str) {
    let _ = COMMIT.set(commit);
}

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

/// gRPC status codes 0..=16 as gRPC names them (`grpc/doc/statuscodes.md`);
/// tonic's `Debug` would say `Ok` and `PermissionDenied`.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Counters and histograms. Request counters are lock-free: they sit on every call.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; CODES.len()]; RPCS.len()],
    attest: Histogram,
    connections: OnceLock<Arc<Admission>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            attest: Histogram::new(BUCKETS),
            connections: OnceLock::new(),
        }
    }
}

/// One family of constant values, as read at a scrape.
#[derive(Debug, Clone)]
pub struct Family {
    /// The name (a counter's without `_total`).
    pub name: &'static str,
    /// The HELP text, without the final period.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricType,
    /// `(labels, value)` per series.
    pub series: Vec<(Vec<(&'static str, &'static str)>, Value)>,
}

/// A sample's value: counts print as integers (`3`, not `3.0`), times as floats.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    /// A count or a whole number of seconds.
    Int(i64),
    /// Seconds or bytes that need not be whole.
    Float(f64),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl Family {
    /// A gauge or counter family with one unlabelled value.
    pub fn one(
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        v: impl Into<Value>,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            series: vec![(Vec::new(), v.into())],
        }
    }
}

/// Families read at one scrape: owned, so the library can encode them after.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            // The registry ends a registered metric's HELP with a period; a
            // collector's is written as given. End them all the same way.
            let help = format!("{}.", f.help);
            let mut family = encoder.encode_descriptor(f.name, &help, None, f.kind)?;
            for (labels, v) in &f.series {
                let series = family.encode_family(labels)?;
                match (f.kind, *v) {
                    (MetricType::Counter, Value::Int(n)) => {
                        ConstCounter::new(u64::try_from(n).unwrap_or(0)).encode(series)?;
                    }
                    (MetricType::Counter, Value::Float(x)) => {
                        ConstCounter::new(x).encode(series)?
                    }
                    (_, Value::Int(n)) => ConstGauge::new(n).encode(series)?,
                    (_, Value::Float(x)) => ConstGauge::new(x).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

/// The process metrics every Prometheus client library exports, from `/proc/self`.
fn process_families() -> Vec<Family> {
    let mut out = Vec::new();
    // USER_HZ is 100 on every Linux architecture lanyard builds for.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces and parentheses).
    let rest: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| rest.get(n).and_then(|v| v.parse::<f64>().ok());
    // utime (14), stime (15), starttime (22) in proc(5)'s numbering; `rest`
    // starts at field 3.
    if let (Some(u), Some(s)) = (field(11), field(12)) {
        out.push(Family::one(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            MetricType::Counter,
            (u + s) / TICKS,
        ));
    }
    let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(19), btime) {
        out.push(Family::one(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            MetricType::Gauge,
            boot + start / TICKS,
        ));
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
    if let Some(kib) = rss_kib {
        out.push(Family::one(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            MetricType::Gauge,
            kib.saturating_mul(1024),
        ));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(Family::one(
            "process_open_fds",
            "Number of open file descriptors",
            MetricType::Gauge,
            fds.count(),
        ));
    }
    out
}

/// Encodes `families` (and `histograms`) with the build and process metrics
/// every lanyard daemon exports: the body of a `/metrics` response.
pub fn encode(
    families: Vec<Family>,
    histograms: &[(&'static str, &'static str, Histogram)],
) -> String {
    let mut registry = Registry::default();
    registry.register(
        "lanyard_build",
        "The lanyard version and the commit it was built from",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", COMMIT.get().copied().unwrap_or("unknown")),
        ]),
    );
    for (name, help, h) in histograms {
        registry.register(*name, *help, h.clone());
    }
    let mut all = families;
    all.extend(process_families());
    registry.register_collector(Box::new(Snapshot(all)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
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
        self.attest.observe(secs);
    }

    /// The OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self, cache_entries: usize, secs_to_expiry: Option<i64>) -> String {
        let mut requests = Family {
            name: "lanyard_requests",
            help: "Workload API requests by RPC and gRPC status code",
            kind: MetricType::Counter,
            series: Vec::new(),
        };
        for (rpc, row) in RPCS.iter().zip(&self.requests) {
            for (code, n) in CODES.iter().zip(row) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    requests
                        .series
                        .push((vec![("rpc", *rpc), ("code", *code)], n.into()));
                }
            }
        }
        let mut families = vec![
            requests,
            Family::one(
                "lanyard_cache_entries",
                "Identities in the credential cache",
                MetricType::Gauge,
                cache_entries,
            ),
        ];
        if let Some(a) = self.connections.get() {
            families.extend([
                Family::one(
                    "lanyard_connections_open",
                    "Workload API connections open now",
                    MetricType::Gauge,
                    a.open(),
                ),
                Family::one(
                    "lanyard_connections_refused",
                    "Workload API connections refused by a connection limit",
                    MetricType::Counter,
                    a.refused(),
                ),
                Family::one(
                    "lanyard_connections_idle_closed",
                    "Workload API connections closed before a whole first request",
                    MetricType::Counter,
                    a.idle_closed(),
                ),
                Family::one(
                    "lanyard_streams_refused",
                    "Watch streams refused by the per-principal stream limit",
                    MetricType::Counter,
                    a.streams_refused(),
                ),
            ]);
        }
        if let Some(s) = secs_to_expiry {
            families.push(Family::one(
                "lanyard_credential_expiry_seconds",
                "Seconds until the soonest cached credential expires",
                MetricType::Gauge,
                s,
            ));
        }
        encode(
            families,
            &[(
                "lanyard_attestation_seconds",
                "How long attesting a caller took",
                self.attest.clone(),
            )],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_with_help_type_grpc_code_names_build_and_process() {
        let m = Metrics::default();
        m.request("FetchJWTSVID", tonic::Code::Ok);
        m.request("FetchJWTSVID", tonic::Code::PermissionDenied);
        m.attestation(0.002);
        let text = m.render(3, Some(60));
        for want in [
            "# HELP lanyard_requests Workload API requests",
            "# HELP lanyard_cache_entries Identities in the credential cache.\n",
            "# TYPE lanyard_requests counter",
            "lanyard_requests_total{rpc=\"FetchJWTSVID\",code=\"OK\"} 1",
            "lanyard_requests_total{rpc=\"FetchJWTSVID\",code=\"PERMISSION_DENIED\"} 1",
            "# TYPE lanyard_attestation_seconds histogram",
            "lanyard_attestation_seconds_count 1",
            "lanyard_attestation_seconds_bucket{le=\"0.0025\"} 1",
            "lanyard_cache_entries 3\n",
            "lanyard_credential_expiry_seconds 60\n",
            "lanyard_build_info{version=\"",
            "# TYPE process_cpu_seconds counter",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("code=\"Ok\""), "{text}");
    }
}
