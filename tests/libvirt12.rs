//! libvirt 12 (Debian sid) with firewalld 2.5.2 and virtzone: a NAT network started by libvirt
//! itself, its bridge bound by libvirt and recorded by virtzone's hook, `status --verify` healthy,
//! and `explain` agreeing with a real guest's packets. Needs the root of
//! `scripts/fetch-sid-root.sh` (see `common::sidroot`): libvirt runs its iptables firewall backend.

use crate::common;

use std::process::{Command, Output};

use common::sidroot::SidSystem;
use common::text;

const NET: &str = "<network>
  <name>n12</name>
  <forward mode='nat'/>
  <bridge name='virbr12' stp='off'/>
  <ip address='192.0.2.1' netmask='255.255.255.0'>
    <dhcp><range start='192.0.2.100' end='192.0.2.199'/></dhcp>
  </ip>
</network>";

/// A guest: a network namespace with `eth0` plugged into a bridge of the system.
struct Guest {
    netns: String,
}

impl Guest {
    fn plug(sys: &SidSystem, bridge: &str) -> Guest {
        let netns = format!("{}-g", sys.netns);
        let run = |args: &[&str]| {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        };
        run(&["ip", "netns", "add", &netns]);
        let guest = Guest { netns };
        // Made in the guest's namespace with its peer in the system's: nothing appears in the
        // host's, so parallel tests cannot collide on names.
        let peer = ["peer", "name", "vzg12a", "netns", &sys.netns];
        let mut add = vec![
            "ip",
            "-n",
            &guest.netns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
        ];
        add.extend(peer);
        run(&add);
        sys.sh(&format!("ip link set vzg12a master {bridge} up"));
        run(&["ip", "-n", &guest.netns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &guest.netns, "link", "set", "lo", "up"]);
        guest
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn libvirt12_nat_network_verify_and_explain_agree_with_a_guest() {
    nat_network(SidSystem::start());
}

#[test]
fn libvirt12_nat_network_firewalld_iptables_backend() {
    nat_network(SidSystem::start_with("iptables"));
}

/// A routed network: libvirt binds it to `libvirt-routed`; verify checks the policies too.
#[test]
fn libvirt12_routed_network_both_firewalld_backends() {
    for backend in ["nftables", "iptables"] {
        let sys = SidSystem::start_with(backend);
        sys.start_libvirtd();
        let xml = NET
            .replace("n12", "r12")
            .replace("virbr12", "virbr13")
            .replace("mode='nat'", "mode='route'");
        sys.sh(&format!(
            "cat >/root/r12.xml <<'EOF'\n{xml}\nEOF\nvirsh -c network:///system net-define /root/r12.xml && virsh -c network:///system net-start r12"
        ));
        assert_eq!(
            sys.sh("firewall-cmd --get-zone-of-interface=virbr13")
                .trim(),
            "libvirt-routed",
            "{backend}{}",
            sys.diagnostics()
        );
        let out = sys.run(&["virtzone", "status", "--verify"]);
        let said = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend}: {said}{}",
            text(&out.stderr)
        );
        assert!(!said.contains("unknown:"), "{backend}: {said}");
        assert!(
            said.contains("virbr13 (zone libvirt-routed): new connections routed in to the guests are accepted"),
            "{backend}: {said}"
        );
    }
}

fn nat_network(sys: SidSystem) {
    let versions = sys.sh("libvirtd --version; firewall-cmd --version");
    assert!(versions.contains("libvirtd (libvirt) 12."), "{versions}");
    assert!(versions.contains("2.5.2"), "{versions}");

    // libvirt's package ships its zones: virtzone keeps them.
    let out = sys.sh("virtzone install");
    assert!(out.contains("zone libvirt: already present"), "{out}");

    sys.start_libvirtd();
    sys.start_network_n12(NET);
    assert_eq!(
        sys.sh("firewall-cmd --get-zone-of-interface=virbr12")
            .trim(),
        "libvirt",
        "{}",
        sys.diagnostics()
    );
    // virtzone's hook recorded the binding libvirt made.
    let list = sys.sh("virtzone list");
    assert!(list.contains("virbr12") && list.contains("bound"), "{list}");

    let out = sys.run(&["virtzone", "status", "--verify"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(!said.contains("unknown:"), "{said}");
    println!("{said}");
    assert!(
        said.contains("libvirt: firewall backend iptables (from /etc/libvirt/network.conf)"),
        "{said}"
    );

    // A real guest: DHCP from libvirt's dnsmasq, DNS, and a refused port, beside explain.
    let guest = Guest::plug(&sys, "virbr12");
    let dhcp = guest.run(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]);
    assert!(
        dhcp.status.success(),
        "DHCP: {}{}",
        text(&dhcp.stderr),
        sys.diagnostics()
    );
    let explain = |what: &str| {
        let out = sys.run(&[
            "virtzone",
            "explain",
            "--bridge",
            "virbr12",
            "--to-host",
            what,
        ]);
        (out.status.code(), text(&out.stdout))
    };
    let (code, said) = explain("udp/67");
    assert_eq!(code, Some(0), "{said}");

    let ip = Command::new("ip")
        .args([
            "-n",
            &guest.netns,
            "addr",
            "add",
            "192.0.2.50/24",
            "dev",
            "eth0",
        ])
        .status()
        .unwrap();
    assert!(ip.success());
    let dns = guest.run(&["busybox", "nslookup", "-type=a", "n12", "192.0.2.1"]);
    // The query was answered (NXDOMAIN or an address): the packet passed.
    let answer = text(&dns.stdout) + &text(&dns.stderr);
    assert!(answer.contains("192.0.2.1"), "nslookup: {answer}");
    assert!(!answer.contains("timed out"), "nslookup: {answer}");
    let (code, said) = explain("udp/53");
    assert_eq!(code, Some(0), "{said}");

    // A port nothing opens, with a listener behind it: the zone's catch-all refuses it.
    sys.sh("(busybox nc -l -p 8080 >/dev/null 2>&1 &)");
    let tcp = guest.run(&["busybox", "nc", "-w", "2", "192.0.2.1", "8080"]);
    assert!(!tcp.status.success(), "tcp/8080 connected: {tcp:?}");
    let (code, said) = explain("tcp/8080");
    assert_eq!(code, Some(1), "{said}");
    // The zone's catch-all (`filter_IN_libvirt_post` on nftables, `IN_libvirt_post` on iptables).
    assert!(said.contains("IN_libvirt_post handle"), "{said}");
}
