//! Bridged guests (issue #20): a host bridge carrying two guests and a LAN, all ports of one bridge
//! in one subnet (tests/common/topology.rs, `Topology::build_bridged`), so nothing between them is
//! routed. What decides their traffic is the bridge's zone — its intra-zone forwarding
//! (`<forward/>`, firewalld ≥ 0.9) — and only when br_netfilter (the lab namespace's
//! `net.bridge.bridge-nf-call-iptables` / `-ip6tables`) passes bridged frames to the IP hooks.
//! Proven with real packets on firewalld 0.9.3, 1.3.3 and 2.5.2 (nftables), br_netfilter on and
//! off, the zone forwarding within itself or not; `virtzone explain` must agree with every packet.
//! (The NetworkManager-managed variant in the booted system: tests/nm.rs.)

use std::path::Path;
use std::process::Output;

use crate::common::topology::{Node, Outcome, Topology, BRIDGE, WEB_PORT};
use crate::common::{ok, text, Backend, Lab, LabConfig, Release};

/// The zone the bridge is bound to.
const ZONE: &str = "internal";

/// One packet of the matrix: who sends, to whom, and the `explain` arguments for it.
struct Packet {
    name: &'static str,
    from: fn(&Topology) -> &Node,
    to: fn(&Topology) -> String,
    explain: fn(&Topology) -> Vec<String>,
}

fn g1(t: &Topology) -> &Node {
    &t.guests[0]
}

fn lan(t: &Topology) -> &Node {
    &t.upstream
}

fn packets() -> [Packet; 4] {
    [
        Packet {
            name: "guest → guest tcp/80 IPv4",
            from: g1,
            to: |t| t.guests[1].v4.to_string(),
            explain: |t| forward_to(t.guests[1].v4),
        },
        Packet {
            name: "guest → guest tcp/80 IPv6",
            from: g1,
            to: |t| t.guests[1].v6.to_string(),
            explain: |t| forward_to(t.guests[1].v6),
        },
        Packet {
            name: "guest → LAN tcp/80 IPv4",
            from: g1,
            to: |t| t.upstream.v4.to_string(),
            explain: |t| forward_to(t.upstream.v4),
        },
        Packet {
            name: "LAN → guest tcp/80 IPv4",
            from: lan,
            to: |t| t.guests[0].v4.to_string(),
            explain: |t| {
                vec![
                    "--from".into(),
                    t.upstream.v4.into(),
                    format!("tcp/{WEB_PORT}"),
                ]
            },
        },
    ]
}

fn forward_to(addr: &str) -> Vec<String> {
    vec![
        "--forward".into(),
        "--to".into(),
        addr.into(),
        format!("tcp/{WEB_PORT}"),
    ]
}

/// Sets both br_netfilter keys of the lab's namespace.
fn set_br_netfilter(lab: &Lab, on: bool) {
    let v = u8::from(on);
    for key in ["iptables", "ip6tables"] {
        ok(&lab
            .command("sysctl")
            .args(["-q", "-w", &format!("net.bridge.bridge-nf-call-{key}={v}")])
            .output()
            .expect("run sysctl"));
    }
}

/// `explain`'s exit status and verdict line for one packet.
fn explain(lab: &Lab, args: &[String]) -> (Option<i32>, String, Output) {
    let mut all = vec!["explain", "--bridge", BRIDGE];
    all.extend(args.iter().map(String::as_str));
    let out = lab.run_virtzone(&all);
    let said = text(&out.stdout);
    let verdict = said
        .lines()
        .find(|l| l.starts_with("verdict:"))
        .unwrap_or(said.trim())
        .to_string();
    (out.status.code(), verdict, out)
}

/// The matrix on one release: every packet, br_netfilter off and on, the zone forwarding within
/// itself or not. Returns the table's rows for the report.
fn matrix(release: Release) -> Vec<String> {
    let lab = Lab::start(LabConfig::new(release, Backend::Nftables));
    assert!(
        Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists(),
        "br_netfilter is neither built in nor loaded: the 'on' cells cannot run"
    );
    let topo = Topology::build_bridged(&lab);
    let bound = lab.run_virtzone(&["attach", BRIDGE, "--zone", ZONE]);
    assert!(
        bound.status.success(),
        "virtzone attach: {}",
        text(&bound.stderr)
    );
    // What the release ships: does zone internal forward within itself by default?
    let default_forward = lab.firewall_cmd(&["--zone", ZONE, "--query-forward"]);
    let mut rows = vec![format!(
        "firewalld {}: zone {ZONE} forwards within itself by default: {}",
        lab.version(),
        text(&default_forward.stdout).trim()
    )];
    let mut failures = Vec::new();
    for forward in [true, false] {
        let flag = if forward {
            "--add-forward"
        } else {
            "--remove-forward"
        };
        // Runtime only; an already set or unset flag is a warning, not an error.
        let _ = lab.firewall_cmd(&["--zone", ZONE, flag]);
        let q = text(
            &lab.firewall_cmd(&["--zone", ZONE, "--query-forward"])
                .stdout,
        );
        assert_eq!(q.trim(), if forward { "yes" } else { "no" }, "{flag}");
        for brnf in [false, true] {
            set_br_netfilter(&lab, brnf);
            // The zone's forwarding only matters when br_netfilter shows the frames to it.
            let want_pass = !brnf || forward;
            for p in packets() {
                let from = (p.from)(&topo);
                let to = (p.to)(&topo);
                let got = topo.probe(from, &["tcp", &to, &WEB_PORT.to_string()]);
                let (code, verdict, out) = explain(&lab, &(p.explain)(&topo));
                let passed = matches!(got, Outcome::Ok(_));
                let agreed = matches!(
                    (&got, code),
                    (Outcome::Ok(_), Some(0)) | (Outcome::Refused(_) | Outcome::Timeout, Some(1))
                );
                let cell = format!(
                    "forward {} br_netfilter {}: {}: {} | explain exit {code:?}, {verdict}",
                    if forward { "yes" } else { "no " },
                    if brnf { "on " } else { "off" },
                    p.name,
                    got.cell()
                );
                eprintln!("{cell}");
                if passed != want_pass {
                    failures.push(format!(
                        "{cell}: expected {}",
                        if want_pass { "ok" } else { "blocked" }
                    ));
                }
                if !agreed {
                    failures.push(format!(
                        "{cell}: explain disagrees with the packet\n{}{}",
                        text(&out.stdout),
                        text(&out.stderr)
                    ));
                }
                rows.push(cell);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "firewalld {}:\n{}",
        lab.version(),
        failures.join("\n")
    );
    rows
}

#[test]
fn bridged_guests_follow_the_bridge_zone_and_br_netfilter_on_0_9_3() {
    for row in matrix(Release::Debian11) {
        eprintln!("{row}");
    }
}

#[test]
fn bridged_guests_follow_the_bridge_zone_and_br_netfilter_on_1_3_3() {
    for row in matrix(Release::Debian12) {
        eprintln!("{row}");
    }
}

#[test]
fn bridged_guests_follow_the_bridge_zone_and_br_netfilter_on_2_5_2() {
    for row in matrix(Release::Sid) {
        eprintln!("{row}");
    }
}
