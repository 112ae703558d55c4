//! A small network around a lab, for tests that send real packets through firewalld.
//!
//! The lab's namespace plays the host: firewalld runs there, and this module adds
//! - a bridge [`BRIDGE`] with the host's addresses ([`HOST_V4`], [`HOST_V6`]), STP off;
//! - two guest namespaces (`<lab>-g1`, `<lab>-g2`), each with an `eth0` whose veth peer is a port of
//!   the bridge, and default routes via the host;
//! - an upstream namespace (`<lab>-up`) on a routed link ([`UPLINK`]), default route via the host,
//!   so guest↔upstream traffic is forwarded by the host (IPv4 and IPv6 forwarding on, in the lab's
//!   namespace only);
//! - listeners: on the host TCP 22, TCP/UDP [`UNLISTED_PORT`]; in each guest and upstream TCP
//!   [`WEB_PORT`]; and dnsmasq on the bridge for DNS, DHCP, DHCPv6 and TFTP.
//!
//! Only documentation ranges are used (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32), and nothing is
//! created outside the namespaces. Dropping the [`Topology`] (also while a failed test unwinds)
//! stops its processes and deletes its namespaces; the lab's own drop removes the host side.
//! Namespaces left by a killed test run are removed by the next [`Topology::build`].
//!
//! Clients run as `probe.py` (embedded below) inside a namespace and print one outcome line; see
//! [`Outcome`]. Every client waits at most a second for an answer.

use std::borrow::BorrowMut;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::Lab;

/// The guests' bridge, in the lab's namespace.
pub const BRIDGE: &str = "vzbr0";
/// The host's link to the upstream namespace.
pub const UPLINK: &str = "vzup0";
/// The host's address on the bridge.
pub const HOST_V4: &str = "192.0.2.1";
/// The host's IPv6 address on the bridge.
pub const HOST_V6: &str = "2001:db8:1::1";
/// A TCP and UDP port that listens on the host but that no zone lists.
pub const UNLISTED_PORT: u16 = 8080;
/// The TCP port guests and the upstream listen on.
pub const WEB_PORT: u16 = 80;
/// A name dnsmasq answers for (A and AAAA).
pub const DNS_NAME: &str = "gw.vz.test";
/// The file dnsmasq serves over TFTP, and its size: three blocks, so the transfer needs the ACKs
/// that only firewalld's TFTP conntrack helper lets back in.
pub const TFTP_FILE: (&str, usize) = ("boot.img", 1300);

/// How long setup may wait for a state (a port forwarding, a daemon answering).
const SETUP_DEADLINE: Duration = Duration::from_secs(10);
/// Poll interval while waiting.
const POLL: Duration = Duration::from_millis(20);

/// One namespace of the topology and its addresses.
#[derive(Debug, Clone)]
pub struct Node {
    /// The network namespace (`<lab>-g1`, `<lab>-g2`, `<lab>-up`).
    pub netns: String,
    /// Its IPv4 address.
    pub v4: &'static str,
    /// Its IPv6 address.
    pub v6: &'static str,
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The exchange completed (detail: what came back).
    Ok(String),
    /// An error came back quickly: the errno (`ECONNREFUSED`, `EHOSTUNREACH`, `EACCES`) or, for
    /// ping, the ICMP error iputils reports.
    Refused(String),
    /// Nothing came back within the client's timeout.
    Timeout,
    /// Something else went wrong (a client or setup error, not a firewall outcome).
    Error(String),
}

impl Outcome {
    /// The table cell: `ok`, `refused ECONNREFUSED`, `timeout`, `ERROR …`. Details that vary from
    /// run to run (a lease's address) are left out, so cells of different labs compare.
    pub fn cell(&self) -> String {
        match self {
            Outcome::Ok(_) => "ok".into(),
            Outcome::Refused(why) => format!("refused {why}"),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error(e) => format!("ERROR {e}"),
        }
    }

    /// Parses a client's output line.
    fn parse(out: &Output) -> Outcome {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or("").trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ok" => Outcome::Ok(rest.to_string()),
            "refused" => Outcome::Refused(rest.to_string()),
            "timeout" => Outcome::Timeout,
            "error" => Outcome::Error(rest.to_string()),
            _ => Outcome::Error(format!(
                "no outcome ({}): {} {}",
                out.status,
                line,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
}

/// The namespaces, links and services around one lab.
pub struct Topology {
    /// The two guests on the bridge.
    pub guests: [Node; 2],
    /// The upstream, routed through the host.
    pub upstream: Node,
    /// The lab's namespace (the host).
    host_netns: String,
    /// Where the probe script, dnsmasq's files and logs live (inside the lab's temp dir).
    dir: PathBuf,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    /// Listeners and dnsmasq.
    children: Vec<Child>,
}

/// Runs a setup command, panicking with its output on failure.
fn must(mut cmd: impl BorrowMut<Command>, what: &str) {
    let out = cmd
        .borrow_mut()
        .output()
        .unwrap_or_else(|e| panic!("topology: cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "topology: {what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// `ip netns exec NS program args…`.
fn in_ns(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

fn sysctl(netns: &str, settings: &[&str]) {
    for s in settings {
        must(
            in_ns(netns, "sysctl").args(["-q", "-w", s]),
            &format!("sysctl {s} in {netns}"),
        );
    }
}

/// Whether a process is alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills what runs in a namespace and deletes it.
fn delete_netns(netns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() {
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", netns])
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces `vzlab-<pid>-<n>-{g1,g2,up}` of test processes that no longer run (a killed
/// run cannot clean up; the lab removes its own namespace, not these).
fn remove_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vzlab-") else {
            continue;
        };
        let ours = ["-g1", "-g2", "-up"].iter().any(|s| rest.ends_with(s));
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let (true, Some(pid)) = (ours, pid) {
            if !process_alive(pid) {
                delete_netns(&name);
            }
        }
    }
}

/// A node of the lab's topology: namespace `<lab>-NAME`.
fn node(lab: &Lab, name: &str, v4: &'static str, v6: &'static str) -> Node {
    Node {
        netns: format!("{}-{name}", lab.netns),
        v4,
        v6,
    }
}

impl Topology {
    /// The topology's start: its directory and probe script, the host's sysctls, and the bridge
    /// with the host's addresses; `upstream` is the node [`Topology::build`] routes to, or the LAN
    /// [`Topology::build_bridged`] plugs into the bridge.
    fn bridge(lab: &Lab, upstream: Node) -> Topology {
        remove_stale();
        let host = lab.netns.clone();
        let dir = lab.dir().join("topology");
        fs::create_dir_all(dir.join("tftp")).unwrap_or_else(|e| panic!("topology: {e}"));
        fs::write(dir.join("probe.py"), PROBE_PY).unwrap_or_else(|e| panic!("topology: {e}"));
        fs::write(dir.join("tftp").join(TFTP_FILE.0), vec![b'v'; TFTP_FILE.1])
            .unwrap_or_else(|e| panic!("topology: {e}"));
        let topo = Topology {
            guests: [
                node(lab, "g1", "192.0.2.11", "2001:db8:1::11"),
                node(lab, "g2", "192.0.2.12", "2001:db8:1::12"),
            ],
            upstream,
            host_netns: host.clone(),
            dir,
            created: Vec::new(),
            children: Vec::new(),
        };
        // The host: forwarding on; no duplicate address detection (addresses usable at once);
        // no ICMP rate limit (rejects are ICMP errors, and checks send many in a row).
        sysctl(
            &host,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            ],
        );
        must(
            ip(&[
                "-n",
                &host,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
            ]),
            "add bridge",
        );
        must(ip(&["-n", &host, "link", "set", BRIDGE, "up"]), "bridge up");
        must(
            ip(&["-n", &host, "addr", "add", "192.0.2.1/24", "dev", BRIDGE]),
            "bridge address",
        );
        must(
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                BRIDGE,
                "nodad",
            ]),
            "bridge address v6",
        );

        topo
    }

    /// Builds the topology around a running lab and starts its services; returns once every
    /// bridge port forwards and every service answers.
    pub fn build(lab: &Lab) -> Topology {
        let mut topo = Topology::bridge(lab, node(lab, "up", "198.51.100.2", "2001:db8:2::2"));
        let host = topo.host_netns.clone();
        let guests = topo.guests.clone();
        for (i, g) in guests.iter().enumerate() {
            let port = format!("vzg{}", i + 1);
            topo.add_node(g, &port, Some(BRIDGE));
        }
        let up = topo.upstream.clone();
        topo.add_node(&up, UPLINK, None);
        must(
            ip(&["-n", &host, "addr", "add", "198.51.100.1/24", "dev", UPLINK]),
            "uplink address",
        );
        must(
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                "2001:db8:2::1/64",
                "dev",
                UPLINK,
                "nodad",
            ]),
            "uplink address v6",
        );
        for (node, gw4, gw6) in [
            (&guests[0], HOST_V4, HOST_V6),
            (&guests[1], HOST_V4, HOST_V6),
            (&up, "198.51.100.1", "2001:db8:2::1"),
        ] {
            must(
                ip(&["-n", &node.netns, "route", "add", "default", "via", gw4]),
                "default route",
            );
            must(
                ip(&[
                    "-n",
                    &node.netns,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    gw6,
                ]),
                "default route v6",
            );
        }
        for i in 1..=2 {
            topo.wait_forwarding(&format!("vzg{i}"));
        }

        // Listeners. Wildcard addresses: a refusal can then only come from the firewall.
        let unlisted = UNLISTED_PORT.to_string();
        let host_specs = [
            "tcp:0.0.0.0:22".to_string(),
            "tcp:[::]:22".to_string(),
            format!("tcp:0.0.0.0:{unlisted}"),
            format!("tcp:[::]:{unlisted}"),
            format!("udp:0.0.0.0:{unlisted}"),
            format!("udp:[::]:{unlisted}"),
        ];
        topo.serve(&host, &host_specs);
        let web = [
            format!("tcp:0.0.0.0:{WEB_PORT}"),
            format!("tcp:[::]:{WEB_PORT}"),
        ];
        for node in guests.iter().chain([&up]) {
            topo.serve(&node.netns, &web);
        }
        topo.start_dnsmasq(lab);
        topo
    }

    /// A host bridge carrying guests to a LAN: the guests (as in [`Topology::build`]) and the LAN
    /// node (`upstream`, `<lab>-up`, 192.0.2.50 and 2001:db8:1::50, port [`UPLINK`]) are all ports
    /// of [`BRIDGE`], in one subnet with the host, so nothing between them is routed: only
    /// br_netfilter shows their traffic to the IP firewall. Listeners: TCP [`WEB_PORT`] on every
    /// node; no dnsmasq.
    pub fn build_bridged(lab: &Lab) -> Topology {
        let mut topo = Topology::bridge(lab, node(lab, "up", "192.0.2.50", "2001:db8:1::50"));
        let guests = topo.guests.clone();
        let lan = topo.upstream.clone();
        for (i, g) in guests.iter().enumerate() {
            topo.add_node(g, &format!("vzg{}", i + 1), Some(BRIDGE));
        }
        topo.add_node(&lan, UPLINK, Some(BRIDGE));
        for port in ["vzg1", "vzg2", UPLINK] {
            topo.wait_forwarding(port);
        }
        let web = [
            format!("tcp:0.0.0.0:{WEB_PORT}"),
            format!("tcp:[::]:{WEB_PORT}"),
        ];
        for node in guests.iter().chain([&lan]) {
            topo.serve(&node.netns, &web);
        }
        topo
    }

    /// Creates `node`'s namespace with `eth0`, whose peer `host_side` is in the host (enslaved to
    /// `bridge` when given), with the node's addresses.
    fn add_node(&mut self, node: &Node, host_side: &str, bridge: Option<&str>) {
        must(ip(&["netns", "add", &node.netns]), "netns add");
        self.created.push(node.netns.clone());
        let ns = node.netns.as_str();
        sysctl(
            ns,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
            ],
        );
        must(ip(&["-n", ns, "link", "set", "lo", "up"]), "lo up");
        // Created from the host's side straight into both namespaces: nothing passes through the
        // machine's own namespace.
        must(
            ip(&[
                "-n",
                &self.host_netns,
                "link",
                "add",
                host_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ]),
            "add veth",
        );
        if let Some(br) = bridge {
            must(
                ip(&[
                    "-n",
                    &self.host_netns,
                    "link",
                    "set",
                    host_side,
                    "master",
                    br,
                ]),
                "enslave",
            );
        }
        must(
            ip(&["-n", &self.host_netns, "link", "set", host_side, "up"]),
            "host side up",
        );
        must(ip(&["-n", ns, "link", "set", "eth0", "up"]), "eth0 up");
        let v4 = format!("{}/24", node.v4);
        let v6 = format!("{}/64", node.v6);
        must(ip(&["-n", ns, "addr", "add", &v4, "dev", "eth0"]), "addr");
        must(
            ip(&["-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"]),
            "addr v6",
        );
    }

    /// Polls a bridge port until it forwards (STP is off, so this is quick; a client started
    /// before it would lose its first packets).
    fn wait_forwarding(&self, port: &str) {
        let path = format!("/sys/class/net/{port}/brport/state");
        let deadline = Instant::now() + SETUP_DEADLINE;
        loop {
            let out = in_ns(&self.host_netns, "cat")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("topology: {e}"));
            // 3 = BR_STATE_FORWARDING.
            if String::from_utf8_lossy(&out.stdout).trim() == "3" {
                return;
            }
            if Instant::now() > deadline {
                panic!("topology: bridge port {port} does not forward");
            }
            thread::sleep(POLL);
        }
    }

    /// Starts a listener in `netns` and waits for its `ready`.
    fn serve(&mut self, netns: &str, specs: &[String]) {
        let mut child = in_ns(netns, "/usr/bin/python3")
            .arg(self.dir.join("probe.py"))
            .arg("serve")
            .args(specs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("topology: cannot start a listener: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            // Blocks until the listener has bound everything, or exits (EOF) on failure.
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "topology: listener {specs:?} in {netns} did not start: {}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
        self.children.push(child);
    }

    /// dnsmasq on the bridge: DNS (a name for the host), DHCP and DHCPv6 leases, TFTP. Run in the
    /// foreground with its files in the topology's dir, so it touches nothing of the machine's.
    fn start_dnsmasq(&mut self, lab: &Lab) {
        let d = &self.dir;
        let child = lab
            .command("dnsmasq")
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg(format!(
                "--log-facility={}",
                d.join("dnsmasq.log").display()
            ))
            .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
            .args([
                "--user=root",
                "--group=root",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--log-dhcp",
                "--log-queries",
                "--bind-interfaces",
                "--except-interface=lo",
                "--dhcp-authoritative",
                "--no-ping",
                "--enable-tftp",
            ])
            .arg(format!("--interface={BRIDGE}"))
            .arg(format!("--host-record={DNS_NAME},{HOST_V4},{HOST_V6}"))
            .arg("--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,10m")
            .arg("--dhcp-range=2001:db8:1::100,2001:db8:1::1ff,64,10m")
            .arg(format!("--tftp-root={}", d.join("tftp").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Start-up errors (a bad option, a busy port) go to stderr, not to the log file.
            .stderr(
                fs::File::create(d.join("dnsmasq.err")).unwrap_or_else(|e| panic!("topology: {e}")),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("topology: cannot start dnsmasq: {e}"));
        self.children.push(child);
        // Ready when it answers DNS over TCP from the host itself (loopback passes firewalld).
        let deadline = Instant::now() + SETUP_DEADLINE;
        loop {
            let answered = self.client(&self.host_netns, &["dns-tcp", HOST_V4, DNS_NAME, "A"]);
            if matches!(answered, Outcome::Ok(_)) {
                return;
            }
            if let Some(Ok(Some(status))) = self.children.last_mut().map(Child::try_wait) {
                let err = fs::read_to_string(self.dir.join("dnsmasq.err")).unwrap_or_default();
                panic!("topology: dnsmasq exited with {status}: {err}");
            }
            if Instant::now() > deadline {
                panic!("topology: dnsmasq does not answer: {answered:?}");
            }
            thread::sleep(POLL);
        }
    }

    /// Runs `probe.py ARGS` in a namespace.
    fn client(&self, netns: &str, args: &[&str]) -> Outcome {
        match in_ns(netns, "/usr/bin/python3")
            .arg(self.dir.join("probe.py"))
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => Outcome::parse(&out),
            Err(e) => Outcome::Error(format!("cannot run probe.py: {e}")),
        }
    }

    /// A probe client (`tcp HOST PORT`, `dns-udp SERVER NAME A`, …) run in `node`.
    pub fn probe(&self, node: &Node, args: &[&str]) -> Outcome {
        self.client(&node.netns, args)
    }

    /// One echo request with iputils ping, waiting at most a second.
    pub fn ping(&self, node: &Node, addr: &str) -> Outcome {
        let out = match in_ns(&node.netns, "ping")
            .args(["-n", "-c", "1", "-W", "1", addr])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => return Outcome::Error(format!("cannot run ping: {e}")),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains(" bytes from ") {
            return Outcome::Ok(String::new());
        }
        // An ICMP error: "From 192.0.2.1 icmp_seq=1 Destination Port Unreachable".
        if let Some(line) = text.lines().find(|l| l.starts_with("From ")) {
            let why = line.split_once("icmp_seq=1 ").map_or(line, |(_, w)| w);
            return Outcome::Refused(why.trim().to_string());
        }
        if out.status.code() == Some(1) {
            return Outcome::Timeout;
        }
        Outcome::Error(format!(
            "ping {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }

    /// A real DHCPv4 exchange with busybox udhcpc on `node`'s eth0 (the lease is not applied).
    pub fn dhcp4(&self, node: &Node) -> Outcome {
        // One discover, one second for the offer: a lost exchange ends in about a second.
        let out = match in_ns(&node.netns, "busybox")
            .args([
                "udhcpc",
                "-i",
                "eth0",
                "-f",
                "-q",
                "-n",
                "-t",
                "1",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => return Outcome::Error(format!("cannot run udhcpc: {e}")),
        };
        // busybox prints its messages on stderr.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match text.lines().find(|l| l.contains("lease of ")) {
            Some(line) if out.status.success() => Outcome::Ok(line.trim().to_string()),
            _ if text.contains("no lease") => Outcome::Timeout,
            _ => Outcome::Error(format!("udhcpc {}: {}", out.status, text.trim())),
        }
    }

    /// The lab's dnsmasq log (for failure messages).
    pub fn dnsmasq_log(&self) -> String {
        fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a failed test unwinds.
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for netns in self.created.iter().rev() {
            delete_netns(netns);
        }
    }
}

/// The clients and listeners (see the docstring at its top).
const PROBE_PY: &str = r##""""Clients and listeners for the packet tests (tests/common/topology.rs runs this in namespaces).

Every client prints one line and exits 0: `ok DETAIL`, `refused ERRNO-OR-ICMP`, `timeout`, or
`error DETAIL`. Each waits at most TIMEOUT seconds for any one answer, so a check that the firewall
drops ends in about a second, and one it rejects ends as soon as the ICMP error arrives.

  tcp HOST PORT                  connect
  udp HOST PORT                  send a datagram, wait for the echo
  dns-udp|dns-tcp SERVER NAME A|AAAA   one query, an answer with records is ok
  tftp SERVER FILE SIZE          read FILE (netascii-free octet mode), all SIZE bytes
  dhcp6 IFACE                    Solicit, Advertise, Request, Reply: ok ADDRESS
  serve tcp:ADDR:PORT|udp:ADDR:PORT ...   listen (TCP: accept and close; UDP: echo), print `ready`
"""

import errno
import os
import select
import selectors
import socket
import struct
import sys
import time

TIMEOUT = 1.0


def say(line):
    print(line, flush=True)
    sys.exit(0)


def refused(e):
    say("refused " + errno.errorcode.get(e.errno, str(e.errno)))


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# Linux's IP_RECVERR and IPV6_RECVERR (the socket module lacks the names).
IP_RECVERR = 11
IPV6_RECVERR = 25


def tcp(host, port):
    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_STREAM)
    # An ICMP error that arrives while connect() still holds the socket counts only as a "soft"
    # error, and TCP waits for its SYN retransmission (a second later) to give up. With guest and
    # host in one kernel, as namespaces are, the firewall's reject always arrives that early
    # (TcpExtLockDroppedIcmps); a separate guest kernel sees it after connect() returned. RECVERR
    # queues the ICMP error on the socket in both cases, so it is reported at once here too.
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    s.setblocking(False)
    err = s.connect_ex((host, int(port)))
    if err not in (0, errno.EINPROGRESS):
        refused(OSError(err, os.strerror(err)))
    poller = select.poll()
    poller.register(s, select.POLLOUT | select.POLLERR)
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            say("timeout")
        so_error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if so_error:
            refused(OSError(so_error, os.strerror(so_error)))
        try:
            _, ancillary, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            say("ok connected")
        for _, _, data in ancillary:
            # struct sock_extended_err starts with the errno.
            (ee_errno,) = struct.unpack("=I", data[:4])
            refused(OSError(ee_errno, os.strerror(ee_errno)))


def udp(host, port):
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((host, int(port)))
        s.send(b"probe")
        data = s.recv(512)
    except socket.timeout:
        say("timeout")
    except OSError as e:
        refused(e)
    say("ok echo" if data == b"probe" else "error unexpected reply")


def dns_query(name, qtype):
    qid = int.from_bytes(os.urandom(2), "big")
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, header + labels + struct.pack("!HH", {"A": 1, "AAAA": 28}[qtype], 1)


def dns_check(qid, reply):
    if len(reply) < 12:
        say("error short reply")
    rid, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
    if rid != qid:
        say("error wrong id")
    rcode = flags & 0xF
    if rcode != 0 or ancount == 0:
        say("error rcode %d, %d answers" % (rcode, ancount))
    say("ok %d answers" % ancount)


def dns_udp(server, name, qtype):
    qid, q = dns_query(name, qtype)
    s = socket.socket(family_of(server), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((server, 53))
        s.send(q)
        reply = s.recv(4096)
    except socket.timeout:
        say("timeout")
    except OSError as e:
        refused(e)
    dns_check(qid, reply)


def recv_exactly(s, n):
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            say("error connection closed")
        buf += part
    return buf


def dns_tcp(server, name, qtype):
    qid, q = dns_query(name, qtype)
    s = socket.socket(family_of(server), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((server, 53))
        s.sendall(struct.pack("!H", len(q)) + q)
        (length,) = struct.unpack("!H", recv_exactly(s, 2))
        reply = recv_exactly(s, length)
    except socket.timeout:
        say("timeout")
    except OSError as e:
        refused(e)
    dns_check(qid, reply)


def tftp(server, name, size):
    s = socket.socket(family_of(server), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.sendto(struct.pack("!H", 1) + name.encode() + b"\0octet\0", (server, 69))
    data = b""
    block = 1
    peer = None
    while True:
        try:
            pkt, addr = s.recvfrom(1024)
        except socket.timeout:
            say("timeout" if block == 1 else "error stalled after %d bytes" % len(data))
        except OSError as e:
            refused(e)
        op = struct.unpack("!H", pkt[:2])[0]
        if op == 5:
            say("error tftp error %r" % pkt[4:].rstrip(b"\0"))
        if op != 3:
            continue
        # The server answers from a new port (its transfer ID): later ACKs go there, which only a
        # conntrack helper lets through the server's firewall.
        peer = peer or addr
        (n,) = struct.unpack("!H", pkt[2:4])
        if n == block:
            data += pkt[4:]
            block += 1
        s.sendto(struct.pack("!HH", 4, n), peer)
        if len(pkt) - 4 < 512:
            break
    if len(data) != int(size):
        say("error got %d bytes" % len(data))
    say("ok %d bytes" % len(data))


def dhcp6_options(body):
    opts = []
    while len(body) >= 4:
        code, length = struct.unpack("!HH", body[:4])
        opts.append((code, body[4 : 4 + length]))
        body = body[4 + length :]
    return opts


def dhcp6(iface):
    index = socket.if_nametoindex(iface)
    with open("/sys/class/net/%s/address" % iface) as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    duid = struct.pack("!HH", 3, 1) + mac
    opt = lambda code, data: struct.pack("!HH", code, len(data)) + data
    iaid = b"vz01"
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("::", 546))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    s.settimeout(TIMEOUT)

    def exchange(msg_type, want, options):
        xid = os.urandom(3)
        s.sendto(bytes([msg_type]) + xid + options, ("ff02::1:2", 547, 0, index))
        while True:
            try:
                reply, _ = s.recvfrom(2048)
            except socket.timeout:
                say("timeout")
            except OSError as e:
                refused(e)
            if reply[0] == want and reply[1:4] == xid:
                return dict(dhcp6_options(reply[4:]))

    base = opt(1, duid) + opt(8, b"\0\0")
    adv = exchange(1, 2, base + opt(3, iaid + bytes(8)))
    if 2 not in adv or 3 not in adv:
        say("error advertise without server id or address")
    reply = exchange(3, 7, base + opt(2, adv[2]) + opt(3, adv[3]))
    ia = reply.get(3)
    if ia is None:
        say("error reply without address")
    for code, data in dhcp6_options(ia[12:]):
        if code == 5:
            say("ok " + socket.inet_ntop(socket.AF_INET6, data[:16]))
        if code == 13:
            say("error status %r" % data)
    say("error reply without address")


def serve(specs):
    sel = selectors.DefaultSelector()
    for spec in specs:
        proto, rest = spec.split(":", 1)
        addr, port = rest.rsplit(":", 1)
        addr = addr.strip("[]")
        fam = family_of(addr)
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(fam, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, int(port)))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        sel.register(s, selectors.EVENT_READ, kind)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            try:
                if key.data == socket.SOCK_STREAM:
                    conn, _ = s.accept()
                    conn.close()
                else:
                    data, peer = s.recvfrom(2048)
                    s.sendto(data, peer)
            except OSError:
                pass


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        {
            "tcp": tcp,
            "udp": udp,
            "dns-udp": dns_udp,
            "dns-tcp": dns_tcp,
            "tftp": tftp,
            "dhcp6": dhcp6,
        }[mode](*args) if mode != "serve" else serve(args)
    except SystemExit:
        raise
    except Exception as e:  # a bug in a client must show, not pass as an outcome
        say("error %s: %s" % (type(e).__name__, e))


main()
"##;
