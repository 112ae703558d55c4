//! The one convergence runner: every change virtzone makes on behalf of a command, the hook or the
//! daemon runs the same loop — lock, read the record, gather through [`Reads`], plan (pure), execute
//! through the [`Executor`], write the record (undoing the executed steps when that fails), and
//! plan again, a bounded number of rounds, after a plan that reloaded firewalld.
//!
//! What differs between bindings, the shipped zones, forwards and `doctor --fix` is a [`Domain`]: its
//! record, what it gathers and its pure planner. Where it runs is a [`Seam`]: the live firewalld
//! (its connection for the reads, [`Live`] for the changes), the firewalld-less host
//! ([`Local`](super::executor::local::Local)), or the recording fakes of the unit tests — so the
//! orchestration itself is tested without root or a bus.

use crate::change::executor::{Applied, ExecError, Executor, Live};
use crate::change::mutations::Mutations;
use crate::change::reads::Reads;
use crate::change::step::{Plan, Step};
use crate::firewalld::{Capabilities, Firewalld};
use crate::state::{Lock, StateDir, StateError};

/// Where a convergence reads and changes things: one connection's reads and the mutations over it.
pub trait Seam {
    /// The read side.
    type Reads: Reads;
    /// The write side, for a firewalld with the given capabilities.
    type Mutations<'a>: Mutations
    where
        Self: 'a;
    /// The reads.
    fn reads(&self) -> &Self::Reads;
    /// The mutations for a firewalld with `caps` (`None`: unknown, assume a current one).
    fn mutations(&self, caps: Option<Capabilities>) -> Self::Mutations<'_>;
}

impl Seam for Firewalld {
    type Reads = Firewalld;
    type Mutations<'a> = Live<'a>;
    fn reads(&self) -> &Firewalld {
        self
    }
    fn mutations(&self, caps: Option<Capabilities>) -> Live<'_> {
        Live::new(self, caps)
    }
}

/// A borrowed seam is a seam: a unit test keeps its fakes to look at what was read and changed.
impl<T: Seam> Seam for &T {
    type Reads = T::Reads;
    type Mutations<'a>
        = T::Mutations<'a>
    where
        Self: 'a;
    fn reads(&self) -> &T::Reads {
        (**self).reads()
    }
    fn mutations(&self, caps: Option<Capabilities>) -> T::Mutations<'_> {
        (**self).mutations(caps)
    }
}

/// What a domain's planner decided from one gather.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<R, O> {
    /// The steps, in order; empty when nothing is to be done.
    pub plan: Plan,
    /// The record to write once the steps are applied; `None` keeps the record as it is.
    pub record: Option<R>,
    /// What the caller is told (a message, the items installed …).
    pub outcome: O,
}

/// One kind of state virtzone converges: its record, its gather and its pure planner.
// Implemented inside the crate only; callers are generic, not `dyn`.
#[allow(async_fn_in_trait)]
pub trait Domain {
    /// What virtzone records of it in the state directory (bindings, installed objects …).
    type Record;
    /// What its planner decides from.
    type Facts;
    /// What a convergence answers.
    type Outcome;
    /// Its errors: a failed read, a refusal, a failed change, the state directory.
    type Error: From<StateError>;

    /// Takes the lock that guards the record (default: the state directory's).
    async fn lock(&self, state: &StateDir) -> Result<Lock, Self::Error> {
        Ok(state.lock().await?)
    }
    /// Reads the record (under the lock).
    fn load(&self, state: &StateDir) -> Result<Self::Record, Self::Error>;
    /// What the domain refuses from its record alone, before anything is read: local input first.
    fn check_record(&self, _record: &Self::Record) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Gathers what the planner needs, through the read side only.
    async fn gather(
        &self,
        reads: &impl Reads,
        record: &Self::Record,
    ) -> Result<Self::Facts, Self::Error>;
    /// Decides. Pure: facts and record in, steps (or a refusal) out.
    fn plan(
        &self,
        facts: &Self::Facts,
        record: &Self::Record,
    ) -> Result<Decision<Self::Record, Self::Outcome>, Self::Error>;
    /// Writes the record.
    fn store(&self, state: &StateDir, record: &Self::Record) -> Result<(), Self::Error>;
    /// What a failed plan means to this domain's caller (the executor has rolled it back).
    fn failed(&self, error: ExecError) -> Self::Error;
    /// The capabilities the executor needs (how zones are added), from the facts.
    fn capabilities(&self, _facts: &Self::Facts) -> Option<Capabilities> {
        None
    }
    /// How many gather → plan → execute rounds one convergence may take.
    fn rounds(&self) -> usize {
        1
    }
    /// After a round: whether to gather and plan again (default: the plan reloaded firewalld, so the
    /// next plan sees the reloaded firewall).
    fn again(&self, plan: &Plan) -> bool {
        plan.steps.contains(&Step::Reload)
    }
    /// Runs after a round's plan was applied, before the next gather (e.g. waiting for libvirt's
    /// rebuild after a reload).
    async fn settle(&self, _reads: &impl Reads, _facts: &Self::Facts, _plan: &Plan) {}
    /// Runs after each round's plan was applied (an empty one too), before the record is written:
    /// what the domain keeps of the round for later (e.g. a gather the next check can build on).
    fn executed(&self, _facts: &Self::Facts, _plan: &Plan) {}
    /// Undoes a round whose record could not be written (`error`), the record on disk still
    /// `before`, and returns the error the caller gets. Default: the executor's inverses of the
    /// round's steps, newest first, each failure logged. A domain with steps that have no inverse
    /// (iptables commands, nftables rules) re-plans back to `before` instead.
    async fn undo<M: Mutations>(
        &self,
        _reads: &impl Reads,
        executor: &Executor<'_, M>,
        applied: Applied,
        _before: &Self::Record,
        error: Self::Error,
    ) -> Self::Error {
        for failure in executor.undo(applied).await {
            tracing::warn!("after failing to write the record: {failure}");
        }
        error
    }
}

/// What one convergence did.
#[derive(Debug, Clone, PartialEq)]
pub struct Converged<O> {
    /// The first round's outcome (what the request decided; later rounds only finish it).
    pub outcome: O,
    /// The steps applied over all rounds.
    pub steps: usize,
}

/// Converges `domain` over `seam`: lock, load, then rounds of gather → plan → execute → store.
/// A failed plan is rolled back by the executor; a record that cannot be written undoes the round's
/// steps. Either way the error says so and the record stays as it was before that round.
pub async fn converge<S: Seam, D: Domain>(
    seam: &S,
    state: &StateDir,
    domain: &D,
) -> Result<Converged<D::Outcome>, D::Error> {
    let _lock = domain.lock(state).await?;
    let record = domain.load(state)?;
    converge_loaded(seam, state, domain, record).await
}

/// [`converge`] for a caller that already holds the domain's lock and has read its record.
pub async fn converge_loaded<S: Seam, D: Domain>(
    seam: &S,
    state: &StateDir,
    domain: &D,
    mut record: D::Record,
) -> Result<Converged<D::Outcome>, D::Error> {
    domain.check_record(&record)?;
    let rounds = domain.rounds().max(1);
    let mut first: Option<D::Outcome> = None;
    let mut steps = 0;
    let mut round = 1;
    loop {
        let facts = domain.gather(seam.reads(), &record).await?;
        let decision = domain.plan(&facts, &record)?;
        let mutations = seam.mutations(domain.capabilities(&facts));
        let executor = Executor::new(&mutations);
        let applied = executor
            .run(&decision.plan)
            .await
            .map_err(|e| domain.failed(e))?;
        steps += applied.steps.len();
        domain.executed(&facts, &decision.plan);
        if let Some(next) = decision.record {
            if let Err(e) = domain.store(state, &next) {
                // Without the record the change would be unmanaged: undo it.
                let e = domain
                    .undo(seam.reads(), &executor, applied, &record, e)
                    .await;
                return Err(e);
            }
            record = next;
        }
        let again = !decision.plan.is_empty() && domain.again(&decision.plan);
        let outcome = first.take().unwrap_or(decision.outcome);
        if !again || round >= rounds {
            return Ok(Converged { outcome, steps });
        }
        domain.settle(seam.reads(), &facts, &decision.plan).await;
        first = Some(outcome);
        round += 1;
    }
}

/// The recording fakes of both sides as a seam, for unit tests of whole orchestrations.
#[cfg(test)]
pub mod fake {
    use super::Seam;
    use crate::change::executor::fake::Fake;
    use crate::change::reads::fake::Recorded;
    use crate::firewalld::Capabilities;

    /// Runs `f` to completion on a current-thread runtime with timers: a unit test's orchestration.
    pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }

    /// Reads answered from `reads`' fields, changes recorded (and failed on request) by `mutations`.
    #[derive(Debug, Default)]
    pub struct FakeSeam {
        /// The read side.
        pub reads: Recorded,
        /// The write side.
        pub mutations: Fake,
    }

    impl Seam for FakeSeam {
        type Reads = Recorded;
        type Mutations<'a> = Fake;
        fn reads(&self) -> &Recorded {
            &self.reads
        }
        fn mutations(&self, _caps: Option<Capabilities>) -> Fake {
            self.mutations.clone()
        }
    }
}

#[cfg(test)]
mod tests;
