//! `virtzone forward` in the Debian sid system (`common::sidroot`): libvirt 12.8 with either of its
//! firewall backends, firewalld 2.5.2 (Python 3.14, nftables 1.1.7), virtzone and `virtzone serve`
//! running inside. Real packets: an upstream namespace connects to the host's address, DNATed to a
//! guest namespace on libvirt's bridge that got its address from libvirt's dnsmasq. The forward
//! must pass libvirt's reject (`LIBVIRT_FWI`, or `guest_input` of `table ip libvirt_network` with
//! the nftables backend) and keep working after every rebuild. See docs/forwards.md.
//!
//! Needs root and the root of `scripts/fetch-sid-root.sh`.

use crate::common;
use crate::common::forward::{CLIENT, SERVER};
use crate::common::vz::vz_ok;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::sidroot::{ip, Node, SidOptions, SidSystem};
use common::{text, Process};
use serde_json::Value;

/// How long a forward may take to work again after a rebuild.
const HEAL: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
pub(crate) const BRIDGE: &str = "virbr12";
/// The guest's port on the system's side of its veth.
const PORT: &str = "vzg12f";
pub(crate) const UP_HOST: &str = "198.51.100.1";
pub(crate) const UP_PEER: &str = "198.51.100.2";

pub(crate) fn net_xml() -> String {
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n\
         <name>n12</name><forward mode='nat'/><bridge name='{BRIDGE}' stp='off'/>\n\
         <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
         end='192.0.2.199'/></dhcp></ip>\n\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>\n"
    )
}

pub(crate) fn wait(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// One connection attempt from `node`: `ok <banner> <peer>`, `refused …` or `timeout`.
pub(crate) fn connect(node: &Node, addr: &str, port: u16) -> String {
    let out = node
        .command("/usr/bin/python3")
        .args(["-c", CLIENT, addr, &port.to_string()])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

pub(crate) fn serve(node: &Node, port: u16, banner: &str) -> Process {
    let child = node
        .command("/usr/bin/python3")
        .args(["-c", SERVER, "0.0.0.0", &port.to_string(), banner])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait("the server listening", Duration::from_secs(10), || {
        connect(node, "127.0.0.1", port).starts_with("ok")
    });
    Process(child)
}

/// A guest on the system's bridge, its address from libvirt's dnsmasq. Returns it and its address.
pub(crate) fn plug_guest(sys: &SidSystem, dir: &std::path::Path) -> (Node, String) {
    plug_guest_as(sys, dir, "g", PORT)
}

/// [`plug_guest`] with the namespace's suffix and the port's name given (for a second guest).
fn plug_guest_as(
    sys: &SidSystem,
    dir: &std::path::Path,
    suffix: &str,
    port: &str,
) -> (Node, String) {
    let g = Node::new(format!("{}-{suffix}", sys.netns));
    let dir = dir.join(suffix);
    fs::create_dir_all(&dir).unwrap();
    ip(&[
        "-n", &g.netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
        &sys.netns,
    ]);
    sys.sh(&format!("ip link set {port} master {BRIDGE} up"));
    ip(&["-n", &g.netns, "link", "set", "eth0", "up"]);
    ip(&["-n", &g.netns, "link", "set", "lo", "up"]);
    let script = dir.join("udhcpc.script");
    fs::write(&script, common::libvirt::UDHCPC_SCRIPT).unwrap();
    common::set_mode(&script, 0o755);
    let lease = dir.join("lease");
    let out = g
        .command("busybox")
        .args([
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-T", "1", "-t", "5", "-s",
        ])
        .arg(&script)
        .env("LAB_LEASE_FILE", &lease)
        .output()
        .unwrap();
    let got = fs::read_to_string(&lease).unwrap_or_else(|_| {
        panic!(
            "no DHCP lease: {}{}{}",
            text(&out.stdout),
            text(&out.stderr),
            sys.diagnostics()
        )
    });
    let addr = got
        .lines()
        .find_map(|l| l.strip_prefix("ip="))
        .unwrap()
        .trim()
        .to_string();
    (g, addr)
}

/// `nft list chain ip libvirt_network guest_input` (empty when absent).
fn guest_input(sys: &SidSystem) -> String {
    guest_input_of(sys, "ip")
}

/// `nft list chain FAMILY libvirt_network guest_input` (empty when absent).
fn guest_input_of(sys: &SidSystem, family: &str) -> String {
    let args = [
        "nft",
        "list",
        "chain",
        family,
        "libvirt_network",
        "guest_input",
    ];
    text(&sys.run(&args).stdout)
}

/// Whether libvirt's reject for the bridge is in place, in the backend it uses.
pub(crate) fn libvirt_rejects(sys: &SidSystem, backend: &str) -> bool {
    reject_id(sys, backend, "ip").is_some()
}

/// What identifies libvirt's reject for the bridge: its nft handle (libvirt deletes its rules by
/// handle and inserts new ones, so an unchanged handle means the very same rule stayed), or for
/// iptables-legacy, whose rules have no handle, its line. `None` when the reject is not there.
fn reject_id(sys: &SidSystem, backend: &str, family: &str) -> Option<String> {
    let (listing, want) = if backend == "nftables" {
        let args = [
            "nft",
            "-a",
            "list",
            "chain",
            family,
            "libvirt_network",
            "guest_input",
        ];
        (text(&sys.run(&args).stdout), format!("oif \"{BRIDGE}\""))
    } else {
        let args = ["nft", "-a", "list", "chain", "ip", "filter", "LIBVIRT_FWI"];
        (
            text(&sys.run(&args).stdout),
            format!("oifname \"{BRIDGE}\""),
        )
    };
    let nft = listing.lines().find_map(|l| {
        let (rule, handle) = l.split_once(" # handle ")?;
        (rule.contains(&want) && rule.contains(" reject")).then(|| handle.to_string())
    });
    if nft.is_some() || backend == "nftables" {
        return nft;
    }
    text(&sys.run(&["iptables", "-w", "-S", "LIBVIRT_FWI"]).stdout)
        .lines()
        .find(|l| l.contains(&format!("-o {BRIDGE} -j REJECT")))
        .map(String::from)
}

/// One connection through the forward that proves it: libvirt's reject for the bridge was in
/// place, the same rule, before and after it (between a flush and libvirt's rebuild there is no
/// reject, and a connection then proves nothing).
pub(crate) fn through(
    sys: &SidSystem,
    backend: &str,
    family: &str,
    attempt: impl Fn() -> bool,
) -> bool {
    let Some(before) = reject_id(sys, backend, family) else {
        return false;
    };
    attempt() && reject_id(sys, backend, family).as_ref() == Some(&before)
}

pub(crate) fn daemon_log(sys: &SidSystem) -> String {
    fs::read_to_string(sys.upper().join("var/log/virtzone-serve.log")).unwrap_or_default()
}

/// The whole life of two forwards to one guest.
fn forward_life(opts: SidOptions) {
    let libvirt_backend = opts.libvirt_backend;
    let strict = opts.strict_forward_ports;
    let firewalld_backend = opts.firewalld_backend;
    let sys = SidSystem::start_opts(opts);
    let dir = tempfile::tempdir().unwrap();
    vz_ok(&sys, &["install"]);
    sys.start_libvirtd();
    sys.start_network_n12(&net_xml());
    if libvirt_backend == "nftables" {
        // The shim let exactly the checksum filter pass as a no-op; libvirt ran tc from PATH.
        let tc = fs::read_to_string(sys.upper().join("var/log/tc-shim.log")).unwrap();
        assert!(tc.contains("action csum ip and udp"), "{tc}");
    }
    wait("libvirt's reject", HEAL, || {
        libvirt_rejects(&sys, libvirt_backend)
    });
    let (guest, guest_ip) = plug_guest(&sys, dir.path());
    let _server = serve(&guest, 80, "guest-one");
    let _other = serve(&guest, 81, "not-forwarded");
    let up = sys.plug_upstream("vzup12");
    sys.start_virtzone_daemon();
    let errors_before = sys.firewalld_errors().len();

    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));
    let out = vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &guest_ip,
            "tcp/8080:80",
        ],
    );
    assert!(out.starts_with("forward 1:"), "{out}");
    let works = || {
        through(&sys, libvirt_backend, "ip", || {
            connect(&up, UP_HOST, 8080) == format!("ok guest-one {UP_PEER}")
        })
    };
    wait("the forward working", HEAL, works);
    if strict && firewalld_backend == "iptables" {
        // The same on firewalld's iptables backend, in its chain FORWARD_dnat.
        let chain = sys.sh("iptables -w -S FORWARD_dnat");
        assert!(
            chain.contains("--ctstate DNAT --ctorigdstport 8080 --ctdir ORIGINAL -j ACCEPT"),
            "{chain}"
        );
        assert!(chain.contains("-j REJECT"), "{chain}");
    } else if strict {
        // Strict mode is really on: firewalld rejects every DNATed connection but those to its
        // own forward-ports (measured: it accepts by original destination port only).
        let chain = sys.sh("nft list chain inet firewalld filter_FORWARD_dnat");
        assert!(
            chain.contains("ct original proto-dst 8080 accept"),
            "{chain}"
        );
        assert!(chain.contains("reject"), "{chain}");
    }
    // Neither another host port nor the guest's other port directly: only DNATed connections to
    // the forwarded port pass libvirt's reject.
    assert!(!connect(&up, UP_HOST, 8081).starts_with("ok"));
    assert!(!connect(&up, &guest_ip, 81).starts_with("ok"));
    assert!(!connect(&up, &guest_ip, 80).starts_with("ok"));

    vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &guest_ip,
            "tcp/8443:443",
        ],
    );
    if libvirt_backend == "nftables" {
        // One rule for both ports, in libvirt's chain ahead of its reject; nothing in iptables.
        let chain = guest_input(&sys);
        let ours: Vec<&str> = chain
            .lines()
            .filter(|l| l.contains("virtzone-fwd"))
            .collect();
        assert_eq!(ours.len(), 1, "{chain}");
        assert!(
            ours[0].contains(&format!(
                "oifname \"{BRIDGE}\" ip daddr {guest_ip} tcp dport {{ 80, 443 }} ct status dnat"
            )),
            "{chain}"
        );
        let first_reject = chain.lines().position(|l| l.trim_end().ends_with("reject"));
        let ours_at = chain.lines().position(|l| l.contains("virtzone-fwd"));
        assert!(ours_at < first_reject, "{chain}");
        let ipt = text(&sys.run(&["iptables", "-w", "-S"]).stdout);
        assert!(!ipt.contains("VIRTZONE_FWD"), "{ipt}");
    }
    wait("the first forward beside the second", HEAL, works);
    let shown = sys.sh("firewall-cmd --info-policy=virtzone-forward");
    assert!(
        shown.contains(&format!("port=8080:proto=tcp:toport=80:toaddr={guest_ip}")),
        "{shown}"
    );

    sys.sh("firewall-cmd --reload");
    wait("the forward after firewall-cmd --reload", HEAL, works);

    sys.stop("sbin/firewalld");
    sys.start_firewalld();
    wait("the forward after a firewalld restart", HEAL, works);

    sys.stop("libvirtd");
    sys.start_libvirtd();
    wait("the forward after a libvirtd restart", HEAL, works);

    sys.sh("virsh -c network:///system net-destroy n12");
    let rows: Value = serde_json::from_str(&vz_ok(&sys, &["forward", "list", "--json"])).unwrap();
    assert_eq!(rows[0]["state"], "inactive", "{rows}");
    if libvirt_backend == "nftables" {
        wait("our accepts gone with the network", HEAL, || {
            !guest_input(&sys).contains("virtzone-fwd")
        });
    }
    sys.sh("virsh -c network:///system net-start n12");
    // The bridge is new: plug the guest's port into it again, as libvirt does for a VM.
    sys.sh(&format!("ip link set {PORT} master {BRIDGE} up"));
    wait("the forward after net-destroy/net-start", HEAL, works);

    if libvirt_backend == "nftables" {
        // While libvirt rebuilt, its bridge was briefly in neither backend's rules: that must not
        // have sent the accept to iptables (it would only be taken out again).
        let ipt = text(&sys.run(&["iptables", "-w", "-S"]).stdout);
        assert!(!ipt.contains("VIRTZONE_FWD"), "{ipt}");
    }
    // The daemon and libvirt do not fight.
    let log = daemon_log(&sys);
    let reapplied = log.matches("forwards: re-applied").count();
    assert!(reapplied <= 20, "{reapplied} re-applications:\n{log}");
    println!("{libvirt_backend}: {reapplied} re-applications\n{log}");

    assert_eq!(
        vz_ok(&sys, &["forward", "remove", "1"]).trim(),
        "forward 1 removed"
    );
    vz_ok(&sys, &["forward", "remove", "2"]);
    wait("the port closed after forward remove", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
    assert!(!guest_input(&sys).contains("virtzone-fwd"));
    let errors: Vec<String> = sys.firewalld_errors().split_off(errors_before);
    assert_eq!(errors, Vec::<String>::new(), "{}", sys.diagnostics());
    // For the record (not an assertion): what else firewalld said.
    for l in sys
        .firewalld_log()
        .lines()
        .filter(|l| l.contains("WARNING"))
    {
        println!("firewalld: {l}");
    }
}

// Every cell but one; firewalld ≥ 2.3 with `StrictForwardPorts=yes` (`strict_…`): only
// firewalld's own forward-ports may DNAT to guests; virtzone's are firewalld's, so they keep
// working, and firewalld logs no ERROR.
crate::sid_matrix! {
    forward_life:
        libvirt_nftables_firewalld_nftables,
        libvirt_iptables_firewalld_nftables,
        libvirt_nftables_firewalld_iptables,
        libvirt_iptables_firewalld_iptables,
        strict_libvirt_nftables_firewalld_nftables,
        strict_libvirt_iptables_firewalld_nftables,
        strict_libvirt_nftables_firewalld_iptables;
    skip strict_libvirt_iptables_firewalld_iptables:
        "for time: strict mode meets each backend of libvirt and of firewalld in the three other strict cells";
}

/// libvirt's nftables backend with `<nat ipv6='yes'>`: IPv6 guests are NATed and rejected in
/// `table ip6 libvirt_network` like IPv4 ones; the forward's accept goes there.
#[test]
fn forwards12_ipv6_nat_libvirt_nftables() {
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    vz_ok(&sys, &["install"]);
    sys.start_libvirtd();
    let xml = net_xml()
        .replace(
            "<forward mode='nat'/>",
            "<forward mode='nat'><nat ipv6='yes'/></forward>",
        )
        .replace(
            "</ip>\n",
            "</ip>\n<ip family='ipv6' address='2001:db8:12::1' prefix='64'/>\n",
        );
    sys.start_network_n12(&xml);
    let rejects6 = || {
        guest_input_of(&sys, "ip6")
            .lines()
            .any(|l| l.contains(&format!("oif \"{BRIDGE}\"")) && l.trim_end().ends_with("reject"))
    };
    wait("libvirt's IPv6 reject", HEAL, rejects6);
    let (guest, _) = plug_guest(&sys, dir.path());
    // SLAAC from libvirt's dnsmasq: a global, non-tentative address.
    let mut guest_ip = String::new();
    wait("the guest's IPv6 address", HEAL, || {
        let out = guest
            .command("ip")
            .args(["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
            .output()
            .unwrap();
        let listing = text(&out.stdout);
        guest_ip = listing
            .lines()
            .find(|l| !l.contains("tentative"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|a| a.split('/').next())
            .unwrap_or("")
            .to_string();
        !guest_ip.is_empty()
    });
    assert!(guest_ip.starts_with("2001:db8:12:"), "{guest_ip}");
    let server = |port: u16, banner: &str| {
        let child = guest
            .command("/usr/bin/python3")
            .args(["-c", SERVER, "::", &port.to_string(), banner])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait("the IPv6 server listening", HEAL, || {
            connect(&guest, "::1", port).starts_with("ok")
        });
        Process(child)
    };
    let _server = server(80, "guest-six");
    let _other = server(81, "not-forwarded");
    let up = sys.plug_upstream("vzup12");
    ip(&[
        "-n",
        &sys.netns,
        "addr",
        "add",
        "2001:db8:99::1/64",
        "dev",
        "vzup12",
        "nodad",
    ]);
    ip(&[
        "-n",
        &up.netns,
        "addr",
        "add",
        "2001:db8:99::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &up.netns,
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:99::1",
    ]);
    sys.start_virtzone_daemon();
    let errors_before = sys.firewalld_errors().len();

    assert!(!connect(&up, "2001:db8:99::1", 8080).starts_with("ok"));
    vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &guest_ip,
            "tcp/8080:80",
        ],
    );
    let works = || {
        through(&sys, "nftables", "ip6", || {
            connect(&up, "2001:db8:99::1", 8080) == "ok guest-six 2001:db8:99::2"
        })
    };
    wait("the IPv6 forward", HEAL, works);
    let chain = guest_input_of(&sys, "ip6");
    assert!(
        chain.contains(&format!("ip6 daddr {guest_ip} tcp dport 80 ct status dnat")),
        "{chain}"
    );
    // libvirt's reject is what stops the rest: not forwarded, or addressed to the guest directly.
    assert!(!connect(&up, "2001:db8:99::1", 8081).starts_with("ok"));
    assert!(!connect(&up, &guest_ip, 81).starts_with("ok"));

    sys.sh("firewall-cmd --reload");
    wait("the IPv6 forward after firewall-cmd --reload", HEAL, works);
    sys.stop("libvirtd");
    sys.start_libvirtd();
    wait("the IPv6 forward after a libvirtd restart", HEAL, works);

    vz_ok(&sys, &["forward", "remove", "1"]);
    wait("the IPv6 port closed after forward remove", HEAL, || {
        !connect(&up, "2001:db8:99::1", 8080).starts_with("ok")
    });
    assert!(!guest_input_of(&sys, "ip6").contains("virtzone-fwd"));
    let errors: Vec<String> = sys.firewalld_errors().split_off(errors_before);
    assert_eq!(errors, Vec::<String>::new(), "{}", sys.diagnostics());
}

/// Without `virtzone serve`: the first forward creates the policy `virtzone-forward` and reloads
/// firewalld; libvirt answers the reload by re-inserting its rules at the top of `guest_input`. The
/// CLI must put its accept in after that rebuild, or the forward is dead until the next check.
#[test]
fn forwards12_without_the_daemon_the_first_forward_outlives_libvirts_rebuild() {
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    vz_ok(&sys, &["install"]);
    sys.start_libvirtd();
    sys.start_network_n12(&net_xml());
    wait("libvirt's reject", HEAL, || {
        libvirt_rejects(&sys, "nftables")
    });
    let (guest, guest_ip) = plug_guest(&sys, dir.path());
    let _server = serve(&guest, 80, "guest-one");
    let up = sys.plug_upstream("vzup12");
    let before = reject_id(&sys, "nftables", "ip").unwrap();
    vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &guest_ip,
            "tcp/8080:80",
        ],
    );
    // libvirt rebuilt its rules (new handles) because of the reload the first forward caused.
    wait("libvirt's rebuild after the reload", HEAL, || {
        reject_id(&sys, "nftables", "ip").is_some_and(|now| now != before)
    });
    wait("the forward working without the daemon", HEAL, || {
        through(&sys, "nftables", "ip", || {
            connect(&up, UP_HOST, 8080) == format!("ok guest-one {UP_PEER}")
        })
    });
    let chain = guest_input(&sys);
    let first_reject = chain.lines().position(|l| l.contains(" reject"));
    let ours_at = chain.lines().position(|l| l.contains("virtzone-fwd"));
    assert!(ours_at.is_some() && ours_at < first_reject, "{chain}");
}

/// `--hairpin` with libvirt's nftables backend: a second guest reaches the first through the host's
/// address. libvirt's `guest_cross` accepts bridge-to-same-bridge traffic before `guest_input`, so
/// no nftables accept is involved; virtzone's masquerade (iptables' `nat`) makes the reply return
/// through the host. `br_netfilter` is switched off in the system's namespace, as in forwards.rs,
/// or bridged replies would be un-DNATed anyway and the test would prove nothing.
#[test]
fn forwards12_hairpin_libvirt_nftables() {
    let sys = SidSystem::start_opts(SidOptions {
        libvirt_backend: "nftables",
        ..SidOptions::default()
    });
    sys.sh("f=/proc/sys/net/bridge/bridge-nf-call-iptables; if [ -e $f ]; then echo 0 >$f; fi");
    let dir = tempfile::tempdir().unwrap();
    vz_ok(&sys, &["install"]);
    sys.start_libvirtd();
    sys.start_network_n12(&net_xml());
    wait("libvirt's reject", HEAL, || {
        libvirt_rejects(&sys, "nftables")
    });
    let (g1, ip1) = plug_guest(&sys, dir.path());
    let (g2, _) = plug_guest_as(&sys, dir.path(), "h", "vzg12h");
    let _server = serve(&g1, 80, "guest-one");
    let up = sys.plug_upstream("vzup12");
    sys.start_virtzone_daemon();
    let errors_before = sys.firewalld_errors().len();

    vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &ip1,
            "tcp/8080:80",
        ],
    );
    wait("the plain forward from upstream", HEAL, || {
        connect(&up, UP_HOST, 8080) == format!("ok guest-one {UP_PEER}")
    });
    assert!(
        !connect(&g2, UP_HOST, 8080).starts_with("ok"),
        "hairpin worked without --hairpin: the test proves nothing"
    );
    vz_ok(
        &sys,
        &[
            "forward",
            "add",
            "--network",
            "n12",
            "--guest",
            &ip1,
            "--hairpin",
            "tcp/8081:80",
        ],
    );
    let hairpin = || {
        through(&sys, "nftables", "ip", || {
            connect(&g2, UP_HOST, 8081) == "ok guest-one 192.0.2.1"
        })
    };
    wait("the hairpin forward from the second guest", HEAL, hairpin);
    assert_eq!(
        connect(&up, UP_HOST, 8081),
        format!("ok guest-one {UP_PEER}")
    );
    sys.sh("firewall-cmd --reload");
    wait("the hairpin forward after a reload", HEAL, hairpin);
    sys.stop("libvirtd");
    sys.start_libvirtd();
    wait(
        "the hairpin forward after a libvirtd restart",
        HEAL,
        hairpin,
    );

    vz_ok(&sys, &["forward", "remove", "2"]);
    wait("the hairpin closed", HEAL, || {
        !connect(&g2, UP_HOST, 8081).starts_with("ok")
    });
    let nat = sys.sh("iptables -w -t nat -S");
    assert!(!nat.contains("VIRTZONE_HAIRPIN"), "{nat}");
    let errors: Vec<String> = sys.firewalld_errors().split_off(errors_before);
    assert_eq!(errors, Vec::<String>::new(), "{}", sys.diagnostics());
}
