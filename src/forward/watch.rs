//! The daemon's trigger for forwards: every change of the netfilter ruleset.
//!
//! libvirt rebuilds its rules on its own schedule — after firewalld's `Reloaded`, when firewalld gets
//! a new bus owner, when a network starts, when libvirtd starts — and it puts its jumps back at the
//! top of `FORWARD`. Reacting to firewalld's signal alone would race libvirt's reaction to the same
//! signal. Instead the daemon listens to nf_tables' own change notifications (netlink group
//! `NFNLGRP_NFTABLES`, which also carries iptables-nft's changes) and re-checks after each burst:
//! whatever acts last, virtzone's check comes after it. Its own changes cause one more check, which
//! finds everything in place. Events arriving during a check coalesce into one more check.
//!
//! Domain forwards add two triggers: the qemu hook's record of a started domain (inotify on the
//! forwards' store, where it writes `domains.json`), and a guest's first DHCP lease, which changes
//! no ruleset: while some running domain's forward waits for its address, the daemon also checks
//! every [`LEASE_POLL`], and not at all otherwise.

use std::io;
use std::path::Path;
use std::time::Duration;

use rustix::net::netlink::{SocketAddrNetlink, NETFILTER};
use rustix::net::{AddressFamily, RecvFlags, SocketType};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::firewalld::Firewalld;
use crate::state::StateDir;

/// `NFNLGRP_NFTABLES` from `linux/netfilter/nfnetlink.h`.
const NFNLGRP_NFTABLES: u32 = 7;

/// How often the daemon looks for a lease while a domain forward waits for one.
pub const LEASE_POLL: Duration = Duration::from_millis(1500);

/// Watches the state directory `state` for the creation of the forwards' store, and the store
/// `store` for state files renamed into place (every state write is a rename), sending into `tx`
/// like [`ruleset_changes`]. Not `IN_CLOSE_WRITE`: taking the store's lock closes a writable file,
/// so every check would trigger the next. Returns whether the store could be watched.
fn watch_dirs(state: &Path, store: &Path, tx: mpsc::Sender<()>) -> io::Result<bool> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    let _ = inotify::add_watch(&fd, state, inotify::WatchFlags::CREATE);
    let all = inotify::add_watch(&fd, store, inotify::WatchFlags::MOVED_TO).is_ok();
    std::thread::Builder::new()
        .name("state-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match rustix::io::read(&fd, &mut buf[..]) {
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
    Ok(all)
}

/// A receiver that yields once per burst of ruleset changes (capacity one: bursts coalesce). It
/// ends when the socket fails.
pub fn ruleset_changes() -> io::Result<mpsc::Receiver<()>> {
    let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, Some(NETFILTER))?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 1 << (NFNLGRP_NFTABLES - 1)))?;
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()) {
                    // ENOBUFS: the burst overflowed the socket; something changed all the same.
                    Ok(_) | Err(rustix::io::Errno::NOBUFS) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        warn!("stopped watching the netfilter ruleset: {e}");
                        return;
                    }
                }
                match tx.try_send(()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                }
            }
        })?;
    Ok(rx)
}

/// Keeps the declared forwards and allows applied: once at start, then after every burst of
/// ruleset changes, every write of the forwards' state (the qemu hook's), and every [`LEASE_POLL`]
/// while a domain forward waits for a lease. Runs until the watch ends; the daemon spawns it next to
/// its binding reconcile.
pub async fn run(fw: Firewalld, state: StateDir) {
    let (tx, mut changes) = match ruleset_changes() {
        Ok(rx) => {
            let (tx, merged) = mpsc::channel(1);
            forward_into(rx, tx.clone());
            (tx, merged)
        }
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); forwards are re-applied only by the CLI and the hook");
            return;
        }
    };
    let store = state.path().join(super::STORE_DIR);
    let mut watching = false;
    let mut first = true;
    loop {
        // The store may appear later (the first `forward add` or hook run creates it): until then
        // the state dir is watched for its creation, and the watch is set up again once it exists.
        if first || (!watching && store.is_dir()) {
            first = false;
            watching = match watch_dirs(state.path(), &store, tx.clone()) {
                Ok(all) => all,
                Err(e) => {
                    warn!("cannot watch {} ({e}); a domain's start reaches its forwards through the hook only", store.display());
                    true
                }
            };
        }
        let mut waiting = false;
        match super::reconcile_checked(&fw, &state).await {
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
        if waiting {
            tokio::select! {
                got = changes.recv() => if got.is_none() { return },
                () = tokio::time::sleep(LEASE_POLL) => {}
            }
        } else if changes.recv().await.is_none() {
            return;
        }
    }
}

/// Passes `rx`'s wake-ups on to `tx` (so several sources share one coalescing channel).
fn forward_into(mut rx: mpsc::Receiver<()>, tx: mpsc::Sender<()>) {
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            match tx.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    });
}
