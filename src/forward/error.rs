//! Why a forward or allow operation did not complete: the error every part of the forward module
//! returns, a leaf the others import (so none of them needs `forward/mod.rs`).

use crate::change::{Reason, Refusal};
use crate::firewalld;
use crate::state::StateError;

/// Why a forward or allow operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Bad input: exit status 2, nothing changed.
    #[error("{0}")]
    Usage(String),
    /// Refused, with a stable reason: exit status 1, nothing changed.
    #[error("{0}")]
    Refused(crate::change::Refusal),
    /// Failed after firewalld was changed (the sentence says what was undone): exit status 1.
    #[error("{0}")]
    Failed(String),
    /// Reading firewalld's state failed (nothing of this operation was changed by the read).
    #[error("cannot read firewalld's state: {0}")]
    Firewalld(#[from] firewalld::Error),
    /// A change failed; the executor's sentence says what failed and how the rollback went.
    #[error("{0}")]
    Change(Box<crate::change::ExecError>),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] StateError),
}

impl From<crate::change::ExecError> for ForwardError {
    /// A plan the executor rolled back: its sentence (what failed, how the rollback went) is what the
    /// user reads; each rollback failure is logged too.
    fn from(e: crate::change::ExecError) -> Self {
        for failure in &e.rollback_failures {
            tracing::warn!("after the failure to {}: {failure}", e.step);
        }
        ForwardError::Change(Box::new(e))
    }
}

/// A typed refusal (exit status 1, nothing changed).
pub(super) fn refused(reason: Reason, message: impl Into<String>) -> ForwardError {
    ForwardError::Refused(Refusal::new(reason, message))
}
