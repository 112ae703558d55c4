//! Forward benchmarks with **libvirt 12.8's nftables firewall backend** and firewalld 2.5.2
//! (nftables) in the sid system of the tests (`tests/common/sidroot.rs`, with its tc shim),
//! `virtzone serve` running inside:
//!
//! - `virtzone forward add` → first connection through the forward (the process included);
//! - firewalld reload → every forward working again, with 1, 50 and 200 forwards (each to its own
//!   guest port, so 1, 4 and 14 grouped accepts in libvirt's `guest_input`): from the reload
//!   call's return to the last-added forward answering while libvirt's rebuilt reject (a new nft
//!   handle) is in place, and of that, the window from the rebuilt reject first seen to the forward
//!   working (libvirt re-inserts its rules on top of virtzone's accepts; virtzone inserts them
//!   again on top).
//!
//! Run as root: `cargo bench --bench forwards12` (needs `scripts/fetch-sid-root.sh`'s root).

// The test suite's lab; this program uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/forward_probe.rs"]
mod probe;

use std::process::Stdio;
use std::time::{Duration, Instant};

use probe::{ms, serve_guest_ports, Client, SERVER};

use common::sidroot::{ip, Node, SidOptions, SidSystem};

/// Reloads measured per forward count.
const RUNS: usize = 5;
const BRIDGE: &str = "virbr12";

/// `nft -a list chain ip libvirt_network guest_input`.
fn guest_input(sys: &SidSystem) -> String {
    let out = sys.run(&[
        "nft",
        "-a",
        "list",
        "chain",
        "ip",
        "libvirt_network",
        "guest_input",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The nft handle of libvirt's reject for the bridge in `listing`, `None` while it is not there.
fn reject_handle(listing: &str) -> Option<String> {
    listing.lines().find_map(|l| {
        let (rule, handle) = l.split_once(" # handle ")?;
        (rule.contains(&format!("oif \"{BRIDGE}\"")) && rule.contains(" reject"))
            .then(|| handle.to_string())
    })
}

/// Whether all of virtzone's accepts stand in front of libvirt's reject in `listing`.
fn accepts_in_front(listing: &str, count: usize) -> bool {
    let reject = listing
        .lines()
        .position(|l| l.contains(" reject"))
        .unwrap_or(usize::MAX);
    let ours: Vec<usize> = listing
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("virtzone-fwd"))
        .map(|(i, _)| i)
        .collect();
    ours.len() == count && ours.iter().all(|&i| i < reject)
}

fn main() {
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    sys.sh("virtzone install");
    sys.start_libvirtd();
    let xml = format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
         <name>bench</name><forward mode='nat'/><bridge name='{BRIDGE}' stp='off'/>\
         <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
         end='192.0.2.199'/></dhcp></ip>\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>"
    );
    sys.sh(&format!(
        "cat >/root/b.xml <<'EOF'\n{xml}\nEOF\nvirsh -c network:///system net-define /root/b.xml && virsh -c network:///system net-start bench"
    ));
    // A guest with a static address in the DHCP range's subnet (the benchmark measures forwards,
    // not DHCP), routed through the bridge's address.
    let guest = Node::new(format!("{}-bg", sys.netns));
    ip(&[
        "-n",
        &guest.netns,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "vzbench",
        "netns",
        &sys.netns,
    ]);
    sys.sh(&format!("ip link set vzbench master {BRIDGE} up"));
    ip(&[
        "-n",
        &guest.netns,
        "addr",
        "add",
        "192.0.2.50/24",
        "dev",
        "eth0",
    ]);
    ip(&["-n", &guest.netns, "link", "set", "eth0", "up"]);
    ip(&["-n", &guest.netns, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &guest.netns,
        "route",
        "add",
        "default",
        "via",
        "192.0.2.1",
    ]);
    let mut server = guest
        .command("/usr/bin/python3")
        .args(["-c", SERVER])
        .stdout(Stdio::null())
        .spawn()
        .expect("server");
    // Distinct guest ports, as real forwards have, all served by the one server.
    serve_guest_ports(guest.command("iptables"));
    let up = sys.plug_upstream("vzup");
    let mut client = Client::spawn(up.command("/usr/bin/python3"));
    sys.start_virtzone_daemon();

    let host = "198.51.100.1";
    let mut declared = 0u16;
    let add = |n: u16| {
        let port = 10000 + n;
        let out = sys.run(&[
            "virtzone",
            "forward",
            "add",
            "--network",
            "bench",
            "--guest",
            "192.0.2.50",
            &format!("tcp/{port}:{port}"),
        ]);
        assert!(
            out.status.success(),
            "forward add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        port
    };

    // 1. forward add → first connection through.
    let mut first = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let port = add(declared);
        declared += 1;
        while !client.probe(host, port) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "forward {port} never worked"
            );
        }
        first.push(t.elapsed());
    }
    first.sort();
    println!(
        "forward add → first connection through: median {} (of 5; min {}, max {})",
        ms(first[2]),
        ms(first[0]),
        ms(first[4])
    );

    // 2. Reloaded → working again, for 1, 50, 200 forwards.
    for want in [1u16, 50, 200] {
        if want == 1 {
            for id in 2..=declared {
                sys.sh(&format!("virtzone forward remove {id}"));
            }
            declared = 1;
        }
        while declared < want {
            add(declared);
            declared += 1;
        }
        let last = 10000 + declared - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.probe(host, last) {
            assert!(
                Instant::now() < deadline,
                "forward {last} not working before the reload"
            );
        }
        // Forwards to one guest share rules of at most 15 ports.
        let rules = usize::from(declared).div_ceil(15);
        let (mut heal, mut reload, mut react, mut window) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let old = reject_handle(&guest_input(&sys)).expect("libvirt's reject");
            let t = Instant::now();
            sys.sh("firewall-cmd --reload");
            reload.push(t.elapsed());
            let t = Instant::now();
            // When libvirt's rebuilt reject (a new handle) was first seen, when every accept of
            // virtzone's stood in front of it again, and when the forward worked with that same
            // reject before and after the probe.
            let (mut reject_back, mut in_front): (Option<Duration>, Option<Duration>) =
                (None, None);
            loop {
                let listing = guest_input(&sys);
                let now = reject_handle(&listing).filter(|h| *h != old);
                if now.is_some() && reject_back.is_none() {
                    reject_back = Some(t.elapsed());
                }
                if now.is_some() && in_front.is_none() && accepts_in_front(&listing, rules) {
                    in_front = Some(t.elapsed());
                }
                if in_front.is_some()
                    && client.probe(host, last)
                    && reject_handle(&guest_input(&sys)) == now
                {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "not healed");
            }
            let back = reject_back.unwrap_or_default();
            heal.push(t.elapsed());
            window.push(t.elapsed() - back);
            react.push(in_front.unwrap_or_default().saturating_sub(back));
        }
        for v in [&mut heal, &mut reload, &mut react, &mut window] {
            v.sort();
        }
        println!(
            "{want:>3} forwards ({rules} accepts): reload returned → last forward working again: \
             median {} (max {}); libvirt's rebuilt reject seen → virtzone's accepts in front of it \
             again: median {} (max {}); rebuilt reject seen → forward working: median {} (max {}); \
             firewall-cmd --reload itself: median {} ({RUNS} runs)",
            ms(heal[RUNS / 2]),
            ms(heal[RUNS - 1]),
            ms(react[RUNS / 2]),
            ms(react[RUNS - 1]),
            ms(window[RUNS / 2]),
            ms(window[RUNS - 1]),
            ms(reload[RUNS / 2])
        );
    }
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
}
