//! `virtzone forward` and `virtzone allow` with real packets: real libvirtd (Debian 12's 9.0.0) runs
//! a NAT network, a guest namespace gets its address by DHCP from libvirt's dnsmasq and runs a TCP
//! service, an upstream namespace connects to the host's address. The forward must reach the guest
//! through firewalld's rules *and* libvirt's `LIBVIRT_FWI` reject, and keep doing so after every
//! rebuild of either (firewalld reload and restart, libvirtd restart, network restart), with
//! `virtzone serve` running. See docs/forwards.md.
//!
//! Needs root, `libvirt-daemon-system libvirt-clients dnsmasq-base busybox python3` (scripts/test.sh
//! installs them). Addresses are documentation ranges.

use crate::common;

use std::process::{Output, Stdio};

use common::forward::{
    connect, connect_from_host, errors_since, lab, libvirt_rejects, log_len, nat_network, proven,
    python, route_localnet, route_loopback_to_host, serve, serve_loopback_only, set_route_localnet,
    wait, Daemon, HEAL, SERVER, UP_HOST,
};
use common::libvirt::{Guest, LibvirtLab};
use common::vz::{vz, vz_ok};
use common::{text, Backend, Process, Release};
use serde_json::Value;

/// The whole life of a forward on one firewalld release and backend.
fn forward_survives_every_rebuild(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let net = vlab.define(&nat_network("fwd1", "virbr31", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start fwd1");
    let guest = vlab.plug_guest("virbr31");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let guest_ip = lease.ip.clone();
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup31", "198.51.100.1/24", "198.51.100.2/24");
    let _daemon = Daemon::start(&vlab);
    let errors_from = log_len(&vlab);

    // Without a forward the port is closed.
    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));

    let out = vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "fwd1",
            "--guest",
            &guest_ip,
            "tcp/8080:80",
        ],
    );
    assert!(out.starts_with("forward 1:"), "{out}");
    // Only a connection made while libvirt's reject is in place proves anything: between a flush
    // and libvirt's rebuild there is no reject at all.
    let works = || {
        proven(&vlab, "virbr31", || {
            connect(&up, UP_HOST, 8080) == format!("ok guest-one {}", "198.51.100.2")
        })
    };
    wait("the forward working", HEAL, works);
    // A port nobody forwarded stays closed.
    assert!(!connect(&up, UP_HOST, 8081).starts_with("ok"));
    // A second forward to the same guest shares the accept (one multiport rule): the rule
    // virtzone plans must be exactly what iptables prints back, or the daemon would re-add it
    // forever (bounded below).
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "fwd1",
            "--guest",
            &guest_ip,
            "tcp/8443:443",
        ],
    );
    let chain = vlab
        .command("iptables")
        .args(["-w", "-t", "filter", "-S", "VIRTZONE_FWD"])
        .output()
        .unwrap();
    assert!(
        text(&chain.stdout).contains("-m multiport --dports 80,443 "),
        "{}",
        text(&chain.stdout)
    );
    wait("the first forward beside the second", HEAL, works);
    // Adding it again changes nothing.
    assert_eq!(
        vz_ok(
            &vlab,
            &[
                "forward",
                "add",
                "--network",
                "fwd1",
                "--guest",
                &guest_ip,
                "tcp/8080:80"
            ]
        )
        .trim(),
        "forward 1 exists already"
    );

    if release == Release::Debian11 {
        // No firewalld object before 1.1 forwards the host's own connections: refused, nothing
        // recorded.
        let out = vz(
            &vlab,
            &[
                "forward",
                "add",
                "--network",
                "fwd1",
                "--guest",
                &guest_ip,
                "--host-address",
                UP_HOST,
                "--from-host",
                "tcp/9090:80",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("firewalld 1.1"),
            "{}",
            text(&out.stderr)
        );
        assert!(!vz_ok(&vlab, &["forward", "list"]).contains("9090"));
    }

    // firewall-cmd shows what virtzone did.
    let shown = match release {
        Release::Debian11 | Release::Debian12 => {
            vlab.firewall_cmd_ok(&["--zone=public", "--list-forward-ports"])
        }
        _ => vlab.firewall_cmd_ok(&["--info-policy=virtzone-forward"]),
    };
    assert!(
        shown.contains(&format!("port=8080:proto=tcp:toport=80:toaddr={guest_ip}")),
        "{shown}"
    );

    // Every rebuild of firewalld's or libvirt's rules.
    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("the forward after firewall-cmd --reload", HEAL, works);

    vlab.restart_firewalld();
    wait("the forward after a firewalld restart", HEAL, works);

    vlab.restart_libvirtd();
    wait("the forward after a libvirtd restart", HEAL, works);

    vlab.expect_ok(&vlab.net_destroy(&net), "net-destroy fwd1");
    let rows: Value = serde_json::from_str(&vz_ok(&vlab, &["forward", "list", "--json"])).unwrap();
    assert_eq!(rows[0]["state"], "inactive", "{rows}");
    vlab.expect_ok(&vlab.net_start(&net), "net-start fwd1 again");
    // The bridge is new: plug the guest's NIC into it again, as libvirt does for a VM.
    let replug = std::process::Command::new("ip")
        .args([
            "-n",
            &vlab.netns,
            "link",
            "set",
            &guest.port,
            "master",
            "virbr31",
            "up",
        ])
        .status()
        .unwrap();
    assert!(replug.success());
    wait("the forward after net-destroy/net-start", HEAL, works);

    let rows: Value = serde_json::from_str(&vz_ok(&vlab, &["forward", "list", "--json"])).unwrap();
    assert_eq!(
        (
            &rows[0]["id"],
            &rows[0]["guest"],
            &rows[0]["host_port"],
            &rows[0]["state"]
        ),
        (
            &Value::from(1),
            &Value::from(guest_ip.as_str()),
            &Value::from("8080"),
            &Value::from("active")
        ),
        "{rows}"
    );

    // The daemon and libvirt do not fight: a few re-applications per rebuild, then quiet (a
    // ping-pong would show as hundreds within seconds).
    let log = std::fs::read_to_string(vlab.dir().join("daemon.log")).unwrap_or_default();
    let reapplied = log.matches("forwards: re-applied").count();
    assert!(reapplied <= 20, "{reapplied} re-applications:\n{log}");
    assert_eq!(
        vz_ok(&vlab, &["forward", "remove", "1"]).trim(),
        "forward 1 removed"
    );
    vz_ok(&vlab, &["forward", "remove", "2"]);
    wait("the port closed after forward remove", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
    let listing = match release {
        Release::Debian11 | Release::Debian12 => {
            vlab.firewall_cmd_ok(&["--zone=public", "--list-forward-ports"])
        }
        _ => vlab.firewall_cmd_ok(&["--info-policy=virtzone-forward"]),
    };
    assert!(!listing.contains("8080"), "{listing}");
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    forward_survives_every_rebuild:
        _0_9_3_nftables, _1_3_3_nftables, _1_3_3_iptables, _2_3_1_nftables, _2_3_1_iptables,
        _2_5_2_nftables, _2_5_2_iptables;
    skip _0_9_3_iptables: "not run, for time";
}

/// `allow`: a host service opened to one network's guests is reachable from that network's guest
/// and refused from a guest of a second network in the same zone.
fn allow_is_per_network(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let n1 = vlab.define(&nat_network("al1", "virbr41", "192.0.2"));
    let n2 = vlab.define(&nat_network("al2", "virbr42", "203.0.113"));
    for n in [&n1, &n2] {
        vlab.expect_ok(&vlab.net_start(n), "net-start");
    }
    assert_eq!(
        vlab.zone_of_interface("virbr42").as_deref(),
        Some("libvirt")
    );
    let g1 = vlab.plug_guest("virbr41");
    let g2 = vlab.plug_guest("virbr42");
    for g in [&g1, &g2] {
        g.dhcp(5)
            .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    }
    let _service = Process(
        vlab.command(python())
            .args(["-c", SERVER, "0.0.0.0", "9000", "host-service"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reach = |g: &Guest<'_>, addr: &str| connect(g, addr, 9000);
    wait(
        "the host service refused to guests (libvirt zone)",
        HEAL,
        || reach(&g1, "192.0.2.1").starts_with("refused"),
    );
    let errors_from = log_len(&vlab);

    let out = vz_ok(&vlab, &["allow", "add", "--network", "al1", "9000/tcp"]);
    assert!(out.contains("opened"), "{out}");
    wait("the host service from network al1", HEAL, || {
        reach(&g1, "192.0.2.1").starts_with("ok host-service")
    });
    assert!(
        !reach(&g2, "203.0.113.1").starts_with("ok"),
        "al2's guest got in"
    );
    assert!(
        !reach(&g2, "192.0.2.1").starts_with("ok"),
        "al2's guest got in via al1's address"
    );
    let shown = vlab.firewall_cmd_ok(&["--info-policy=virtzone-allow"]);
    assert!(
        shown.contains("source address=\"192.0.2.0/24\" port port=\"9000\""),
        "{shown}"
    );
    let rows: Value = serde_json::from_str(&vz_ok(&vlab, &["allow", "list", "--json"])).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"network": "al1", "what": "9000/tcp", "source": "cli"}])
    );

    vz_ok(&vlab, &["allow", "remove", "--network", "al1", "9000/tcp"]);
    wait("the host service closed again", HEAL, || {
        !reach(&g1, "192.0.2.1").starts_with("ok")
    });
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    allow_is_per_network:
        _0_9_3_iptables, _1_3_3_nftables, _1_3_3_iptables, _2_3_1_nftables, _2_5_2_nftables;
    skip _0_9_3_nftables, _2_3_1_iptables, _2_5_2_iptables: "not run, for time";
}

/// Bad input: exit status 2, one sentence, and nothing changed (the state file is byte-identical).
#[test]
fn bad_input_changes_nothing() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&nat_network("bad1", "virbr51", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start bad1");
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.50",
            "tcp/8080:80",
        ],
    );
    let file = vlab.state_dir().join("forwards/forwards.json");
    let before = std::fs::read(&file).unwrap();
    let zone_before = vlab.firewall_cmd_ok(&["--zone=public", "--list-all"]);
    for args in [
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "10.9.9.9",
            "tcp/8081:80",
        ][..],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.1",
            "tcp/8081:80",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "nonsense",
            "tcp/8081:80",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "icmp/8081",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "tcp/0",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "tcp/65536",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "tcp/90-80",
        ],
        &[
            "forward",
            "add",
            "--network",
            "nosuch",
            "--guest",
            "192.0.2.51",
            "tcp/8081",
        ],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "--host-address",
            "203.0.113.77",
            "tcp/8081",
        ],
        &["forward", "add", "--network", "bad1", "tcp/8081"],
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "--host-address",
            "127.0.0.1",
            "tcp/8081",
        ],
        &["forward", "remove", "99"],
        &["forward", "remove", "one"],
        &["allow", "add", "--network", "bad1", "nosuchservice"],
        &["allow", "add", "--network", "bad1", "2049/icmp"],
        &["allow", "remove", "--network", "bad1", "nfs"],
    ] {
        let out = vz(&vlab, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("virtzone: "), "{args:?}: {err}");
    }
    // --hairpin cannot work on 1.3.3: refused (1), changing nothing.
    let out = vz(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "--hairpin",
            "tcp/8082",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2.2.0"), "{}", text(&out.stderr));
    // A clash is a refusal (1), also changing nothing.
    let out = vz(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "bad1",
            "--guest",
            "192.0.2.51",
            "tcp/8080",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("forward 1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(
        vlab.firewall_cmd_ok(&["--zone=public", "--list-all"]),
        zone_before
    );
}

/// Why the daemon exists: without it, the CLI's forward works until firewalld reloads; once libvirt
/// has rebuilt its rules on `Reloaded`, its reject wins again (firewalld 1.3.3 flushes iptables'
/// `filter` table on reload, virtzone's accept with it).
#[test]
fn without_the_daemon_a_reload_leaves_libvirts_reject_in_front() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&nat_network("nod1", "virbr61", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start nod1");
    let guest = vlab.plug_guest("virbr61");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup61", "198.51.100.1/24", "198.51.100.2/24");
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "nod1",
            "--guest",
            &lease.ip,
            "tcp/8080:80",
        ],
    );
    assert!(libvirt_rejects(&vlab, "virbr61"));
    assert!(connect(&up, UP_HOST, 8080).starts_with("ok guest-one"));

    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("libvirt's reject back after the reload", HEAL, || {
        libvirt_rejects(&vlab, "virbr61")
    });
    assert!(connect(&up, UP_HOST, 8080).starts_with("refused"));
    // The next virtzone run (here: the daemon's first check) puts it right.
    let _daemon = Daemon::start(&vlab);
    wait("the forward once the daemon runs", HEAL, || {
        proven(&vlab, "virbr61", || {
            connect(&up, UP_HOST, 8080).starts_with("ok guest-one")
        })
    });
}

/// `--from-host`: the host's own connections to the forwarded address reach the guest (policy
/// HOST→ANY with a rich rule naming that address), upstream ones too; the host's connections to
/// its other addresses are not captured; after `remove` the port is closed for the host.
fn from_host_forward_serves_the_hosts_own_connections(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let net = vlab.define(&nat_network("fh1", "virbr81", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start fh1");
    let guest = vlab.plug_guest("virbr81");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup81", "198.51.100.1/24", "198.51.100.2/24");
    let errors_from = log_len(&vlab);

    let out = vz(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "fh1",
            "--guest",
            &lease.ip,
            "--from-host",
            "tcp/8080:80",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--host-address"),
        "{}",
        text(&out.stderr)
    );

    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "fh1",
            "--guest",
            &lease.ip,
            "--host-address",
            UP_HOST,
            "--from-host",
            "tcp/8080:80",
        ],
    );
    wait("the forward from the host", HEAL, || {
        connect_from_host(&vlab, UP_HOST, 8080) == format!("ok guest-one {UP_HOST}")
    });
    wait("the forward from upstream", HEAL, || {
        proven(&vlab, "virbr81", || {
            connect(&up, UP_HOST, 8080) == "ok guest-one 198.51.100.2"
        })
    });
    assert!(!connect_from_host(&vlab, "192.0.2.1", 8080).starts_with("ok"));
    let shown = vlab.firewall_cmd_ok(&["--info-policy=virtzone-from-host"]);
    assert!(
        shown.contains(&format!(
            "destination address=\"{UP_HOST}\" forward-port port=\"8080\""
        )),
        "{shown}"
    );
    let rows: Value = serde_json::from_str(&vz_ok(&vlab, &["forward", "list", "--json"])).unwrap();
    assert_eq!(rows[0]["from_host"], true, "{rows}");

    vz_ok(&vlab, &["forward", "remove", "1"]);
    wait("the port closed for the host", HEAL, || {
        !connect_from_host(&vlab, UP_HOST, 8080).starts_with("ok")
    });
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    from_host_forward_serves_the_hosts_own_connections:
        _1_3_3_nftables, _1_3_3_iptables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables:
        "refused: no firewalld before 1.1 forwards the host's own connections (the refusal is \
        checked in forward_survives_every_rebuild::_0_9_3_nftables)";
    skip _2_3_1_nftables, _2_3_1_iptables, _2_5_2_iptables: "not run, for time";
}

/// IPv6: a guest with an address from libvirt's router advertisements on a NAT network's IPv6
/// subnet (libvirt routes IPv6, it does not NAT it), an upstream client connecting to the host's
/// IPv6 address. firewalld's forward-port carries the IPv6 `to-addr`; libvirt's ip6tables accept
/// the routed subnet, so no accept of virtzone's is needed.
fn ipv6_forward_reaches_the_guest(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let xml = "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n\
               <name>six1</name><forward mode='nat'/><bridge name='virbr91' stp='off'/>\n\
               <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
               end='192.0.2.199'/></dhcp></ip>\n\
               <ip family='ipv6' address='2001:db8:91::1' prefix='64'/>\n\
               <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>\n";
    let net = vlab.define(xml);
    vlab.expect_ok(&vlab.net_start(&net), "net-start six1");
    let guest = vlab.plug_guest("virbr91");
    // SLAAC from libvirt's dnsmasq: wait for a global, non-tentative address.
    let guest_ip = {
        let mut found = String::new();
        wait(
            "the guest's IPv6 address from router advertisements",
            HEAL,
            || {
                let out = guest
                    .command("ip")
                    .args(["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
                    .output()
                    .unwrap();
                let listing = text(&out.stdout);
                let line = listing.lines().find(|l| !l.contains("tentative"));
                found = line
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|a| a.split('/').next())
                    .unwrap_or("")
                    .to_string();
                !found.is_empty()
            },
        );
        found
    };
    assert!(guest_ip.starts_with("2001:db8:91:"), "{guest_ip}");
    let _server = serve(&guest, "::", 80, "guest-six");
    let up = vlab.plug_upstream("vzup91", "198.51.100.1/24", "198.51.100.2/24");
    for (ns, args) in [
        (
            vlab.netns.as_str(),
            ["addr", "add", "2001:db8:99::1/64", "dev", "vzup91"],
        ),
        (
            up.netns.as_str(),
            ["addr", "add", "2001:db8:99::2/64", "dev", "eth0"],
        ),
    ] {
        let ok = std::process::Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .arg("nodad")
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let ok = std::process::Command::new("ip")
        .args([
            "-n",
            &up.netns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:99::1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let _daemon = Daemon::start(&vlab);
    let errors_from = log_len(&vlab);
    assert!(!connect(&up, "2001:db8:99::1", 8080).starts_with("ok"));

    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "six1",
            "--guest",
            &guest_ip,
            "tcp/8080:80",
        ],
    );
    let works = || connect(&up, "2001:db8:99::1", 8080) == "ok guest-six 2001:db8:99::2";
    wait("the IPv6 forward", HEAL, works);
    assert!(!connect(&up, "2001:db8:99::1", 8081).starts_with("ok"));
    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("the IPv6 forward after a reload", HEAL, || {
        proven(&vlab, "virbr91", works)
    });
    vz_ok(&vlab, &["forward", "remove", "1"]);
    wait("the IPv6 port closed", HEAL, || {
        !connect(&up, "2001:db8:99::1", 8080).starts_with("ok")
    });
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    ipv6_forward_reaches_the_guest:
        _1_3_3_nftables, _2_3_1_iptables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_iptables, _2_3_1_nftables, _2_5_2_iptables:
        "not run, for time";
}

/// `--hairpin` (firewalld ≥ 2.2): a second guest of the same network reaches the forward through
/// the host's address. `br_netfilter` is switched off in the lab's namespace, so the proof does not
/// lean on it (with it, replies on the bridge are un-DNATed by conntrack and hairpin works by
/// accident). Without `--hairpin` the second guest's connection fails; with it, the guest sees the
/// host's bridge address as the client (virtzone's masquerade), while upstream clients keep theirs.
fn hairpin_forward_serves_a_second_guest(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let off = vlab
        .command("sysctl")
        .args(["-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])
        .status()
        .unwrap();
    assert!(off.success());
    let net = vlab.define(&nat_network("hp1", "virbr95", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start hp1");
    let g1 = vlab.plug_guest("virbr95");
    let g2 = vlab.plug_guest("virbr95");
    let ip1 = g1
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()))
        .ip;
    g2.dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&g1, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup95", "198.51.100.1/24", "198.51.100.2/24");
    let _daemon = Daemon::start(&vlab);
    let errors_from = log_len(&vlab);

    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "hp1",
            "--guest",
            &ip1,
            "tcp/8080:80",
        ],
    );
    wait("the plain forward from upstream", HEAL, || {
        connect(&up, UP_HOST, 8080) == "ok guest-one 198.51.100.2"
    });
    assert!(
        !connect(&g2, UP_HOST, 8080).starts_with("ok"),
        "hairpin worked without --hairpin: the test proves nothing"
    );

    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "hp1",
            "--guest",
            &ip1,
            "--hairpin",
            "tcp/8081:80",
        ],
    );
    let hairpin = || connect(&g2, UP_HOST, 8081) == "ok guest-one 192.0.2.1";
    wait("the hairpin forward from the second guest", HEAL, hairpin);
    assert_eq!(connect(&up, UP_HOST, 8081), "ok guest-one 198.51.100.2");

    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("the hairpin forward after a reload", HEAL, || {
        proven(&vlab, "virbr95", hairpin)
    });

    vz_ok(&vlab, &["forward", "remove", "2"]);
    wait("the hairpin closed", HEAL, || {
        !connect(&g2, UP_HOST, 8081).starts_with("ok")
    });
    let nat = vlab
        .command("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !text(&nat.stdout).contains("VIRTZONE_HAIRPIN"),
        "{}",
        text(&nat.stdout)
    );
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    hairpin_forward_serves_a_second_guest:
        _2_3_1_nftables, _2_3_1_iptables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_nftables, _1_3_3_iptables:
        "refused: --hairpin needs firewalld 2.2 (the refusal is checked on 1.3.3 in \
        bad_input_changes_nothing)";
    skip _2_5_2_iptables: "not run, for time";
}

/// `virtzone ARGS` in a private mount namespace where the forwards' store is a full tmpfs holding
/// copies of its files: every write of the state file fails with ENOSPC, reads still work.
fn vz_with_full_store(vlab: &LibvirtLab, args: &[&str]) -> Output {
    const FULL: &str = r#"set -e
d="$VIRTZONE_STATE_DIR/forwards"
saved=$(mktemp -d)
cp -a "$d/." "$saved/"
mount -t tmpfs -o size=16k,mode=0700 tmpfs "$d"
cp -a "$saved/." "$d/"
dd if=/dev/zero of="$d/fill" bs=4k count=64 2>/dev/null || true
rm -rf "$saved"
exec "$@"
"#;
    let mut cmd = vlab.command("unshare");
    cmd.env("VIRTZONE_STATE_DIR", vlab.state_dir())
        .env("VIRTZONE_CONFIG", vlab.dir().join("virtzone.conf"))
        .args(["-m", "--", "sh", "-c", FULL, "sh"])
        .arg(common::virtzone_binary())
        .args(args);
    cmd.output().expect("run virtzone with a full store")
}

/// What firewalld and iptables hold of forwards on 1.3.3: the default zone's forward ports
/// (runtime, permanent) and virtzone's accept chain.
fn forward_traces(vlab: &LibvirtLab) -> (String, String, String) {
    let chain = vlab
        .command("iptables")
        .args(["-w", "-t", "filter", "-S", "VIRTZONE_FWD"])
        .output()
        .unwrap();
    (
        vlab.firewall_cmd_ok(&["--zone=public", "--list-forward-ports"]),
        vlab.firewall_cmd_ok(&["--permanent", "--zone=public", "--list-forward-ports"]),
        text(&chain.stdout),
    )
}

/// An operation completes or leaves nothing behind: when the state file cannot be written after
/// firewalld was changed, the change is undone, for add and for remove.
#[test]
fn a_state_file_that_cannot_be_written_undoes_the_firewalld_change() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&nat_network("full1", "virbr71", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start full1");
    let guest = vlab.plug_guest("virbr71");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup71", "198.51.100.1/24", "198.51.100.2/24");
    let spec = ["forward", "add", "--network", "full1", "--guest", &lease.ip];
    vz_ok(&vlab, &[&spec[..], &["tcp/8080:80"]].concat());
    assert!(connect(&up, UP_HOST, 8080).starts_with("ok guest-one"));
    let declared = std::fs::read(vlab.state_dir().join("forwards/forwards.json")).unwrap();
    let before = forward_traces(&vlab);

    // add: firewalld gets the forward, the record fails, the forward goes again.
    let out = vz_with_full_store(&vlab, &[&spec[..], &["tcp/8081:80"]].concat());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains("undone"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert_eq!(forward_traces(&vlab), before);
    assert!(!connect(&up, UP_HOST, 8081).starts_with("ok"));
    assert_eq!(
        std::fs::read(vlab.state_dir().join("forwards/forwards.json")).unwrap(),
        declared
    );

    // remove: the forward goes, the record fails, the forward comes back.
    let out = vz_with_full_store(&vlab, &["forward", "remove", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("undone"), "{err}");
    assert_eq!(forward_traces(&vlab), before);
    assert!(connect(&up, UP_HOST, 8080).starts_with("ok guest-one"));
    assert!(vz_ok(&vlab, &["forward", "list"]).contains("tcp"));
}

/// Before firewalld 2.2 a forward is a zone entry, and a zone's entries apply only to traffic that
/// arrives in it: the forward follows every uplink zone, not just the default one, and leaves a
/// zone once no uplink is bound to it any more (the daemon re-plans on the zone change).
#[test]
fn forward_follows_an_uplink_outside_the_default_zone_1_3_3() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&nat_network("upl1", "virbr81", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start upl1");
    let guest = vlab.plug_guest("virbr81");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup81", "198.51.100.1/24", "198.51.100.2/24");
    vlab.firewall_cmd_ok(&["--zone=work", "--change-interface=vzup81"]);
    let _daemon = Daemon::start(&vlab);
    let ports = |zone: &str, permanent: bool| {
        let zone = format!("--zone={zone}");
        let mut args = vec![zone.as_str(), "--list-forward-ports"];
        if permanent {
            args.insert(0, "--permanent");
        }
        vlab.firewall_cmd_ok(&args)
    };

    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "upl1",
            "--guest",
            &lease.ip,
            "tcp/8080:80",
        ],
    );
    wait("the forward working through zone work", HEAL, || {
        proven(&vlab, "virbr81", || {
            connect(&up, UP_HOST, 8080).starts_with("ok guest-one")
        })
    });
    for zone in ["work", "public"] {
        for permanent in [false, true] {
            assert!(
                ports(zone, permanent).contains("port=8080:proto=tcp:toport=80"),
                "{zone} permanent={permanent}"
            );
        }
    }
    assert!(ports("libvirt", false).trim().is_empty());

    // The uplink moves to the default zone: the forward leaves `work`, and still works.
    vlab.firewall_cmd_ok(&["--zone=public", "--change-interface=vzup81"]);
    wait("the forward gone from zone work", HEAL, || {
        ports("work", false).trim().is_empty() && ports("work", true).trim().is_empty()
    });
    wait("the forward working through zone public", HEAL, || {
        connect(&up, UP_HOST, 8080).starts_with("ok guest-one")
    });

    vz_ok(&vlab, &["forward", "remove", "1"]);
    for zone in ["work", "public"] {
        assert!(ports(zone, false).trim().is_empty(), "{zone}");
        assert!(ports(zone, true).trim().is_empty(), "{zone}");
    }
    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));
}

/// A routed network: libvirt has no reject towards its subnet, but upstream clients still need the
/// forward to reach a guest through the host's address (the guest subnet is not routed upstream).
/// No accept of virtzone's is planned, and none is needed.
fn forward_reaches_a_routed_networks_guest(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let xml = nat_network("rt1", "virbr97", "192.0.2").replace("mode='nat'", "mode='route'");
    let net = vlab.define(&xml);
    vlab.expect_ok(&vlab.net_start(&net), "net-start rt1");
    let guest = vlab.plug_guest("virbr97");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-routed");
    let up = vlab.plug_upstream("vzup97", "198.51.100.1/24", "198.51.100.2/24");
    let _daemon = Daemon::start(&vlab);
    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "rt1",
            "--guest",
            &lease.ip,
            "tcp/8080:80",
        ],
    );
    let works = || connect(&up, UP_HOST, 8080) == "ok guest-routed 198.51.100.2";
    wait("the forward to the routed guest", HEAL, works);
    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("the forward after a reload", HEAL, works);
    let chain = vlab
        .command("iptables")
        .args(["-w", "-t", "filter", "-S", "VIRTZONE_FWD"])
        .output()
        .unwrap();
    assert!(
        !text(&chain.stdout).contains("-j ACCEPT"),
        "no accept needed for a routed network: {}",
        text(&chain.stdout)
    );
    vz_ok(&vlab, &["forward", "remove", "1"]);
    wait("the port closed", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
}

crate::lab_matrix! {
    forward_reaches_a_routed_networks_guest:
        _1_3_3_nftables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_iptables, _2_3_1_nftables, _2_3_1_iptables,
         _2_5_2_iptables: "not run, for time";
}

/// A forward of the host's loopback address (`--host-address 127.0.0.1 --from-host`) is opt-in
/// (`--route-localnet`), works for the host's own connections, and does not open the host's
/// loopback-only services to the guests, which `route_localnet` on the bridge alone would (shown
/// first, with the setting made by hand).
fn loopback_forward_is_opt_in_and_keeps_guests_off_the_hosts_loopback(
    release: Release,
    backend: Backend,
) {
    let vlab = lab(release, backend);
    let net = vlab.define(&nat_network("ln1", "virbr83", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start ln1");
    let guest = vlab.plug_guest("virbr83");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let _loopback_only = serve_loopback_only(&vlab);
    route_loopback_to_host(&guest, "192.0.2.1");
    let errors_from = log_len(&vlab);

    // The risk: route_localnet on the bridge alone opens the host's loopback to the guests. Shown
    // before the daemon starts: it would put the guard in place at the next ruleset change.
    assert!(!connect(&guest, "127.0.0.1", 53).starts_with("ok"));
    set_route_localnet(&vlab, "virbr83", "1");
    assert_eq!(
        connect(&guest, "127.0.0.1", 53),
        format!("ok host-loopback {}", lease.ip)
    );
    set_route_localnet(&vlab, "virbr83", "0");
    let daemon = Daemon::start(&vlab);

    let add = |extra: &[&str]| {
        let mut args = vec![
            "forward",
            "add",
            "--network",
            "ln1",
            "--guest",
            &lease.ip,
            "--host-address",
            "127.0.0.1",
            "--from-host",
        ];
        args.extend_from_slice(extra);
        args.push("tcp/8080:80");
        vz(&vlab, &args)
    };
    let out = add(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--route-localnet"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(route_localnet(&vlab, "virbr83"), "0");
    assert!(vz_ok(&vlab, &["forward", "list"]).contains("no forwards"));

    let out = add(&["--route-localnet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let works = || connect_from_host(&vlab, "127.0.0.1", 8080) == "ok guest-one 192.0.2.1";
    wait("the loopback forward", HEAL, works);
    assert_eq!(route_localnet(&vlab, "virbr83"), "1");
    assert!(!connect(&guest, "127.0.0.1", 53).starts_with("ok"));
    let guard = || {
        let out = vlab
            .command("nft")
            .args(["list", "table", "inet", "virtzone"])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert!(
        guard().contains("iifname != \"lo\" ip daddr 127.0.0.0/8 counter packets"),
        "{}",
        guard()
    );

    let out = vlab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait("the loopback forward after a reload", HEAL, works);
    assert!(!connect(&guest, "127.0.0.1", 53).starts_with("ok"));

    // A firewalld restart leaves the guard alone (its table is virtzone's own).
    vlab.restart_firewalld();
    wait(
        "the loopback forward after a firewalld restart",
        HEAL,
        works,
    );
    assert!(!connect(&guest, "127.0.0.1", 53).starts_with("ok"));

    // libvirt re-creates the bridge: the network hook sets route_localnet on the new one (the
    // daemon is stopped: the hook alone does it).
    drop(daemon);
    vlab.expect_ok(&vlab.net_destroy(&net), "net-destroy ln1");
    vlab.expect_ok(&vlab.net_start(&net), "net-start ln1 again");
    let replug = std::process::Command::new("ip")
        .args([
            "-n",
            &vlab.netns,
            "link",
            "set",
            &guest.port,
            "master",
            "virbr83",
            "up",
        ])
        .status()
        .unwrap();
    assert!(replug.success());
    wait(
        "the loopback forward after net-destroy/net-start",
        HEAL,
        works,
    );
    assert_eq!(route_localnet(&vlab, "virbr83"), "1");
    assert!(!connect(&guest, "127.0.0.1", 53).starts_with("ok"));

    vz_ok(&vlab, &["forward", "remove", "1"]);
    assert_eq!(route_localnet(&vlab, "virbr83"), "0");
    assert_eq!(guard(), "");
    assert!(!connect_from_host(&vlab, "127.0.0.1", 8080).starts_with("ok"));
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    loopback_forward_is_opt_in_and_keeps_guests_off_the_hosts_loopback:
        _1_3_3_nftables, _2_5_2_iptables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_iptables, _2_3_1_nftables, _2_3_1_iptables,
         _2_5_2_nftables: "not run, for time";
}
