//! The daemon's trigger for forwards: every change of the netfilter ruleset.
//!
//! libvirt rebuilds its rules on its own schedule — after firewalld's `Reloaded`, when firewalld gets
//! a new bus owner, when a network starts, when libvirtd starts — and it puts its jumps back at the
//! top of `FORWARD`. Reacting to firewalld's signal alone would race libvirt's reaction to the same
//! signal. Instead the daemon listens to nf_tables' own change notifications (netlink group
//! `NFNLGRP_NFTABLES`, which also carries iptables-nft's changes) and re-checks after each burst:
//! whatever acts last, virtzone's check comes after it. Its own changes cause one more check, which
//! finds everything in place. Events arriving during a check coalesce into one more check.

use std::io;

use rustix::net::netlink::{SocketAddrNetlink, NETFILTER};
use rustix::net::{AddressFamily, RecvFlags, SocketType};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::firewalld::Firewalld;
use crate::state::StateDir;

/// `NFNLGRP_NFTABLES` from `linux/netfilter/nfnetlink.h`.
const NFNLGRP_NFTABLES: u32 = 7;

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
/// ruleset changes. Runs until the watch ends; the daemon spawns it next to its binding reconcile.
pub async fn run(fw: Firewalld, state: StateDir) {
    let mut changes = match ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); forwards are re-applied only by the CLI and the hook");
            return;
        }
    };
    loop {
        match super::reconcile(&fw, &state).await {
            Ok(0) => {}
            Ok(n) => info!("forwards: re-applied {n} change(s)"),
            // firewalld going away in the middle of a check is no fault: its return is an event.
            Err(e) if !fw.is_running().await.unwrap_or(false) => {
                info!("forwards: firewalld went away during a check ({e}); waiting for it")
            }
            Err(e) => warn!("forwards: {e}"),
        }
        if changes.recv().await.is_none() {
            return;
        }
    }
}
