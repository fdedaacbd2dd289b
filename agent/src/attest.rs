//! The attestation pipeline: run every enabled attestor (all must succeed), then
//! find the entries whose selectors are all among the caller's.

use std::sync::Arc;
use std::time::Instant;

use lanyard_plugins::{AttestError, Selector, WorkloadAttestor};

use crate::config::Entry;
use crate::peer::Peer;

/// A caller's selectors and matching entries. Only [`Pipeline::attest`] makes one.
#[derive(Debug, Clone)]
pub struct AttestedWorkload {
    selectors: Vec<Selector>,
    entries: Vec<Entry>,
}

impl AttestedWorkload {
    /// Every selector derived for the caller.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }
    /// The entries the caller is entitled to.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// Why attestation failed; the request fails closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// An attestor failed.
    #[error("attestor {plugin}: {source}")]
    Attestor {
        /// Which one.
        plugin: &'static str,
        /// Why.
        source: AttestError,
    },
    /// The blocking pool refused the job (shutting down).
    #[error("attestation could not run: {0}")]
    Join(String),
}

/// Attestors plus entries.
#[derive(Debug)]
pub struct Pipeline {
    attestors: Vec<Box<dyn WorkloadAttestor>>,
    entries: Vec<Entry>,
}

impl Pipeline {
    /// A pipeline over `attestors` and `entries`.
    pub fn new(attestors: Vec<Box<dyn WorkloadAttestor>>, entries: Vec<Entry>) -> Arc<Self> {
        Arc::new(Self { attestors, entries })
    }

    /// Selectors and entries for a process, synchronously (for `lanyard attest`).
    pub fn attest_blocking(
        &self,
        process: &lanyard_plugins::ProcessRef,
    ) -> Result<AttestedWorkload, PipelineError> {
        let mut selectors = Vec::new();
        for a in &self.attestors {
            selectors.extend(
                a.attest(process)
                    .map_err(|source| PipelineError::Attestor {
                        plugin: a.name(),
                        source,
                    })?,
            );
        }
        selectors.sort();
        selectors.dedup();
        let entries = self
            .entries
            .iter()
            .filter(|e| {
                e.selectors
                    .iter()
                    .all(|s| selectors.binary_search(s).is_ok())
            })
            .cloned()
            .collect();
        Ok(AttestedWorkload { selectors, entries })
    }

    /// Attests the caller on the blocking pool; returns the result and its latency.
    pub async fn attest(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
    ) -> (Result<AttestedWorkload, PipelineError>, f64) {
        let start = Instant::now();
        let (me, process) = (self.clone(), *peer.process());
        let res = tokio::task::spawn_blocking(move || me.attest_blocking(&process))
            .await
            .unwrap_or_else(|e| Err(PipelineError::Join(e.to_string())));
        (res, start.elapsed().as_secs_f64())
    }
}
