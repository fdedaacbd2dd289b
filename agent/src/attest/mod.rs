//! Stage 2, attestation: run every enabled attestor (all must succeed) for the
//! selectors some entry uses, then hand them to [`crate::matching`] for the
//! caller's entries. Per connection, a result is reused for a moment while
//! the process's fingerprint is unchanged.

use std::sync::Arc;
use std::time::Instant;

use lanyard_plugins::{AttestError, Selector, Wanted, WorkloadAttestor};

use crate::config::Entry;
use crate::matching::Entries;
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
    /// The caller runs another executable than the one that connected.
    #[error(transparent)]
    Changed(#[from] crate::peer::PeerError),
}

/// Attestors plus entries (fixed in standalone mode, synced from the issuer upstream).
#[derive(Debug)]
pub struct Pipeline {
    attestors: Vec<Box<dyn WorkloadAttestor>>,
    entries: std::sync::RwLock<Arc<Entries>>,
}

impl Pipeline {
    /// A pipeline over `attestors` and `entries`.
    pub fn new(attestors: Vec<Box<dyn WorkloadAttestor>>, entries: Vec<Entry>) -> Arc<Self> {
        Arc::new(Self {
            attestors,
            entries: std::sync::RwLock::new(Entries::new(entries)),
        })
    }

    /// Replaces the entries (an upstream sync); attestations already made keep
    /// theirs for at most [`REUSE_FOR`].
    pub fn set_entries(&self, entries: Vec<Entry>) {
        let entries = Entries::new(entries);
        if let Ok(mut e) = self.entries.write() {
            *e = entries;
        }
    }

    /// The current entries.
    pub fn entries(&self) -> Arc<Vec<Entry>> {
        self.snapshot().list().clone()
    }

    fn snapshot(&self) -> Arc<Entries> {
        self.entries.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Every selector and the matching entries for a process, synchronously
    /// (`lanyard attest`, which shows an operator all selectors).
    pub fn attest_blocking(
        &self,
        process: &lanyard_plugins::ProcessRef,
    ) -> Result<AttestedWorkload, PipelineError> {
        self.attest_with(process, &self.snapshot(), &Wanted::everything())
    }

    /// Selectors (those in `wanted`) and the matching `entries`.
    fn attest_with(
        &self,
        process: &lanyard_plugins::ProcessRef,
        entries: &Entries,
        wanted: &Wanted,
    ) -> Result<AttestedWorkload, PipelineError> {
        let mut selectors = Vec::new();
        // One read of /proc/PID/cgroup for every attestor that needs it.
        lanyard_plugins::reads::shared(|| {
            for a in &self.attestors {
                selectors.extend(a.attest_wanted(process, wanted).map_err(|source| {
                    PipelineError::Attestor {
                        plugin: a.name(),
                        source,
                    }
                })?);
            }
            Ok::<(), PipelineError>(())
        })?;
        selectors.sort();
        selectors.dedup();
        let entries = entries.matching(&selectors);
        Ok(AttestedWorkload { selectors, entries })
    }

    /// Attests the caller; returns the result and its latency. Only selectors
    /// that some entry uses are derived (no binary hash unless one names it).
    ///
    /// Attestors run on the blocking pool, unless every one of them says it only
    /// reads `/proc` and memory for this call (then a hand-off would cost more
    /// than the reads). A connection's last result is reused for
    /// up to [`REUSE_FOR`] while the process's fingerprint is unchanged: the same
    /// executable inode and the same effective uid and gid. An `exec` of another
    /// binary or a `setuid` changes the fingerprint, and a different process on
    /// the same pid is caught by the recheck before every response. Supplementary
    /// groups are those at connect (`SO_PEERGROUPS`), like the uid and gid.
    pub async fn attest(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
    ) -> (Result<AttestedWorkload, PipelineError>, f64) {
        let start = Instant::now();
        // A connection's first attestation is not memoised: most connections
        // (one `lanyard fetch`, one short-lived process) make only one call, and
        // the fingerprint costs two stats of /proc. From the second call on it is.
        let memo = peer.memo::<Memo>();
        let fingerprint = if memo.is_some_and(Memo::note_call) {
            fingerprint(peer.process().pid)
        } else {
            None
        };
        if let Some(fp) = &fingerprint {
            if let Some(hit) = memo.and_then(|m| m.reuse(fp, start)) {
                // The fingerprint was just taken: no second stat needed.
                let res = if peer.same_image(Some((fp.exe.0, fp.exe.1))) {
                    Ok(hit)
                } else {
                    Err(crate::peer::PeerError::Exec(peer.process().pid).into())
                };
                return (res, start.elapsed().as_secs_f64());
            }
        }
        let (entries, process) = (self.snapshot(), peer.process().clone());
        let res = if self.attestors.iter().all(|a| a.is_quick(entries.wanted())) {
            self.attest_with(&process, &entries, entries.wanted())
        } else {
            let me = self.clone();
            tokio::task::spawn_blocking(move || {
                me.attest_with(&process, &entries, entries.wanted())
            })
            .await
            .unwrap_or_else(|e| Err(PipelineError::Join(e.to_string())))
        };
        // After every /proc read: an exec that any of them saw shows here.
        let res = res.and_then(|w| peer.check_image().map(|()| w).map_err(Into::into));
        if let (Ok(w), Some(fp), Some(m)) = (&res, fingerprint, memo) {
            m.store(fp, start, w.clone());
        }
        (res, start.elapsed().as_secs_f64())
    }
}

/// How long a connection may reuse its attestation while nothing changed.
pub const REUSE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// What must be unchanged for a connection to reuse its last attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    exe: (u64, u64, i64, i64, i64, i64),
    ids: (u32, u32),
}

/// `stat` of the running executable and the id lines of `/proc/PID/status`.
fn fingerprint(pid: i32) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    // The owner of /proc/PID is the effective uid and gid: one stat, where
    // /proc/PID/status costs the kernel a page of formatting.
    let d = std::fs::metadata(format!("/proc/{pid}")).ok()?;
    Some(Fingerprint {
        // ctime too: the owner can reset mtime after rewriting the file in place.
        exe: (
            m.dev(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ),
        ids: (d.uid(), d.gid()),
    })
}

/// A connection's last attestation.
#[derive(Debug, Default)]
pub struct Memo {
    last: std::sync::Mutex<Option<(Fingerprint, Instant, AttestedWorkload)>>,
    called: std::sync::atomic::AtomicBool,
}

impl Memo {
    /// Records a call; whether there was one before on this connection.
    fn note_call(&self) -> bool {
        self.called.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    fn reuse(&self, fp: &Fingerprint, now: Instant) -> Option<AttestedWorkload> {
        let m = self.last.lock().ok()?;
        let (f, at, w) = m.as_ref()?;
        (f == fp && now.duration_since(*at) < REUSE_FOR).then(|| w.clone())
    }

    fn store(&self, fp: Fingerprint, at: Instant, w: AttestedWorkload) {
        if let Ok(mut m) = self.last.lock() {
            *m = Some((fp, at, w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::current_uid;
    use lanyard_plugins::unix::UnixAttestor;

    fn entry(subject: &str, selectors: &[String]) -> Entry {
        Entry {
            subject: subject.into(),
            selectors: selectors
                .iter()
                .map(|s| Selector::parse(s).unwrap())
                .collect(),
            ttl_secs: 600,
            audiences: Vec::new(),
            networks: Vec::new(),
        }
    }

    fn me() -> lanyard_plugins::ProcessRef {
        lanyard_plugins::ProcessRef {
            pid: std::process::id() as i32,
            uid: current_uid(),
            gid: 0,
            groups: None,
        }
    }

    impl Pipeline {
        /// What the agent derives for a caller now: only wanted selectors.
        fn attest_wanted_now(
            &self,
            process: &lanyard_plugins::ProcessRef,
        ) -> Result<AttestedWorkload, PipelineError> {
            let entries = self.snapshot();
            self.attest_with(process, &entries, entries.wanted())
        }
    }

    fn has_hash(w: &AttestedWorkload) -> bool {
        w.selectors()
            .iter()
            .any(|s| s.as_str().starts_with("unix:sha256:"))
    }

    #[test]
    fn binary_is_hashed_only_for_entries_that_name_the_hash() {
        let uid = format!("unix:uid:{}", current_uid());
        let p = Pipeline::new(
            vec![Box::new(UnixAttestor::default())],
            vec![entry("spiffe://example.org/a", std::slice::from_ref(&uid))],
        );
        let w = p.attest_wanted_now(&me()).unwrap();
        assert!(!has_hash(&w), "{:?}", w.selectors());
        assert_eq!(w.entries().len(), 1);

        // `lanyard attest` shows every selector, the hash among them.
        let all = p.attest_blocking(&me()).unwrap();
        let hash = all
            .selectors()
            .iter()
            .find(|s| s.as_str().starts_with("unix:sha256:"))
            .expect("lanyard attest shows unix:sha256")
            .to_string();

        // Once an entry names the hash, it is derived and matched.
        p.set_entries(vec![
            entry("spiffe://example.org/a", std::slice::from_ref(&uid)),
            entry("spiffe://example.org/b", &[uid, hash]),
        ]);
        let w = p.attest_wanted_now(&me()).unwrap();
        assert!(has_hash(&w));
        assert_eq!(w.entries().len(), 2);

        // A template that renders from the hash wants it too.
        p.set_entries(vec![entry(
            "spiffe://example.org/bin/{unix:sha256}",
            &[format!("unix:uid:{}", current_uid())],
        )]);
        let w = p.attest_wanted_now(&me()).unwrap();
        assert_eq!(w.entries().len(), 1, "{:?}", w.selectors());
        assert!(w.entries()[0]
            .subject
            .starts_with("spiffe://example.org/bin/"));
    }
}
