//! Bridges NetworkManager manages (issue #20): in the booted Debian 12 system (tests/common/booted.rs)
//! with real NetworkManager 1.42 beside firewalld 1.3.3, this tree's .deb installed and its daemon
//! running. NetworkManager re-sends a managed device's `connection.zone` to firewalld on every
//! activation, firewalld reload and restart, so virtzone binds such a bridge through that profile.

use std::time::{Duration, Instant};

use crate::booted::{bindings_json, boot_with_virtzone, firewalld_errors, zone_of, SETTLE};
use crate::common::booted::Booted;

/// How long a zone may take to settle after a disruption (NetworkManager re-sends it within a second;
/// a restart of firewalld or NetworkManager takes a few on 2 shared cores).
const BACK: Duration = Duration::from_secs(60);

/// The profile's `connection.zone`, as nmcli prints it.
fn profile_zone(b: &Booted, profile: &str) -> String {
    b.sh_ok(&format!(
        "nmcli -g connection.zone connection show {profile}"
    ))
    .trim()
    .to_string()
}

/// Waits until firewalld has `iface` in `zone` (and says how long it took after `after`).
fn wait_zone(b: &Booted, iface: &str, zone: &str, after: &str) {
    let start = Instant::now();
    b.wait_for(
        &format!("{iface} in zone {zone} after {after}"),
        BACK,
        |b| (zone_of(b, iface) == zone).then_some(()),
    );
    eprintln!("{iface} in zone {zone} {:?} after {after}", start.elapsed());
}

/// The active connection's object path of a device: it changes when the device is reactivated.
fn activation(b: &Booted, dev: &str) -> String {
    b.sh_ok(&format!("nmcli -g GENERAL.CON-PATH device show {dev}"))
        .trim()
        .to_string()
}

/// The row of `virtzone list --json` for `bridge`.
fn list_row(b: &Booted, bridge: &str) -> serde_json::Value {
    let rows: serde_json::Value = serde_json::from_str(&b.sh_ok("virtzone list --json")).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["bridge"] == bridge)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {bridge}: {rows}"))
}

/// Boots with this tree's package and NetworkManager, and brings up an NM-managed bridge `br0`
/// (203.0.113.1/24) in NetworkManager's default placement (connection.zone empty: the default zone).
fn boot_with_nm_bridge() -> Booted {
    let b = boot_with_virtzone();
    b.wait_ok(
        "NetworkManager active",
        SETTLE,
        "systemctl is-active NetworkManager",
    );
    b.sh_ok(
        "nmcli connection add type bridge ifname br0 con-name br0 ipv4.method manual \
         ipv4.addresses 203.0.113.1/24 ipv6.method disabled bridge.stp no && nmcli connection up br0",
    );
    wait_zone(&b, "br0", "public", "nmcli connection up br0");
    b
}

/// The done-when of issue #20's first bullet, on an NM-managed `br0`.
#[test]
fn nm_managed_bridge_is_bound_through_its_profile_and_holds() {
    let b = boot_with_nm_bridge();
    assert_eq!(profile_zone(&b, "br0"), "");
    let before = activation(&b, "br0");

    // Not the admin's choice: no --force needed. Applied without reactivating the bridge.
    let out = b.sh_ok("virtzone attach br0 --zone internal");
    assert!(out.contains("NetworkManager profile br0"), "{out}");
    wait_zone(&b, "br0", "internal", "virtzone attach");
    assert_eq!(profile_zone(&b, "br0"), "internal");
    assert_eq!(activation(&b, "br0"), before, "the attach reactivated br0");
    let record = bindings_json(&b);
    let nm = &record["bindings"]["br0"]["networkmanager"];
    assert_eq!(nm["profile"], "br0", "{record}");
    assert_eq!(nm["previous"], "", "{record}");
    let row = list_row(&b, "br0");
    assert_eq!(
        (
            &row["path"],
            &row["profile"]["name"],
            &row["agree"],
            &row["state"]
        ),
        (
            &serde_json::json!("networkmanager"),
            &serde_json::json!("br0"),
            &serde_json::json!(true),
            &serde_json::json!("bound")
        ),
        "{row}"
    );
    assert_eq!(row["profile"]["uuid"], nm["uuid"]);
    let status: serde_json::Value =
        serde_json::from_str(&b.sh_ok("virtzone status --json")).unwrap();
    let br0 = status["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "br0")
        .cloned()
        .unwrap_or_else(|| panic!("no br0 in {status}"));
    assert_eq!(
        (
            &br0["zone"],
            &br0["networkmanager"]["profile"],
            &br0["networkmanager"]["zone"]
        ),
        (
            &serde_json::json!("internal"),
            &serde_json::json!("br0"),
            &serde_json::json!("internal")
        ),
        "{br0}"
    );

    // Every event that used to put it back in the default zone.
    for event in [
        "firewall-cmd --reload",
        "nmcli connection up br0",
        "systemctl restart firewalld",
        "systemctl restart NetworkManager",
    ] {
        b.sh_ok(event);
        b.wait_ok("firewalld running", SETTLE, "firewall-cmd --state");
        b.wait_ok(
            "NetworkManager running",
            SETTLE,
            "nmcli -t general status >/dev/null",
        );
        wait_zone(&b, "br0", "internal", event);
        assert_eq!(profile_zone(&b, "br0"), "internal", "after {event}");
        assert_eq!(list_row(&b, "br0")["agree"], true, "after {event}");
    }
    // No fight: the daemon never saw it moved, and left NetworkManager's binding to NetworkManager.
    let log = b.sh_ok("journalctl --no-pager -u virtzone -o cat");
    assert!(!log.contains("someone moved it"), "{log}");

    // A boot forgets NetworkManager's in-memory profile changes (kept under /run): the profile comes
    // back from its file with connection.zone empty, and the daemon sets virtzone's zone again once
    // NetworkManager's bus name has an owner again.
    b.sh_ok(
        "systemctl stop NetworkManager && rm -f /run/NetworkManager/system-connections/* \
         && systemctl start NetworkManager",
    );
    b.wait_for("the daemon re-asserts the zone", BACK, |b| {
        (profile_zone(b, "br0") == "internal").then_some(())
    });
    wait_zone(
        &b,
        "br0",
        "internal",
        "NetworkManager lost the in-memory zone",
    );
    let log = b.sh_ok("journalctl --no-pager -u virtzone -o cat");
    assert!(
        log.contains("NetworkManager had lost virtzone's zone"),
        "{log}"
    );

    // Detach: back to the default zone, connection.zone cleared, the record gone.
    let out = b.sh_ok("virtzone detach br0");
    assert!(
        out.contains("connection.zone of NetworkManager profile br0"),
        "{out}"
    );
    wait_zone(&b, "br0", "public", "virtzone detach");
    assert_eq!(profile_zone(&b, "br0"), "");
    assert!(bindings_json(&b)["bindings"].get("br0").is_none());

    // --permanent: written to the profile's file, so it holds when NetworkManager reloads it from disk.
    b.sh_ok("virtzone attach br0 --zone internal --permanent");
    wait_zone(&b, "br0", "internal", "virtzone attach --permanent");
    let keyfile = b.sh_ok("grep -l '^zone=internal' /etc/NetworkManager/system-connections/*");
    assert!(keyfile.contains("br0"), "{keyfile}");
    b.sh_ok("nmcli connection reload && nmcli connection up br0");
    wait_zone(&b, "br0", "internal", "nmcli connection reload");
    b.sh_ok("virtzone detach br0 --permanent");
    wait_zone(&b, "br0", "public", "virtzone detach --permanent");
    assert_eq!(
        b.sh_out("grep -c '^zone=' /etc/NetworkManager/system-connections/br0.nmconnection")
            .trim(),
        "0"
    );

    let errors = firewalld_errors(&b);
    assert!(errors.is_empty(), "firewalld logged errors: {errors:?}");
}

/// Guests on the host bridge: two guest namespaces and a LAN namespace plugged into the NM-managed
/// `br0` as ports reach each other (bridged), and reach the host through the zone virtzone bound
/// (`internal`): a host port that zone does not open is rejected until the zone opens it.
#[test]
fn guests_on_an_nm_bridge_reach_each_other_the_lan_and_the_host_through_its_zone() {
    let b = boot_with_nm_bridge();
    b.sh_ok("virtzone attach br0 --zone internal");
    wait_zone(&b, "br0", "internal", "virtzone attach");
    for (ns, addr) in [
        ("g1", "203.0.113.11"),
        ("g2", "203.0.113.12"),
        ("lan", "203.0.113.100"),
    ] {
        b.sh_ok(&format!(
            "ip netns add {ns} && ip link add v{ns} type veth peer name eth0 netns {ns} \
             && ip link set v{ns} master br0 up && ip -n {ns} addr add {addr}/24 dev eth0 \
             && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up"
        ));
    }
    for (from, to) in [
        ("g1", "203.0.113.12"),
        ("g2", "203.0.113.11"),
        ("g1", "203.0.113.100"),
        ("g2", "203.0.113.100"),
        ("lan", "203.0.113.11"),
        ("g1", "203.0.113.1"),
    ] {
        b.wait_ok(
            &format!("{from} reaches {to}"),
            BACK,
            &format!("ip netns exec {from} ping -c1 -W1 {to} >/dev/null"),
        );
    }
    // The host side is zone internal's: tcp/8080 is not open there, so it is rejected …
    let connect = "ip netns exec g1 busybox nc -w 3 203.0.113.1 8080 </dev/null";
    let listen = "setsid busybox nc -l -p 8080 </dev/null >/dev/null 2>&1 &";
    b.sh_ok(listen);
    b.wait_ok(
        "a listener on tcp/8080",
        SETTLE,
        "ss -Htln 'sport = :8080' | grep -q .",
    );
    let refused = b.sh(connect);
    assert!(
        !refused.status.success(),
        "tcp/8080 reached the host although zone internal does not open it"
    );
    // … until zone internal opens it (proving br0's traffic is that zone's).
    b.sh_ok("firewall-cmd --zone=internal --add-port=8080/tcp");
    b.wait_ok("g1 reaches the host's tcp/8080", BACK, connect);
    let errors = firewalld_errors(&b);
    assert!(errors.is_empty(), "firewalld logged errors: {errors:?}");
}

/// `attach --permanent` on an NM-managed bridge survives a reboot of the booted system (the same
/// root and /etc booted again): NetworkManager reads `connection.zone` from the profile's file and
/// sends it to firewalld as it activates `br0`, before anyone asks virtzone.
#[test]
fn permanent_binding_of_an_nm_bridge_survives_a_reboot() {
    let mut b = boot_with_nm_bridge();
    b.sh_ok("virtzone attach br0 --zone internal --permanent");
    wait_zone(&b, "br0", "internal", "virtzone attach --permanent");
    let first = b.pid1();
    b.reboot();
    assert_ne!(b.pid1(), first, "the same system is still running");
    b.wait_ok(
        "NetworkManager active after the reboot",
        SETTLE,
        "systemctl is-active NetworkManager",
    );
    b.wait_ok(
        "br0 activated after the reboot",
        BACK,
        "nmcli -g GENERAL.STATE device show br0 | grep -q '^100'",
    );
    wait_zone(&b, "br0", "internal", "a reboot");
    assert_eq!(profile_zone(&b, "br0"), "internal");
    assert_eq!(
        b.sh_ok("nmcli -g connection.zone connection show br0")
            .trim(),
        "internal"
    );
    let row = list_row(&b, "br0");
    assert_eq!(
        (&row["path"], &row["agree"]),
        (
            &serde_json::json!("networkmanager"),
            &serde_json::json!(true)
        ),
        "{row}"
    );
    let errors = firewalld_errors(&b);
    assert!(errors.is_empty(), "firewalld logged errors: {errors:?}");
}
