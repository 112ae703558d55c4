//! What the daemon's D-Bus interface (`service`) and its reconcile loop (`mod.rs`) share: the
//! connections, the read budget and cache, the counters, the wake-up. A leaf, so the interface
//! does not depend on `daemon/mod.rs`.

use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, Semaphore};

use crate::firewalld::Firewalld;
use crate::forward::triggers::Reconciles;
use crate::state::StateDir;

/// Read methods (`List`, `Check`, `Status`) being served at once; anybody may call them, so more are
/// refused with `org.virtzone.VirtZone1.Error.Busy` instead of queueing without bound.
pub const READ_SLOTS: usize = 4;
/// How long one read method may wait for firewalld. Reads run on their own connection with this
/// timeout, so a slow or hung firewalld cannot pile up replies where `Attach` and reconcile need room.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read's answer is reused: a flood of identical reads costs firewalld one call set a second.
pub const READ_CACHE: Duration = Duration::from_secs(1);

/// What the daemon's properties show.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub count: u64,
    pub last_usec: u64,
    pub version: String,
    pub backend: String,
}

/// Answers of read methods, reused for [`READ_CACHE`] and dropped on every firewalld event.
#[derive(Default)]
pub(crate) struct ReadCache {
    pub facts: Option<(Instant, crate::firewalld::FirewalldFacts)>,
    pub status: Option<(Instant, String)>,
}

/// State shared by the D-Bus interface and the reconcile loop.
pub(crate) struct Shared {
    /// The daemon's own connection: serves the interface, runs reconcile, `Attach` and `Detach`.
    pub fw: Firewalld,
    /// A second connection for the read methods only, with a short call timeout.
    pub reader: Firewalld,
    /// Bounds the read methods served at once.
    pub read_slots: Semaphore,
    /// Recent read answers.
    pub read_cache: Mutex<ReadCache>,
    pub state: StateDir,
    pub stats: Mutex<Stats>,
    /// Wakes the reconcile loop; notifications arriving during a reconcile coalesce into one more.
    pub wake: Notify,
    /// Reconciles asked for and done, for the forward watch to wait on (see
    /// `forward::watch::BindingReconciles`).
    pub reconciles: tokio::sync::watch::Sender<Reconciles>,
}

impl Shared {
    /// Asks the reconcile loop for one more reconcile.
    pub(super) fn request_reconcile(&self) {
        self.reconciles.send_modify(|r| r.requested += 1);
        self.wake.notify_one();
    }

    /// firewalld got a new owner (started or restarted): one more reconcile, and the count the
    /// keepers that depend on firewalld's version go by.
    pub(super) fn new_owner(&self) {
        self.reconciles.send_modify(|r| r.owners += 1);
        self.request_reconcile();
    }
}

impl ReadCache {
    /// Forgets every answer (firewalld changed).
    pub fn clear(&mut self) {
        *self = ReadCache::default();
    }
}
