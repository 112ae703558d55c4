//! Installing and uninstalling virtzone's zones and policies: live over D-Bus into a running firewalld,
//! or as files into a firewalld configuration tree (packaging, or firewalld not running).

pub mod files;
pub mod live;
pub mod plan;
pub mod record;

pub use plan::{
    plan_install, plan_live_install, plan_live_uninstall, plan_uninstall, Action, Existing, Item,
    Kind, ObjectsPlan, Origin, Present,
};
pub use record::{Installed, INSTALLED_FILE};

/// Why an install or uninstall did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Refused or failed, said in full (exit status 1).
    #[error("{0}")]
    Refused(String),
    /// firewalld failed a call.
    #[error("{0}")]
    Firewalld(#[from] crate::firewalld::Error),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
}

impl From<crate::change::Refusal> for InstallError {
    fn from(r: crate::change::Refusal) -> Self {
        InstallError::Refused(r.message)
    }
}
