//! `doctor --fix`'s domains through the runner against the recording fakes: what is read, what is
//! changed, what is recorded, and what a failed step or record leaves behind. No root; the lab
//! tests (`doctor::`) run the same domains over the real host.

use super::*;
use crate::change::converge::converge;
use crate::change::converge::fake::block_on;
use crate::change::converge::fake::FakeSeam;
use crate::change::executor::fake::Fake;
use crate::doctor::fix::SYSCTL_FILE;

fn path(bridge: &str) -> DockerPath {
    DockerPath {
        bridge: bridge.into(),
        uplink: "eth0".into(),
    }
}

/// `DOCKER-USER` exists and holds none of the accepts.
fn empty_chain(_: &[DockerPath]) -> Option<DockerUserFacts> {
    Some(DockerUserFacts {
        chain: true,
        present: Vec::new(),
    })
}

/// `DOCKER-USER` holds every accept asked about.
fn full_chain(paths: &[DockerPath]) -> Option<DockerUserFacts> {
    Some(DockerUserFacts {
        chain: true,
        present: paths.iter().flat_map(|p| p.rules()).collect(),
    })
}

/// iptables cannot tell.
fn unreadable(_: &[DockerPath]) -> Option<DockerUserFacts> {
    None
}

fn docker(change: DockerChange, read: DockerReader) -> DockerDomain {
    DockerDomain { change, read }
}

fn iptables_calls(seam: &FakeSeam) -> Vec<String> {
    seam.mutations
        .calls()
        .into_iter()
        .map(|c| c.split(" -i ").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn accept_inserts_the_missing_rules_and_records_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = FakeSeam::default();
    let domain = docker(DockerChange::Accept(vec![path("virbr0")]), empty_chain);
    let done = block_on(converge(&seam, &state, &domain)).unwrap();
    assert_eq!(done.outcome, vec![path("virbr0")]);
    assert_eq!(done.steps, 2);
    assert_eq!(
        iptables_calls(&seam),
        ["iptables -I DOCKER-USER", "iptables -I DOCKER-USER"]
    );
    let record: DockerAccepts = state.read(DOCKER_ACCEPTS_FILE).unwrap();
    assert_eq!(record.paths, vec![path("virbr0")]);
    // No firewalld read on the way: the fix is the host's business.
    assert!(seam.reads.take_calls().is_empty());
}

#[test]
fn accept_again_changes_nothing_and_keeps_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let mut record = DockerAccepts::default();
    record.add(&[path("virbr0")]);
    state.write(DOCKER_ACCEPTS_FILE, &record).unwrap();
    let seam = FakeSeam::default();
    let domain = docker(DockerChange::Accept(vec![path("virbr0")]), full_chain);
    let done = block_on(converge(&seam, &state, &domain)).unwrap();
    assert_eq!(done.steps, 0);
    assert!(seam.mutations.calls().is_empty());
    assert_eq!(
        state.read::<DockerAccepts>(DOCKER_ACCEPTS_FILE).unwrap(),
        record
    );
}

#[test]
fn a_failed_insert_is_undone_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    // The second rule fails: the first is deleted again.
    let seam = FakeSeam {
        mutations: Fake::failing(&["iptables -I DOCKER-USER -i eth0"]),
        ..FakeSeam::default()
    };
    let domain = docker(DockerChange::Accept(vec![path("virbr0")]), empty_chain);
    let err = block_on(converge(&seam, &state, &domain)).unwrap_err();
    assert!(matches!(err, FixError::Failed(_)), "{err}");
    assert_eq!(
        iptables_calls(&seam),
        [
            "iptables -I DOCKER-USER",
            "iptables -I DOCKER-USER",
            "iptables -D DOCKER-USER"
        ]
    );
    assert!(state
        .read::<DockerAccepts>(DOCKER_ACCEPTS_FILE)
        .unwrap()
        .paths
        .is_empty());
}

#[test]
fn an_unreadable_chain_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = FakeSeam::default();
    let domain = docker(DockerChange::Accept(vec![path("virbr0")]), unreadable);
    let err = block_on(converge(&seam, &state, &domain)).unwrap_err();
    assert!(matches!(err, FixError::Read(_)), "{err}");
    assert!(seam.mutations.calls().is_empty());
}

#[test]
fn reapply_puts_back_only_the_recorded_rules_and_leaves_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let mut record = DockerAccepts::default();
    record.add(&[path("virbr0"), path("virbr1")]);
    state.write(DOCKER_ACCEPTS_FILE, &record).unwrap();
    let seam = FakeSeam::default();
    let done = block_on(converge(
        &seam,
        &state,
        &docker(DockerChange::Reapply, empty_chain),
    ))
    .unwrap();
    assert_eq!(done.steps, 4);
    assert_eq!(done.outcome, record.paths);
    assert_eq!(
        state.read::<DockerAccepts>(DOCKER_ACCEPTS_FILE).unwrap(),
        record
    );
}

#[test]
fn unfix_deletes_the_rules_and_empties_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let mut record = DockerAccepts::default();
    record.add(&[path("virbr0")]);
    state.write(DOCKER_ACCEPTS_FILE, &record).unwrap();
    let seam = FakeSeam::default();
    let done = block_on(converge(
        &seam,
        &state,
        &docker(DockerChange::Unfix, full_chain),
    ))
    .unwrap();
    assert_eq!(done.outcome, vec![path("virbr0")]);
    assert_eq!(
        iptables_calls(&seam),
        ["iptables -D DOCKER-USER", "iptables -D DOCKER-USER"]
    );
    assert!(state
        .read::<DockerAccepts>(DOCKER_ACCEPTS_FILE)
        .unwrap()
        .paths
        .is_empty());
}

#[test]
fn unfix_without_a_record_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = FakeSeam::default();
    // An unreadable chain would fail: it is not read at all.
    let done = block_on(converge(
        &seam,
        &state,
        &docker(DockerChange::Unfix, unreadable),
    ))
    .unwrap();
    assert!(done.outcome.is_empty());
    assert!(seam.mutations.calls().is_empty());
}

fn no_file(_: &Path) -> Result<Option<String>, String> {
    Ok(None)
}

/// The file an earlier fix of the same key wrote.
fn written_before(_: &Path) -> Result<Option<String>, String> {
    Ok(Some(crate::doctor::merge_sysctl_conf(
        None,
        &["net.bridge.bridge-nf-call-iptables".to_string()],
    )))
}

#[test]
fn bridge_netfilter_turns_the_keys_off_and_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = FakeSeam::default();
    let domain = BridgeNetfilterDomain {
        keys: vec!["net.bridge.bridge-nf-call-iptables".into()],
        read: no_file,
    };
    let done = block_on(converge(&seam, &state, &domain)).unwrap();
    assert_eq!(done.steps, 2);
    let calls = seam.mutations.calls();
    assert_eq!(calls[0], "sysctl net/bridge/bridge-nf-call-iptables=0");
    assert!(
        calls[1].starts_with(&format!("write {SYSCTL_FILE} 644")),
        "{calls:?}"
    );
}

#[test]
fn bridge_netfilter_keeps_a_file_that_says_it_already() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = FakeSeam::default();
    let domain = BridgeNetfilterDomain {
        keys: vec!["net.bridge.bridge-nf-call-iptables".into()],
        read: written_before,
    };
    block_on(converge(&seam, &state, &domain)).unwrap();
    assert_eq!(
        seam.mutations.calls(),
        ["sysctl net/bridge/bridge-nf-call-iptables=0"]
    );
}
