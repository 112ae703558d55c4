//! The seam every change to firewalld goes through: a [`Plan`] of ordered [`Step`]s, made by a pure
//! planner from a [`Snapshot`](snapshot::Snapshot), applied by the
//! [`executor`] (the only code that calls firewalld's mutating methods).
//!
//! Planners refuse with a typed [`Refusal`] and warn with typed [`Warning`]s: each carries a stable
//! reason name (for JSON and scripts) and the one sentence people read.

pub mod converge;
pub mod executor;
pub mod local_seam;
pub mod mutations;
pub mod reads;
pub mod snapshot;
pub mod step;

pub use executor::{ExecError, Executor};
pub use mutations::Mutations;
pub use reads::Reads;
pub use step::{NftRule, Plan, Reason, Refusal, Step, Warning, WarningReason};
