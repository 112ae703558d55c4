//! Issue #21: no outage of a NAT guest's paths across firewalld reloads and restarts, with
//! virtzone's own NAT table (src/forward/nat.rs) carrying libvirt's masquerade.
//!
//! Real libvirtd 9.0 (iptables backend) and firewalld 1.3.3 on nftables in the lab; a guest with a
//! DHCP lease; an upstream namespace without a route back to the guest's subnet, so a guest's new
//! connection out works only when NATed. Probes every 20 ms (tests/common/outage.rs).

use crate::common;
use crate::common::forward::{connect, lab, nat_network, serve, wait, Daemon};
use crate::common::vz::vz_ok;

use std::time::Duration;

use common::libvirt::{Guest, LibvirtLab};
use common::outage::{self, dead_runs, describe, now, prober, Probers, UPSTREAM_SERVER};
use common::sidroot::{ip, SidOptions, SidSystem};
use common::{text, Backend, Process, Release};

const BRIDGE: &str = "virbr93";
const UP_PORT: u16 = 7000;
const FWD_PORT: &str = "8080";
const HOST_UP: &str = "198.51.100.1";
const PEER_UP: &str = "198.51.100.2";
const SETTLE: Duration = Duration::from_secs(30);

/// The lab of these tests: one NAT network `out` on [`BRIDGE`], a guest with a lease serving
/// port 80, an upstream namespace (no default route) serving [`UP_PORT`].
struct Setup<'a> {
    vlab: &'a LibvirtLab,
    guest: Guest<'a>,
    up: Guest<'a>,
    ip: String,
    _servers: Vec<Process>,
}

fn setup(vlab: &LibvirtLab) -> Setup<'_> {
    let net = vlab.define(&nat_network("out", BRIDGE, "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start");
    let guest = vlab.plug_guest(BRIDGE);
    let ip = guest.dhcp(5).expect("DHCP").ip;
    let guest_server = serve(&guest, "0.0.0.0", 80, "guest");
    let up = vlab.plug_upstream("vzup93", "198.51.100.1/24", "198.51.100.2/24");
    // No way back to the guest's subnet but through the host's NAT.
    let out = up
        .command("ip")
        .args(["route", "del", "default"])
        .output()
        .expect("ip");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let up_server = Process(
        up.command("/usr/bin/python3")
            .args(["-c", UPSTREAM_SERVER, &UP_PORT.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("upstream server"),
    );
    Setup {
        vlab,
        guest,
        up,
        ip,
        _servers: vec![guest_server, up_server],
    }
}

impl Setup<'_> {
    /// One new connection from the guest upstream: `ok` and the upstream's answer (`ok up <peer>`),
    /// or the failure.
    fn out(&self) -> String {
        connect(&self.guest, PEER_UP, UP_PORT)
    }

    fn nft_table(&self) -> Option<String> {
        let out = self
            .vlab
            .command("nft")
            .args(["list", "table", "ip", "virtzone_nat"])
            .output()
            .expect("nft");
        out.status.success().then(|| text(&out.stdout))
    }

    /// The packets counted by libvirt's masquerade rules (iptables' `nat` table, `LIBVIRT_PRT`).
    fn libvirt_masquerade_packets(&self) -> u64 {
        let out = self
            .vlab
            .command("iptables")
            .args(["-w", "-t", "nat", "-L", "LIBVIRT_PRT", "-v", "-x", "-n"])
            .output()
            .expect("iptables");
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains("MASQUERADE"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// The packets counted by the masquerade rules of virtzone's table.
    fn own_masquerade_packets(&self) -> u64 {
        self.nft_table()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("masquerade"))
            .filter_map(|l| {
                let (_, rest) = l.split_once("counter packets ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Whether libvirt's masquerade is in place (after its rebuild).
    fn libvirt_masquerades(&self) -> bool {
        let out = self
            .vlab
            .command("iptables")
            .args(["-w", "-t", "nat", "-S", "LIBVIRT_PRT"])
            .output()
            .expect("iptables");
        text(&out.stdout).contains("-j MASQUERADE")
    }
}

/// Issue #21's goal for new connections out, as far as firewalld lets anything reach it.
///
/// firewalld drops every new flow (input, forward, output; established ones pass) for the whole
/// of its own reload (`set_policy("DROP")` in `Firewall.reload`; 2.x calls it `ReloadPolicy=`,
/// default DROP): every new connection dies for that window whatever libvirt or virtzone do. So:
/// across 3 reloads and 1 restart no packet of the guest may leave un-NATed (counted in the
/// upstream namespace: before virtzone's NAT table, every new connection during libvirt's
/// rebuild did), and each reload's longest run of failed new connections out may not outlast
/// the reload call itself by more than two probes (before: 0.7–1.3 s against a 0.4–0.5 s call).
#[test]
fn reloads_and_a_restart_keep_new_connections_out() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let s = setup(&vlab);
    let _daemon = Daemon::start(&vlab);
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "out",
            "--guest",
            &s.ip,
            &format!("tcp/{FWD_PORT}:80"),
        ],
    );
    wait("virtzone's NAT table", SETTLE, || s.nft_table().is_some());
    wait("the guest's way out", SETTLE, || {
        s.out().starts_with("ok up ")
    });
    let probers = Probers::start(vec![
        prober(
            s.guest.command("/usr/bin/python3"),
            &[
                "dns:dns:192.0.2.1".to_string(),
                format!("tcp:out:{PEER_UP}:{UP_PORT}"),
            ],
        ),
        prober(
            s.up.command("/usr/bin/python3"),
            &[format!("tcp:fwd:{HOST_UP}:{FWD_PORT}")],
        ),
    ]);
    outage::count_from(s.up.command("iptables"), "192.0.2.0/24");
    let mut reload_calls = Vec::new();
    let mut events = vec![("start".to_string(), now())];
    for i in 0..4 {
        let restart = i == 3;
        events.push((
            format!("{}{}", if restart { "restart" } else { "reload" }, i + 1),
            now(),
        ));
        let t = std::time::Instant::now();
        if restart {
            vlab.restart_firewalld();
        } else {
            vlab.firewall_cmd_ok(&["--reload"]);
            reload_calls.push(t.elapsed());
        }
        // Until libvirt's rebuild is done (its masquerade is back), and a little longer: the
        // window the probes cover.
        wait("libvirt's masquerade back", SETTLE, || {
            s.libvirt_masquerades()
        });
        std::thread::sleep(Duration::from_millis(1500));
    }
    events.push(("end".to_string(), now()));
    let samples = probers.stop();
    let mut report = String::new();
    for path in ["dns", "out", "fwd"] {
        let runs = dead_runs(&samples, path);
        let (n, ok) = outage::counts(&samples, path);
        report += &format!(
            "{path}: {ok}/{n} answered, longest dead run {} ms; runs: {}\n",
            outage::longest(&runs) as f64 * outage::PERIOD * 1e3,
            describe(&runs, &events)
        );
    }
    eprintln!("{report}");
    assert!(
        outage::counts(&samples, "out").0 > 200,
        "too few probes:\n{report}"
    );
    assert_unnated_and_overrun(
        outage::counted_from(s.up.command("iptables"), "192.0.2.0/24"),
        &samples,
        &events,
        &reload_calls,
        &format!("{report}{}", vlab.diagnostics()),
    );
}

/// No packet of the guest upstream un-NATed, and no reload's run of failed new connections out
/// longer than the reload call (plus two probes).
fn assert_unnated_and_overrun(
    unnated: u64,
    samples: &[outage::Sample],
    events: &[(String, f64)],
    reload_calls: &[Duration],
    report: &str,
) {
    assert_eq!(
        unnated, 0,
        "{unnated} packets of the guest reached upstream un-NATed:\n{report}"
    );
    if let Some((event, run, call)) = outage::reload_overrun(samples, "out", events, reload_calls) {
        panic!(
            "after {event}: new connections out dead for {run:.0} ms, the reload call took \
             {call:.0} ms:\n{report}"
        );
    }
}

/// virtzone's table NATs the guest's connections once (libvirt's masquerade, still in place, is
/// skipped for them: its counters stay still), the upstream sees the host's address, and the
/// table goes with the network (`net-destroy`), comes back with it, and goes with `forward purge`.
#[test]
fn own_nat_is_the_only_nat_and_goes_with_the_network() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let s = setup(&vlab);
    wait("virtzone's NAT table", SETTLE, || s.nft_table().is_some());
    let table = s.nft_table().unwrap_or_default();
    for rule in [
        "ip saddr 192.0.2.0/24 ip daddr 224.0.0.0/24",
        "ip saddr 192.0.2.0/24 ip daddr 255.255.255.255",
        "ip saddr 192.0.2.0/24 ip daddr != 192.0.2.0/24 meta l4proto tcp counter packets",
        "masquerade to :1024-65535",
        "type nat hook postrouting priority srcnat - 1",
    ] {
        assert!(table.contains(rule), "{rule:?} missing:\n{table}");
    }
    wait("the guest's way out", SETTLE, || {
        s.out().starts_with("ok up ")
    });
    let (libvirt_before, own_before) = (s.libvirt_masquerade_packets(), s.own_masquerade_packets());
    for _ in 0..5 {
        assert_eq!(
            s.out(),
            format!("ok up {HOST_UP}"),
            "NATed to the host's address"
        );
    }
    let (libvirt_after, own_after) = (s.libvirt_masquerade_packets(), s.own_masquerade_packets());
    assert_eq!(
        libvirt_after, libvirt_before,
        "libvirt's masquerade saw the connections (NAT twice?):\n{table}"
    );
    assert!(
        own_after >= own_before + 5,
        "virtzone's masquerade counted {own_before} → {own_after}"
    );

    vlab.expect_ok(&vlab.net_destroy("out"), "net-destroy");
    wait("the table gone with the network", SETTLE, || {
        s.nft_table().is_none()
    });
    vlab.expect_ok(&vlab.net_start("out"), "net-start");
    wait("the table back with the network", SETTLE, || {
        s.nft_table().is_some()
    });
    vz_ok(&vlab, &["forward", "purge"]);
    assert!(s.nft_table().is_none(), "forward purge left the table");
}

/// The same with libvirt 12.8's nftables backend and firewalld 2.5.2 (nftables) in the sid
/// system: no packet of the guest upstream un-NATed across 3 reloads and 1 restart, and each
/// reload's run of failed new connections out no longer than the reload call (firewalld 2.5.2's
/// `ReloadPolicy`, default DROP, is the same window).
#[test]
fn libvirt12_reloads_and_a_restart_keep_new_connections_out() {
    use crate::forwards12::{net_xml, plug_guest, serve as serve12};
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    sys.sh("virtzone install >/dev/null");
    sys.start_libvirtd();
    sys.start_network_n12(&net_xml());
    let (guest, _ip) = plug_guest(&sys, dir.path());
    let _server = serve12(&guest, 80, "guest");
    let up = sys.plug_upstream("vzup12o");
    ip(&["-n", &up.netns, "route", "del", "default"]);
    let _up_server = Process(
        up.command("/usr/bin/python3")
            .args(["-c", UPSTREAM_SERVER, &UP_PORT.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("upstream server"),
    );
    sys.start_virtzone_daemon();
    let table = || {
        sys.run(&["nft", "list", "table", "ip", "virtzone_nat"])
            .status
            .success()
    };
    wait("virtzone's NAT table", SETTLE, table);
    let out_once = || crate::forwards12::connect(&guest, PEER_UP, UP_PORT);
    wait("the guest's way out", SETTLE, || {
        out_once() == format!("ok up {HOST_UP}")
    });
    outage::count_from(up.command("iptables"), "192.0.2.0/24");
    let probers = Probers::start(vec![prober(
        guest.command("/usr/bin/python3"),
        &[
            "dns:dns:192.0.2.1".to_string(),
            format!("tcp:out:{PEER_UP}:{UP_PORT}"),
        ],
    )]);
    let mut events = vec![("start".to_string(), now())];
    let mut reload_calls = Vec::new();
    for i in 0..4 {
        let restart = i == 3;
        let name = if restart { "restart" } else { "reload" };
        events.push((format!("{name}{}", i + 1), now()));
        let t = std::time::Instant::now();
        if restart {
            sys.stop("/usr/sbin/firewalld");
            sys.start_firewalld();
        } else {
            sys.sh("firewall-cmd --reload >/dev/null");
            reload_calls.push(t.elapsed());
        }
        wait("the guest's way out after the event", SETTLE, || {
            out_once().starts_with("ok up ")
        });
        std::thread::sleep(Duration::from_millis(1000));
    }
    events.push(("end".to_string(), now()));
    let samples = probers.stop();
    let mut report = String::new();
    for path in ["dns", "out"] {
        let runs = dead_runs(&samples, path);
        report += &format!(
            "{path}: longest dead run {} probes; runs: {}\n",
            outage::longest(&runs),
            describe(&runs, &events)
        );
    }
    eprintln!("{report}");
    assert_unnated_and_overrun(
        outage::counted_from(up.command("iptables"), "192.0.2.0/24"),
        &samples,
        &events,
        &reload_calls,
        &format!("{report}{}", sys.diagnostics()),
    );
}

/// Issue #21, the forward through a firewalld restart. firewalld 2.5.2 holds the forward's DNAT as
/// a forward-port in virtzone's policy, which a restart takes away until firewalld is back (and
/// which its reload re-creates a transaction after its zones). virtzone's own table carries the
/// same DNAT (`prerouting` at `dstnat - 1`), so the forward answers while firewalld is stopped.
/// Its counter counts every connection: virtzone's rule is the one that DNATs them (the kernel
/// then skips firewalld's NAT chain for them: one DNAT). It goes with `forward remove`.
#[test]
fn libvirt12_forward_answers_while_firewalld_is_stopped() {
    use crate::forwards12::{connect as connect12, net_xml, plug_guest, serve as serve12};
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    sys.sh("virtzone install >/dev/null");
    sys.start_libvirtd();
    sys.start_network_n12(&net_xml());
    let (guest, gip) = plug_guest(&sys, dir.path());
    let _server = serve12(&guest, 80, "guest");
    let up = sys.plug_upstream("vzup12d");
    sys.start_virtzone_daemon();
    let spec = format!("--network n12 --guest {gip} tcp/{FWD_PORT}:80");
    sys.sh(&format!("virtzone forward add {spec} >/dev/null"));
    let through = || connect12(&up, HOST_UP, FWD_PORT.parse().expect("port"));
    let answers = |r: &str| r.starts_with("ok guest");
    wait("the forward", SETTLE, || answers(&through()));
    let table = || {
        let out = sys.run(&["nft", "list", "table", "ip", "virtzone_nat"]);
        text(&out.stdout)
    };
    // The packets counted by the forward's DNAT rule in virtzone's table (None: no such rule).
    let dnat_packets = || {
        table()
            .lines()
            .find(|l| l.contains(&format!("tcp dport {FWD_PORT} ")) && l.contains("dnat to "))
            .and_then(|l| {
                let (_, rest) = l.split_once("counter packets ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
    };
    wait("the forward's DNAT in virtzone's table", SETTLE, || {
        dnat_packets().is_some()
    });
    let t = table();
    for part in [
        "type nat hook prerouting priority dstnat - 1",
        &format!("tcp dport {FWD_PORT} counter packets"),
        &format!("dnat to {gip}:80"),
    ] {
        assert!(t.contains(part), "{part:?} missing:\n{t}");
    }
    let before = dnat_packets().unwrap_or_default();
    for _ in 0..5 {
        let r = through();
        assert!(answers(&r), "through the forward: {r}");
    }
    assert_eq!(
        dnat_packets(),
        Some(before + 5),
        "virtzone's rule DNATs each new connection:\n{}",
        table()
    );

    sys.stop("/usr/sbin/firewalld");
    assert!(
        !sys.run(&["nft", "list", "table", "inet", "firewalld"])
            .status
            .success(),
        "firewalld's table is gone while it is stopped"
    );
    for _ in 0..3 {
        let r = through();
        assert!(
            answers(&r),
            "the forward while firewalld is stopped: {r}\n{}\n{}",
            table(),
            sys.diagnostics()
        );
    }
    sys.start_firewalld();
    wait("the forward after firewalld's start", SETTLE, || {
        answers(&through())
    });

    sys.sh(&format!("virtzone forward remove {spec} >/dev/null"));
    assert!(
        dnat_packets().is_none(),
        "forward remove left the DNAT:\n{}",
        table()
    );
    let r = through();
    assert!(!answers(&r), "the removed forward still answers: {r}");
}
