//! `virtzone status --verify`: confirms from firewalld's live ruleset that each bound bridge's traffic
//! dispatches to its zone's chains and that the zone's catch-all reject sits after its allowed services.

use serde::Serialize;

use crate::status::Status;

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// What was confirmed, one sentence each.
    pub confirmed: Vec<String>,
    /// What is wrong, one precise sentence each.
    pub problems: Vec<String>,
}

/// Why the ruleset could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read firewalld's ruleset: {0}")]
pub struct VerifyError(pub String);

/// Verifies the bridges and zones of `status` against the live ruleset of its backend.
pub async fn verify(status: &Status) -> Result<Report, VerifyError> {
    let _ = status;
    Err(VerifyError("not implemented yet".into()))
}
