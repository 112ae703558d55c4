//! A real Docker daemon (Debian 12's docker.io) inside a lab's network namespace, for what meets
//! Docker's firewall rules: its `FORWARD` policy DROP, `DOCKER-USER`, the isolation chains.
//!
//! dockerd needs a cgroup2 hierarchy, and `ip netns exec` remounts /sys (hiding one): so it runs in
//! a private mount namespace with cgroup2 mounted there, entering only the lab's network namespace
//! (`/work/shared/design/labs.md`). It keeps its data and exec roots and its socket in the lab's
//! directory, and gets no system bus: it does not find the lab's firewalld and writes its iptables
//! rules itself, as on a host without firewalld integration. No image is needed: Docker's rules
//! apply to whatever is plugged into `docker0`. The host's firewall, bus and /var/lib/docker are
//! never touched; dropping the handle stops it (and the lab kills whatever is left in its
//! namespace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::libvirt::{wait_for, Guest, LibvirtLab};
use super::{ok, run_with_input, Process};

/// How long dockerd may take to say "API listen on".
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running dockerd in a lab's network namespace.
pub struct Dockerd {
    child: Child,
    dir: PathBuf,
}

impl Dockerd {
    /// Starts dockerd in network namespace `netns`, keeping its state under `dir`; returns once its
    /// API listens (its chains and `docker0` exist then).
    pub fn start(netns: &str, dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).expect("dockerd's directory");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd's log");
        let d = dir.display();
        let script = format!(
            "mount -t cgroup2 none /sys/fs/cgroup && exec nsenter --net=/var/run/netns/{netns} \
             dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \
             -H unix://{d}/docker.sock"
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux) and dockerd (Debian package docker.io)");
        let mut dockerd = Dockerd {
            child,
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if dockerd.log().contains("API listen on") {
                return dockerd;
            }
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                panic!("dockerd exited ({status}):\n{}", dockerd.log());
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "dockerd did not listen within {START_DEADLINE:?}:\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What dockerd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd and removes its pidfile; SIGKILL after a grace.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream web server's address in [`ForwardDrop`] (port 8000).
pub const UPSTREAM: &str = "198.51.100.2";

/// Docker's FORWARD DROP in front of a libvirt guest: virtzone installed; an open network `dopen`
/// (bridge `vzop0`: libvirt adds no rules of its own, firewalld's zone is all that filters it); an
/// upstream host (`vzup9`, [`UPSTREAM`] with a web server) behind the lab's default route (doctor
/// follows guest traffic to the default route's interface); a guest with a lease that reached it;
/// then the real dockerd, started as at boot before libvirt's networks. It sets FORWARD's policy to
/// DROP only when it turns forwarding on itself, so forwarding is off when it starts; afterwards
/// the guest is blocked.
pub struct ForwardDrop<'a> {
    /// The guest on `vzop0`.
    pub guest: Guest<'a>,
    dockerd: Option<Dockerd>,
    vlab: &'a LibvirtLab,
    _server: Process,
    _upstream: Guest<'a>,
}

impl<'a> ForwardDrop<'a> {
    /// Sets the scene up in `vlab` (see the type).
    pub fn start(vlab: &'a LibvirtLab) -> ForwardDrop<'a> {
        ok(&vlab.run_virtzone(&["install"]));
        vlab.expect_ok(
            &vlab.net_create(
                "<network><name>dopen</name><forward mode='open'/><bridge name='vzop0' zone='libvirt' stp='off'/>\
                 <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' end='192.0.2.199'/></dhcp></ip></network>",
            ),
            "net-create",
        );
        let upstream = vlab.plug_upstream("vzup9", "198.51.100.1/24", "198.51.100.2/24");
        let sysctl = |setting: &str| {
            ok(&vlab
                .command("sysctl")
                .args(["-w", setting])
                .output()
                .expect("sysctl"))
        };
        ok(&vlab
            .command("ip")
            .args(["route", "add", "default", "via", UPSTREAM])
            .output()
            .expect("ip route"));
        let server = Process(
            upstream
                .command("python3")
                .args(["-m", "http.server", "8000", "--bind", UPSTREAM])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3"),
        );
        sysctl("net.ipv4.ip_forward=1");
        let guest = vlab.plug_guest("vzop0");
        guest.dhcp(5).expect("lease");
        wait_for(
            "the guest reaching upstream",
            Duration::from_secs(20),
            || guest.reaches_http(UPSTREAM).then_some(()),
        );
        sysctl("net.ipv4.ip_forward=0");
        let mut scene = ForwardDrop {
            guest,
            dockerd: None,
            vlab,
            _server: server,
            _upstream: upstream,
        };
        scene.start_dockerd();
        assert_eq!(
            ok(&vlab
                .command("sysctl")
                .args(["-n", "net.ipv4.ip_forward"])
                .output()
                .expect("sysctl"))
            .trim(),
            "1",
            "dockerd turns forwarding on"
        );
        assert!(
            scene
                .iptables(&["-S", "FORWARD"])
                .contains("-P FORWARD DROP"),
            "dockerd sets FORWARD's policy to DROP"
        );
        scene
    }

    /// Starts dockerd (in the lab's directory `docker`, kept across restarts) and waits until it
    /// listens.
    fn start_dockerd(&mut self) {
        self.dockerd = Some(Dockerd::start(
            &self.vlab.netns,
            &self.vlab.dir().join("docker"),
        ));
    }

    /// Stops dockerd and starts it again; with `reboot`, the IPv4 filter table is emptied in
    /// between, in one transaction (rules and chains: what a reboot leaves of it; FORWARD's policy
    /// stays DROP, as dockerd set it at boot), so that dockerd creates its chains, `DOCKER-USER`
    /// too, from nothing.
    pub fn restart_dockerd(&mut self, reboot: bool) {
        self.dockerd = None;
        if reboot {
            ok(&run_with_input(
                &mut self.vlab.command("iptables-restore"),
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            ));
        }
        self.start_dockerd();
    }

    /// `iptables ARGS` in the lab, its output (the test fails when it fails).
    pub fn iptables(&self, args: &[&str]) -> String {
        ok(&self
            .vlab
            .command("iptables")
            .args(args)
            .output()
            .expect("iptables"))
    }

    /// Whether the guest's request to the upstream server is answered.
    pub fn guest_reaches_upstream(&self) -> bool {
        self.guest.reaches_http(UPSTREAM)
    }
}
