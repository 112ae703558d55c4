//! Forwards and allows as a [`Domain`] of the one convergence runner ([`crate::change::converge`]):
//! the record is the declaration (`forwards.json`), the facts are [`apply::facts`]' gather (or, for
//! the daemon's check after its own ruleset-only changes, the ruleset side read again over the last
//! full gather), the planner is [`plan::plan`], and the runner executes, records and re-plans after
//! a reload. What is particular to forwards sits in the hooks: waiting for libvirt's rebuild after a
//! reload ([`Domain::settle`]), keeping a full gather for the next ruleset-only check
//! ([`Domain::executed`]), and undoing by re-planning ([`Domain::undo`]): iptables commands and
//! rules in libvirt's nftables chain have no inverse step, so an operation whose record cannot be
//! written converges back to the old declaration instead.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::apply;
use super::domain::{self, Domains, Observed};
use super::error::ForwardError;
use super::model::{Declared, DomainForward, Forward};
use super::network::Networks;
use super::plan::{self, Facts, LastFullRead};
use super::store::FORWARDS_FILE;
use crate::change::converge::{Decision, Domain};
use crate::change::executor::{Applied, Executor, Mutations};
use crate::change::reads::Reads;
use crate::change::{ExecError, Plan, Step};
use crate::state::StateDir;

/// How many gather → plan → execute rounds one convergence may take: a round ending in a reload is
/// followed by one that plans against the reloaded firewall.
const ROUNDS: usize = 3;

/// How long a kept gather may serve as the basis of a ruleset-only check: its own changes' events
/// arrive within milliseconds; a later event (with iptables-legacy, whose changes nf_tables does
/// not announce, the next one may come much later) gets a full gather.
const BASIS_FRESH: Duration = Duration::from_secs(5);

/// Whether a convergence gathers once more after its changes to see that nothing is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Gather, plan and execute until a plan is empty (commands and the hook, which nothing else
    /// checks after them).
    Regather,
    /// Stop after one executed plan unless it reloaded firewalld: the daemon's ruleset watch sees
    /// the changes and checks again anyway, so a second gather here would only double its calls.
    ByTheWatch,
}

/// How a caller's forward checks run and what one leaves for the next one of the same process:
/// the daemon's forward watch keeps one for its life ([`Memo::by_the_watch`]), a command one per
/// run (`Memo::default()`: [`Verify::Regather`]). It replaces a process-global.
#[derive(Debug)]
pub struct Memo {
    /// Whether a convergence gathers again after its changes.
    verify: Verify,
    /// The uplink zones at the last read of every zone.
    full_read: LastFullRead,
    /// The facts (and the declaration planned with them, and when) of the last full gather, kept
    /// when the changes made after it touched only the ruleset side ([`plan::ruleset_only`]): the
    /// next check, the one those changes' own ruleset events trigger, re-reads only that side
    /// (within [`BASIS_FRESH`]).
    ruleset_basis: Option<(Facts, Declared, Instant)>,
    /// The daemon's binding reconciles asked for when the last full gather started (see
    /// `triggers::BindingReconciles`): one more since means firewalld reloaded or restarted.
    pub(super) reconciles: u64,
    /// The daemon's last full gather (facts, the target planned, the declaration on disk): what
    /// [`early_accepts`](super::reconcile) plans the accepts in libvirt's nftables chain from while
    /// the full check waits for the binding reconcile after a reload or restart.
    pub(super) last_full: Option<(Facts, Declared, Declared)>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            verify: Verify::Regather,
            full_read: LastFullRead::default(),
            ruleset_basis: None,
            reconciles: 0,
            last_full: None,
        }
    }
}

impl Memo {
    /// The daemon's forward watch's: [`Verify::ByTheWatch`].
    pub fn by_the_watch() -> Self {
        Memo {
            verify: Verify::ByTheWatch,
            ..Memo::default()
        }
    }

    /// Whether the next check may re-read the ruleset side only.
    pub fn has_ruleset_basis(&self) -> bool {
        self.ruleset_basis.is_some()
    }

    /// The next check gathers in full (something other than a ruleset change woke it, or firewalld
    /// reloaded or restarted since the last check).
    pub fn forget_ruleset_basis(&mut self) {
        self.ruleset_basis = None;
    }
}

/// One gather: the facts, and whether they were read in full (not over a kept basis).
#[derive(Debug, Clone)]
pub struct Gathered {
    /// What the planner decides from.
    pub facts: Facts,
    /// Read in full ([`apply::facts`]) rather than the ruleset side over a kept basis.
    pub full: bool,
}

/// What an operation that records its declaration undoes when the record cannot be written.
#[derive(Debug, Clone)]
struct Undo {
    /// The declaration still on disk, with the forwards this operation added taken out again.
    before: Declared,
    /// The plain forwards this operation added.
    added: Vec<Forward>,
    /// The domain forwards this operation added.
    added_domain: Vec<DomainForward>,
    /// The domain records as they stand once the operation's domain forwards were applied.
    domains: Domains,
    /// The leases and neighbours the resolution looked at.
    seen: Observed,
}

/// Forwards and allows, converged to one declaration: the [`Domain`] the commands, the hooks and
/// the daemon's check run through `change::converge`.
#[derive(Debug)]
pub struct Forwards<'m> {
    /// What firewalld is brought to: the declaration with every domain forward resolved to a
    /// plain forward (`domain::Resolution::declared`).
    target: Declared,
    /// Plain forwards to take out: those removed, and domain forwards' earlier targets.
    gone: Vec<Forward>,
    /// The declaration to record once applied; `None` for a check that records nothing.
    record: Option<Declared>,
    /// The recorded networks.
    networks: Networks,
    /// The undo of a recording operation (see [`Forwards::recording`]).
    undo: Option<Box<Undo>>,
    /// The caller's record of its checks.
    memo: Mutex<&'m mut Memo>,
}

impl<'m> Forwards<'m> {
    /// A convergence to `target` (resolved), taking `gone` out, that records nothing.
    pub fn new(
        target: Declared,
        gone: Vec<Forward>,
        networks: Networks,
        memo: &'m mut Memo,
    ) -> Self {
        Forwards {
            target,
            gone,
            record: None,
            networks,
            undo: None,
            memo: Mutex::new(memo),
        }
    }

    /// The same convergence recording `declared` (the unresolved declaration it was resolved from)
    /// over `before`, the one on disk. Should the record fail, firewalld is brought back to
    /// `before` with what `declared` added taken out again; `domains` (the records with this
    /// operation's targets as applied) and `seen` resolve `before` for that undo.
    pub fn recording(
        mut self,
        declared: Declared,
        before: &Declared,
        domains: Domains,
        seen: Observed,
    ) -> Self {
        let added: Vec<Forward> = declared
            .forwards
            .iter()
            .filter(|f| !before.forwards.iter().any(|b| b.id == f.id))
            .cloned()
            .collect();
        let added_domain: Vec<DomainForward> = declared
            .domain_forwards
            .iter()
            .filter(|f| !before.domain_forwards.iter().any(|b| b.id == f.id))
            .cloned()
            .collect();
        self.record = Some(declared);
        self.undo = Some(Box::new(Undo {
            before: before.clone(),
            added,
            added_domain,
            domains,
            seen,
        }));
        self
    }

    /// The caller's memo (each use a short one: never held across a read).
    fn memo(&self) -> MutexGuard<'_, &'m mut Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `plan` reloads firewalld.
    fn reloads(plan: &Plan) -> bool {
        plan.steps.contains(&Step::Reload)
    }

    /// Gathers, plans and executes through `executor` until nothing is left (at most [`ROUNDS`]),
    /// recording nothing: the undo's convergence, inside a runner that already holds the lock.
    async fn converge_unrecorded<M: Mutations>(
        &self,
        reads: &impl Reads,
        executor: &Executor<'_, M>,
    ) -> Result<usize, ForwardError> {
        let mut steps = 0;
        for _ in 0..ROUNDS {
            let gathered = self.gather(reads, &self.target).await?;
            let decision = self.plan(&gathered, &self.target)?;
            if decision.plan.is_empty() {
                break;
            }
            steps += executor.run(&decision.plan).await?.steps.len();
            self.settle(reads, &gathered, &decision.plan).await;
        }
        Ok(steps)
    }
}

impl Domain for Forwards<'_> {
    type Record = Declared;
    type Facts = Gathered;
    type Outcome = ();
    type Error = ForwardError;

    fn load(&self, state: &StateDir) -> Result<Declared, ForwardError> {
        super::store::declared_in(state)
    }

    /// The full gather, or — first round only, for the same declaration and networks, while fresh —
    /// the ruleset side read again over the basis the last check kept.
    async fn gather(
        &self,
        reads: &impl Reads,
        record: &Declared,
    ) -> Result<Gathered, ForwardError> {
        let basis = self.memo().ruleset_basis.take().filter(|(f, d, at)| {
            self.gone.is_empty()
                && *d == self.target
                && f.networks == self.networks
                && at.elapsed() < BASIS_FRESH
        });
        if let Some((basis, _, _)) = basis {
            let facts = apply::refresh_ruleset(reads, basis, &self.target).await;
            return Ok(Gathered { facts, full: false });
        }
        // Taken out for the read and put back: no borrow is held across it.
        let mut last = std::mem::take(&mut self.memo().full_read);
        let removing = !self.gone.is_empty();
        let read = apply::facts(
            reads,
            &self.target,
            self.networks.clone(),
            removing,
            &mut last,
        )
        .await;
        let mut memo = self.memo();
        memo.full_read = last;
        let facts = read?;
        if memo.verify == Verify::ByTheWatch {
            memo.last_full = Some((facts.clone(), self.target.clone(), record.clone()));
        }
        Ok(Gathered { facts, full: true })
    }

    fn plan(
        &self,
        gathered: &Gathered,
        record: &Declared,
    ) -> Result<Decision<Declared, ()>, ForwardError> {
        let plan =
            plan::plan(&self.target, &self.gone, &gathered.facts).map_err(ForwardError::Refused)?;
        Ok(Decision {
            plan,
            record: self.record.clone().filter(|r| r != record),
            outcome: (),
        })
    }

    fn store(&self, state: &StateDir, record: &Declared) -> Result<(), ForwardError> {
        Ok(state.write(FORWARDS_FILE, record)?)
    }

    fn failed(&self, error: ExecError) -> ForwardError {
        error.into()
    }

    fn rounds(&self) -> usize {
        ROUNDS
    }

    /// Commands and hooks verify (gather again until a plan is empty); the daemon's watch does
    /// only after a reload, its ruleset watch sees the other changes.
    fn again(&self, plan: &Plan) -> bool {
        self.memo().verify == Verify::Regather || Self::reloads(plan)
    }

    /// After a reload: libvirt's rebuild, so the accepts are planned after it rather than wiped or
    /// buried behind its reject (`apply::wait_for_libvirt`; `facts` holds libvirt's nftables
    /// chain as it was before the reload).
    async fn settle(&self, reads: &impl Reads, gathered: &Gathered, plan: &Plan) {
        if Self::reloads(plan) && !super::accept::accepts(&self.target, &self.networks).is_empty() {
            apply::wait_for_libvirt(reads, gathered.facts.libvirt_nft.clone()).await;
        }
    }

    /// Logs the plan's warnings; for the daemon's watch, keeps a full gather followed by
    /// ruleset-only changes as the basis of the check those changes' events trigger.
    fn executed(&self, gathered: &Gathered, plan: &Plan) {
        tracing::debug!(
            "forwards: {} check, {} step(s) planned",
            if gathered.full {
                "full"
            } else {
                "ruleset-only"
            },
            plan.steps.len()
        );
        for w in &plan.warnings {
            tracing::warn!("{}", w.message);
        }
        let mut memo = self.memo();
        if memo.verify == Verify::ByTheWatch
            && gathered.full
            && !plan.is_empty()
            && !Self::reloads(plan)
            && plan::ruleset_only(&plan.steps)
        {
            memo.ruleset_basis =
                Some((gathered.facts.clone(), self.target.clone(), Instant::now()));
        }
    }

    /// Re-plans back to the declaration on disk (the executor's inverses would leave iptables
    /// commands and nftables rules behind): what this operation added is taken out again, what it
    /// removed put back.
    async fn undo<M: Mutations>(
        &self,
        reads: &impl Reads,
        executor: &Executor<'_, M>,
        _applied: Applied,
        _before: &Declared,
        error: ForwardError,
    ) -> ForwardError {
        let Some(undo) = &self.undo else {
            return error;
        };
        let res = domain::effective(
            &undo.before,
            &undo.added_domain,
            &undo.domains,
            &self.networks,
            &undo.seen,
        );
        let mut gone = undo.added.clone();
        gone.extend(res.gone);
        let mut memo = Memo::default();
        let back = Forwards::new(res.declared, gone, self.networks.clone(), &mut memo);
        match back.converge_unrecorded(reads, executor).await {
            Ok(_) => ForwardError::Failed(format!("{error}; the change to firewalld was undone")),
            Err(undo) => ForwardError::Failed(format!(
                "{error}; undoing the change to firewalld failed too ({undo}): run the command again \
                 once the state directory is writable"
            )),
        }
    }
}
