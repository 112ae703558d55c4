//! The daemon's watch over the localnet guard ([`crate::host::LOCALNET_GUARD`]), on its own.
//!
//! `nft flush ruleset` (what Debian's `nftables.service` runs on start and stop) takes the guard's
//! table away while `route_localnet` stays on, and then guests reach the host's loopback-only
//! services. The forwards' check cannot be relied on to put it back: it runs only while firewalld
//! runs, waits behind firewalld's answers, and applies the guard only inside a whole plan. So the
//! daemon checks the guard by itself after every burst of ruleset changes, without firewalld:
//! wherever `route_localnet` is on and the guard is missing, the guard goes back first; if it
//! cannot (nft missing, failing or hung), the setting is turned off. Both through the executor.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::change::executor::Live;
use crate::change::{Executor, Plan, Step};
use crate::firewalld::Firewalld;

/// How long one nft run of the guard (listing or transaction) may take before the daemon gives up
/// on it and turns `route_localnet` off instead.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the guard's check decides from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuardFacts {
    /// The entries of `/proc/sys/net/ipv4/conf` with `route_localnet` on
    /// ([`crate::host::route_localnet_on`]).
    pub on: Vec<String>,
    /// Whether the whole guard is in place; `None` when nft could not tell.
    pub guard: Option<bool>,
}

/// The steps that keep guests off the host's loopback: none while no interface has
/// `route_localnet` on or the guard is in place; the guard when it is missing; the setting off
/// everywhere ([`fallback`]) when nft cannot even say.
pub fn plan(f: &GuardFacts) -> Plan {
    match f.guard {
        _ if f.on.is_empty() => Plan::default(),
        Some(true) => Plan::default(),
        Some(false) => Plan {
            steps: vec![Step::LocalnetGuard { present: true }],
            warnings: Vec::new(),
        },
        None => fallback(f),
    }
}

/// `route_localnet` off wherever it is on: what is left when the guard cannot be put in place.
pub fn fallback(f: &GuardFacts) -> Plan {
    Plan {
        steps: f
            .on
            .iter()
            .map(|name| Step::Sysctl {
                key: crate::forward::plan::route_localnet_key(name),
                value: "0".into(),
                previous: "1".into(),
            })
            .collect(),
        warnings: Vec::new(),
    }
}

/// Reads the facts: `/proc/sys` first, nft only when some interface has the setting on.
async fn facts() -> GuardFacts {
    let on = crate::host::route_localnet_on();
    if on.is_empty() {
        return GuardFacts { on, guard: None };
    }
    let listing = tokio::task::spawn_blocking(crate::host::localnet_guard_present);
    let guard = tokio::time::timeout(NFT_TIMEOUT, listing)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    GuardFacts { on, guard }
}

/// One check: facts, plan, executor; the fallback when the guard cannot be put back. Returns
/// whether anything was changed.
pub async fn check(fw: &Firewalld) -> bool {
    let facts = facts().await;
    let wanted = plan(&facts);
    if wanted.is_empty() {
        return false;
    }
    let live = Live::new(fw, None);
    let exec = Executor::new(&live);
    if wanted.steps == [Step::LocalnetGuard { present: true }] {
        match tokio::time::timeout(NFT_TIMEOUT, exec.run(&wanted)).await {
            Ok(Ok(_)) => {
                info!(
                    "localnet guard: put back (route_localnet is on for {})",
                    facts.on.join(", ")
                );
                return true;
            }
            Ok(Err(e)) => error!("localnet guard: {e}; turning route_localnet off instead"),
            Err(_) => error!(
                "localnet guard: nft did not answer within {NFT_TIMEOUT:?}; turning route_localnet off instead"
            ),
        }
    } else {
        error!("localnet guard: nft cannot be run; turning route_localnet off instead");
    }
    // Independent steps: one interface that cannot be changed must not turn the others back on.
    let mut changed = false;
    for (step, result) in exec.apply_each(&fallback(&facts).steps, 1).await {
        match result {
            Ok(()) => {
                changed = true;
                warn!("localnet guard: did {step}; loopback forwards through it stop working until the guard can be restored")
            }
            Err(e) => error!("localnet guard: could not {step}: {e}"),
        }
    }
    changed
}

/// Checks once at start, then after every burst of ruleset changes, until the netlink watch ends.
pub async fn run(fw: Firewalld) {
    let mut changes = match super::triggers::ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); the localnet guard is checked at start only");
            check(&fw).await;
            return;
        }
    };
    loop {
        check(&fw).await;
        if changes.recv().await.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(on: &[&str], guard: Option<bool>) -> GuardFacts {
        GuardFacts {
            on: on.iter().map(|s| s.to_string()).collect(),
            guard,
        }
    }

    fn off(name: &str) -> Step {
        Step::Sysctl {
            key: format!("net/ipv4/conf/{name}/route_localnet"),
            value: "0".into(),
            previous: "1".into(),
        }
    }

    #[test]
    fn the_guard_goes_back_wherever_route_localnet_is_on() {
        for (on, guard, want) in [
            // Nothing on: nothing to guard, whatever nft says.
            (&[][..], Some(false), vec![]),
            (&[], None, vec![]),
            (&["virbr1"], Some(true), vec![]),
            (
                &["virbr1"],
                Some(false),
                vec![Step::LocalnetGuard { present: true }],
            ),
            // nft cannot tell: the setting goes off, everywhere it is on (`all` too: the kernel
            // ORs it with each interface's own).
            (&["all", "virbr1"], None, vec![off("all"), off("virbr1")]),
        ] {
            assert_eq!(plan(&facts(on, guard)).steps, want, "{on:?} {guard:?}");
        }
    }

    #[test]
    fn the_fallback_turns_the_setting_off() {
        assert_eq!(
            fallback(&facts(&["virbr1", "virbr2"], Some(false))).steps,
            [off("virbr1"), off("virbr2")]
        );
    }
}
