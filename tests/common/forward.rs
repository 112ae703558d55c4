//! What the forward tests share: a libvirt lab with virtzone installed, the guests' TCP banner
//! server and client, `virtzone serve` as [`Daemon`], firewalld's ERROR lines, and the proof that a
//! forward works *through* libvirt's reject ([`proven`]). Used by `tests/forwards.rs` and by the
//! other files whose scenarios carry packets through forwards (apply, cockpit, domain_forwards,
//! hardening3, hardening_host, forwards12).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::libvirt::{Guest, LibvirtConfig, LibvirtLab};
use super::vz::vz_ok;
use super::{text, Backend, LabConfig, Process, Release};

/// How long a forward may take to work again after a rebuild (the daemon reacts in milliseconds;
/// the margin is for a loaded 2-core machine and firewalld's own reload time).
pub const HEAL: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A TCP server answering every connection with `<banner> <peer address>`.
pub const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
while True:
    c, a = s.accept()
    try:
        c.sendall(('%s %s\n' % (sys.argv[3], a[0])).encode())
    except OSError:
        pass
    c.close()
"#;

/// A TCP client: prints `ok <answer>`, `refused <errno>` or `timeout`.
pub const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.settimeout(1.0)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print('ok', s.recv(200).decode().strip())
except socket.timeout:
    print('timeout')
except OSError as e:
    print('refused', e.errno)
"#;

/// The Python that runs [`SERVER`] and [`CLIENT`].
pub fn python() -> &'static str {
    // Debian's python3, not whatever python is first on PATH.
    "/usr/bin/python3"
}

/// Starts the banner server in `node` on `addr:port` and waits until it accepts.
pub fn serve(node: &Guest<'_>, addr: &str, port: u16, banner: &str) -> Process {
    let child = node
        .command(python())
        .args(["-c", SERVER, addr, &port.to_string(), banner])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let local = if addr.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    wait(
        &format!("server {banner} listening"),
        Duration::from_secs(10),
        || connect(node, local, port).starts_with("ok"),
    );
    Process(child)
}

/// One connection attempt from `node`.
pub fn connect(node: &Guest<'_>, addr: &str, port: u16) -> String {
    let out = node
        .command(python())
        .args(["-c", CLIENT, addr, &port.to_string()])
        .output()
        .expect("run client");
    text(&out.stdout).trim().to_string()
}

/// Polls `ok` until it holds and returns how long that took; panics with `what` after `deadline`.
pub fn wait(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok() {
            return start.elapsed();
        }
        if start.elapsed() > deadline {
            panic!("{what}: not within {deadline:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// A NAT network with DHCP on `bridge`, `net` a /24 prefix like `"192.0.2"`. STP off and dnsmasq's
/// `no-ping`, so a guest gets its lease at once (see libvirt_e2e.rs).
pub fn nat_network(name: &str, bridge: &str, net: &str) -> String {
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n\
         <name>{name}</name><forward mode='nat'/><bridge name='{bridge}' stp='off'/>\n\
         <ip address='{net}.1' netmask='255.255.255.0'><dhcp><range start='{net}.100' \
         end='{net}.199'/></dhcp></ip>\n\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>\n"
    )
}

/// A running `virtzone serve`, stopped on drop.
pub struct Daemon(Child);

impl Daemon {
    /// Starts `virtzone serve` in the lab and waits until it owns its bus name.
    pub fn start(vlab: &LibvirtLab) -> Daemon {
        Daemon::start_as(vlab, vlab.virtzone())
    }

    /// [`Daemon::start`] with `virtzone` as the command to add `serve` to (e.g. in another mount
    /// namespace); its log is `daemon.log` in the lab.
    pub fn start_as(vlab: &LibvirtLab, mut virtzone: std::process::Command) -> Daemon {
        let log = std::fs::File::create(vlab.dir().join("daemon.log")).unwrap();
        let child = virtzone
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start virtzone serve");
        wait("the daemon owns its name", Duration::from_secs(30), || {
            vlab.name_has_owner("org.virtzone.VirtZone1")
        });
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A libvirt lab with virtzone's bus policy and its zones installed.
pub fn lab(release: Release, backend: Backend) -> LibvirtLab {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let cfg = LabConfig {
        bus_policies: vec![policy],
        ..LabConfig::new(release, backend)
    };
    let vlab = LibvirtLab::start(LibvirtConfig::new(cfg));
    vz_ok(&vlab, &["install"]);
    vlab
}

/// firewalld ERROR lines after `from` bytes of its log.
pub fn errors_since(vlab: &LibvirtLab, from: usize) -> Vec<String> {
    let log = std::fs::read_to_string(vlab.dir().join("firewalld.log")).unwrap_or_default();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(String::from)
        .collect()
}

/// The length of firewalld's log now: the `from` of a later [`errors_since`].
pub fn log_len(vlab: &LibvirtLab) -> usize {
    std::fs::metadata(vlab.dir().join("firewalld.log")).map_or(0, |m| m.len() as usize)
}

/// The upstream namespace's view of the host: the address forwards are reached on.
pub const UP_HOST: &str = "198.51.100.1";

/// The nft handle of libvirt's reject for `bridge` in `LIBVIRT_FWI` (the lab's iptables is
/// iptables-nft), `None` while it is not there.
pub fn libvirt_reject(vlab: &LibvirtLab, bridge: &str) -> Option<String> {
    let out = vlab
        .command("nft")
        .args(["-a", "list", "chain", "ip", "filter", "LIBVIRT_FWI"])
        .output()
        .expect("run nft");
    text(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!("oifname \"{bridge}\"")) && l.contains(" reject"))
        .and_then(|l| l.rsplit_once("# handle "))
        .map(|(_, h)| h.trim().to_string())
}

/// Whether libvirt's `LIBVIRT_FWI` holds its reject for `bridge`.
pub fn libvirt_rejects(vlab: &LibvirtLab, bridge: &str) -> bool {
    libvirt_reject(vlab, bridge).is_some()
}

/// Whether `probe` succeeds while libvirt's reject for `bridge` is in place the whole time: the
/// same rule (nft handle) before and after it. A connection made between a flush and libvirt's
/// rebuild, when there is no reject at all, proves nothing, even if a reject was seen before it.
pub fn proven(vlab: &LibvirtLab, bridge: &str, probe: impl FnOnce() -> bool) -> bool {
    let before = libvirt_reject(vlab, bridge);
    before.is_some() && probe() && libvirt_reject(vlab, bridge) == before
}

/// One connection attempt from the host itself (the lab's namespace).
pub fn connect_from_host(vlab: &LibvirtLab, addr: &str, port: u16) -> String {
    let out = vlab
        .command(python())
        .args(["-c", CLIENT, addr, &port.to_string()])
        .output()
        .expect("run client");
    text(&out.stdout).trim().to_string()
}

/// `/proc/sys/net/ipv4/conf/BRIDGE/route_localnet` in the lab's namespace.
pub fn route_localnet(vlab: &LibvirtLab, bridge: &str) -> String {
    let out = vlab
        .command("cat")
        .arg(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// Sets `route_localnet` on `bridge` in the lab's namespace, by hand (not through virtzone).
pub fn set_route_localnet(vlab: &LibvirtLab, bridge: &str, value: &str) {
    let ok = vlab
        .command("sysctl")
        .args([
            "-q",
            "-w",
            &format!("net.ipv4.conf.{bridge}.route_localnet={value}"),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Makes `guest` route 127.0.0.0/8 to the host at `host` (its own loopback address gone), as a
/// hostile guest would.
pub fn route_loopback_to_host(guest: &Guest<'_>, host: &str) {
    for args in [
        &["ip", "addr", "flush", "dev", "lo"][..],
        &["sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1"],
        &[
            "ip",
            "route",
            "add",
            "127.0.0.0/8",
            "via",
            host,
            "dev",
            "eth0",
        ],
    ] {
        let ok = guest.command(args[0]).args(&args[1..]).status().unwrap();
        assert!(ok.success(), "{args:?}");
    }
}

/// A host service bound to its loopback address only, on a port the libvirt zone opens to guests
/// (DNS), answering with the banner `host-loopback`; waits until it answers the host.
pub fn serve_loopback_only(vlab: &LibvirtLab) -> Process {
    let server = Process(
        vlab.command(python())
            .args(["-c", SERVER, "127.0.0.1", "53", "host-loopback"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait("the host's loopback service", HEAL, || {
        connect_from_host(vlab, "127.0.0.1", 53).starts_with("ok host-loopback")
    });
    server
}
