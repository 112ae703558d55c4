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

use super::fix::{self, DockerAccepts, DOCKER_ACCEPTS_FILE};
use crate::change::executor::Local;
use crate::change::Executor;
use crate::state::StateDir;

/// One check: record, facts, plan, executor. Holds the state lock throughout, so that an
/// `--unfix` never races a re-application. Returns whether anything was changed.
pub async fn check(state: &StateDir) -> bool {
    // Most hosts have no record: no lock taken on their every ruleset change.
    if state
        .read::<DockerAccepts>(DOCKER_ACCEPTS_FILE)
        .is_ok_and(|r| r.paths.is_empty())
    {
        return false;
    }
    let _lock = match state.lock().await {
        Ok(l) => l,
        Err(e) => {
            warn!("DOCKER-USER accepts: {e}");
            return false;
        }
    };
    let record: DockerAccepts = match state.read(DOCKER_ACCEPTS_FILE) {
        Ok(r) => r,
        Err(e) => {
            error!("DOCKER-USER accepts: {e}");
            return false;
        }
    };
    if record.paths.is_empty() {
        return false;
    }
    let paths = record.paths.clone();
    let Ok(Some(facts)) = tokio::task::spawn_blocking(move || fix::read_docker_user(&paths)).await
    else {
        warn!("DOCKER-USER accepts: iptables cannot list DOCKER-USER; checking again at the next ruleset change");
        return false;
    };
    let plan = fix::docker_accepts(&record.paths, &facts);
    if plan.is_empty() {
        return false;
    }
    match Executor::new(&Local).run(&plan).await {
        Ok(_) => {
            let shown: Vec<String> = record.paths.iter().map(ToString::to_string).collect();
            info!(
                "DOCKER-USER accepts: put back {} rule(s) of doctor --fix ({}) after Docker recreated its chain",
                plan.steps.len(),
                shown.join(", ")
            );
            true
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
