//! The daemon's keeper of the accepts `doctor --fix` put in Docker's `DOCKER-USER` (issue #21):
//! desired state once the admin accepted the fix, recorded in
//! [`DOCKER_ACCEPTS_FILE`](super::fix::DOCKER_ACCEPTS_FILE).
//!
//! Docker creates `DOCKER-USER` empty when it starts on a fresh ruleset (a boot, an
//! `iptables -F`/`nft flush ruleset` before its restart), and its FORWARD policy DROP then blocks
//! the guests again. So, like the localnet guard ([`crate::forward::guard`]), the daemon checks by
//! itself after every burst of ruleset changes, without firewalld: the recorded accepts missing
//! from an existing `DOCKER-USER` go back, through the executor ([`Local`]).
//! `virtzone doctor --unfix forward-drop` removes them and their record.

use tracing::{error, info, warn};

use super::domains::{DockerChange, DockerDomain, FixError};
use super::fix::{DockerAccepts, DOCKER_ACCEPTS_FILE};
use crate::change::converge::converge;
use crate::change::executor::Local;
use crate::state::StateDir;

/// One check: a convergence of the Docker domain (record, facts, plan, executor), which holds the
/// state lock throughout, so that an `--unfix` never races a re-application. Returns whether
/// anything was changed.
pub async fn check(state: &StateDir) -> bool {
    // Most hosts have no record: no lock taken on their every ruleset change.
    if state
        .read::<DockerAccepts>(DOCKER_ACCEPTS_FILE)
        .is_ok_and(|r| r.paths.is_empty())
    {
        return false;
    }
    let domain = DockerDomain::new(DockerChange::Reapply);
    match converge(&Local, state, &domain).await {
        Ok(done) if done.steps > 0 => {
            let shown: Vec<String> = done.outcome.iter().map(ToString::to_string).collect();
            info!(
                "DOCKER-USER accepts: put back {} rule(s) of doctor --fix ({}) after Docker recreated its chain",
                done.steps,
                shown.join(", ")
            );
            true
        }
        Ok(_) => false,
        Err(FixError::Read(_)) => {
            warn!("DOCKER-USER accepts: iptables cannot list DOCKER-USER; checking again at the next ruleset change");
            false
        }
        Err(e) => {
            error!("DOCKER-USER accepts: {e}");
            false
        }
    }
}

/// Checks once at start, then after every burst of ruleset changes, until the netlink watch ends.
pub async fn run(state: StateDir) {
    let mut changes = match crate::forward::triggers::ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); DOCKER-USER's accepts are checked at start only");
            check(&state).await;
            return;
        }
    };
    loop {
        check(&state).await;
        if changes.recv().await.is_none() {
            return;
        }
    }
}
