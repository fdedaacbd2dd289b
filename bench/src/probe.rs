//! What the load, churn and cold-start measurements share: the one request
//! every bench client sends, and a process's CPU time from `/proc`. A leaf
//! module, so the measurements import it and not each other.

use std::process::Command;

use lanyard_agent::client::with_header;
use lanyard_proto::spiffe::JwtsvidRequest;

/// The FetchJWTSVID request every bench client sends.
pub fn request() -> tonic::Request<JwtsvidRequest> {
    with_header(JwtsvidRequest {
        audience: vec!["bench".into()],
        spiffe_id: String::new(),
    })
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts at 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / clk_tck()
}
