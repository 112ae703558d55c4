//! What wakes the daemon's forward check, and what it waits for: nf_tables' change notifications
//! ([`ruleset_changes`], also read by the guard's and the NAT table's keepers) and the daemon's
//! binding reconciles ([`BindingReconciles`]). A leaf: the watch loop ([`super::watch`]) and the
//! check ([`super::reconcile::reconcile_checked`]) both use it, neither through the other.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::netlink::{SocketAddrNetlink, NETFILTER};
use rustix::net::{AddressFamily, RecvFlags, SocketType};
use tokio::sync::mpsc;
use tracing::warn;

/// `NFNLGRP_NFTABLES` from `linux/netfilter/nfnetlink.h`.
const NFNLGRP_NFTABLES: u32 = 7;

/// The ruleset watch: yields once per burst of ruleset changes (capacity one: bursts coalesce),
/// and ends when the socket fails.
pub struct RulesetChanges {
    rx: mpsc::Receiver<()>,
    /// The netlink socket the reader thread reads (`None` in unit tests).
    socket: Option<Arc<OwnedFd>>,
    /// Whether the reader thread holds a notification it has not passed on yet.
    in_hand: Arc<AtomicBool>,
}

impl RulesetChanges {
    /// The next burst; `None` once the watch ended.
    pub async fn recv(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// Forgets the changes announced so far: those the reader passed on, and those still queued in
    /// the socket (read here without waiting, and dropped).
    fn forget_so_far(&mut self) {
        if let Some(socket) = &self.socket {
            let mut buf = vec![0u8; 1 << 16];
            // Until EAGAIN (nothing queued) or another error.
            while let Ok(_) | Err(rustix::io::Errno::NOBUFS | rustix::io::Errno::INTR) =
                rustix::net::recv(&**socket, &mut buf[..], RecvFlags::DONTWAIT)
            {}
        }
        // In the middle of a large burst the reader holds one notification most of the time: let
        // it pass that on (a bounded wait: its next step is a channel send).
        for _ in 0..1000 {
            if !self.in_hand.load(Ordering::SeqCst) {
                break;
            }
            std::thread::yield_now();
        }
        while self.rx.try_recv().is_ok() {}
    }
}

/// Starts the ruleset watch: nf_tables' change notifications (netlink group `NFNLGRP_NFTABLES`),
/// read by one thread for the daemon's life.
pub fn ruleset_changes() -> io::Result<RulesetChanges> {
    let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, Some(NETFILTER))?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 1 << (NFNLGRP_NFTABLES - 1)))?;
    let fd = Arc::new(fd);
    let socket = fd.clone();
    let in_hand = Arc::new(AtomicBool::new(false));
    let holding = in_hand.clone();
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let got = rustix::net::recv(&*fd, &mut buf[..], RecvFlags::empty());
                holding.store(true, Ordering::SeqCst);
                match got {
                    // ENOBUFS: the burst overflowed the socket; something changed all the same.
                    Ok(_) | Err(rustix::io::Errno::NOBUFS) => {}
                    Err(rustix::io::Errno::INTR) => {
                        holding.store(false, Ordering::SeqCst);
                        continue;
                    }
                    Err(e) => {
                        warn!("stopped watching the netfilter ruleset: {e}");
                        return;
                    }
                }
                let sent = tx.try_send(());
                holding.store(false, Ordering::SeqCst);
                match sent {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                }
            }
        })?;
    Ok(RulesetChanges {
        rx,
        socket: Some(socket),
        in_hand,
    })
}

/// What the daemon's forward check waits for and looks past: the binding reconciles, and the ruleset
/// events that arrived before its gather (which that gather sees anyway).
pub struct Triggers<'a> {
    /// The daemon's binding reconciles.
    pub bindings: &'a mut BindingReconciles,
    /// The ruleset watch's events ([`ruleset_changes`]).
    pub changes: &'a mut RulesetChanges,
}

impl Triggers<'_> {
    /// Forgets the ruleset events so far: called right before a gather, which sees what they
    /// announced (the binding reconcile's own changes, waited for in `settle`), so they need no
    /// check of their own. Events after this point still trigger one.
    pub(super) fn gathering(&mut self) {
        self.changes.forget_so_far();
    }
}

/// How long a forward check waits for the daemon's binding reconcile before it goes ahead anyway.
const BINDINGS_WAIT: Duration = Duration::from_secs(15);

/// The daemon's binding reconciles as the forward watch sees them: how many were asked for (one per
/// firewalld reload or new owner) and how many have finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciles {
    /// Reconciles asked for.
    pub requested: u64,
    /// The `requested` count the last finished reconcile started from.
    pub done: u64,
    /// New owners of firewalld's bus name seen (a start or restart, never a plain reload): what
    /// can change firewalld's version.
    pub owners: u64,
}

impl Reconciles {
    fn settled(&self) -> bool {
        self.done >= self.requested
    }
}

/// The forward watch's view of the daemon's binding reconciles (see `BindingReconciles::settle`).
pub struct BindingReconciles(tokio::sync::watch::Receiver<Reconciles>);

impl BindingReconciles {
    /// Follows the reconciles published on `rx`.
    pub fn following(rx: tokio::sync::watch::Receiver<Reconciles>) -> Self {
        BindingReconciles(rx)
    }

    /// Binding reconciles asked for so far (one per firewalld reload or new owner).
    pub fn requested(&self) -> u64 {
        self.0.borrow().requested
    }

    /// New owners of firewalld's bus name seen so far.
    pub fn owners(&self) -> u64 {
        self.0.borrow().owners
    }

    /// One reaction to a firewalld reload or restart, not three: a forward check that started now,
    /// while firewalld reloads, would read a firewall without the daemon's bindings, act on it, and
    /// be followed by checks for the daemon's re-binding and for its own changes. So it first waits
    /// for a pending binding reconcile; then makes one call to firewalld, which is answered only
    /// after a reload in progress has ended and its `Reloaded` signal was sent on the same
    /// connection; lets that signal's handler run; and waits again if it asked for a reconcile.
    pub(super) async fn settle(&mut self, fw: &impl crate::change::reads::Reads) {
        let rx = &mut self.0;
        let _ = tokio::time::timeout(BINDINGS_WAIT, rx.wait_for(Reconciles::settled)).await;
        if fw.version_text().await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(BINDINGS_WAIT, rx.wait_for(Reconciles::settled)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gather_looks_past_the_events_before_it_and_not_after() {
        let (tx, rx) = mpsc::channel(1);
        let mut changes = RulesetChanges {
            rx,
            socket: None,
            in_hand: Arc::new(AtomicBool::new(false)),
        };
        let reconciles = tokio::sync::watch::Sender::new(Reconciles::default());
        let mut bindings = BindingReconciles::following(reconciles.subscribe());
        reconciles.send_modify(|r| r.requested += 1);
        assert_eq!(bindings.requested(), 1);
        // The binding reconcile's changes, announced before the gather: no check of their own.
        tx.try_send(()).unwrap();
        Triggers {
            bindings: &mut bindings,
            changes: &mut changes,
        }
        .gathering();
        assert!(changes.rx.try_recv().is_err());
        // A change during or after the gather still triggers the next check.
        tx.try_send(()).unwrap();
        assert!(changes.rx.try_recv().is_ok());
    }
}
