//! `doctor --fix`'s host changes as domains of the one convergence runner
//! ([`crate::change::converge::converge`]): lock, record, gather, pure plan ([`super::fix`]),
//! executor, record — over the firewalld-less seam ([`crate::change::executor::Local`]) in real
//! use, over the recording fakes in the unit tests. firewalld's fixes (install, bind) are the
//! install and attach domains themselves.

use std::path::Path;

use super::fix::{self, DockerAccepts, DockerPath, DockerUserFacts, DOCKER_ACCEPTS_FILE};
use crate::change::converge::{Decision, Domain};
use crate::change::{ExecError, Reads};
use crate::state::{StateDir, StateError};

/// Why a fix did not complete. The executor has undone its steps when it says so.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The state directory (lock, record).
    #[error("{0}")]
    State(#[from] StateError),
    /// What the plan needs could not be read.
    #[error("{0}")]
    Read(String),
    /// A step failed (and the ones before it were undone).
    #[error("{0}")]
    Failed(Box<ExecError>),
    /// The steps were applied but the record could not be written, so they were undone.
    #[error("cannot record the change ({0}); what this run changed is undone")]
    Record(StateError),
}

/// Reads `DOCKER-USER` for some paths: `None` when iptables cannot tell. Blocking.
pub type DockerReader = fn(&[DockerPath]) -> Option<DockerUserFacts>;

/// What a convergence of Docker's accepts does with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerChange {
    /// `--fix`: adds these paths to the record and their missing accepts to `DOCKER-USER`.
    Accept(Vec<DockerPath>),
    /// The daemon: the recorded accepts missing from an existing `DOCKER-USER` go back.
    Reapply,
    /// `--unfix forward-drop`: the recorded accepts leave `DOCKER-USER`, the record is emptied.
    Unfix,
}

/// The accepts in Docker's `DOCKER-USER`, recorded in [`DOCKER_ACCEPTS_FILE`].
pub struct DockerDomain {
    /// What to do.
    pub change: DockerChange,
    /// How `DOCKER-USER` is read (live: [`fix::read_docker_user`]).
    pub read: DockerReader,
}

impl DockerDomain {
    /// The live domain for `change`.
    pub fn new(change: DockerChange) -> Self {
        DockerDomain {
            change,
            read: fix::read_docker_user,
        }
    }

    /// The paths whose rules the plan concerns.
    fn paths<'a>(&'a self, record: &'a DockerAccepts) -> &'a [DockerPath] {
        match &self.change {
            DockerChange::Accept(paths) => paths,
            DockerChange::Reapply | DockerChange::Unfix => &record.paths,
        }
    }
}

impl Domain for DockerDomain {
    type Record = DockerAccepts;
    type Facts = DockerUserFacts;
    /// The paths concerned.
    type Outcome = Vec<DockerPath>;
    type Error = FixError;

    fn load(&self, state: &StateDir) -> Result<DockerAccepts, FixError> {
        Ok(state.read(DOCKER_ACCEPTS_FILE)?)
    }

    async fn gather(
        &self,
        _reads: &impl Reads,
        record: &DockerAccepts,
    ) -> Result<DockerUserFacts, FixError> {
        let paths = self.paths(record).to_vec();
        // Nothing recorded, nothing to read: an --unfix without accepts needs no iptables.
        if paths.is_empty() {
            return Ok(DockerUserFacts::default());
        }
        let read = self.read;
        tokio::task::spawn_blocking(move || read(&paths))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| FixError::Read("iptables cannot list Docker's DOCKER-USER chain".into()))
    }

    fn plan(
        &self,
        facts: &DockerUserFacts,
        record: &DockerAccepts,
    ) -> Result<Decision<DockerAccepts, Vec<DockerPath>>, FixError> {
        let paths = self.paths(record).to_vec();
        let (plan, next) = match &self.change {
            DockerChange::Accept(_) => {
                let mut next = record.clone();
                next.add(&paths);
                (fix::docker_accepts(&paths, facts), Some(next))
            }
            DockerChange::Reapply => (fix::docker_accepts(&paths, facts), None),
            DockerChange::Unfix if paths.is_empty() => (fix::docker_unaccepts(&[], facts), None),
            DockerChange::Unfix => (
                fix::docker_unaccepts(&paths, facts),
                Some(DockerAccepts::default()),
            ),
        };
        Ok(Decision {
            plan,
            record: next.filter(|n| n != record),
            outcome: paths,
        })
    }

    fn store(&self, state: &StateDir, record: &DockerAccepts) -> Result<(), FixError> {
        state
            .write(DOCKER_ACCEPTS_FILE, record)
            .map_err(FixError::Record)
    }

    fn failed(&self, error: ExecError) -> FixError {
        FixError::Failed(Box::new(error))
    }
}

/// Reads a small file without following a symlink: `None` when it does not exist.
pub type FileReader = fn(&Path) -> Result<Option<String>, String>;

/// br_netfilter off now and in [`fix::SYSCTL_FILE`] for the next boot. No record of its own: the
/// file is the record, read as the domain's fact and merged, never rewritten.
pub struct BridgeNetfilterDomain {
    /// The dotted sysctl keys the check found on.
    pub keys: Vec<String>,
    /// How the file is read (live: [`crate::change::executor::local::read_file`]).
    pub read: FileReader,
}

impl BridgeNetfilterDomain {
    /// The live domain for `keys`.
    pub fn new(keys: Vec<String>) -> Self {
        BridgeNetfilterDomain {
            keys,
            read: crate::change::executor::local::read_file,
        }
    }
}

impl Domain for BridgeNetfilterDomain {
    type Record = ();
    /// What [`fix::SYSCTL_FILE`] says now (`None`: no file).
    type Facts = Option<String>;
    type Outcome = ();
    type Error = FixError;

    fn load(&self, _state: &StateDir) -> Result<(), FixError> {
        Ok(())
    }

    async fn gather(&self, _reads: &impl Reads, _record: &()) -> Result<Option<String>, FixError> {
        (self.read)(Path::new(fix::SYSCTL_FILE)).map_err(FixError::Read)
    }

    fn plan(&self, existing: &Option<String>, _record: &()) -> Result<Decision<(), ()>, FixError> {
        Ok(Decision {
            plan: fix::bridge_netfilter(&self.keys, existing.as_deref()),
            record: None,
            outcome: (),
        })
    }

    fn store(&self, _state: &StateDir, _record: &()) -> Result<(), FixError> {
        Ok(())
    }

    fn failed(&self, error: ExecError) -> FixError {
        FixError::Failed(Box::new(error))
    }
}

#[cfg(test)]
mod tests;
