//! The runner and whole orchestrations (attach, detach, install) against the recording fakes of both
//! sides of the seam: what is read, what is changed, what is recorded, and what happens when a step
//! or the record fails. No root, no bus; the lab tests run the same paths against real firewalld.

use super::fake::block_on;
use std::cell::Cell;
use std::collections::BTreeMap;

use super::fake::FakeSeam;
use super::*;
use crate::bind::{self, Attach, Binding, Bindings, BINDINGS_FILE};
use crate::change::executor::fake::Fake;
use crate::change::reads::fake::Recorded;
use crate::firewalld::Entries;
use crate::install::{self, Installed, INSTALLED_FILE};
use crate::names::{BridgeName, ZoneName};
use crate::zone::shipped_zone;

/// A running firewalld `version` with the (runtime and permanent) zones `zones`.
fn firewalld(version: &str, zones: &[&str]) -> Recorded {
    let zones: BTreeMap<String, Entries> = zones
        .iter()
        .map(|z| (z.to_string(), Entries::default()))
        .collect();
    Recorded {
        version: Some(version.into()),
        default_zone: "public".into(),
        zones: zones.clone(),
        permanent_zones: zones,
        policies: Some(BTreeMap::new()),
        permanent_policies: Some(BTreeMap::new()),
        ..Recorded::default()
    }
}

fn seam(reads: Recorded, mutations: Fake) -> FakeSeam {
    FakeSeam { reads, mutations }
}

/// A domain of one zone `toy`: plans its addition (and a reload when asked), records `true`.
#[derive(Default)]
struct Toy {
    reload: bool,
    rounds: usize,
    store_fails: bool,
    refuse_record: bool,
    gathers: Cell<usize>,
    settles: Cell<usize>,
}

#[derive(Debug, thiserror::Error)]
enum ToyError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl Domain for Toy {
    type Record = bool;
    type Facts = ();
    type Outcome = &'static str;
    type Error = ToyError;

    fn load(&self, state: &StateDir) -> Result<bool, ToyError> {
        Ok(state.read("toy.json")?)
    }
    fn check_record(&self, _: &bool) -> Result<(), ToyError> {
        match self.refuse_record {
            true => Err(ToyError::Refused("by the record".into())),
            false => Ok(()),
        }
    }
    async fn gather(&self, reads: &impl Reads, _: &bool) -> Result<(), ToyError> {
        self.gathers.set(self.gathers.get() + 1);
        reads
            .default_zone()
            .await
            .map_err(|e| ToyError::Failed(e.to_string()))?;
        Ok(())
    }
    fn plan(&self, _: &(), _: &bool) -> Result<Decision<bool, &'static str>, ToyError> {
        let mut steps = vec![Step::AddZone(shipped_zone("libvirt"))];
        if self.reload {
            steps.push(Step::Reload);
        }
        Ok(Decision {
            plan: Plan {
                steps,
                warnings: vec![],
            },
            record: Some(true),
            outcome: "done",
        })
    }
    fn store(&self, state: &StateDir, record: &bool) -> Result<(), ToyError> {
        if self.store_fails {
            return Err(ToyError::Failed("cannot write toy.json".into()));
        }
        Ok(state.write("toy.json", record)?)
    }
    fn failed(&self, error: ExecError) -> ToyError {
        ToyError::Failed(error.to_string())
    }
    fn rounds(&self) -> usize {
        self.rounds.max(1)
    }
    async fn settle(&self, _: &impl Reads, _: &(), _: &Plan) {
        self.settles.set(self.settles.get() + 1);
    }
}

#[test]
fn a_record_that_cannot_be_written_undoes_the_applied_steps() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::default());
    let toy = Toy {
        store_fails: true,
        ..Toy::default()
    };
    let err = block_on(converge(&seam, &state, &toy)).unwrap_err();
    assert!(matches!(err, ToyError::Failed(_)), "{err}");
    assert_eq!(
        seam.mutations.calls(),
        ["addZone libvirt", "removeZone libvirt"]
    );
    assert!(!dir.path().join("toy.json").exists());
}

#[test]
fn a_failed_step_is_the_domains_failure_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::failing(&["addZone"]));
    let err = block_on(converge(&seam, &state, &Toy::default())).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed: firewalld refused to add zone libvirt"),
        "{err}"
    );
    assert!(!dir.path().join("toy.json").exists());
}

#[test]
fn a_plan_that_reloads_is_planned_again_up_to_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::default());
    let toy = Toy {
        reload: true,
        rounds: 3,
        ..Toy::default()
    };
    let done = block_on(converge(&seam, &state, &toy)).unwrap();
    assert_eq!(done.outcome, "done");
    assert_eq!(done.steps, 6);
    assert_eq!((toy.gathers.get(), toy.settles.get()), (3, 2));
    assert!(state.read::<bool>("toy.json").unwrap());
    // Without a reload, one round.
    let once = Toy::default();
    let done = block_on(converge(&seam, &state, &once)).unwrap();
    assert_eq!((done.steps, once.gathers.get()), (1, 1));
}

#[test]
fn what_the_record_refuses_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::default());
    let toy = Toy {
        refuse_record: true,
        ..Toy::default()
    };
    let err = block_on(converge(&seam, &state, &toy)).unwrap_err();
    assert!(matches!(err, ToyError::Refused(_)), "{err}");
    assert!(seam.reads.take_calls().is_empty());
    assert!(seam.mutations.calls().is_empty());
}

fn attach_request(bridge: &str) -> Attach {
    Attach {
        bridge: BridgeName::new(bridge).unwrap(),
        zone: ZoneName::libvirt(),
        permanent: false,
        force: false,
        network: None,
        source: None,
    }
}

#[test]
fn attach_reads_once_binds_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public", "libvirt"]), Fake::default());
    let message = block_on(bind::attach(&seam, &state, &attach_request("virbr0"))).unwrap();
    assert!(message.contains("virbr0"), "{message}");
    assert_eq!(
        seam.mutations.calls(),
        ["changeZoneOfInterface libvirt virbr0"]
    );
    let reads = seam.reads.take_calls();
    assert_eq!(
        reads.iter().filter(|c| *c == "NameHasOwner").count(),
        1,
        "one 'is firewalld running': {reads:?}"
    );
    assert!(
        !reads.iter().any(|c| c.starts_with("getZoneSettings2")),
        "an attach reads no zone's settings: {reads:?}"
    );
    let bindings: Bindings = state.read(BINDINGS_FILE).unwrap();
    assert_eq!(
        bindings.bindings[&BridgeName::new("virbr0").unwrap()].zone,
        ZoneName::libvirt()
    );
}

#[test]
fn attach_without_firewalld_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(Recorded::default(), Fake::default());
    let err = block_on(bind::attach(&seam, &state, &attach_request("virbr0"))).unwrap_err();
    assert!(
        err.to_string().contains("firewalld is not running"),
        "{err}"
    );
    assert!(seam.mutations.calls().is_empty());
    assert!(!dir.path().join(BINDINGS_FILE).exists());
}

#[test]
fn a_failed_binding_call_leaves_the_record_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(
        firewalld("1.3.3", &["public", "libvirt"]),
        Fake::failing(&["changeZoneOfInterface"]),
    );
    let err = block_on(bind::attach(&seam, &state, &attach_request("virbr0"))).unwrap_err();
    assert!(err.to_string().contains("virbr0"), "{err}");
    assert!(!dir.path().join(BINDINGS_FILE).exists());
}

#[test]
fn detaching_a_files_binding_is_refused_before_firewalld_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let bridge = BridgeName::new("virbr0").unwrap();
    let mut bindings = Bindings::default();
    bindings.bindings.insert(
        bridge.clone(),
        Binding {
            zone: ZoneName::libvirt(),
            permanent: false,
            network: None,
            networkmanager: None,
            source: Some("/etc/virtzone/virtzone.d/lab.conf".into()),
        },
    );
    block_on(async {
        let _lock = state.lock().await.unwrap();
        state.write(BINDINGS_FILE, &bindings).unwrap();
    });
    let seam = seam(firewalld("1.3.3", &["public", "libvirt"]), Fake::default());
    let err = block_on(bind::detach(&seam, &state, &bridge, false, false)).unwrap_err();
    assert!(err.to_string().contains("lab.conf"), "{err}");
    assert!(seam.reads.take_calls().is_empty());
    assert!(seam.mutations.calls().is_empty());
    // `virtzone apply` may.
    let seam = FakeSeam {
        reads: Recorded {
            interfaces: BTreeMap::from([("virbr0".into(), "libvirt".into())]),
            ..firewalld("1.3.3", &["public", "libvirt"])
        },
        mutations: Fake::default(),
    };
    block_on(bind::detach_declared(&seam, &state, &bridge, false)).unwrap();
    assert_eq!(seam.mutations.calls(), ["removeInterface libvirt virbr0"]);
    let left: Bindings = state.read(BINDINGS_FILE).unwrap();
    assert!(left.bindings.is_empty());
}

#[test]
fn install_adds_the_shipped_objects_reloads_once_and_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::default());
    let outcome = block_on(install::live::install(&seam, &state, true)).unwrap();
    assert!(outcome.reloaded);
    let calls = seam.mutations.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("reload"),
        "{calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| *c == "reload").count(), 1);
    assert!(calls.contains(&"addZone libvirt".to_string()), "{calls:?}");
    let installed: Installed = state.read(INSTALLED_FILE).unwrap();
    assert!(installed.zones.contains("libvirt"), "{installed:?}");
}

#[test]
fn a_failed_reload_of_an_install_removes_what_it_added_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    let seam = seam(firewalld("1.3.3", &["public"]), Fake::failing(&["reload"]));
    let err = block_on(install::live::install(&seam, &state, true)).unwrap_err();
    assert!(
        err.to_string()
            .contains("keeps running its previous configuration"),
        "{err}"
    );
    let calls = seam.mutations.calls();
    assert!(
        calls.contains(&"removeZone libvirt".to_string()),
        "{calls:?}"
    );
    assert!(!dir.path().join(INSTALLED_FILE).exists());
}

#[test]
fn a_failed_read_is_a_read_error_not_a_refused_change() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(dir.path().to_path_buf());
    // firewalld answers NameHasOwner and then nothing it is asked about its zones.
    let mut reads = firewalld("1.3.3", &["public"]);
    reads.permanent_policies = None;
    reads.fail_reads = vec!["getZoneNames"];
    let seam = seam(reads, Fake::default());
    let err = block_on(install::live::install(&seam, &state, true)).unwrap_err();
    assert!(matches!(err, install::InstallError::Firewalld(_)), "{err}");
    assert!(!err.to_string().contains("refused"), "{err}");
    assert!(seam.mutations.calls().is_empty());
}

fn binding(zone: &str) -> Binding {
    Binding {
        zone: ZoneName::new(zone).unwrap(),
        permanent: false,
        network: None,
        networkmanager: None,
        source: None,
    }
}

#[test]
fn the_daemons_reconcile_reads_once_restores_lost_bindings_and_leaves_drift() {
    let mut desired = Bindings::default();
    for bridge in ["virbr0", "virbr1", "virbr2"] {
        desired
            .bindings
            .insert(BridgeName::new(bridge).unwrap(), binding("libvirt"));
    }
    let seam = seam(
        Recorded {
            interfaces: BTreeMap::from([
                ("virbr1".into(), "libvirt".into()),
                ("virbr2".into(), "public".into()),
            ]),
            ..firewalld("1.3.3", &["public", "libvirt"])
        },
        Fake::default(),
    );
    let done = block_on(bind::reconcile(&seam, &desired, 8)).unwrap();
    assert_eq!(
        seam.mutations.calls(),
        ["changeZoneOfInterface libvirt virbr0"]
    );
    assert_eq!(done.plan.in_place, 1);
    assert_eq!(done.plan.drift.len(), 1, "{:?}", done.plan.drift);
    assert!(done.results.iter().all(|(_, r)| r.is_ok()));
    // One gather: identity, names and the bindings, and no zone's settings.
    let reads = seam.reads.take_calls();
    assert_eq!(reads.len(), 9, "{reads:?}");
    assert!(!reads.iter().any(|c| c.contains("Settings")), "{reads:?}");
}

#[test]
fn the_daemons_reconcile_tries_a_failed_call_in_three_passes_then_reports_it() {
    let mut desired = Bindings::default();
    desired
        .bindings
        .insert(BridgeName::new("virbr0").unwrap(), binding("libvirt"));
    let seam = seam(
        firewalld("1.3.3", &["public", "libvirt"]),
        Fake::failing(&["changeZoneOfInterface"]),
    );
    let done = block_on(bind::reconcile(&seam, &desired, 8)).unwrap();
    assert_eq!(seam.mutations.calls().len(), 3);
    assert!(matches!(done.results.as_slice(), [(_, Err(_))]));
}

#[test]
fn the_daemons_reconcile_without_firewalld_changes_nothing() {
    let mut desired = Bindings::default();
    desired
        .bindings
        .insert(BridgeName::new("virbr0").unwrap(), binding("libvirt"));
    let seam = seam(Recorded::default(), Fake::default());
    let done = block_on(bind::reconcile(&seam, &desired, 8)).unwrap();
    assert!(done.plan.plan.is_empty() && done.results.is_empty());
    assert!(seam.mutations.calls().is_empty());
    assert_eq!(seam.reads.take_calls(), ["NameHasOwner"]);
}
