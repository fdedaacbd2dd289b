//! `lanyard attest --pid PID [--config FILE] [--json]`: the selectors the agent
//! would derive for a process and the entries they match. The first tool to reach
//! for when a workload gets "no identity".

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use lanyard_agent::attest::Pipeline;
use lanyard_agent::config::Config;
use lanyard_plugins::ProcessRef;

#[derive(Debug, Args)]
pub struct AttestArgs {
    /// The process to examine.
    #[arg(long)]
    pub pid: i32,
    /// The agent config (entries and plugin settings); without it, only selectors.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &AttestArgs) -> Result<ExitCode> {
    let (entries, attestors) = match &a.config {
        Some(path) => {
            let c = match Config::load(path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lanyard: {e}");
                    return Ok(ExitCode::from(64));
                }
            };
            match lanyard_agent::app::default_attestors(&c) {
                Ok(a) => (c.entries.clone(), a),
                Err(e) => {
                    eprintln!("lanyard: config key `plugins`: {e}");
                    return Ok(ExitCode::from(64));
                }
            }
        }
        None => (
            Vec::new(),
            lanyard_agent::app::attestors(
                lanyard_plugins::unix::UnixAttestor::default(),
                lanyard_plugins::container::ContainerAttestor::new(),
                None,
            ),
        ),
    };
    let (uid, gid) = lanyard_agent::peer::effective_ids(a.pid)
        .with_context(|| format!("no process {}", a.pid))?;
    let attested = Pipeline::new(attestors, entries.clone())
        .attest_blocking(&ProcessRef {
            pid: a.pid,
            uid,
            gid,
            groups: None,
        })
        .context("attestation failed (the agent would refuse this process)")?;
    let selectors: Vec<String> = attested
        .selectors()
        .iter()
        .map(ToString::to_string)
        .collect();
    // What the process would get: templates filled from its selectors.
    let identities: Vec<&str> = attested
        .entries()
        .iter()
        .map(|e| e.subject.as_str())
        .collect();
    // For each entry: which of its selectors the process lacks.
    let report: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let missing: Vec<String> = e.selectors.iter().map(ToString::to_string).filter(|s| !selectors.contains(s)).collect();
            serde_json::json!({"subject": e.subject, "matches": missing.is_empty(), "missing_selectors": missing})
        })
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"pid": a.pid, "selectors": selectors, "entries": report, "identities": identities, "ptrace_scope": ptrace_scope()})
            )?
        );
    } else {
        println!("pid {} selectors:", a.pid);
        for s in &selectors {
            println!("  {s}");
        }
        if a.config.is_some() {
            println!("entries:");
            for r in &report {
                let missing = r["missing_selectors"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                if r["matches"] == true
                    && !identities.contains(&r["subject"].as_str().unwrap_or_default())
                {
                    println!(
                        "  MATCH    {} (a template; no identity unless its placeholders fill)",
                        r["subject"].as_str().unwrap_or_default()
                    );
                } else if r["matches"] == true {
                    println!("  MATCH    {}", r["subject"].as_str().unwrap_or_default());
                } else {
                    println!(
                        "  no match {} (missing: {missing})",
                        r["subject"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    if !a.json && a.config.is_some() {
        println!("identities:");
        for i in &identities {
            println!("  {i}");
        }
    }
    if !a.json {
        println!("host:");
        match ptrace_scope() {
            Some(n) if n >= 1 => println!("  kernel.yama.ptrace_scope = {n}"),
            Some(n) => println!(
                "  kernel.yama.ptrace_scope = {n}: any process can ptrace others of its uid and run code as an attested binary; set it to 1 or more"
            ),
            None => println!(
                "  kernel.yama.ptrace_scope: absent (no Yama): any process can ptrace others of its uid and run code as an attested binary"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kernel.yama.ptrace_scope`, or `None` without Yama. Below 1, a process may
/// ptrace any other process of its uid: attestation by binary cannot tell the
/// binary's own code from code injected into it (README "On the host").
fn ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}
