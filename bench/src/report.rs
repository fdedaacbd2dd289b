//! The report: `ratio`/`figure` lines with their goals, the plots
//! (`bench/plots/*.svg`) and the generated part of BENCHMARKS.md.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::load::Comparison;
use crate::plot::{Chart, Series};

/// A line's goal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    None,
    AtMost(f64),
    AtLeast(f64),
}

/// One `ratio NAME VALUE` or `figure NAME VALUE UNIT` line.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub value: f64,
    /// Empty for a ratio.
    pub unit: String,
    pub goal: Goal,
}

impl Line {
    pub fn ratio(name: &str, value: f64, goal: Goal) -> Self {
        Self {
            name: name.into(),
            value,
            unit: String::new(),
            goal,
        }
    }

    pub fn figure(name: &str, value: f64, unit: &str, goal: Goal) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            goal,
        }
    }

    fn value_text(&self) -> String {
        if self.unit.is_empty() {
            format!("{:.2}", self.value)
        } else if self.value.abs() >= 100.0 || self.value.fract() == 0.0 {
            format!("{:.0}", self.value)
        } else {
            format!("{:.1}", self.value)
        }
    }

    fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::None => None,
            Goal::AtMost(g) => Some(self.value <= g),
            Goal::AtLeast(g) => Some(self.value >= g),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unit.is_empty() {
            write!(f, "ratio {} {}", self.name, self.value_text())
        } else {
            write!(
                f,
                "figure {} {} {}",
                self.name,
                self.value_text(),
                self.unit
            )
        }
    }
}

/// Why a goal can be missed for a reason outside lanyard's code.
fn known_reason(name: &str) -> Option<&'static str> {
    match name {
        "mint_vs_ed25519_sign" => Some(
            "the wire format needs two signatures: see `mint_vs_2_ed25519_sign` and \
             [Why mint cannot reach 1.5× one sign](#why-mint-cannot-reach-15-one-sign)",
        ),
        "short_lived_procs_per_s" => Some(
            "what 2 shared cores reach: each process is this 100 MB bench binary \
             starting a runtime and an HTTP/2 connection, on the same cores as both \
             servers and the spawner (see [Agent: short-lived processes](#agent-short-lived-processes))",
        ),
        _ => None,
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    quick: bool,
    lines: Vec<Line>,
    /// Per concurrency: lanyard and the empty server.
    pub latency: Vec<(usize, Comparison)>,
    /// Per number of identities: RSS (MiB) before and after filling the cache.
    pub rss: Vec<(usize, f64, f64)>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, {} ({cpu}), Linux {}; shared with other builds, so noisy",
        std::env::consts::ARCH,
        command_output("uname", &["-r"])
    )
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            lines: Vec::new(),
            latency: Vec::new(),
            rss: Vec::new(),
        }
    }

    /// Records a line and hands it to `show` (which prints it as it comes).
    pub fn push(&mut self, line: Line, show: impl Fn(&Line)) {
        show(&line);
        self.lines.push(line);
    }

    fn latency_chart(&self) -> Chart {
        let series = |name: &str, color, dashed, f: fn(&Comparison) -> f64| Series {
            name: name.into(),
            points: self
                .latency
                .iter()
                .map(|(c, r)| (*c as f64, f(r) * 1e6))
                .collect(),
            color,
            dashed,
        };
        Chart {
            title: "FetchJWTSVID latency vs concurrency".into(),
            x_label: "concurrent clients (one connection each)".into(),
            y_label: "latency (µs, log scale)".into(),
            log_x: true,
            log_y: true,
            series: vec![
                series("lanyard p50", "#1f77b4", false, |r| r.lanyard.p50),
                series("lanyard p99", "#1f77b4", true, |r| r.lanyard.p99),
                series("empty p50", "#ff7f0e", false, |r| r.empty.p50),
                series("empty p99", "#ff7f0e", true, |r| r.empty.p99),
            ],
        }
    }

    fn rss_chart(&self) -> Chart {
        let series = |name: &str, color, dashed, f: fn(&(usize, f64, f64)) -> f64| Series {
            name: name.into(),
            points: self.rss.iter().map(|p| (p.0 as f64, f(p))).collect(),
            color,
            dashed,
        };
        Chart {
            title: "Agent RSS vs cached identities".into(),
            x_label: "identities (JWT-SVID + X.509-SVID + seed/JWT each)".into(),
            y_label: "RSS (MiB)".into(),
            log_x: false,
            log_y: false,
            series: vec![
                series("cache filled", "#1f77b4", false, |p| p.2),
                series("configured, idle", "#7f7f7f", true, |p| p.1),
                series("goal (32 MiB)", "#d62728", true, |_| 32.0),
            ],
        }
    }

    /// Writes the plots and the generated part of BENCHMARKS.md.
    pub fn finish(&self, took: Duration) {
        let plots = root().join("bench/plots");
        let _ = std::fs::create_dir_all(&plots);
        let _ = std::fs::write(plots.join("latency.svg"), self.latency_chart().svg());
        let _ = std::fs::write(plots.join("rss.svg"), self.rss_chart().svg());
        let path = root().join("BENCHMARKS.md");
        let Ok(doc) = std::fs::read_to_string(&path) else {
            return;
        };
        let (begin, end) = ("<!-- bench-report:begin -->", "<!-- bench-report:end -->");
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            eprintln!("BENCHMARKS.md has no {begin} … {end} markers; not rewritten");
            return;
        };
        let doc = format!(
            "{}{begin}\n\n{}{}",
            &doc[..b],
            self.markdown(took),
            &doc[e..]
        );
        let _ = std::fs::write(&path, doc);
    }

    fn markdown(&self, took: Duration) -> String {
        let mut s = String::new();
        let cmd = format!(
            "cargo run --release -p lanyard-bench{}",
            if self.quick { " -- --quick" } else { "" }
        );
        s.push_str(&format!(
            "Generated by `{cmd}` on {} in {:.0} s.\n\nMachine: {}.\n\n",
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            took.as_secs_f64(),
            machine()
        ));
        s.push_str("| line | value | goal | verdict |\n|---|---|---|---|\n");
        for l in &self.lines {
            let g = |g: f64| {
                if l.unit.is_empty() {
                    format!("{g:.1}")
                } else {
                    format!("{g}")
                }
            };
            let goal = match l.goal {
                Goal::None => String::new(),
                Goal::AtMost(v) => format!("≤ {}", g(v)),
                Goal::AtLeast(v) => format!("≥ {} (target)", g(v)),
            };
            let verdict = match (l.met(), known_reason(&l.name)) {
                (None, _) => String::new(),
                (Some(true), _) => "met".into(),
                (Some(false), Some(why)) => format!("**not met**: {why}"),
                (Some(false), None) => "**not met**: see [Goals not met](#goals-not-met)".into(),
            };
            let (kind, unit) = if l.unit.is_empty() {
                ("ratio", String::new())
            } else {
                ("figure", format!(" {}", l.unit))
            };
            s.push_str(&format!(
                "| `{kind} {}` | **{}**{unit} | {goal} | {verdict} |\n",
                l.name,
                l.value_text()
            ));
        }
        s.push_str(
            "\n### Workload API latency vs concurrency\n\n\
             ![FetchJWTSVID p50 and p99, lanyard and the empty server, 1 to 64 clients](bench/plots/latency.svg)\n\n\
             | clients | lanyard p50 | lanyard p99 | lanyard calls/s | empty p50 | empty p99 | empty calls/s | p50 ratio | server CPU per call, lanyard / empty |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for (c, r) in &self.latency {
            s.push_str(&format!(
                "| {c} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs | {:.0} | {:.2} | {:.1} / {:.1} µs |\n",
                r.lanyard.p50 * 1e6,
                r.lanyard.p99 * 1e6,
                r.lanyard.rate,
                r.empty.p50 * 1e6,
                r.empty.p99 * 1e6,
                r.empty.rate,
                r.lanyard.p50 / r.empty.p50,
                r.lanyard_cpu_per_call * 1e6,
                r.empty_cpu_per_call * 1e6,
            ));
        }
        s.push_str(
            "\n### Agent RSS vs cached identities\n\n\
             ![Agent RSS with 0 to 1,000 identities cached](bench/plots/rss.svg)\n\n\
             | identities | RSS idle | RSS with the cache filled |\n|---|---|---|\n",
        );
        for (n, idle, full) in &self.rss {
            s.push_str(&format!("| {n} | {idle:.1} MiB | {full:.1} MiB |\n"));
        }
        s.push_str("\n```\n");
        for l in &self.lines {
            s.push_str(&format!("{l}\n"));
        }
        s.push_str("```\n\n");
        s
    }
}
