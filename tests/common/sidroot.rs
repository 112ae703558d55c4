//! A Debian sid system in the lab: libvirt 12 and firewalld 2.5.2 from the root that
//! `scripts/fetch-sid-root.sh` builds, each running on its own network namespace, mount namespace
//! and pid namespace.
//!
//! - The cached root is never written: an overlay (upper layer in the lab's temp dir) is mounted
//!   over it inside the system's own mount namespace, with a fresh `/proc`, a fresh sysfs mounted
//!   after entering the network namespace (a bind of the host's /sys shows the host's interfaces),
//!   `/dev` bound, and tmpfs on `/run` and `/tmp`. Everything vanishes with the namespaces.
//! - PID 1 of the pid namespace is a shell in the chroot that starts `dbus-daemon --system` and
//!   `firewalld`, then waits; killing it (SIGKILL) ends every process of the system.
//! - Commands run inside with `nsenter` into that PID's namespaces and root.
//! - libvirt runs its **iptables** firewall backend (`firewall_backend = "iptables"` in
//!   network.conf, Debian's default) unless [`SidOptions::libvirt_backend`] says `nftables`. That
//!   backend runs `tc filter add dev BRIDGE prio 2 protocol ip parent 1: u32 match ip dport 68 ffff
//!   action csum ip and udp` at network start (a checksum fix for DHCP replies to old guests), and
//!   this machine's kernel lacks the `act_csum` action, so the start fails. For that alone the
//!   system gets a **tc shim** ([`TC_SHIM`]): `/usr/sbin/tc` (libvirt 12.8 runs `tc` from `PATH`,
//!   measured with the shim's own log) becomes a script that turns exactly that filter's add and
//!   delete into a no-op success and runs the real tc, moved to [`TC_REAL`], for everything else.
//!   DHCP over veth needs no checksum fix. The root itself is never changed: both files are in the
//!   overlay's upper layer.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::{log_file, virtzone_binary, write, LAB_COUNTER, POLL};

/// How long the system's daemons may take to come up.
const DEADLINE: Duration = Duration::from_secs(60);

/// The cached root (`VIRTZONE_SID_ROOT`, else `<repo>/target/lab/sid-root`).
pub fn sid_root() -> PathBuf {
    match std::env::var_os("VIRTZONE_SID_ROOT") {
        Some(dir) if !dir.is_empty() => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab/sid-root"),
    }
}

/// The running system.
pub struct SidSystem {
    /// Its network namespace.
    pub netns: String,
    dir: tempfile::TempDir,
    init: Option<Child>,
    /// PID of the init shell (in the host's pid namespace).
    pid: u32,
}

/// Where the tc shim keeps the real tc, inside the system.
pub const TC_REAL: &str = "/usr/lib/virtzone-lab/tc.real";

/// `/usr/sbin/tc` of a system whose libvirt runs its nftables backend: see the module's doc. Each
/// call is logged to `/var/log/tc-shim.log`.
pub const TC_SHIM: &str = r#"#!/bin/sh
# virtzone lab shim: this kernel has no act_csum, which libvirt's nftables backend uses for one
# filter (a checksum fix for DHCP replies). Only that filter becomes a no-op; all else is real tc.
echo "tc $*" >>/var/log/tc-shim.log
case " $* " in
  *" action csum ip and udp "*) exit 0 ;;
esac
exec /usr/lib/virtzone-lab/tc.real "$@"
"#;

/// How the system is set up.
#[derive(Debug, Clone)]
pub struct SidOptions {
    /// firewalld's `FirewallBackend`.
    pub firewalld_backend: &'static str,
    /// libvirt's `firewall_backend` (`iptables` or `nftables`; the latter installs the tc shim).
    pub libvirt_backend: &'static str,
    /// firewalld's `StrictForwardPorts` (2.3+).
    pub strict_forward_ports: bool,
    /// firewalld's `ReloadPolicy` (2.0+; `None`: the stock setting, DROP while reloading).
    pub reload_policy: Option<&'static str>,
}

impl Default for SidOptions {
    fn default() -> Self {
        SidOptions {
            firewalld_backend: "nftables",
            libvirt_backend: "iptables",
            strict_forward_ports: false,
            reload_policy: None,
        }
    }
}

/// What PID 1 runs inside the chroot: the bus, firewalld, then wait.
const INIT: &str = r#"#!/bin/sh
mkdir -p /run/dbus /var/log/libvirt
dbus-daemon --system --fork --nopidfile
/usr/sbin/firewalld --nofork --nopid >/var/log/firewalld.out 2>&1 &
# Stay, reaping children, until killed.
while :; do wait; sleep 1; done
"#;

impl SidSystem {
    /// Starts the system with firewalld's default backend (nftables).
    pub fn start() -> SidSystem {
        SidSystem::start_with("nftables")
    }

    /// Starts the system with firewalld's `backend` and waits until firewalld is RUNNING. Panics
    /// when the root is missing.
    pub fn start_with(backend: &'static str) -> SidSystem {
        SidSystem::start_opts(SidOptions {
            firewalld_backend: backend,
            ..SidOptions::default()
        })
    }

    /// Starts the system set up as `opts` says and waits until firewalld is RUNNING. Panics when
    /// the root is missing.
    pub fn start_opts(opts: SidOptions) -> SidSystem {
        let backend = opts.firewalld_backend;
        let root = sid_root();
        assert!(
            root.join(".complete").is_file(),
            "the sid root is not built at {}: run scripts/fetch-sid-root.sh",
            root.display()
        );
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = format!("vzsid-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{netns}-"))
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        // Files the system gets on top of the root: virtzone, its hook, libvirt's backend.
        let upper = d.join("upper");
        let bin = upper.join("usr/bin/virtzone");
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::copy(virtzone_binary(), &bin).unwrap();
        let hook = upper.join("etc/libvirt/hooks/network.d/50-virtzone");
        write(
            &hook,
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(super::libvirt::SHIPPED_HOOK),
            )
            .unwrap(),
        );
        super::set_mode(&hook, 0o755);
        let conf = fs::read_to_string(root.join("etc/libvirt/network.conf")).unwrap_or_default();
        write(
            &upper.join("etc/libvirt/network.conf"),
            &format!("{conf}\nfirewall_backend = \"{}\"\n", opts.libvirt_backend),
        );
        if opts.libvirt_backend == "nftables" {
            let real = upper.join(TC_REAL.trim_start_matches('/'));
            fs::create_dir_all(real.parent().unwrap()).unwrap();
            fs::copy(root.join("usr/sbin/tc"), &real).unwrap();
            let shim = upper.join("usr/sbin/tc");
            write(&shim, TC_SHIM);
            super::set_mode(&shim, 0o755);
        }
        // virtzone serve may own its bus name.
        write(
            &upper.join("etc/dbus-1/system.d/org.virtzone.VirtZone1.conf"),
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf"),
            )
            .unwrap(),
        );
        let fw_conf = fs::read_to_string(root.join("etc/firewalld/firewalld.conf")).unwrap();
        let fw_conf = super::set_conf_key(&fw_conf, "FirewallBackend", backend);
        let fw_conf = super::set_conf_key(
            &fw_conf,
            "StrictForwardPorts",
            if opts.strict_forward_ports {
                "yes"
            } else {
                "no"
            },
        );
        let fw_conf = match opts.reload_policy {
            Some(policy) => super::set_conf_key(&fw_conf, "ReloadPolicy", policy),
            None => fw_conf,
        };
        write(&upper.join("etc/firewalld/firewalld.conf"), &fw_conf);
        write(&upper.join("vz-init.sh"), INIT);
        super::set_mode(&upper.join("vz-init.sh"), 0o755);

        let status = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {netns}");
        let boot = format!(
            r#"set -e
M={merged}
mount -t overlay overlay -o lowerdir={root},upperdir={upper},workdir={work} "$M"
mount -t proc proc "$M/proc"
mount -t sysfs sysfs "$M/sys"
mount --rbind /dev "$M/dev"
mount -t tmpfs tmpfs "$M/run"
mount -t tmpfs tmpfs "$M/tmp"
ip link set lo up
exec chroot "$M" /vz-init.sh"#,
            merged = d.join("merged").display(),
            root = root.display(),
            upper = upper.display(),
            work = d.join("work").display(),
        );
        let log = log_file(&d.join("init.log"));
        let init = Command::new("ip")
            .args([
                "netns", "exec", &netns, "unshare", "--mount", "--pid", "--fork",
            ])
            .args(["--propagation", "private", "/bin/sh", "-c", &boot])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(super::clone_file(&log))
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sys = SidSystem {
            netns,
            dir,
            init: Some(init),
            pid: 0,
        };
        sys.pid = sys.wait_for_init();
        sys.wait_for("firewalld RUNNING", || {
            let out = sys.run(&["firewall-cmd", "--state"]);
            out.status.success()
        });
        sys
    }

    /// The pid of the init shell: the child of `unshare` that runs in the chroot.
    fn wait_for_init(&mut self) -> u32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = Command::new("ip")
                .args(["netns", "pids", &self.netns])
                .output()
                .unwrap();
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let Ok(pid) = pid.parse::<u32>() else {
                    continue;
                };
                let cmd = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                // Not `unshare`, whose command line holds the boot script's text.
                if cmd.starts_with("/bin/sh\0/vz-init.sh") {
                    return pid;
                }
            }
            if let Some(status) = self.init.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "sid system: boot exited with {status}{}",
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sid system: init did not start{}",
                self.diagnostics()
            );
            thread::sleep(POLL);
        }
    }

    /// Polls `ok` until it holds, panicking with the logs after the deadline.
    pub fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "sid system: no {what} after {DEADLINE:?}{}",
                self.diagnostics()
            );
            thread::sleep(POLL);
        }
    }

    /// A command inside the system: its namespaces and root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", "-n", "-r", "-w"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8");
        cmd
    }

    /// Runs a command inside and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `virtzone serve` inside (its log in `/var/log/virtzone-serve.log`; the caller's
    /// `VIRTZONE_LOG`, if set, filters it) and waits, at most 30 s, until it owns its bus name.
    pub fn start_virtzone_daemon(&self) {
        let filter = std::env::var("VIRTZONE_LOG")
            .ok()
            .filter(|f| !f.is_empty() && !f.contains('\''))
            .map(|f| format!("VIRTZONE_LOG='{f}' "))
            .unwrap_or_default();
        self.sh(&format!(
            "{filter}virtzone serve >/var/log/virtzone-serve.log 2>&1 </dev/null &"
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(&[
                "dbus-send",
                "--system",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.virtzone.VirtZone1",
            ]);
            if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sid system: virtzone serve did not own its name within 30 s{}",
                self.diagnostics()
            );
            thread::sleep(POLL);
        }
    }

    /// Defines and starts the libvirt network `n12` from `xml` (its `<name>` must be `n12`), as an
    /// admin would with `virsh net-define` and `net-start`.
    pub fn start_network_n12(&self, xml: &str) -> String {
        self.sh(&format!(
            "cat >/root/n12.xml <<'EOF'\n{xml}\nEOF\nvirsh -c network:///system net-define /root/n12.xml && virsh -c network:///system net-start n12"
        ))
    }

    /// Runs `sh -c script` inside, asserting success; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(&["/bin/sh", "-c", script]);
        assert!(
            out.status.success(),
            "{script}: {}{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts libvirtd and waits until it answers.
    pub fn start_libvirtd(&self) {
        self.sh("libvirtd --daemon");
        self.wait_for("libvirtd answering", || {
            self.run(&["virsh", "-c", "network:///system", "net-list", "--all"])
                .status
                .success()
        });
    }

    /// The system's upper layer (what it wrote), e.g. for logs.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// firewalld's log so far: its log file and its standard output together.
    pub fn firewalld_log(&self) -> String {
        let read = |p: &str| fs::read_to_string(self.upper().join(p)).unwrap_or_default();
        read("var/log/firewalld") + &read("var/log/firewalld.out")
    }

    /// firewalld's ERROR lines so far (a lab test fails on any that virtzone causes).
    pub fn firewalld_errors(&self) -> Vec<String> {
        self.firewalld_log()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(String::from)
            .collect()
    }

    /// The pids of processes inside whose command line contains `needle` (seen from the host).
    pub fn pids_of(&self, needle: &str) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .is_ok_and(|c| c.contains(needle) && !c.starts_with("nsenter"))
            })
            .collect()
    }

    /// Stops the processes matching `needle` (SIGTERM) and waits until they are gone.
    pub fn stop(&self, needle: &str) {
        for pid in self.pids_of(needle) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        self.wait_for(&format!("{needle} gone"), || {
            self.pids_of(needle).is_empty()
        });
    }

    /// Starts firewalld again (after [`SidSystem::stop`]) and waits until it is RUNNING.
    pub fn start_firewalld(&self) {
        self.sh("/usr/sbin/firewalld --nofork --nopid >>/var/log/firewalld.out 2>&1 </dev/null &");
        self.wait_for("firewalld RUNNING", || {
            self.run(&["firewall-cmd", "--state"]).status.success()
        });
    }

    /// Logs for panic messages.
    pub fn diagnostics(&self) -> String {
        let read = |p: &str| fs::read_to_string(self.upper().join(p)).unwrap_or_default();
        format!(
            "\n--- sid system {} ---\n--- init ---\n{}\n--- firewalld ---\n{}\n{}\n--- libvirtd ---\n{}",
            self.netns,
            fs::read_to_string(self.dir.path().join("init.log")).unwrap_or_default(),
            read("var/log/firewalld"),
            read("var/log/firewalld.out"),
            read("var/log/libvirt/libvirtd.log"),
        )
    }
}

/// A network namespace of the host's beside the system (a guest or an upstream client), deleted
/// with its processes on drop.
pub struct Node {
    /// Its name.
    pub netns: String,
}

impl Node {
    /// Creates namespace `name`.
    pub fn new(name: String) -> Node {
        ip(&["netns", "add", &name]);
        Node { netns: name }
    }

    /// `program` inside the namespace, with a minimal environment.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        super::kill_netns_processes(&self.netns);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SidSystem {
    /// An upstream client: 198.51.100.2 in a namespace of its own, linked to the system by a veth
    /// pair whose system end `link` has 198.51.100.1, routed through it.
    pub fn plug_upstream(&self, link: &str) -> Node {
        let up = Node::new(format!("{}-u", self.netns));
        let (sys, peer) = (self.netns.as_str(), up.netns.as_str());
        ip(&[
            "-n", sys, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", peer,
        ]);
        ip(&["-n", sys, "addr", "add", "198.51.100.1/24", "dev", link]);
        ip(&["-n", sys, "link", "set", link, "up"]);
        ip(&["-n", peer, "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        ip(&["-n", peer, "link", "set", "eth0", "up"]);
        ip(&["-n", peer, "route", "add", "default", "via", "198.51.100.1"]);
        up
    }
}

impl Drop for SidSystem {
    fn drop(&mut self) {
        // SIGKILL to PID 1 of the pid namespace ends every process in it; the mounts go with the
        // mount namespace.
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        if let Some(mut c) = self.init.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        super::kill_netns_processes(&self.netns);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
