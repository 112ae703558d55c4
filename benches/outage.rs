//! Outage of a NAT guest's paths across firewalld reloads and restarts (issue #21).
//!
//! One NAT network (and optionally more beside it), a guest namespace on its bridge, an upstream
//! namespace *without* a route back to the guests' subnets (so a guest's new connection out works
//! only through libvirt's masquerade), and three probes every 20 ms (tests/common/outage.rs): the
//! guest's DNS to libvirt's dnsmasq, the guest's new TCP connections upstream, and new TCP
//! connections from upstream through a `virtzone forward` to the guest. Across `RELOADS`
//! `firewall-cmd --reload`s and `RESTARTS` firewalld restarts, each event's longest run of failed
//! probes is taken; the figures are their median and maximum per kind of event, first for
//! "libvirt alone" (no `virtzone serve`, no forward, virtzone's NAT table taken away with
//! `forward purge`), then with virtzone's daemon and the forward, in the same lab.
//!
//! Cells (environment knobs, comma separated):
//! - `OUTAGE_LIBVIRT` = `9` (the host's libvirtd 9.0, iptables backend, firewalld 1.3.3 in the
//!   lab) and/or `12` (libvirt 12.8, nftables backend, firewalld 2.5.2 in the sid system of
//!   `scripts/fetch-sid-root.sh`; its guest has a static address: the lab's kernel lacks the tc
//!   action libvirt's nftables backend uses for DHCP checksums). Default `9`.
//! - `OUTAGE_BACKENDS` = firewalld's backends, default `nftables`.
//! - `OUTAGE_NETWORKS` = network counts, default `1`.
//! - `OUTAGE_RELOADS` (default 3), `OUTAGE_RESTARTS` (default 1), `OUTAGE_SETTLE` (seconds of
//!   probing after each event, default 3).
//! - `OUTAGE_RELOAD_POLICY=accept`: firewalld's `ReloadPolicy=INPUT:ACCEPT,FORWARD:ACCEPT,OUTPUT:ACCEPT`
//!   (firewalld >= 2.0, so libvirt 12 cells only; the stock policy drops every new flow while
//!   firewalld reloads, the floor of every path).
//! - `OUTAGE_ALONE_NAT=keep` (libvirt 12 cells): "libvirt alone" keeps virtzone's NAT table
//!   (the hook's), so that its runs show what remains of libvirt's own rebuild once the masquerade
//!   no longer depends on it.
//! - `OUTAGE_PERMANENT=1` (libvirt 12 cells): with virtzone, the bridge is also bound in
//!   firewalld's permanent configuration (`virtzone attach virbr70 --permanent`), which firewalld's
//!   reload applies in its own transaction instead of losing it (`FlushAllOnReload=yes`).
//! - `OUTAGE_TRACE=DIR` (libvirt 12 cells): writes the daemon's log (`VIRTZONE_LOG` filters it),
//!   `nft monitor` of the system with a Unix time on every line, and each phase's events and
//!   failed runs in Unix time, into DIR, to put the daemon's actions beside the probes' failures.
//!
//! Each failed run is printed with the event it followed. Run as root:
//! `OUTAGE_LIBVIRT=9,12 OUTAGE_BACKENDS=nftables,iptables OUTAGE_NETWORKS=1,20 cargo bench --bench outage`.
//! The DHCP loss window of the booted system stays in `benches/dhcp_window`.

#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
// Only the guest's server is used here.
#[allow(dead_code)]
#[path = "support/forward_probe.rs"]
mod probe;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::libvirt::{LibvirtConfig, LibvirtLab};
use common::outage::{self, dead_runs, describe, now, prober, Probers, Sample, UPSTREAM_SERVER};
use common::sidroot::{ip, Node, SidOptions, SidSystem};
use common::{Backend, LabConfig, Release};
use probe::{must, SERVER};

/// The upstream server's port.
const UP_PORT: &str = "7000";
/// The forward's port on the host.
const FWD_PORT: &str = "8080";
/// The upstream address of the host and the upstream client's.
const HOST_UP: &str = "198.51.100.1";
const PEER_UP: &str = "198.51.100.2";

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A NAT network `name` on `bridge` with subnet `10.77.I.0/24` (`I` = `i`), or 192.0.2.0/24 for
/// the guest's (i = 0).
fn network_xml(name: &str, bridge: &str, i: usize) -> String {
    let net = if i == 0 {
        "192.0.2".to_string()
    } else {
        format!("10.77.{i}")
    };
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
         <name>{name}</name><forward mode='nat'/><bridge name='{bridge}' stp='off'/>\
         <ip address='{net}.1' netmask='255.255.255.0'><dhcp><range start='{net}.100' \
         end='{net}.199'/></dhcp></ip>\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>"
    )
}

/// What one cell's lab offers the measurement.
struct Ops<'a> {
    guest: Box<dyn Fn(&str) -> Command + 'a>,
    upstream: Box<dyn Fn(&str) -> Command + 'a>,
    reload: Box<dyn Fn() + 'a>,
    restart: Box<dyn Fn() + 'a>,
    /// Starts `virtzone serve` and adds the forward to `GUEST:80` on the host's port 8080.
    with_virtzone: Box<dyn FnMut() + 'a>,
}

/// One event kind's figures: the longest dead run (ms) per event.
#[derive(Default)]
struct Figures {
    reload: Vec<f64>,
    restart: Vec<f64>,
}

fn median_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    format!("{:.0} / {:.0} ms", v[v.len() / 2], v[v.len() - 1])
}

/// Probes the paths across the events; per path, the longest dead run of each event.
fn measure(ops: &Ops, paths: &[&str], label: &str) -> Vec<(String, Figures)> {
    let reloads = env_num("OUTAGE_RELOADS", 3);
    let restarts = env_num("OUTAGE_RESTARTS", 1);
    let settle = Duration::from_secs(env_num("OUTAGE_SETTLE", 3));
    let mut guest_specs = vec![
        "dns:dns:192.0.2.1".to_string(),
        format!("tcp:out:{PEER_UP}:{UP_PORT}"),
    ];
    guest_specs.retain(|s| paths.iter().any(|p| s.split(':').nth(1) == Some(p)));
    let mut children = vec![prober((ops.guest)("/usr/bin/python3"), &guest_specs)];
    if paths.contains(&"fwd") {
        children.push(prober(
            (ops.upstream)("/usr/bin/python3"),
            &[format!("tcp:fwd:{HOST_UP}:{FWD_PORT}")],
        ));
    }
    let probers = Probers::start(children);
    let mut events: Vec<(String, f64)> = vec![("start".into(), now())];
    std::thread::sleep(Duration::from_secs(1));
    // After each event: SETTLE seconds of probing, then until the guest's way out works again
    // (libvirt's rebuild of many networks outlasts SETTLE; an event in the middle of it measures
    // libvirt racing itself, not the event).
    let healed = || {
        let t = Instant::now();
        while !(ops.guest)("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                "import socket; socket.create_connection(('{PEER_UP}', {UP_PORT}), 0.5).recv(9)"
            ),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            if t.elapsed() > Duration::from_secs(60) {
                println!("  {label}: the guest's way out did not come back within 60 s");
                return;
            }
        }
    };
    for i in 0..reloads + restarts {
        if i < reloads {
            events.push((format!("reload{}", i + 1), now()));
            (ops.reload)();
        } else {
            events.push((format!("restart{}", i - reloads + 1), now()));
            (ops.restart)();
        }
        std::thread::sleep(settle);
        healed();
    }
    events.push(("end".into(), now()));
    let samples: Vec<Sample> = probers.stop();
    let mut out = Vec::new();
    let mut trace = String::new();
    for (name, t) in &events {
        trace += &format!("{t:.3} event {name}\n");
    }
    for path in paths {
        let runs = dead_runs(&samples, path);
        for r in &runs {
            trace += &format!("{:.3} dead {path} {:.0} ms\n", r.from, r.ms());
        }
        let (n, ok) = outage::counts(&samples, path);
        println!(
            "  {label} {path}: {ok}/{n} probes answered; failed runs: {}",
            describe(&runs, &events)
        );
        let mut f = Figures::default();
        for w in events.windows(2) {
            let (name, from) = (&w[0].0, w[0].1);
            let to = w[1].1;
            let longest = runs
                .iter()
                .filter(|r| r.from >= from - outage::PERIOD && r.from < to)
                .map(|r| r.ms())
                .fold(0.0, f64::max);
            if name.starts_with("reload") {
                f.reload.push(longest);
            } else if name.starts_with("restart") {
                f.restart.push(longest);
            } else if longest > 0.0 {
                println!("  {label} {path}: {longest:.0} ms dead before any event (disturbed)");
            }
        }
        out.push((path.to_string(), f));
    }
    if let Ok(dir) = std::env::var("OUTAGE_TRACE") {
        let file = Path::new(&dir).join(format!("{}.runs", label.replace(' ', "-")));
        std::fs::write(&file, trace).expect("OUTAGE_TRACE: write the runs");
    }
    out
}

/// Measures libvirt alone, then with virtzone; prints the cell's rows.
fn cell(mut ops: Ops, title: &str) {
    println!("== {title}");
    let alone = measure(&ops, &["dns", "out"], "libvirt alone");
    (ops.with_virtzone)();
    let with = measure(&ops, &["dns", "out", "fwd"], "with virtzone");
    println!(
        "| cell | event | path | libvirt alone (median / max) | with virtzone (median / max) |"
    );
    println!("|---|---|---|---|---|");
    for (path, w) in &with {
        let a = alone.iter().find(|(p, _)| p == path).map(|(_, f)| f);
        for (event, pick) in [
            (
                "reload",
                (|f: &Figures| f.reload.clone()) as fn(&Figures) -> Vec<f64>,
            ),
            ("restart", |f: &Figures| f.restart.clone()),
        ] {
            println!(
                "| {title} | {event} | {path} | {} | {} |",
                a.map(|f| median_max(&pick(f)))
                    .unwrap_or_else(|| "–".into()),
                median_max(&pick(w))
            );
        }
    }
}

/// Waits until `probe` answers `true` (a path works), at most 60 s.
fn wait_working(what: &str, mut probe: impl FnMut() -> bool) {
    let t = Instant::now();
    while !probe() {
        assert!(t.elapsed() < Duration::from_secs(60), "{what} never worked");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `OUTAGE_RELOAD_POLICY`'s value for firewalld.conf's `ReloadPolicy` (`None`: the stock one).
fn reload_policy() -> Option<&'static str> {
    match std::env::var("OUTAGE_RELOAD_POLICY").as_deref() {
        Err(_) | Ok("") | Ok("drop") => None,
        Ok("accept") => Some("INPUT:ACCEPT,FORWARD:ACCEPT,OUTPUT:ACCEPT"),
        Ok(other) => panic!("OUTAGE_RELOAD_POLICY={other}: use accept or drop"),
    }
}

/// libvirt 9.0 (the host's, iptables backend) with firewalld 1.3.3 on `backend` in the lab.
fn libvirt9(backend: Backend, networks: usize) {
    if reload_policy().is_some() {
        println!("== libvirt 9 + firewalld 1.3.3: skipped, ReloadPolicy needs firewalld >= 2.0");
        return;
    }
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let cfg = LabConfig {
        bus_policies: vec![policy],
        ..LabConfig::new(Release::Debian12, backend)
    };
    let vlab = LibvirtLab::start(LibvirtConfig::new(cfg));
    must(vlab.virtzone().arg("install"));
    for i in 0..networks {
        let name = if i == 0 {
            "bench".to_string()
        } else {
            format!("bench{i}")
        };
        let net = vlab.define(&network_xml(&name, &format!("virbr7{i}"), i));
        vlab.expect_ok(&vlab.net_start(&net), "net-start");
    }
    let guest = vlab.plug_guest("virbr70");
    let ip = guest.dhcp(5).expect("DHCP").ip;
    let _server = common::Process(
        guest
            .command("/usr/bin/python3")
            .args(["-c", SERVER])
            .stdout(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let up = vlab.plug_upstream("vzup70", "198.51.100.1/24", "198.51.100.2/24");
    // No way back to the guests but through the host's masquerade.
    must(up.command("ip").args(["route", "del", "default"]));
    let _up_server = common::Process(
        up.command("/usr/bin/python3")
            .args(["-c", UPSTREAM_SERVER, UP_PORT])
            .stdout(Stdio::null())
            .spawn()
            .expect("upstream server"),
    );
    let daemon = std::cell::RefCell::new(None::<common::Process>);
    // "libvirt alone": the hook put virtzone's NAT table in place at net-start; take it away
    // (the daemon puts it back when it starts).
    must(vlab.virtzone().args(["forward", "purge"]));
    let ops = Ops {
        guest: Box::new(|p| guest.command(p)),
        upstream: Box::new(|p| up.command(p)),
        reload: Box::new(|| {
            must(vlab.command("firewall-cmd").arg("--reload"));
        }),
        restart: Box::new(|| vlab.restart_firewalld()),
        with_virtzone: Box::new(|| {
            let log = std::fs::File::create(vlab.dir().join("daemon.log")).expect("log");
            *daemon.borrow_mut() = Some(common::Process(
                vlab.virtzone()
                    .arg("serve")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("daemon"),
            ));
            wait_working("the daemon", || {
                vlab.name_has_owner("org.virtzone.VirtZone1")
            });
            must(vlab.virtzone().args([
                "forward",
                "add",
                "--network",
                "bench",
                "--guest",
                &ip,
                &format!("tcp/{FWD_PORT}:80"),
            ]));
        }),
    };
    wait_working("the guest's way out", || {
        guest
            .command("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                    "import socket; socket.create_connection(('{PEER_UP}', {UP_PORT}), 1).recv(9)"
                ),
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    cell(
        ops,
        &format!(
            "libvirt 9 + firewalld 1.3.3 {}, {networks} network(s)",
            backend.as_str()
        ),
    );
    drop(daemon);
}

/// libvirt 12.8 (nftables backend) with firewalld 2.5.2 on `backend` in the sid system.
fn libvirt12(backend: &'static str, networks: usize) {
    let sys = SidSystem::start_opts(SidOptions {
        firewalld_backend: backend,
        libvirt_backend: "nftables",
        reload_policy: reload_policy(),
        ..SidOptions::default()
    });
    // `nft monitor` of the system, each line with the Unix time it was read at.
    let _monitor = std::env::var("OUTAGE_TRACE").ok().map(|dir| {
        use std::io::{BufRead, Write};
        let mut log = std::fs::File::create(Path::new(&dir).join("nft-monitor.log"))
            .expect("OUTAGE_TRACE: create the monitor's log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &sys.netns, "nft", "monitor"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("nft monitor");
        let out = child.stdout.take().expect("nft monitor's output");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{:.3} {line}", now());
            }
        });
        common::Process(child)
    });
    sys.sh("virtzone install");
    sys.start_libvirtd();
    for i in 0..networks {
        let name = if i == 0 {
            "bench".to_string()
        } else {
            format!("bench{i}")
        };
        let xml = network_xml(&name, &format!("virbr7{i}"), i);
        sys.sh(&format!(
            "cat >/root/{name}.xml <<'EOF'\n{xml}\nEOF\n\
             virsh -c network:///system net-define /root/{name}.xml && \
             virsh -c network:///system net-start {name}"
        ));
    }
    let guest = Node::new(format!("{}-og", sys.netns));
    let g = guest.netns.as_str();
    ip(&[
        "-n", g, "link", "add", "eth0", "type", "veth", "peer", "name", "vzout", "netns",
        &sys.netns,
    ]);
    sys.sh("ip link set vzout master virbr70 up");
    ip(&["-n", g, "addr", "add", "192.0.2.50/24", "dev", "eth0"]);
    ip(&["-n", g, "link", "set", "eth0", "up"]);
    ip(&["-n", g, "link", "set", "lo", "up"]);
    ip(&["-n", g, "route", "add", "default", "via", "192.0.2.1"]);
    let _server = common::Process(
        guest
            .command("/usr/bin/python3")
            .args(["-c", SERVER])
            .stdout(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let up = sys.plug_upstream("vzup");
    ip(&["-n", &up.netns, "route", "del", "default"]);
    let _up_server = common::Process(
        up.command("/usr/bin/python3")
            .args(["-c", UPSTREAM_SERVER, UP_PORT])
            .stdout(Stdio::null())
            .spawn()
            .expect("upstream server"),
    );
    let keep_nat = std::env::var("OUTAGE_ALONE_NAT").as_deref() == Ok("keep");
    if !keep_nat {
        sys.sh("virtzone forward purge >/dev/null");
    }
    let permanent = std::env::var("OUTAGE_PERMANENT").as_deref() == Ok("1");
    let ops = Ops {
        guest: Box::new(|p| guest.command(p)),
        upstream: Box::new(|p| up.command(p)),
        reload: Box::new(|| {
            sys.sh("firewall-cmd --reload >/dev/null");
        }),
        restart: Box::new(|| {
            sys.stop("/usr/sbin/firewalld");
            sys.start_firewalld();
        }),
        with_virtzone: Box::new(|| {
            sys.start_virtzone_daemon();
            if permanent {
                sys.sh("virtzone attach virbr70 --permanent");
            }
            sys.sh(&format!(
                "virtzone forward add --network bench --guest 192.0.2.50 tcp/{FWD_PORT}:80"
            ));
        }),
    };
    cell(
        ops,
        &format!(
            "libvirt 12 + firewalld 2.5.2 {backend}{}{}{}, {networks} network(s)",
            if reload_policy().is_some() {
                " ReloadPolicy=ACCEPT"
            } else {
                ""
            },
            if permanent { " permanent binding" } else { "" },
            if keep_nat {
                " (\"alone\" with virtzone's NAT table)"
            } else {
                ""
            }
        ),
    );
    if let Ok(dir) = std::env::var("OUTAGE_TRACE") {
        let _ = std::fs::copy(
            sys.upper().join("var/log/virtzone-serve.log"),
            Path::new(&dir).join("daemon.log"),
        );
    }
}

fn main() {
    let started = Instant::now();
    for libvirt in env_list("OUTAGE_LIBVIRT", "9") {
        for backend in env_list("OUTAGE_BACKENDS", "nftables") {
            for n in env_list("OUTAGE_NETWORKS", "1") {
                let n: usize = n.parse().expect("OUTAGE_NETWORKS: numbers");
                match (libvirt.as_str(), backend.as_str()) {
                    ("9", "nftables") => libvirt9(Backend::Nftables, n),
                    ("9", "iptables") => libvirt9(Backend::Iptables, n),
                    ("12", "nftables") => libvirt12("nftables", n),
                    ("12", "iptables") => libvirt12("iptables", n),
                    other => panic!("unknown cell {other:?}"),
                }
            }
        }
    }
    println!("(whole benchmark {:?})", started.elapsed());
}
