//! The load generator: `c` clients, one connection each, calling `FetchJWTSVID`
//! back to back; lanyard and the baseline alternate round by round.

use std::path::Path;
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::X509svidRequest;
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;

/// Latency percentiles (seconds) and throughput (calls/s).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
    pub rate: f64,
}

/// Both sides at one concurrency.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub lanyard: Stats,
    pub empty: Stats,
    /// Server CPU seconds per call, each side, over all its rounds.
    pub lanyard_cpu_per_call: f64,
    pub empty_cpu_per_call: f64,
    /// Per round: lanyard's CPU per call over the empty server's.
    pub cpu_ratios: Vec<f64>,
}

async fn run(socket: &Path, conc: usize, dur: Duration) -> (Vec<f64>, f64) {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..conc {
        let ch = connect(socket).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let mut c = SpiffeWorkloadApiClient::new(ch);
            let mut lat = Vec::new();
            while start.elapsed() < dur {
                let t = Instant::now();
                c.fetch_jwtsvid(crate::probe::request())
                    .await
                    .expect("FetchJWTSVID failed during the benchmark");
                lat.push(t.elapsed().as_secs_f64());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (all, rate)
}

fn stats(mut lat: Vec<f64>, rate: f64) -> Stats {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    Stats {
        p50: pct(0.5),
        p99: pct(0.99),
        rate,
    }
}

/// One server under test: its socket and its process id (for its CPU time).
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    pub socket: &'a Path,
    pub pid: u32,
}

/// Alternating rounds; percentiles over all samples of each side; the server
/// processes' CPU time per call, each round.
pub async fn compare(
    lanyard: Server<'_>,
    empty: Server<'_>,
    conc: usize,
    rounds: usize,
    dur: Duration,
) -> Comparison {
    // Warm up: the first call mints and caches the JWT-SVID.
    let _ = run(lanyard.socket, 1, Duration::from_millis(200)).await;
    let _ = run(empty.socket, 1, Duration::from_millis(200)).await;
    let (mut a, mut b, mut ra, mut rb) = (Vec::new(), Vec::new(), 0.0, 0.0);
    let (mut cpu_a, mut cpu_b) = (0.0, 0.0);
    let mut cpu_ratios = Vec::new();
    for i in 0..rounds {
        let mut per_call = [0.0; 2];
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let s = [lanyard, empty][side];
            let cpu0 = crate::probe::cpu_secs(s.pid);
            let (lat, rate) = run(s.socket, conc, dur).await;
            let cpu = crate::probe::cpu_secs(s.pid) - cpu0;
            per_call[side] = cpu / lat.len() as f64;
            if side == 0 {
                a.extend(lat);
                ra += rate;
                cpu_a += cpu;
            } else {
                b.extend(lat);
                rb += rate;
                cpu_b += cpu;
            }
        }
        cpu_ratios.push(per_call[0] / per_call[1]);
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    Comparison {
        lanyard: stats(a, ra / rounds as f64),
        empty: stats(b, rb / rounds as f64),
        lanyard_cpu_per_call: cpu_a / na,
        empty_cpu_per_call: cpu_b / nb,
        cpu_ratios,
    }
}

/// Fills the cache of an agent whose entries all match this process.
pub async fn fill(socket: &Path, n: usize) {
    let ch = connect(socket).await.expect("connect");
    let mut s = SpiffeWorkloadApiClient::new(ch.clone());
    s.fetch_jwtsvid(crate::probe::request())
        .await
        .expect("JWT-SVIDs");
    let mut x = s
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("X.509-SVIDs")
        .into_inner();
    let svids = x
        .message()
        .await
        .expect("X.509 stream")
        .expect("X.509 message")
        .svids
        .len();
    assert_eq!(svids, n);
    let mut c = CredentialsClient::new(ch);
    let mut st = c
        .fetch_credentials(with_header(FetchCredentialsRequest::default()))
        .await
        .expect("credentials")
        .into_inner();
    let got = st
        .message()
        .await
        .expect("credential stream")
        .expect("credential message")
        .credentials
        .len();
    assert_eq!(got, n);
    // Let the allocator settle and the cache file be written.
    tokio::time::sleep(Duration::from_millis(500)).await;
}
