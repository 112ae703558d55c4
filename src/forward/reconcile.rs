//! Converging firewalld (and iptables, nftables) to the declared forwards and allows: the one path
//! every change of forwards takes (`apply_and_record` for the commands, [`reconcile`] and
//! [`reconcile_checked`] for the hooks and the daemon), domain forwards resolved on the way.

use super::domain::{self, Status, DOMAINS_FILE};
use super::error::{refused, ForwardError};
use super::model::{Declared, DomainForward, Forward};
use super::network::Networks;
use super::runner::{Forwards, Memo};
use super::store::{declared_in, domains_in, has_work, networks_in, store};
use super::triggers::Triggers;
use crate::change::converge::{converge_loaded, Seam};
use crate::change::reads::Reads;
use crate::change::{Executor, Plan, Reason, Step};
use crate::firewalld::Firewalld;
use crate::state::StateDir;

/// Resolves the domain forwards, then converges firewalld and iptables to the result through the
/// one runner (removing `gone`'s and `removed`'s entries and those of domain forwards no longer
/// resolved), and records what was applied for them. With `before` (the declaration on disk),
/// `declared` is recorded too, and should that fail firewalld is brought back to `before`
/// ([`Forwards::recording`]). Every change of forwards goes through here, so a domain forward is
/// never dropped by a plan made without it. The caller holds the store's lock.
#[allow(clippy::too_many_arguments)]
pub(super) async fn converge_all<S: Seam>(
    seam: &S,
    state: &StateDir,
    declared: &Declared,
    gone: &[Forward],
    removed: &[DomainForward],
    before: Option<&Declared>,
    networks: &Networks,
    memo: &mut Memo,
) -> Result<(usize, domain::Resolution), ForwardError> {
    let mut domains = domains_in(state)?;
    let seen = domain::observe(&domain::lease_dir()?, declared, &domains, networks);
    let res = domain::effective(declared, removed, &domains, networks, &seen);
    let mut all_gone = gone.to_vec();
    all_gone.extend(res.gone.iter().cloned());
    let changed = domains.applied != res.applied || domains.uuids != res.uuids;
    domains.applied = res.applied.clone();
    domains.uuids = res.uuids.clone();
    let forwards = Forwards::new(res.declared.clone(), all_gone, networks.clone(), memo);
    let (forwards, on_disk) = match before {
        Some(before) => (
            forwards.recording(declared.clone(), before, domains.clone(), seen),
            before.clone(),
        ),
        None => (forwards, declared.clone()),
    };
    let steps = converge_loaded(seam, state, &forwards, on_disk)
        .await?
        .steps;
    if changed {
        // Not fatal: firewalld already holds the change, and the declaration's record (or its
        // undo) decides the operation; a stale `applied` only costs a later removal.
        if let Err(e) = state.write(DOMAINS_FILE, &domains) {
            tracing::warn!("forwards: cannot record the applied domain forwards: {e}");
        }
    }
    Ok((steps, res))
}

/// Applies `declared` (taking `gone`'s and `removed`'s entries out, domain forwards resolved) and
/// records it. When the record cannot be written, firewalld is brought back to `before`, the
/// declaration still on disk: an operation completes or leaves nothing behind, and firewalld never
/// holds a forward the state file does not know (the daemon could never remove it).
pub(super) async fn apply_and_record<S: Seam + AfterRecord>(
    seam: &S,
    state: &StateDir,
    declared: &Declared,
    gone: &[Forward],
    removed: &[DomainForward],
    before: &Declared,
    networks: &Networks,
) -> Result<(usize, domain::Resolution), ForwardError> {
    let mut memo = Memo::default();
    let converged = converge_all(
        seam,
        state,
        declared,
        gone,
        removed,
        Some(before),
        networks,
        &mut memo,
    );
    let done = converged.await?;
    seam.after_record(state).await;
    Ok(done)
}

/// What follows a recorded change of forwards, where it runs: on the live host virtzone's own NAT
/// table, which carries the plain forwards' DNATs (issue #21), is checked against the new record
/// (`nat::check_store`); the unit tests' fakes have no such table.
#[allow(async_fn_in_trait)]
pub trait AfterRecord {
    /// Runs once `store` (the forwards' store) holds the new record.
    async fn after_record(&self, store: &StateDir);
}

impl AfterRecord for Firewalld {
    async fn after_record(&self, store: &StateDir) {
        super::nat::check_store(self, store).await;
    }
}

impl<T: AfterRecord> AfterRecord for &T {
    async fn after_record(&self, store: &StateDir) {
        (**self).after_record(store).await;
    }
}

/// Connects to firewalld, failing clearly when it does not run.
pub(super) async fn connect() -> Result<Firewalld, ForwardError> {
    let fw = Firewalld::connect().await?;
    if !fw.is_running().await? {
        return Err(refused(
            Reason::FirewalldNotRunning,
            "firewalld is not running; start it (systemctl start firewalld) and try again",
        ));
    }
    Ok(fw)
}

/// Puts back whatever of `declared` firewalld or libvirt lost: a repeated `forward add` records
/// nothing, but leaves the forward working.
pub(super) async fn put_back<S: Seam>(
    seam: &S,
    state: &StateDir,
    declared: &Declared,
    networks: &Networks,
) -> Result<(), ForwardError> {
    let mut memo = Memo::default();
    let converged = converge_all(seam, state, declared, &[], &[], None, networks, &mut memo);
    converged.await?;
    Ok(())
}

/// Re-applies everything declared (the daemon after ruleset changes, the hook after a network
/// starts or stops). Does nothing, and asks nothing of firewalld, when nothing is declared.
pub async fn reconcile<S: Seam>(seam: &S, state: &StateDir) -> Result<usize, ForwardError> {
    let mut memo = Memo::default();
    Ok(reconcile_checked(seam, state, None, &mut memo).await?.steps)
}

/// What one re-application did and found.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    /// Steps carried out.
    pub steps: usize,
    /// Whether a running domain's forward waits for its guest's lease (the daemon polls then).
    pub waiting: bool,
    /// Domain forwards that cannot be resolved, one sentence each (logged by the caller).
    pub problems: Vec<String>,
}

/// [`reconcile`], also telling whether a domain forward waits and which cannot be resolved.
/// `memo`: the caller's record of its earlier checks ([`Memo`]); with a ruleset basis in
/// it (the check after the daemon's own ruleset-only changes) firewalld is not asked again whether
/// it runs nor waited for: the check reads only the ruleset side.
pub async fn reconcile_checked<S: Seam>(
    seam: &S,
    state: &StateDir,
    daemon: Option<Triggers<'_>>,
    memo: &mut Memo,
) -> Result<Reconciled, ForwardError> {
    // A first look without the lock, which would create the state directory: most hosts declare
    // nothing, and then nothing is touched (nor waited for, nor asked of firewalld).
    if !has_work(state)? {
        return Ok(Reconciled::default());
    }
    // The daemon's check waits for its binding reconcile, before taking the store's lock (which
    // `forward add` needs meanwhile).
    // A firewalld reload or restart since the last gather (a binding reconcile asked for) means a
    // full gather.
    let light = memo.has_ruleset_basis()
        && daemon
            .as_ref()
            .is_none_or(|d| d.bindings.requested() == memo.reconciles);
    if !light {
        memo.forget_ruleset_basis();
    }
    if let Some(mut daemon) = daemon {
        if !light {
            early_accepts(seam, state, memo).await;
            daemon.bindings.settle(seam.reads()).await;
            memo.reconciles = daemon.bindings.requested();
        }
        daemon.gathering();
    }
    let state = &store(state)?;
    let _lock = state.lock().await?;
    let declared = declared_in(state)?;
    if !light && !seam.reads().is_running().await? {
        return Ok(Reconciled::default());
    }
    let networks = networks_in(state)?;
    let converged = converge_all(seam, state, &declared, &[], &[], None, &networks, memo);
    let (steps, res) = converged.await?;
    Ok(Reconciled {
        steps,
        waiting: res.waiting(),
        problems: res
            .statuses
            .iter()
            .filter_map(|(id, s)| match s {
                Status::Unresolvable(m) | Status::Ambiguous(m) => {
                    Some(format!("forward {id}: {m}"))
                }
                _ => None,
            })
            .collect(),
    })
}

/// Before the daemon's check after a reload or restart waits for the binding reconcile: puts back
/// the accepts in libvirt's nftables chain that libvirt's rebuild dropped, planned from the last
/// full gather with libvirt's chain read again. They need nothing of firewalld (nft runs on the
/// host, and the chain is libvirt's), so a forward no longer waits behind the re-binding of every
/// bridge (issue #21: 0.8–0.9 s with 20 networks). Only when the declaration and networks are
/// those of that gather; only insertions; every other step waits for the full check, which
/// follows at once. Asks firewalld nothing; errors are logged, the full check decides.
async fn early_accepts<S: Seam>(seam: &S, state: &StateDir, memo: &Memo) {
    let Some((basis, target, on_disk)) = &memo.last_full else {
        return;
    };
    if basis.libvirt_nft.is_none() && basis.libvirt_nft6.is_none() {
        return; // libvirt's iptables backend: its accepts go through firewalld.
    }
    let Ok(store) = store(state) else {
        return;
    };
    let Ok(_lock) = store.lock().await else {
        return;
    };
    let same = declared_in(&store).is_ok_and(|d| d == *on_disk)
        && networks_in(&store).is_ok_and(|n| n == basis.networks);
    if !same {
        return;
    }
    let (libvirt_nft, libvirt_nft6) = tokio::join!(
        super::apply::libvirt_nft(seam.reads(), super::nft::FAMILY),
        super::apply::libvirt_nft(seam.reads(), super::nft::FAMILY6),
    );
    let facts = super::plan::Facts {
        libvirt_nft,
        libvirt_nft6,
        ..basis.clone()
    };
    let Ok(plan) = super::plan::plan(target, &[], &facts) else {
        return;
    };
    let steps: Vec<Step> = plan
        .steps
        .into_iter()
        .filter(|s| matches!(s, Step::NftInsertRules { .. }))
        .collect();
    if steps.is_empty() {
        return;
    }
    let mutations = seam.mutations(None);
    let plan = Plan {
        steps,
        warnings: Vec::new(),
    };
    match Executor::new(&mutations).run(&plan).await {
        Ok(done) => tracing::debug!(
            "forwards: {} accept(s) put back in libvirt's chain before the binding reconcile",
            done.steps.len()
        ),
        Err(e) => tracing::warn!("forwards: cannot put libvirt's accepts back early: {e}"),
    }
}

#[cfg(test)]
mod tests;
