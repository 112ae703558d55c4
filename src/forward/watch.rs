//! The daemon's trigger for forwards: every change of the netfilter ruleset.
//!
//! libvirt rebuilds its rules on its own schedule — after firewalld's `Reloaded`, when firewalld gets
//! a new bus owner, when a network starts, when libvirtd starts — and it puts its jumps back at the
//! top of `FORWARD`. Reacting to firewalld's signal alone would race libvirt's reaction to the same
//! signal. Instead the daemon listens to nf_tables' own change notifications (netlink group
//! `NFNLGRP_NFTABLES`, which also carries iptables-nft's changes) and re-checks after each burst:
//! whatever acts last, virtzone's check comes after it. Its own changes cause one more check, which
//! finds everything in place; when they touched only the ruleset (the accepts a reload dropped),
//! that check reads only the ruleset side and reuses the rest of the gather before it (see
//! `runner::Memo`). Events arriving during a check coalesce into one more check.
//!
//! Domain forwards add triggers: the qemu hook's record of a started domain (inotify on the
//! forwards' store, where it writes `domains.json`), and a guest's first DHCP lease, which changes
//! no ruleset (inotify on the lease directory, where libvirt's helper renames each status file into
//! place). While some running domain's forward waits for its address (or its address is in doubt),
//! the daemon also checks after [`LEASE_POLL`], doubling the pause after each check that changes
//! nothing up to [`LEASE_POLL_MAX`], and back to the start after any lease-file change or hook
//! write; not at all otherwise.
//!
//! The drop-in directories of `virtzone apply` are watched too: their files are applied (a bad file
//! is logged with FILE:LINE, and the last good state stays in force) before each check.
//!
//! One inotify instance serves all of it, read by one thread for the daemon's life. A watch that
//! cannot be added (`ENOSPC`: the user's inotify watches ran out) is tried again at later checks, at
//! most [`WATCH_TRIES`] times, never with a new instance or thread.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::inotify::{self, WatchFlags};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::triggers::{ruleset_changes, BindingReconciles, Triggers};
use crate::firewalld::Firewalld;
use crate::state::StateDir;

/// The first pause before looking for a lease again while a domain forward waits for one.
pub const LEASE_POLL: Duration = Duration::from_millis(1500);
/// The longest pause: a lease the lease-directory watch missed is still found within it.
pub const LEASE_POLL_MAX: Duration = Duration::from_secs(60);
/// How long after a directory event the daemon waits for the rest of its burst.
pub const BURST: Duration = Duration::from_millis(150);
/// How often adding one watch is tried before the daemon does without it.
pub const WATCH_TRIES: u32 = 10;

/// The pauses between checks while a domain forward waits: [`LEASE_POLL`], doubling to
/// [`LEASE_POLL_MAX`]; [`Backoff::reset`] after an event that may have brought the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: LEASE_POLL }
    }
}

impl Backoff {
    /// The pause to wait now; the next one is twice as long, up to the cap.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(LEASE_POLL_MAX);
        now
    }

    /// Back to the shortest pause.
    pub fn reset(&mut self) {
        self.next = LEASE_POLL;
    }
}

/// One watched directory: what to watch for, and how often adding it was tried.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    flags: WatchFlags,
    done: bool,
    tries: u32,
}

/// The daemon's one inotify instance over the state directory (the store's creation), the store
/// (state files renamed into place: every state write is a rename) and the lease directory (status
/// files renamed or written), sending into `tx` like [`ruleset_changes`]. Not `IN_CLOSE_WRITE` on
/// the store: taking its lock closes a writable file, so every check would trigger the next.
pub struct DirWatch {
    fd: Option<Arc<OwnedFd>>,
    tx: mpsc::Sender<()>,
    creates: u32,
    dirs: Vec<Watched>,
}

impl DirWatch {
    /// The watch of `state` (for the creation of `store`), `store` and `leases`; nothing is
    /// added before [`DirWatch::ensure`].
    pub fn new(state: &Path, store: &Path, leases: &Path, tx: mpsc::Sender<()>) -> DirWatch {
        let dir = |path: &Path, flags| Watched {
            path: path.to_path_buf(),
            flags,
            done: false,
            tries: 0,
        };
        DirWatch {
            fd: None,
            tx,
            creates: 0,
            dirs: vec![
                dir(state, WatchFlags::CREATE),
                dir(store, WatchFlags::MOVED_TO),
                dir(leases, WatchFlags::MOVED_TO | WatchFlags::CLOSE_WRITE),
            ],
        }
    }

    /// Also watches the drop-in directories (`crate::declare`): a file written, renamed, linked
    /// (a mask) or removed.
    pub fn with_dropins(mut self, dirs: &[PathBuf]) -> DirWatch {
        for d in dirs {
            self.dirs.push(Watched {
                path: d.clone(),
                flags: WatchFlags::CLOSE_WRITE
                    | WatchFlags::MOVED_TO
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::CREATE
                    | WatchFlags::DELETE,
                done: false,
                tries: 0,
            });
        }
        self
    }

    /// Whether every directory is watched.
    pub fn complete(&self) -> bool {
        self.dirs.iter().all(|d| d.done)
    }

    /// Creates the instance and its reader thread once, and adds the watches still missing, each
    /// tried at most [`WATCH_TRIES`] times over the daemon's life (a directory that does not exist
    /// yet costs no try).
    pub fn ensure(&mut self) {
        self.ensure_with(|fd, path, flags| inotify::add_watch(fd, path, flags).map(|_| ()))
    }

    /// [`DirWatch::ensure`] with `add` adding one watch (tests fail it).
    fn ensure_with(
        &mut self,
        mut add: impl FnMut(&OwnedFd, &Path, WatchFlags) -> rustix::io::Result<()>,
    ) {
        if self.fd.is_none() && self.creates < WATCH_TRIES {
            self.creates += 1;
            match self.start() {
                Ok(fd) => self.fd = Some(fd),
                Err(e) if self.creates == WATCH_TRIES => warn!(
                    "cannot watch virtzone's state and lease directories ({e}); domain starts reach \
                     forwards through the hook only, leases through the periodic check"
                ),
                Err(_) => {}
            }
        }
        let Some(fd) = &self.fd else { return };
        for d in self
            .dirs
            .iter_mut()
            .filter(|d| !d.done && d.tries < WATCH_TRIES)
        {
            if !d.path.is_dir() {
                continue;
            }
            d.tries += 1;
            match add(fd, &d.path, d.flags) {
                Ok(()) => d.done = true,
                Err(e) if d.tries == WATCH_TRIES => warn!(
                    "cannot watch {} ({e}, tried {WATCH_TRIES} times); doing without",
                    d.path.display()
                ),
                Err(_) => {}
            }
        }
    }

    /// The instance and the one thread reading it for the daemon's life.
    fn start(&self) -> io::Result<Arc<OwnedFd>> {
        let fd = Arc::new(inotify::init(inotify::CreateFlags::CLOEXEC)?);
        let reader = fd.clone();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("state-watch".into())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                loop {
                    match rustix::io::read(&*reader, &mut buf[..]) {
                        Ok(_) => {}
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(e) => {
                            warn!("stopped watching virtzone's state directory: {e}");
                            return;
                        }
                    }
                    match tx.try_send(()) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                        Err(mpsc::error::TrySendError::Closed(())) => return,
                    }
                }
            })?;
        Ok(fd)
    }
}

/// Keeps the declared forwards and allows applied: once at start, then after every burst of
/// ruleset changes, every write of the forwards' state (the qemu hook's) or of a lease file, and
/// after a [`Backoff`] pause while a domain forward waits for a lease. Runs until the watch ends;
/// the daemon spawns it next to its binding reconcile.
pub async fn run(fw: Firewalld, state: StateDir, mut bindings: BindingReconciles) {
    let mut changes = match ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); forwards are re-applied only by the CLI and the hook");
            return;
        }
    };
    let store = state.path().join(super::store::STORE_DIR);
    let leases = super::domain::lease_dir()
        .unwrap_or_else(|_| PathBuf::from(super::domain::DEFAULT_LEASE_DIR));
    let (poke_tx, mut pokes) = mpsc::channel(1);
    let dropins = crate::declare::dirs();
    let mut watch = DirWatch::new(state.path(), &store, &leases, poke_tx).with_dropins(&dropins);
    let mut backoff = Backoff::default();
    let mut last_bad = None;
    // The watch's record of its checks (see `runner::Memo`).
    let mut memo = super::runner::Memo::by_the_watch();
    loop {
        // The store may appear later (the first `forward add` or hook run creates it): until then
        // the state dir is watched for its creation, and the store's watch is added once it exists.
        if !watch.complete() {
            watch.ensure();
        }
        let mut waiting = false;
        super::declared::follow_files(&state, &dropins, &mut last_bad).await;
        let triggers = Triggers {
            bindings: &mut bindings,
            changes: &mut changes,
        };
        let check = super::reconcile::reconcile_checked(&fw, &state, Some(triggers), &mut memo);
        match check.await {
            Ok(done) => {
                if done.steps > 0 {
                    info!("forwards: re-applied {} change(s)", done.steps);
                }
                for p in &done.problems {
                    warn!("forwards: {p}");
                }
                waiting = done.waiting;
            }
            // firewalld going away in the middle of a check is no fault: its return is an event.
            Err(e) if !fw.is_running().await.unwrap_or(false) => {
                info!("forwards: firewalld went away during a check ({e}); waiting for it")
            }
            Err(e) => warn!("forwards: {e}"),
        }
        if !waiting {
            backoff.reset();
        }
        let pause = backoff.pause();
        tokio::select! {
            got = changes.recv() => if got.is_none() { return },
            got = pokes.recv() => if got.is_some() {
                // A state or lease file changed: not the ruleset, so a full check.
                memo.forget_ruleset_basis();
                backoff.reset();
                // A burst of edits (an editor's save, a configuration tool writing several files)
                // is one apply: the events of the next moment join this one.
                tokio::time::sleep(BURST).await;
                while pokes.try_recv().is_ok() {}
            },
            () = tokio::time::sleep(pause), if waiting => memo.forget_ruleset_basis(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_poll_backs_off_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.pause().as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [1500, 3000, 6000, 12000, 24000, 48000, 60000, 60000, 60000]
        );
        b.reset();
        assert_eq!(b.pause(), LEASE_POLL);
        // An hour of waiting costs a few dozen checks, not 2400.
        let mut b = Backoff::default();
        let (mut t, mut checks) = (Duration::ZERO, 0);
        while t < Duration::from_secs(3600) {
            t += b.pause();
            checks += 1;
        }
        assert!(checks < 70, "{checks}");
    }

    /// inotify instances open in this process.
    fn inotify_instances() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.to_string_lossy().contains("inotify"))
            .count()
    }

    #[tokio::test]
    async fn watches_that_run_out_are_retried_on_one_instance_within_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store, leases) = (
            dir.path().to_path_buf(),
            dir.path().join("forwards"),
            dir.path().join("leases"),
        );
        std::fs::create_dir(&store).unwrap();
        std::fs::create_dir(&leases).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let before = inotify_instances();
        let mut watch = DirWatch::new(&state, &store, &leases, tx);
        let mut calls = 0;
        // The user's watches ran out: every add fails with ENOSPC, at every check.
        for _ in 0..100 {
            watch.ensure_with(|_, _, _| {
                calls += 1;
                Err(rustix::io::Errno::NOSPC)
            });
        }
        assert_eq!(inotify_instances(), before + 1);
        assert_eq!(calls, 3 * WATCH_TRIES as usize);
        assert!(!watch.complete());
        // Real watches on the same instance.
        let mut watch = DirWatch::new(&state, &store, &leases, mpsc::channel(1).0);
        watch.ensure();
        watch.ensure();
        assert!(watch.complete());
        assert_eq!(inotify_instances(), before + 2);
    }
}
