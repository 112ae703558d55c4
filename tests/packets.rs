//! Real packets through real firewalld (issue 6): guests on a bridge in zone `libvirt`, then in
//! `libvirt-routed`, reach what libvirt's zones promise and nothing else, with virtzone's zone files
//! and with libvirt's own, on both backends; and `virtzone status --verify` on live rulesets.
//!
//! The packet matrix prints a table of outcomes (check × backend × zone source; run with
//! `--nocapture` to see it when it passes) and fails when a cell is not what libvirt's zones mean
//! or when virtzone's column differs from libvirt's. The topology is `common::topology`.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use common::topology::{
    Outcome, Topology, BRIDGE, DNS_NAME, HOST_V4, HOST_V6, TFTP_FILE, UNLISTED_PORT, WEB_PORT,
};
use common::{both_releases_both_backends, Backend, Lab, LabConfig, Release};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs virtzone in the lab with a private state directory.
fn vz(lab: &Lab, args: &[&str]) -> Output {
    lab.virtzone()
        .args(args)
        .env("VIRTZONE_STATE_DIR", lab.dir().join("state"))
        .output()
        .expect("run virtzone")
}

fn fw_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.firewall_cmd(args);
    assert!(
        out.status.success(),
        "firewall-cmd {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn sh(lab: &Lab, script: &str) -> String {
    let out = lab
        .command("/bin/sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Where the zones come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `virtzone install` (zones and policies over D-Bus, into /etc).
    Virtzone,
    /// The files of Debian's libvirt-daemon-system package in the stock tier.
    Libvirt,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Virtzone => "virtzone",
            Source::Libvirt => "libvirt",
        }
    }
}

/// libvirt's own zone and policy files, as its Debian package installs them.
fn libvirt_files() -> Vec<(PathBuf, String)> {
    [
        "zones/libvirt.xml",
        "zones/libvirt-routed.xml",
        "policies/libvirt-routed-in.xml",
        "policies/libvirt-routed-out.xml",
        "policies/libvirt-to-host.xml",
    ]
    .iter()
    .map(|rel| {
        let path = PathBuf::from("/usr/lib/firewalld").join(rel);
        let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (libvirt's zone files come with Debian's libvirt-daemon-system)",
                path.display()
            )
        });
        (PathBuf::from(rel), xml)
    })
    .collect()
}

/// What libvirt's zones promise for a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The exchange completes.
    Pass,
    /// An error comes back quickly (the clients wait at most a second, so a `refused` outcome is
    /// never a timeout).
    Reject,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Pass => "ok",
            Expect::Reject => "refused",
        }
    }

    fn met_by(self, o: &Outcome) -> bool {
        matches!(
            (self, o),
            (Expect::Pass, Outcome::Ok(_)) | (Expect::Reject, Outcome::Refused(_))
        )
    }
}

/// Everything a check can use.
struct Env<'a> {
    lab: &'a Lab,
    topo: &'a Topology,
}

/// One row of the matrix: a packet check, or an admin action the following checks depend on.
struct Check {
    zone: &'static str,
    name: &'static str,
    expect: Expect,
    run: fn(&Env) -> Outcome,
}

/// An action's outcome: ok, or the command's complaint.
fn action(out: Output) -> Outcome {
    if out.status.success() {
        Outcome::Ok(String::new())
    } else {
        Outcome::Error(format!(
            "{}: {}{}",
            out.status,
            text(&out.stdout).trim(),
            text(&out.stderr).trim()
        ))
    }
}

/// `virtzone status --verify` as a check: exit 0 is ok, else the first problem.
fn verify_check(e: &Env) -> Outcome {
    let out = vz(e.lab, &["status", "--verify"]);
    if out.status.success() {
        return Outcome::Ok(String::new());
    }
    let stdout = text(&out.stdout);
    let problem = stdout
        .lines()
        .find(|l| l.contains("PROBLEM"))
        .unwrap_or(stdout.trim());
    Outcome::Error(format!("{}: {problem}{}", out.status, text(&out.stderr)))
}

fn port(p: u16) -> String {
    p.to_string()
}

/// A client run in guest g1.
fn g1(e: &Env, args: &[&str]) -> Outcome {
    e.topo.probe(&e.topo.guests[0], args)
}

fn g1_ping(e: &Env, addr: &str) -> Outcome {
    e.topo.ping(&e.topo.guests[0], addr)
}

/// A client run in the upstream namespace.
fn up(e: &Env, args: &[&str]) -> Outcome {
    e.topo.probe(&e.topo.upstream, args)
}

fn up_ping(e: &Env, addr: &str) -> Outcome {
    e.topo.ping(&e.topo.upstream, addr)
}

/// The matrix, in order: the bridge starts in no zone, then goes to `libvirt`, then to
/// `libvirt-routed`.
fn checks() -> Vec<Check> {
    use Expect::{Pass, Reject};
    macro_rules! check {
        ($zone:expr, $name:expr, $expect:expr, $run:expr) => {
            Check {
                zone: $zone,
                name: $name,
                expect: $expect,
                run: $run,
            }
        };
    }
    const P: &str = "(none)";
    const L: &str = "libvirt";
    const R: &str = "libvirt-routed";
    vec![
        // The control: in no zone the bridge gets the default zone (public), which refuses DNS.
        check!(P, "g1→host dns udp/53 IPv4", Reject, |e| g1(
            e,
            &["dns-udp", HOST_V4, DNS_NAME, "A"]
        )),
        check!(L, "admin: bridge → zone libvirt", Pass, |e| {
            action(
                e.lab
                    .firewall_cmd(&["--zone=libvirt", &format!("--change-interface={BRIDGE}")]),
            )
        }),
        check!(L, "g1→host ping IPv4", Pass, |e| g1_ping(e, HOST_V4)),
        check!(L, "g1→host ping IPv6", Pass, |e| g1_ping(e, HOST_V6)),
        check!(L, "g1→host ssh tcp/22 IPv4", Pass, |e| g1(
            e,
            &["tcp", HOST_V4, "22"]
        )),
        check!(L, "g1→host ssh tcp/22 IPv6", Pass, |e| g1(
            e,
            &["tcp", HOST_V6, "22"]
        )),
        check!(L, "g1→host dns udp/53 IPv4", Pass, |e| g1(
            e,
            &["dns-udp", HOST_V4, DNS_NAME, "A"]
        )),
        check!(L, "g1→host dns tcp/53 IPv4", Pass, |e| g1(
            e,
            &["dns-tcp", HOST_V4, DNS_NAME, "A"]
        )),
        check!(L, "g1→host dns udp/53 IPv6", Pass, |e| g1(
            e,
            &["dns-udp", HOST_V6, DNS_NAME, "AAAA"]
        )),
        check!(L, "g1→host dns tcp/53 IPv6", Pass, |e| g1(
            e,
            &["dns-tcp", HOST_V6, DNS_NAME, "AAAA"]
        )),
        check!(L, "g1→host tftp udp/69 (3 blocks)", Pass, tftp),
        check!(L, "g1 dhcp lease (udhcpc)", Pass, |e| e
            .topo
            .dhcp4(&e.topo.guests[0])),
        check!(L, "g1 dhcpv6 lease", Pass, |e| g1(e, &["dhcp6", "eth0"])),
        check!(L, "g1→host tcp/8080 (unlisted) IPv4", Reject, |e| g1(
            e,
            &["tcp", HOST_V4, &port(UNLISTED_PORT)]
        )),
        check!(L, "g1→host tcp/8080 (unlisted) IPv6", Reject, |e| g1(
            e,
            &["tcp", HOST_V6, &port(UNLISTED_PORT)]
        )),
        check!(L, "g1→host udp/8080 (unlisted) IPv4", Reject, |e| g1(
            e,
            &["udp", HOST_V4, &port(UNLISTED_PORT)]
        )),
        check!(L, "g1→host udp/8080 (unlisted) IPv6", Reject, |e| g1(
            e,
            &["udp", HOST_V6, &port(UNLISTED_PORT)]
        )),
        check!(L, "g1→g2 ping IPv4 (bridged)", Pass, |e| g1_ping(
            e,
            e.topo.guests[1].v4
        )),
        check!(L, "g1→g2 tcp/80 IPv6 (bridged)", Pass, |e| g1(
            e,
            &["tcp", e.topo.guests[1].v6, &port(WEB_PORT)]
        )),
        check!(L, "g1→upstream ping IPv4", Pass, |e| g1_ping(
            e,
            e.topo.upstream.v4
        )),
        check!(L, "g1→upstream tcp/80 IPv4", Pass, |e| g1(
            e,
            &["tcp", e.topo.upstream.v4, &port(WEB_PORT)]
        )),
        check!(L, "g1→upstream tcp/80 IPv6", Pass, |e| g1(
            e,
            &["tcp", e.topo.upstream.v6, &port(WEB_PORT)]
        )),
        check!(
            L,
            "upstream→g1 tcp/80 IPv4 (not routed in)",
            Reject,
            |e| up(e, &["tcp", e.topo.guests[0].v4, &port(WEB_PORT)])
        ),
        check!(L, "virtzone status --verify", Pass, verify_check),
        check!(L, "admin: --zone=libvirt --add-port=8080/tcp", Pass, |e| {
            action(
                e.lab
                    .firewall_cmd(&["--zone=libvirt", "--add-port=8080/tcp"]),
            )
        }),
        check!(L, "g1→host tcp/8080 IPv4 (added port)", Pass, |e| g1(
            e,
            &["tcp", HOST_V4, &port(UNLISTED_PORT)]
        )),
        check!(L, "g1→host tcp/8080 IPv6 (added port)", Pass, |e| g1(
            e,
            &["tcp", HOST_V6, &port(UNLISTED_PORT)]
        )),
        check!(R, "admin: bridge → zone libvirt-routed", Pass, |e| {
            action(e.lab.firewall_cmd(&[
                "--zone=libvirt-routed",
                &format!("--change-interface={BRIDGE}"),
            ]))
        }),
        check!(R, "upstream→g1 tcp/80 IPv4 (routed)", Pass, |e| up(
            e,
            &["tcp", e.topo.guests[0].v4, &port(WEB_PORT)]
        )),
        check!(R, "upstream→g1 tcp/80 IPv6 (routed)", Pass, |e| up(
            e,
            &["tcp", e.topo.guests[0].v6, &port(WEB_PORT)]
        )),
        check!(R, "upstream→g1 ping IPv4 (routed)", Pass, |e| up_ping(
            e,
            e.topo.guests[0].v4
        )),
        check!(R, "g1→upstream tcp/80 IPv4", Pass, |e| g1(
            e,
            &["tcp", e.topo.upstream.v4, &port(WEB_PORT)]
        )),
        check!(R, "g1→g2 ping IPv4 (bridged)", Pass, |e| g1_ping(
            e,
            e.topo.guests[1].v4
        )),
        check!(R, "g1→host ping IPv4", Pass, |e| g1_ping(e, HOST_V4)),
        check!(R, "g1→host ping IPv6", Pass, |e| g1_ping(e, HOST_V6)),
        check!(R, "g1→host ssh tcp/22 IPv4", Pass, |e| g1(
            e,
            &["tcp", HOST_V4, "22"]
        )),
        check!(R, "g1→host dns udp/53 IPv4", Pass, |e| g1(
            e,
            &["dns-udp", HOST_V4, DNS_NAME, "A"]
        )),
        check!(R, "g1→host dns tcp/53 IPv6", Pass, |e| g1(
            e,
            &["dns-tcp", HOST_V6, DNS_NAME, "AAAA"]
        )),
        check!(R, "g1→host tftp udp/69 (3 blocks)", Pass, tftp),
        check!(R, "g1 dhcp lease (udhcpc)", Pass, |e| e
            .topo
            .dhcp4(&e.topo.guests[0])),
        check!(R, "g1 dhcpv6 lease", Pass, |e| g1(e, &["dhcp6", "eth0"])),
        check!(R, "g1→host tcp/8080 IPv4 (not in policy)", Reject, |e| g1(
            e,
            &["tcp", HOST_V4, &port(UNLISTED_PORT)]
        )),
        check!(R, "g1→host udp/8080 IPv6 (not in policy)", Reject, |e| g1(
            e,
            &["udp", HOST_V6, &port(UNLISTED_PORT)]
        )),
        check!(R, "virtzone status --verify", Pass, verify_check),
    ]
}

fn tftp(e: &Env) -> Outcome {
    g1(e, &["tftp", HOST_V4, TFTP_FILE.0, &TFTP_FILE.1.to_string()])
}

/// One column: a lab with one backend and one zone source, every check in order.
struct Column {
    backend: Backend,
    source: Source,
    outcomes: Vec<(Outcome, Duration)>,
    /// Lab, install and topology.
    setup: Duration,
    /// Everything, teardown included.
    total: Duration,
    /// Logs to show when a cell is wrong.
    logs: String,
}

fn run_column(release: Release, backend: Backend, source: Source) -> Column {
    let start = Instant::now();
    let mut cfg = LabConfig::new(release, backend);
    if source == Source::Libvirt {
        cfg.default_files = libvirt_files();
    }
    let (outcomes, setup, logs) = {
        let lab = Lab::start(cfg);
        if source == Source::Virtzone {
            let out = vz(&lab, &["install"]);
            assert!(
                out.status.success(),
                "virtzone install: {}",
                text(&out.stderr)
            );
        }
        let topo = Topology::build(&lab);
        let setup = start.elapsed();
        let env = Env {
            lab: &lab,
            topo: &topo,
        };
        let outcomes: Vec<(Outcome, Duration)> = checks()
            .iter()
            .map(|c| {
                let t = Instant::now();
                let o = (c.run)(&env);
                (o, t.elapsed())
            })
            .collect();
        let logs = format!(
            "--- {} / {} ---\n--- dnsmasq log (tail) ---\n{}\n--- firewalld log (warnings) ---\n{}",
            backend.as_str(),
            source.as_str(),
            tail(&topo.dnsmasq_log(), 30),
            lab.firewalld_log()
                .lines()
                .filter(|l| l.contains("WARNING") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        (outcomes, setup, logs)
        // The topology, then the lab, are torn down here.
    };
    Column {
        backend,
        source,
        outcomes,
        setup,
        total: start.elapsed(),
        logs,
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The table: one row per check, one column per backend × zone source, plus the expectation.
fn table(release: Release, checks: &[Check], columns: &[Column]) -> String {
    let heads: Vec<String> = columns
        .iter()
        .map(|c| format!("{}/{}", c.backend.as_str(), c.source.as_str()))
        .collect();
    let name_w = checks
        .iter()
        .map(|c| c.zone.len() + 3 + c.name.chars().count())
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = columns
        .iter()
        .zip(&heads)
        .map(|(c, h)| {
            c.outcomes
                .iter()
                .map(|(o, _)| o.cell().chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nfirewalld {} — packet checks (cells: client outcome; `refused X` = error X within 1 s)",
        release.version()
    );
    let _ = write!(out, "{:<name_w$} | {:<8}", "zone | check", "expected");
    for (h, w) in heads.iter().zip(&widths) {
        let _ = write!(out, " | {h:<w$}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        "-".repeat(name_w + 11 + widths.iter().map(|w| w + 3).sum::<usize>())
    );
    for (i, c) in checks.iter().enumerate() {
        let label = format!("{} | {}", c.zone, c.name);
        let pad = name_w.saturating_sub(label.chars().count());
        let _ = write!(out, "{label}{} | {:<8}", " ".repeat(pad), c.expect.as_str());
        for (col, w) in columns.iter().zip(&widths) {
            let cell = col
                .outcomes
                .get(i)
                .map(|(o, _)| o.cell())
                .unwrap_or_default();
            let pad = w.saturating_sub(cell.chars().count());
            let _ = write!(out, " | {cell}{}", " ".repeat(pad));
        }
        out.push('\n');
    }
    for col in columns {
        let (slowest, at) = col
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, (_, d))| (*d, i))
            .max()
            .unwrap_or_default();
        let checks_time: Duration = col.outcomes.iter().map(|(_, d)| *d).sum();
        let _ = writeln!(
            out,
            "{}/{}: setup {:.1}s, {} checks {:.1}s (slowest {:.2}s: {}), total {:.1}s",
            col.backend.as_str(),
            col.source.as_str(),
            col.setup.as_secs_f64(),
            col.outcomes.len(),
            checks_time.as_secs_f64(),
            slowest.as_secs_f64(),
            checks.get(at).map_or("", |c| c.name),
            col.total.as_secs_f64()
        );
    }
    out
}

/// Runs the matrix for a release: both backends × both zone sources, in parallel (separate labs
/// share nothing).
fn packet_matrix(release: Release) {
    let start = Instant::now();
    let checks = checks();
    let combos = [
        (Backend::Nftables, Source::Virtzone),
        (Backend::Nftables, Source::Libvirt),
        (Backend::Iptables, Source::Virtzone),
        (Backend::Iptables, Source::Libvirt),
    ];
    let columns: Vec<Column> = thread::scope(|s| {
        let handles: Vec<_> = combos
            .iter()
            .map(|&(b, src)| s.spawn(move || run_column(release, b, src)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let table = table(release, &checks, &columns);
    println!("{table}");
    println!("whole matrix: {:.1}s", start.elapsed().as_secs_f64());

    let mut failures = Vec::new();
    for col in &columns {
        for (c, (o, _)) in checks.iter().zip(&col.outcomes) {
            if !c.expect.met_by(o) {
                failures.push(format!(
                    "{}/{}: {} | {}: expected {}, got {o:?}",
                    col.backend.as_str(),
                    col.source.as_str(),
                    c.zone,
                    c.name,
                    c.expect.as_str()
                ));
            }
        }
    }
    for pair in columns.chunks(2) {
        let [ours, theirs] = pair else { continue };
        for (c, ((a, _), (b, _))) in checks
            .iter()
            .zip(ours.outcomes.iter().zip(&theirs.outcomes))
        {
            if a.cell() != b.cell() {
                failures.push(format!(
                    "{}: {} | {}: virtzone's zones give {:?}, libvirt's give {:?}",
                    ours.backend.as_str(),
                    c.zone,
                    c.name,
                    a.cell(),
                    b.cell()
                ));
            }
        }
    }
    if !failures.is_empty() {
        let logs: Vec<&str> = columns.iter().map(|c| c.logs.as_str()).collect();
        panic!(
            "{} cell(s) wrong:\n{}\n{table}\n{}",
            failures.len(),
            failures.join("\n"),
            logs.join("\n")
        );
    }
}

#[test]
fn packets_debian12_both_backends_both_zone_sources() {
    packet_matrix(Release::Debian12);
}

#[test]
fn packets_debian13_both_backends_both_zone_sources() {
    packet_matrix(Release::Debian13);
}

// --- virtzone status --verify on live rulesets ---

/// Adds bridges `virbr7` and `virbr8` to the lab's namespace.
fn add_bridges(lab: &Lab) {
    sh(
        lab,
        "ip link add virbr7 type bridge && ip link add virbr8 type bridge",
    );
}

/// Runs `status --verify`, returning (exit code, stdout).
fn verify(lab: &Lab) -> (Option<i32>, String) {
    let out = vz(lab, &["status", "--verify"]);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "status --verify: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    (out.status.code(), text(&out.stdout))
}

#[test]
fn verify_confirms_correctly_bound_bridges() {
    for cfg in both_releases_both_backends() {
        let what = format!("{:?}/{:?}", cfg.release, cfg.backend);
        let lab = Lab::start(cfg);
        assert!(vz(&lab, &["install"]).status.success(), "{what}");
        add_bridges(&lab);
        fw_ok(&lab, &["--zone=libvirt", "--change-interface=virbr7"]);
        fw_ok(
            &lab,
            &["--zone=libvirt-routed", "--change-interface=virbr8"],
        );
        let (code, out) = verify(&lab);
        assert_eq!(code, Some(0), "{what}:\n{out}");
        assert!(!out.contains("PROBLEM"), "{what}:\n{out}");
        for want in [
            "ok: virbr7 (zone libvirt",
            "traffic to the host is dispatched to the zone by",
            // iptables lists the families apart: dhcp and icmp, dhcpv6 and ipv6-icmp.
            "guests reach dhcp",
            "dns, ssh, tftp",
            "after the allowed services",
            "ok: virbr8 (zone libvirt-routed",
            "traffic routed to the guests is accepted by",
        ] {
            assert!(out.contains(want), "{what}: no {want:?} in\n{out}");
        }
        let json = vz(&lab, &["status", "--verify", "--json"]);
        assert!(json.status.success(), "{what}");
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["verify"]["problems"], serde_json::json!([]), "{what}");
        assert!(
            v["verify"]["confirmed"].as_array().unwrap().len() > 5,
            "{what}: {v}"
        );
    }
}

/// Zone `libvirt` with a catch-all firewalld cannot load (an ICMPv6 reject type in an IPv4 rule).
fn zone_with_bad_catch_all() -> String {
    include_str!("../zones/libvirt.xml")
        .replace("<reject/>", r#"<reject type="icmp6-adm-prohibited"/>"#)
        .replace(
            r#"<rule priority="32767">"#,
            r#"<rule family="ipv4" priority="32767">"#,
        )
}

/// firewalld 1.3.3 drops a rich rule it cannot load with only a warning: here the zone's catch-all.
/// The zone loads without it and accepts everything. (2.3.1 refuses the file: see below.)
#[test]
fn verify_reports_a_catch_all_firewalld_dropped() {
    for backend in [Backend::Nftables, Backend::Iptables] {
        let mut cfg = LabConfig::new(Release::Debian12, backend);
        cfg.files
            .push(("zones/libvirt.xml".into(), zone_with_bad_catch_all()));
        let lab = Lab::start(cfg);
        assert!(
            lab.firewalld_log()
                .contains("WARNING: INVALID_RULE: Wrong reject type icmp6-adm-prohibited"),
            "{}",
            lab.firewalld_log()
        );
        add_bridges(&lab);
        fw_ok(&lab, &["--zone=libvirt", "--change-interface=virbr7"]);
        let (code, out) = verify(&lab);
        assert_eq!(code, Some(1), "{backend:?}:\n{out}");
        let label = match backend {
            Backend::Nftables => "virbr7 (zone libvirt)",
            Backend::Iptables => "virbr7 (zone libvirt, iptables)",
        };
        assert!(
            out.contains(&format!(
                "PROBLEM: {label}: zone libvirt has no catch-all reject: tcp/1 and udp/1"
            )),
            "{backend:?}:\n{out}"
        );
        assert!(
            out.contains("firewalld before 2.3.0 drops a rich rule it cannot load"),
            "{backend:?}:\n{out}"
        );
    }
}

/// firewalld 2.3.1 refuses the same file: it runs in state FAILED on its stock configuration.
#[test]
fn verify_reports_a_failed_firewalld() {
    let mut cfg = LabConfig::new(Release::Debian13, Backend::Nftables);
    cfg.files
        .push(("zones/libvirt.xml".into(), zone_with_bad_catch_all()));
    cfg.expect_state = "FAILED";
    let lab = Lab::start(cfg);
    lab.allow_firewalld_errors(
        "the test gives firewalld 2.3.1 a zone file it refuses (state FAILED)",
    );
    add_bridges(&lab);
    let (code, out) = verify(&lab);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PROBLEM: firewalld is in state FAILED"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM: virbr7: a libvirt bridge in no zone"),
        "{out}"
    );
}

#[test]
fn verify_reports_a_missing_service_and_an_unbound_bridge() {
    for cfg in both_releases_both_backends() {
        let what = format!("{:?}/{:?}", cfg.release, cfg.backend);
        let nft = cfg.backend == Backend::Nftables;
        let lab = Lab::start(cfg);
        assert!(vz(&lab, &["install"]).status.success(), "{what}");
        add_bridges(&lab);
        fw_ok(&lab, &["--zone=libvirt", "--change-interface=virbr7"]);
        fw_ok(&lab, &["--zone=libvirt", "--remove-service=dns"]);
        let (code, out) = verify(&lab);
        assert_eq!(code, Some(1), "{what}:\n{out}");
        let want = if nft {
            "PROBLEM: virbr7 (zone libvirt): guests cannot reach dns (udp/53) and dns (tcp/53) \
             over IPv4 and IPv6 on the host: rejected by filter_IN_libvirt_post rule 1 \
             (`reject`); that is the catch-all of zone libvirt, so zone libvirt lacks them"
        } else {
            "PROBLEM: virbr7 (zone libvirt, iptables): guests cannot reach dns (udp/53) and dns \
             (tcp/53) on the host: rejected by IN_libvirt_post rule 1 (`-j REJECT --reject-with \
             icmp-port-unreachable`); that is the catch-all of zone libvirt, so zone libvirt \
             lacks them"
        };
        assert!(out.contains(want), "{what}: no\n{want}\nin\n{out}");

        // A reload restores the service and drops the runtime binding.
        fw_ok(&lab, &["--reload"]);
        let (code, out) = verify(&lab);
        assert_eq!(code, Some(1), "{what}:\n{out}");
        assert!(
            out.contains(
                "PROBLEM: virbr7: a libvirt bridge in no zone, so firewalld handles it as its \
                 default zone: for its guests' traffic to the host it goes to the chains of public \
                 and is rejected by"
            ),
            "{what}:\n{out}"
        );
        assert!(
            out.contains("PROBLEM: virbr8: a libvirt bridge in no zone"),
            "{what}:\n{out}"
        );
    }
}

/// Rules changed behind firewalld's back: its report still says "bound", the ruleset does not.
#[test]
fn verify_reports_dispatch_removed_behind_firewalld() {
    let lab = Lab::start(LabConfig::new(Release::Debian12, Backend::Nftables));
    lab.allow_firewalld_errors(
        "the test deletes firewalld's nftables rules behind its back, which firewalld then fails to update",
    );
    assert!(vz(&lab, &["install"]).status.success());
    add_bridges(&lab);
    fw_ok(&lab, &["--zone=libvirt", "--change-interface=virbr7"]);
    let listing = sh(&lab, "nft -a list chain inet firewalld filter_INPUT_ZONES");
    let handle = listing
        .lines()
        .find(|l| l.contains("iifname \"virbr7\""))
        .and_then(|l| l.rsplit_once("# handle "))
        .map(|(_, h)| h.trim().to_string())
        .unwrap_or_else(|| panic!("no dispatch rule in\n{listing}"));
    sh(
        &lab,
        &format!("nft delete rule inet firewalld filter_INPUT_ZONES handle {handle}"),
    );
    let (code, out) = verify(&lab);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "PROBLEM: virbr7 (zone libvirt): firewalld reports the bridge in zone libvirt, but no \
             rule selecting iifname virbr7 sends its traffic to the host to the zone's chains; \
             instead it goes to the chains of public and is rejected by filter_IN_public rule 9 \
             (`reject with icmpx admin-prohibited`)"
        ),
        "{out}"
    );

    sh(&lab, "nft delete table inet firewalld");
    let (code, out) = verify(&lab);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PROBLEM: firewalld's table inet firewalld does not exist"),
        "{out}"
    );
}
