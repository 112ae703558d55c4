//! Issue #21, Docker's chains: the accepts `doctor --fix` puts in Docker's `DOCKER-USER` for its
//! FORWARD DROP are desired state. The daemon puts them back when dockerd creates its chains anew
//! (a reboot's empty ruleset, then dockerd's start), and `doctor --unfix forward-drop` takes them
//! out for good. Real dockerd (Debian 12's docker.io) in the lab's namespace, real daemon, real
//! packets from a guest to an upstream web server.

use std::time::{Duration, Instant};

use crate::common;

use common::docker::ForwardDrop;
use common::libvirt::{wait_for, LibvirtConfig, LibvirtLab};
use common::{doctor_in, text, LabConfig};

/// The accept of new connections from the guests' bridge to the uplink, as `iptables -S` lists it.
const OUT: &str = "-A DOCKER-USER -i vzop0 -o vzup9 -j ACCEPT";
/// The accept of the replies back.
const BACK: &str =
    "-A DOCKER-USER -i vzup9 -o vzop0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

/// How long the guest may stay blocked after dockerd recreated `DOCKER-USER`.
const HEAL: Duration = Duration::from_secs(30);

/// `DOCKER-USER` as `iptables -S` lists it.
fn docker_user(scene: &ForwardDrop<'_>) -> String {
    scene.iptables(&["-S", "DOCKER-USER"])
}

#[test]
fn docker_user_accepts_come_back_after_dockerd_recreates_its_chains_until_unfixed() {
    let vlab = LibvirtLab::start(LibvirtConfig::new(LabConfig {
        bus_policies: vec![common::daemon::policy()],
        ..LabConfig::default()
    }));
    let root = vlab.dir().join("libvirt");
    let mut scene = ForwardDrop::start(&vlab);
    assert!(
        !scene.guest_reaches_upstream(),
        "Docker's policy must block the guest"
    );
    let _daemon = common::daemon::Daemon::start(&vlab);
    let doctor = |args: &[&str]| {
        let out = doctor_in(&vlab, Some(&root), "", args, "");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // Only forward-drop keeps anything applied: any other id is bad input, and changes nothing.
    let (code, _, err) = doctor(&["--unfix", "br-netfilter"]);
    assert_eq!(code, Some(2), "{err}");

    let (code, out, err) = doctor(&["--fix", "--yes"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(scene.guest_reaches_upstream(), "the fix lets the guest out");
    let (_, out, _) = doctor(&[]);
    assert!(
        out.contains("kept by doctor --fix: accepts in DOCKER-USER for vzop0 to vzup9"),
        "{out}"
    );

    // A plain dockerd restart, then a reboot's: the filter table flushed (DOCKER-USER gone),
    // dockerd creates its chains from nothing, FORWARD's policy is DROP. The daemon notices through
    // its ruleset watch and puts the accepts back.
    for reboot in [false, true] {
        scene.restart_dockerd(reboot);
        // From dockerd listening (its chains made) to both accepts back, for the record.
        let started = Instant::now();
        let back = wait_for("the accepts in DOCKER-USER", HEAL, || {
            let listing = docker_user(&scene);
            (listing.contains(OUT) && listing.contains(BACK)).then(|| started.elapsed())
        });
        eprintln!("reboot: {reboot}: accepts in DOCKER-USER {back:?} after dockerd listened");
        let listing = docker_user(&scene);
        wait_for(
            &format!("the guest reaching upstream after dockerd's restart (reboot: {reboot}); DOCKER-USER was:\n{listing}"),
            HEAL,
            || scene.guest_reaches_upstream().then_some(()),
        );
        let listing = docker_user(&scene);
        assert!(listing.contains(OUT) && listing.contains(BACK), "{listing}");
        // Once each: the daemon's own insertions (ruleset changes too) stack nothing.
        assert_eq!(listing.matches(OUT).count(), 1, "{listing}");
    }
    // Put back once, after the reboot's restart (a plain restart keeps DOCKER-USER): the ruleset
    // changes of its own insertions start no loop.
    let log = std::fs::read_to_string(vlab.dir().join("daemon.log")).unwrap_or_default();
    assert_eq!(
        log.matches("DOCKER-USER accepts: put back 2 rule(s) of doctor --fix (vzop0 to vzup9)")
            .count(),
        1,
        "{log}"
    );

    // Removed when the admin says so, and the guest is blocked again.
    let (code, out, err) = doctor(&["--unfix", "forward-drop"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("vzop0 to vzup9"), "{out}");
    let listing = docker_user(&scene);
    assert!(
        !listing.contains(OUT) && !listing.contains(BACK),
        "{listing}"
    );
    assert!(!scene.guest_reaches_upstream());
    let (_, out, _) = doctor(&[]);
    assert!(!out.contains("kept by doctor --fix"), "{out}");

    // And they stay out through another reboot's restart: watched for a while after dockerd made
    // its chains (the daemon reacts to that within milliseconds).
    scene.restart_dockerd(true);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let listing = docker_user(&scene);
        assert!(!listing.contains(OUT), "put back after --unfix:\n{listing}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!scene.guest_reaches_upstream());
}
