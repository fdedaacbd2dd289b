//! Who may hold the agent's connections and streams, and how many.
//!
//! Every budget is counted per *principal*: the caller's uid, or, for a process
//! in a user namespace that the agent is not in, the uid that owns the
//! outermost such namespace. `unshare --map-auto` gives any user 65,536
//! subordinate uids; counted by uid, one user could spread connections over
//! them and hold every slot. Counted by principal they are all that user's.
//!
//! The last [`ConnLimits::reserve`] slots of the total are kept for root and for
//! principals holding fewer than [`ConnLimits::reserve_per_uid`] connections,
//! so that when everything else is taken a new user's first connection, or
//! root's, still gets in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many Workload API connections and streams the agent holds at once, and
/// how long a connection may go without a completed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, all callers together.
    pub max_total: usize,
    /// Connections open at once from one process (by peer pid).
    pub max_per_process: usize,
    /// Connections open at once from one principal (uid, or the owner of the
    /// caller's user namespace).
    pub max_per_uid: usize,
    /// The last slots of `max_total`, open only to root and to principals with
    /// fewer than `reserve_per_uid` connections.
    pub reserve: usize,
    /// How many connections a principal may hold and still use the reserve.
    pub reserve_per_uid: usize,
    /// A connection on which no whole request has arrived this long after
    /// accept is closed: one byte, or an HTTP/2 preface alone, does not keep it.
    pub idle_timeout: Duration,
    /// HTTP/2 streams open at once on one connection (`MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Watch streams (the Workload API's server streams) open at once for one
    /// principal, over all its connections.
    pub max_streams_per_uid: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_total: 4096,
            max_per_process: 64,
            max_per_uid: 1024,
            reserve: 256,
            reserve_per_uid: 4,
            idle_timeout: Duration::from_secs(10),
            max_streams_per_connection: 32,
            max_streams_per_uid: 256,
        }
    }
}

/// The live counts behind [`ConnLimits`], shared with `/metrics` and with the
/// Workload API (for streams).
#[derive(Debug, Default)]
pub struct Admission {
    pub(crate) limits: ConnLimits,
    /// Open connections by peer pid and by principal.
    per_peer: Mutex<(HashMap<i32, usize>, HashMap<u32, usize>)>,
    /// Open watch streams by principal.
    streams: Mutex<HashMap<u32, usize>>,
    open: AtomicU64,
    refused: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    streams_refused: AtomicU64,
}

impl Admission {
    /// Admission control with these limits.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            ..Self::default()
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because they completed no request in time.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// Watch streams refused because their principal had too many.
    pub fn streams_refused(&self) -> u64 {
        self.streams_refused.load(Ordering::Relaxed)
    }

    /// A slot for one more connection from `pid` of `principal`, or `None` over
    /// a limit.
    pub(crate) fn admit(self: &Arc<Self>, pid: i32, principal: u32) -> Option<Slot> {
        let Ok(mut maps) = self.per_peer.lock() else {
            return None;
        };
        let l = &self.limits;
        let total: usize = usize::try_from(self.open()).unwrap_or(usize::MAX);
        let by_pid = maps.0.get(&pid).copied().unwrap_or(0);
        let by_principal = maps.1.get(&principal).copied().unwrap_or(0);
        let in_reserve = total >= l.max_total.saturating_sub(l.reserve);
        let may_use_reserve = principal == 0 || by_principal < l.reserve_per_uid;
        if total >= l.max_total
            || by_pid >= l.max_per_process
            || by_principal >= l.max_per_uid
            || (in_reserve && !may_use_reserve)
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        maps.0.insert(pid, by_pid + 1);
        maps.1.insert(principal, by_principal + 1);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            limits: self.clone(),
            pid,
            principal,
        })
    }

    /// A place for one more watch stream of `principal`, or `None` over
    /// [`ConnLimits::max_streams_per_uid`].
    pub fn take_stream(self: &Arc<Self>, principal: u32) -> Option<StreamSlot> {
        let mut m = self.streams.lock().ok()?;
        let n = m.get(&principal).copied().unwrap_or(0);
        if n >= self.limits.max_streams_per_uid {
            self.streams_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        m.insert(principal, n + 1);
        Some(StreamSlot {
            limits: self.clone(),
            principal,
        })
    }
}

/// One admitted connection's place in the counts.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) limits: Arc<Admission>,
    pid: i32,
    principal: u32,
}

/// Takes one from `key`'s count, forgetting keys that reach zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut maps) = self.limits.per_peer.lock() {
            release(&mut maps.0, &self.pid);
            release(&mut maps.1, &self.principal);
        }
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open watch stream's place in its principal's count.
#[derive(Debug)]
pub struct StreamSlot {
    limits: Arc<Admission>,
    principal: u32,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.limits.streams.lock() {
            release(&mut m, &self.principal);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits(max_total: usize, per_process: usize, per_uid: usize, reserve: usize) -> ConnLimits {
        ConnLimits {
            max_total,
            max_per_process: per_process,
            max_per_uid: per_uid,
            reserve,
            reserve_per_uid: 1,
            ..ConnLimits::default()
        }
    }

    #[test]
    fn one_process_cannot_take_every_slot() {
        let adm = Admission::new(limits(5, 2, 3, 0));
        let a1 = adm.admit(100, 7).unwrap();
        let _a2 = adm.admit(100, 7).unwrap();
        assert!(adm.admit(100, 7).is_none(), "third from one pid");
        let _a3 = adm.admit(101, 7).unwrap();
        assert!(adm.admit(102, 7).is_none(), "fourth from one uid");
        let _c = adm.admit(300, 8).unwrap();
        let _d = adm.admit(301, 9).unwrap();
        assert!(adm.admit(400, 10).is_none(), "over the total");
        assert_eq!((adm.open(), adm.refused()), (5, 3));
        drop(a1);
        assert_eq!(adm.open(), 4);
        assert!(
            adm.admit(100, 7).is_some(),
            "a closed connection frees its slot"
        );
        let maps = adm.per_peer.lock().unwrap();
        assert_eq!(
            (maps.0.len(), maps.1.len()),
            (4, 3),
            "counts are forgotten at zero"
        );
    }

    #[test]
    fn the_reserve_keeps_first_connections_and_root_serviceable() {
        // 10 slots, the last 3 reserved; principals may hold 6.
        let adm = Admission::new(limits(10, 10, 6, 3));
        let mut held: Vec<Slot> = (0..6).map(|i| adm.admit(100 + i, 1001).unwrap()).collect();
        held.push(adm.admit(200, 1002).unwrap());
        // 7 open: the general pool is full. 1002 holds one (its reserve quota).
        assert!(adm.admit(201, 1002).is_none());
        // A new principal's first connection, and root's, still get in.
        held.push(adm.admit(300, 1003).unwrap());
        held.push(adm.admit(1, 0).unwrap());
        held.push(adm.admit(2, 0).unwrap());
        assert!(adm.admit(3, 0).is_none(), "the total still holds");
        assert_eq!(adm.open(), 10);
    }

    #[test]
    fn streams_are_counted_per_principal() {
        let adm = Admission::new(ConnLimits {
            max_streams_per_uid: 2,
            ..ConnLimits::default()
        });
        let a = adm.take_stream(1001).unwrap();
        let _b = adm.take_stream(1001).unwrap();
        assert!(adm.take_stream(1001).is_none());
        let _c = adm.take_stream(1002).unwrap();
        drop(a);
        let _d = adm.take_stream(1001).unwrap();
        assert_eq!(adm.streams_refused(), 1);
    }
}
