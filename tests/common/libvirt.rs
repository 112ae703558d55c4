//! Real libvirt in the lab: Debian 12's `libvirtd` (9.0.0) running inside a lab's network namespace,
//! talking to the lab's firewalld over the lab's bus, with every path it writes made private.
//!
//! # How libvirtd runs isolated
//! - Network: it runs under `ip netns exec <lab netns>`, so its bridges, dnsmasq, `ip_forward`
//!   and netfilter rules all live in the lab's namespace, next to the lab's firewalld.
//! - Bus: `DBUS_SYSTEM_BUS_ADDRESS` is the lab's bus, and a private `/run` hides the host's
//!   system-bus socket (under /run/dbus), so nothing in it can reach the host's bus even by default.
//! - Files: `ip netns exec` gives every call a fresh mount namespace (with `/` made a recursive
//!   slave, so nothing propagates back to the host). A small `sh -c` wrapper bind-mounts lab dirs
//!   over `/run` (socket, pid file, `/run/libvirt/network` state; `/var/run` is a symlink to it on
//!   Debian), `/etc/libvirt` (an almost empty config: no `default` network to autostart, just the
//!   hooks), `/var/lib/libvirt` (dnsmasq configs and leases), `/var/cache/libvirt` and
//!   `/var/log/libvirt`, then `exec`s libvirtd. The mounts die with the last process in that mount
//!   namespace (libvirtd, its dnsmasq and hooks all inherit it); the host's copies of those dirs
//!   are never written.
//! - Drivers: `LIBVIRT_DRIVER_DIR` points at a lab dir holding only the network driver, so no
//!   qemu/nwfilter/storage driver probes the host. libvirtd starts in ≈60 ms.
//! - Clients: the sockets are plain files under `<lab>/libvirt/run/libvirt`, so `virsh` runs in
//!   the host namespace with `-c network:///system?socket=…` and needs none of the mounts.
//! - Auth: `auth_unix_rw = "none"` (there is no polkit on the lab bus) with a 0700 socket.
//!
//! Because nothing is shared (sockets, pid file, state, config, netns), several libvirt labs run
//! at once: the tests need no serialisation.
//!
//! # Hooks
//! Each hook is installed in `/etc/libvirt/hooks/network.d/` behind a generated wrapper: libvirt
//! runs hooks with only `PATH` and `LC_ALL=C`, so the wrapper exports the lab's bus and virtzone's
//! state dir, saves the hookData from stdin (`hookdata/NET.OP.SUBOP`), runs the hook body with
//! it, passes its stderr on (libvirt shows it in virsh's error) and appends one record per run to
//! `hooks.log` ([`LibvirtLab::hook_runs`]). [`Hook::Virtzone`] is the project's shipped
//! `libvirt/hooks/network.d/50-virtzone` with `/usr/bin/virtzone` replaced by this build's binary.
//!
//! # The qemu driver ([`LibvirtConfig::qemu`])
//! For `--domain` forwards the lab can also load libvirt's qemu driver, still in the same private
//! mount namespace: `qemu.conf` runs qemu as root with no security driver, no cgroup controllers,
//! no per-domain mount namespace and plain log files (no virtlogd), and the shipped qemu hook
//! (`libvirt/hooks/qemu.d/50-virtzone`, this build's binary) sits behind the same wrapper as the
//! network hooks in `/etc/libvirt/hooks/qemu.d/`. Domains are TCG (`type='qemu'`); virsh reaches
//! them with `qemu:///system?socket=…` ([`LibvirtLab::virsh_qemu`]).
//!
//! # libvirt 9.0.0 facts seen here (they shape what the tests can prove)
//! - With firewalld running, libvirt itself binds a network's bridge with `changeZoneOfInterface`
//!   after `start begin` and before `started begin`: NAT → `libvirt`, route → `libvirt-routed`
//!   (when that zone and `libvirt-routed-out` exist), `<bridge zone=…>` → that zone. It refuses an
//!   nftables network without a `libvirt` zone with its own long message.
//! - It does NOT unbind at network stop (the name stays in the zone after the bridge is gone),
//!   and it ignores `<bridge zone=…>` for forward mode `open`. Both are where virtzone's hook is
//!   the only actor.
//! - Hook dirs are re-read on every call once a hook existed when libvirtd started.
//! - A failing `start begin` hook: `virsh` prints `error: Hook script execution failed: internal
//!   error: Child process (LC_ALL=C PATH=… /etc/libvirt/hooks/network.d/NAME NET start begin -)
//!   unexpected exit status 1: <the hook's stderr>`. libvirt also logs "tainted: hook-script".

use std::fs;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    busctl_data, clone_file, kill_netns_processes, log_file, process_alive, run_quiet, set_mode,
    signal, terminate, virtzone_binary, write, Lab, LabConfig, FIREWALLD_NAME, FIREWALLD_PATH,
    LAB_COUNTER, POLL, TERM_GRACE,
};

/// The hook the project ships, relative to the repository.
pub const SHIPPED_HOOK: &str = "libvirt/hooks/network.d/50-virtzone";
/// The qemu hook the project ships.
pub const SHIPPED_QEMU_HOOK: &str = "libvirt/hooks/qemu.d/50-virtzone";
const SHIPPED_QEMU_EXEC: &str = r#"exec /usr/bin/virtzone hook qemu "$@""#;
/// The line of the shipped hook that the lab rewrites to run this build's binary.
const SHIPPED_GUARD: &str = "[ -x /usr/bin/virtzone ] || exit 0";
const SHIPPED_EXEC: &str = r#"exec /usr/bin/virtzone hook network "$@""#;

/// How long libvirtd may take to answer after it was spawned (≈60 ms alone; the margin is for
/// many labs starting at once on a small machine).
const LIBVIRTD_DEADLINE: Duration = Duration::from_secs(30);
/// Upper bound for one virsh call (`timeout(1)` kills it after that): a hung libvirtd must fail a
/// test, not hang it. A net-start with hooks takes ≈0.3 s.
const VIRSH_TIMEOUT_SECS: u32 = 60;
/// The same bound during teardown, which must not keep a failed test hanging for long.
const TEARDOWN_VIRSH_SECS: u32 = 10;
/// How long a guest's bridge port may take to reach STP state forwarding.
const GUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The host dirs libvirtd sees replaced by lab dirs (host path, subdir of `<lab>/libvirt`). All
/// must exist on the host as mount points; `libvirt-daemon-system` creates the last four.
const PRIVATE_DIRS: &[(&str, &str)] = &[
    ("/run", "run"),
    ("/etc/libvirt", "etc"),
    ("/var/lib/libvirt", "lib"),
    ("/var/cache/libvirt", "cache"),
    ("/var/log/libvirt", "log"),
];

/// A network hook the lab installs before libvirtd starts.
#[derive(Clone, Debug)]
pub enum Hook {
    /// The shipped `50-virtzone`, running this build's `virtzone`.
    Virtzone,
    /// Any POSIX sh script body, installed as `network.d/<name>` (run with `/bin/sh`).
    Script {
        /// File name in `network.d` (hooks run in alphabetical order).
        name: String,
        /// The script's text.
        body: String,
    },
}

impl Hook {
    /// A [`Hook::Script`].
    pub fn script(name: &str, body: &str) -> Hook {
        Hook::Script {
            name: name.to_string(),
            body: body.to_string(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Hook::Virtzone => "50-virtzone",
            Hook::Script { name, .. } => name,
        }
    }

    fn body(&self) -> String {
        match self {
            Hook::Virtzone => virtzone_hook_body(),
            Hook::Script { body, .. } => body.clone(),
        }
    }
}

/// The shipped hook's text with `/usr/bin/virtzone` replaced by this build's binary. Panics when
/// the shipped hook no longer has the one `exec` line the lab knows how to point elsewhere.
pub fn virtzone_hook_body() -> String {
    shipped_body(SHIPPED_HOOK, SHIPPED_EXEC)
}

/// The shipped qemu hook's text, pointed at this build's binary like [`virtzone_hook_body`].
pub fn virtzone_qemu_hook_body() -> String {
    shipped_body(SHIPPED_QEMU_HOOK, SHIPPED_QEMU_EXEC)
}

fn shipped_body(hook: &str, exec: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(hook);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("libvirt lab: cannot read {}: {e}", path.display()));
    let execs: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        execs,
        [SHIPPED_GUARD, exec],
        "libvirt lab: {hook} should consist of comments, `{SHIPPED_GUARD}` and `{exec}`"
    );
    // The lab runs the body with sh behind its wrapper; a real libvirt executes the file itself.
    let mode = fs::metadata(&path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    assert!(
        text.starts_with("#!/bin/sh\n") && mode & 0o111 == 0o111,
        "libvirt lab: {hook} must be an executable `#!/bin/sh` script (mode {mode:o})"
    );
    text.replace(
        "/usr/bin/virtzone",
        &sh_quote(&virtzone_binary().to_string_lossy()),
    )
}

/// What a libvirt lab looks like.
#[derive(Clone, Debug)]
pub struct LibvirtConfig {
    /// The firewalld lab underneath.
    pub lab: LabConfig,
    /// Network hooks, installed before libvirtd starts.
    pub hooks: Vec<Hook>,
    /// Also load the qemu driver, with the shipped qemu hook installed (see the module docs).
    pub qemu: bool,
}

impl LibvirtConfig {
    /// A lab with the shipped virtzone hook.
    pub fn new(lab: LabConfig) -> Self {
        LibvirtConfig {
            lab,
            hooks: vec![Hook::Virtzone],
            qemu: false,
        }
    }
}

/// One run of a hook, from `hooks.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// The hook's file name in `network.d`.
    pub hook: String,
    /// The arguments libvirt passed: network name, op, subop, extra.
    pub args: Vec<String>,
    /// The hook's exit status (-1 when killed by a signal).
    pub status: i32,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl HookRun {
    /// `NET OP SUBOP`, e.g. `"nat1 start begin"`.
    pub fn call(&self) -> String {
        self.args
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A lab with libvirtd running in it. Derefs to the [`Lab`]. Dropping it destroys the running
/// networks, stops libvirtd and its dnsmasq, then the lab (also when the test panicked).
pub struct LibvirtLab {
    lab: Lab,
    /// `<lab>/libvirt`: the private dirs, configs, hooks and logs.
    root: PathBuf,
    /// libvirtd's read-write socket, as seen from the host.
    socket: PathBuf,
    libvirtd: Mutex<Option<Child>>,
}

impl Deref for LibvirtLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl LibvirtLab {
    /// Starts the firewalld lab, then libvirtd in it with `cfg.hooks`, and waits until libvirtd
    /// answers. Panics with the logs when anything fails.
    pub fn start(cfg: LibvirtConfig) -> LibvirtLab {
        let lab = Lab::start(cfg.lab);
        if cfg.qemu {
            return Self::start_with_qemu(lab, &cfg.hooks);
        }
        Self::start_in(lab, &cfg.hooks)
    }

    fn start_with_qemu(lab: Lab, hooks: &[Hook]) -> LibvirtLab {
        let root = lab.dir().join("libvirt");
        let socket = root.join("run/libvirt/libvirt-sock");
        let vlab = LibvirtLab {
            lab,
            root,
            socket,
            libvirtd: Mutex::new(None),
        };
        vlab.prepare(hooks, true);
        vlab.spawn_libvirtd();
        vlab.wait_until_answering();
        vlab
    }

    /// `virsh -c qemu:///system?socket=…` (the qemu driver; needs [`LibvirtConfig::qemu`]) with
    /// `args`, whatever the exit status.
    pub fn virsh_qemu(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &VIRSH_TIMEOUT_SECS.to_string(), "virsh"])
            .arg("-c")
            .arg(format!("qemu:///system?socket={}", self.socket.display()));
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("LIBVIRT_") || key_text.starts_with("VIRSH_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("libvirt lab: cannot run virsh: {e}"))
    }

    /// The lab's private `/var/lib/libvirt` as seen from the host (dnsmasq's lease files are in
    /// its `dnsmasq/`).
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }

    /// Starts libvirtd in an already running lab.
    pub fn start_in(lab: Lab, hooks: &[Hook]) -> LibvirtLab {
        let root = lab.dir().join("libvirt");
        let socket = root.join("run/libvirt/libvirt-sock");
        let vlab = LibvirtLab {
            lab,
            root,
            socket,
            libvirtd: Mutex::new(None),
        };
        vlab.prepare(hooks, false);
        vlab.spawn_libvirtd();
        vlab.wait_until_answering();
        vlab
    }

    /// `virsh -c network:///system?socket=…` (under `timeout`), with the host's libvirt client
    /// variables removed and `LC_ALL=C` so messages are stable.
    pub fn virsh(&self) -> Command {
        self.virsh_within(VIRSH_TIMEOUT_SECS)
    }

    fn virsh_within(&self, secs: u32) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &secs.to_string(), "virsh"])
            .arg("-c")
            .arg(self.uri());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("LIBVIRT_") || key_text.starts_with("VIRSH_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    /// Runs virsh with `args`, whatever the exit status.
    pub fn run_virsh(&self, args: &[&str]) -> Output {
        self.virsh()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("libvirt lab: cannot run virsh: {e}"))
    }

    /// The connection URI for virsh and other clients.
    pub fn uri(&self) -> String {
        format!("network:///system?socket={}", self.socket.display())
    }

    /// Writes `xml` to a lab file and returns its path (for `net-define`/`net-create`).
    pub fn xml_file(&self, xml: &str) -> PathBuf {
        let name = network_name(xml);
        let path = self.root.join("xml").join(format!("{name}.xml"));
        write(&path, xml);
        path
    }

    /// `virsh net-define` (panics on failure: defining checks only the XML) and returns the name.
    /// The definition lands in the lab's private `/etc/libvirt`, so nothing persists.
    pub fn define(&self, xml: &str) -> String {
        let file = self.xml_file(xml);
        let out = self.run_virsh(&["net-define", &file.to_string_lossy()]);
        self.expect_ok(&out, "net-define");
        network_name(xml)
    }

    /// `virsh net-start NAME`, whatever the result.
    pub fn net_start(&self, name: &str) -> Output {
        self.run_virsh(&["net-start", name])
    }

    /// `virsh net-create FILE` (a transient network), whatever the result.
    pub fn net_create(&self, xml: &str) -> Output {
        let file = self.xml_file(xml);
        self.run_virsh(&["net-create", &file.to_string_lossy()])
    }

    /// `virsh net-destroy NAME`, whatever the result.
    pub fn net_destroy(&self, name: &str) -> Output {
        self.run_virsh(&["net-destroy", name])
    }

    /// Names of the running networks.
    pub fn active_networks(&self) -> Vec<String> {
        let out = self.run_virsh(&["net-list", "--name"]);
        self.expect_ok(&out, "net-list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// Panics with virsh's output and the lab's logs unless `out` succeeded.
    pub fn expect_ok(&self, out: &Output, what: &str) {
        if !out.status.success() {
            panic!(
                "libvirt lab: virsh {what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.diagnostics()
            );
        }
    }

    /// The zone firewalld's runtime has `iface` in (`getZoneOfInterface`), `None` when unbound.
    pub fn zone_of_interface(&self, iface: &str) -> Option<String> {
        let out = self
            .lab
            .busctl()
            .args(["--json=short", "call", FIREWALLD_NAME, FIREWALLD_PATH])
            .args([
                "org.fedoraproject.FirewallD1.zone",
                "getZoneOfInterface",
                "s",
                iface,
            ])
            .output()
            .unwrap_or_else(|e| panic!("libvirt lab: cannot run busctl: {e}"));
        let data = busctl_data(&out).unwrap_or_else(|e| {
            panic!(
                "libvirt lab: getZoneOfInterface({iface}) failed: {e}{}",
                self.diagnostics()
            )
        });
        match data.get(0).and_then(serde_json::Value::as_str) {
            Some("") => None,
            Some(zone) => Some(zone.to_string()),
            None => panic!("libvirt lab: unexpected getZoneOfInterface reply {data}"),
        }
    }

    /// Whether a network interface `name` exists in the lab's namespace.
    pub fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.lab.netns, "link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Every hook run so far, oldest first.
    pub fn hook_runs(&self) -> Vec<HookRun> {
        parse_hook_log(&fs::read_to_string(self.root.join("hooks.log")).unwrap_or_default())
    }

    /// The runs of `hook` for `NET OP SUBOP` (e.g. `"nat1 start begin"`), oldest first.
    pub fn runs_of(&self, hook: &str, call: &str) -> Vec<HookRun> {
        self.hook_runs()
            .into_iter()
            .filter(|r| r.hook == hook && r.call() == call)
            .collect()
    }

    /// The hookData libvirt last passed for `network op subop`, if that call happened.
    pub fn hook_data(&self, network: &str, op: &str, subop: &str) -> Option<String> {
        fs::read_to_string(self.root.join(format!("hookdata/{network}.{op}.{subop}"))).ok()
    }

    /// libvirtd's log (warnings and errors, or `VIRTZONE_LAB_LIBVIRT_DEBUG=1` for everything)
    /// plus its stdout/stderr.
    pub fn libvirtd_log(&self) -> String {
        let log = fs::read_to_string(self.root.join("libvirtd.log")).unwrap_or_default();
        let out = fs::read_to_string(self.root.join("libvirtd.out")).unwrap_or_default();
        if out.trim().is_empty() {
            log
        } else {
            format!("{log}\n--- libvirtd stdout/stderr ---\n{out}")
        }
    }

    /// Text for panic messages: the hook log, libvirtd's log and firewalld's log.
    pub fn diagnostics(&self) -> String {
        format!(
            "\n--- libvirt lab {} (dir {}) ---\n--- hooks.log ---\n{}\n--- libvirtd log ---\n{}\n\
             --- firewalld log ---\n{}",
            self.lab.netns,
            self.root.display(),
            fs::read_to_string(self.root.join("hooks.log")).unwrap_or_default(),
            self.libvirtd_log(),
            self.lab.firewalld_log()
        )
    }

    /// Plugs a "guest" into `bridge`: a veth pair with one end (`vgN`) a port of the bridge in the
    /// lab's namespace and the other end `eth0` in a namespace of its own, as a VM's NIC would be.
    /// Waits until the port forwards (libvirt's bridges run STP; a DHCP request sent before that
    /// is lost). Dropping the guest removes its namespace.
    pub fn plug_guest(&self, bridge: &str) -> Guest<'_> {
        self.plug_guest_with_mac(bridge, None)
    }

    /// [`plug_guest`](Self::plug_guest) with `eth0` carrying `mac` (e.g. the MAC of a domain's
    /// interface, so dnsmasq's lease for it is the domain's).
    pub fn plug_guest_with_mac(&self, bridge: &str, mac: Option<&str>) -> Guest<'_> {
        // Named like a lab, so `remove_stale_labs` also removes it after a SIGKILLed run.
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = format!("vzlab-{}-{n}", std::process::id());
        let port = format!("vg{n}");
        run_quiet(
            Command::new("ip").args(["netns", "add", &netns]),
            "ip netns add (guest)",
        );
        let guest = Guest {
            vlab: self,
            netns,
            port,
        };
        let lab_ns = self.lab.netns.as_str();
        let (g, p) = (guest.netns.as_str(), guest.port.as_str());
        let plain: &[&str] = &[
            "-n", lab_ns, "link", "add", p, "type", "veth", "peer", "name", "eth0", "netns", g,
        ];
        let with_mac: Vec<&str>;
        let add = match mac {
            Some(mac) => {
                with_mac = [
                    "-n", lab_ns, "link", "add", p, "type", "veth", "peer", "name", "eth0",
                    "address", mac, "netns", g,
                ]
                .to_vec();
                &with_mac[..]
            }
            None => plain,
        };
        let steps: [&[&str]; 5] = [
            add,
            &["-n", lab_ns, "link", "set", p, "master", bridge, "up"],
            &["-n", g, "link", "set", "lo", "up"],
            &["-n", g, "link", "set", "eth0", "up"],
            &["-n", lab_ns, "link", "show", "dev", p],
        ];
        for args in steps {
            run_quiet(
                Command::new("ip").args(args),
                &format!("ip {}", args.join(" ")),
            );
        }
        wait_for(
            &format!("bridge port {p} of {bridge} reaching state forwarding"),
            GUEST_DEADLINE,
            || {
                let out = Command::new("bridge")
                    .args(["-n", lab_ns, "link", "show", "dev", p])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("state forwarding")
                    .then_some(())
            },
        );
        guest
    }

    /// Stops libvirtd (SIGTERM; its networks and dnsmasq keep running, as with `systemctl restart
    /// libvirtd`) and starts it again, waiting until it answers. libvirt re-applies its firewall
    /// rules for the running networks when it starts.
    pub fn restart_libvirtd(&self) {
        if let Some(child) = self.libvirtd_child().take() {
            terminate(child, TERM_GRACE);
        }
        self.spawn_libvirtd();
        self.wait_until_answering();
    }

    /// Stops firewalld (SIGTERM, as `systemctl restart firewalld` does) and starts it again, waiting
    /// until it is RUNNING. Takes `&self`, so guests plugged into the lab may stay.
    pub fn restart_firewalld(&self) {
        self.stop_firewalld();
        self.start_firewalld();
    }

    /// Stops firewalld (SIGTERM, as `systemctl stop firewalld` does) and waits until its bus name
    /// is released. Takes `&self`, like [`LibvirtLab::restart_firewalld`].
    pub fn stop_firewalld(&self) {
        if let Some(child) = self.lab.firewalld_child().take() {
            terminate(child, TERM_GRACE);
        }
        wait_for("firewalld's bus name released", LIBVIRTD_DEADLINE, || {
            (!self.lab.name_has_owner(FIREWALLD_NAME)).then_some(())
        });
    }

    /// Starts firewalld after [`LibvirtLab::stop_firewalld`] and waits until it is RUNNING.
    pub fn start_firewalld(&self) {
        self.lab.spawn_firewalld();
        self.lab.wait_for_state("RUNNING", LIBVIRTD_DEADLINE * 2);
    }

    /// An "upstream" host: a veth pair with `link` (address `host_cidr`) in the lab's namespace and
    /// `eth0` (address `peer_cidr`, default route via the host side) in a namespace of its own, so
    /// its packets to the host's address arrive from outside, as a client on the LAN's would.
    /// Dropping it removes its namespace (and with it the link).
    pub fn plug_upstream(&self, link: &str, host_cidr: &str, peer_cidr: &str) -> Guest<'_> {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = format!("vzlab-{}-{n}", std::process::id());
        run_quiet(
            Command::new("ip").args(["netns", "add", &netns]),
            "ip netns add (upstream)",
        );
        let up = Guest {
            vlab: self,
            netns,
            port: link.to_string(),
        };
        let via = host_cidr.split('/').next().unwrap_or(host_cidr);
        let lab_ns = self.lab.netns.as_str();
        let g = up.netns.as_str();
        let steps: [&[&str]; 7] = [
            &[
                "-n", lab_ns, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns",
                g,
            ],
            &["-n", lab_ns, "addr", "add", host_cidr, "dev", link],
            &["-n", lab_ns, "link", "set", link, "up"],
            &["-n", g, "link", "set", "lo", "up"],
            &["-n", g, "addr", "add", peer_cidr, "dev", "eth0"],
            &["-n", g, "link", "set", "eth0", "up"],
            &["-n", g, "route", "add", "default", "via", via],
        ];
        for args in steps {
            run_quiet(
                Command::new("ip").args(args),
                &format!("ip {}", args.join(" ")),
            );
        }
        up
    }

    /// The pid of libvirtd (to show it runs in the lab's namespace).
    pub fn libvirtd_pid(&self) -> Option<u32> {
        self.libvirtd_child().as_ref().map(Child::id)
    }

    // --- setup ---

    fn libvirtd_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.libvirtd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Private dirs, libvirtd.conf, the driver dir and the hooks with their wrappers.
    fn prepare(&self, hooks: &[Hook], qemu: bool) {
        if !Path::new("/usr/sbin/libvirtd").is_file() {
            panic!(
                "libvirt lab: /usr/sbin/libvirtd is missing: apt-get install libvirt-daemon-system \
                 libvirt-clients dnsmasq-base (scripts/test.sh does)"
            );
        }
        for (host, sub) in PRIVATE_DIRS {
            if !Path::new(host).is_dir() {
                panic!(
                    "libvirt lab: {host} must exist as a mount point (it comes with \
                     libvirt-daemon-system)"
                );
            }
            fs::create_dir_all(self.root.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        // The private /run must be traversable by dnsmasq, which drops to `nobody`.
        set_mode(&self.root.join("run"), 0o755);
        for dir in ["hookdata", "hook-bodies", "drivers", "xml"] {
            fs::create_dir_all(self.root.join(dir)).unwrap_or_else(|e| panic!("{e}"));
        }
        for path in [&self.root, &self.state_dir()] {
            let text = path.to_string_lossy();
            assert!(
                !text.contains('\''),
                "libvirt lab: {text} cannot be single-quoted in a hook"
            );
        }

        let driver = network_driver();
        let mut drivers = vec![driver.clone()];
        if qemu {
            drivers.push(driver.with_file_name("libvirt_driver_qemu.so"));
        }
        for driver in drivers {
            assert!(
                driver.is_file(),
                "libvirt lab: {} is missing (apt-get install libvirt-daemon-driver-qemu \
                 qemu-system-x86)",
                driver.display()
            );
            std::os::unix::fs::symlink(
                &driver,
                self.root.join("drivers").join(driver.file_name().unwrap()),
            )
            .unwrap_or_else(|e| panic!("libvirt lab: cannot link {}: {e}", driver.display()));
        }
        if qemu {
            // qemu as root with nothing the lab's private namespace cannot give: no security
            // driver, no cgroups, no per-domain /dev namespace, no virtlogd.
            write(
                &self.root.join("etc/qemu.conf"),
                "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\n\
                 security_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
                 stdio_handler = \"file\"\nremember_owner = 0\n",
            );
            let body = self.root.join("hook-bodies").join("qemu.50-virtzone");
            write(&body, &virtzone_qemu_hook_body());
            self.install_wrapper("qemu.d", "50-virtzone", &body);
        }

        let level = std::env::var("VIRTZONE_LAB_LIBVIRT_DEBUG")
            .ok()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "3".into());
        write(
            &self.root.join("libvirtd.conf"),
            &format!(
                "# libvirt lab: no polkit on the lab bus, so the socket (0700, root) needs no auth.\n\
                 unix_sock_rw_perms = \"0700\"\n\
                 auth_unix_ro = \"none\"\n\
                 auth_unix_rw = \"none\"\n\
                 log_outputs = \"{level}:file:{}\"\n",
                self.root.join("libvirtd.log").display()
            ),
        );

        for hook in hooks {
            self.install_hook(hook);
        }
    }

    /// Writes `hook`'s body and its wrapper (see the module docs). The wrapper is the executable
    /// libvirt finds; it runs the body with `/bin/sh`, so the body needs no mode or shebang.
    fn install_hook(&self, hook: &Hook) {
        let name = hook.name();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "libvirt lab: bad hook name {name:?}"
        );
        let body = self.root.join("hook-bodies").join(name);
        write(&body, &hook.body());
        self.install_wrapper("network.d", name, &body);
    }

    /// Writes the wrapper (see the module docs) for hook `name` in `/etc/libvirt/hooks/DIR/`,
    /// running `body`. Runs of qemu hooks are logged as `qemu.d/NAME`.
    fn install_wrapper(&self, dir: &str, name: &str, body: &Path) {
        let logged = if dir == "network.d" {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        let data_dir = self.root.join("hookdata");
        let wrapper = format!(
            r#"#!/bin/sh
# libvirt lab wrapper for hook {name}. libvirt passes hooks only PATH and LC_ALL, so the lab's
# bus and virtzone's state dir are exported here. Each run's stdin (hookData) is kept, and its
# arguments, exit status and stderr are appended to hooks.log as one record (one write, so runs
# of concurrent hooks do not interleave).
export DBUS_SYSTEM_BUS_ADDRESS={bus}
export VIRTZONE_STATE_DIR={state}
export VIRTZONE_CONFIG={state}.conf
data={data_dir}/"$1.$2.$3"
err="$data.{name}.err"
cat >"$data"
/bin/sh {body} "$@" <"$data" 2>"$err"
rc=$?
cat "$err" >&2
record=$(printf 'hook %s ran %s -> %s\n' {logged} "$*" "$rc"; sed 's/^/| /' "$err")
printf '%s\n' "$record" >>{log}
exit "$rc"
"#,
            bus = sh_quote(&self.lab.bus_address),
            state = sh_quote(&self.state_dir().to_string_lossy()),
            data_dir = sh_quote(&data_dir.to_string_lossy()),
            body = sh_quote(&body.to_string_lossy()),
            log = sh_quote(&self.root.join("hooks.log").to_string_lossy()),
        );
        let path = self.root.join("etc/hooks").join(dir).join(name);
        write(&path, &wrapper);
        set_mode(&path, 0o755);
    }

    fn spawn_libvirtd(&self) {
        // `$0` is the lab's libvirt dir; the mounts happen in the mount namespace `ip netns exec`
        // made for this call, which libvirtd and all its children inherit.
        let mut script = String::from("set -e\n");
        for (host, sub) in PRIVATE_DIRS {
            script.push_str(&format!("mount --bind \"$0/{sub}\" {host}\n"));
        }
        script.push_str("exec \"$@\"\n");

        let out = log_file(&self.root.join("libvirtd.out"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lab.netns, "/bin/sh", "-c", &script])
            .arg(&self.root)
            .arg("/usr/sbin/libvirtd")
            .arg("--config")
            .arg(self.root.join("libvirtd.conf"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.lab.bus_address)
            .env("LIBVIRT_DRIVER_DIR", self.root.join("drivers"))
            .stdin(Stdio::null())
            .stdout(clone_file(&out))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("libvirt lab: cannot start libvirtd: {e}"));
        *self.libvirtd_child() = Some(child);
    }

    fn libvirtd_exit_status(&self) -> Option<ExitStatus> {
        let mut guard = self.libvirtd_child();
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls until `virsh net-list` answers: the socket appears early, the network driver's state
    /// a moment later.
    fn wait_until_answering(&self) {
        let start = Instant::now();
        let mut last = String::from("(socket not there yet)");
        loop {
            if let Some(status) = self.libvirtd_exit_status() {
                panic!(
                    "libvirt lab: libvirtd exited with {status} at start{}",
                    self.diagnostics()
                );
            }
            if self.socket.exists() {
                let out = self.run_virsh(&["net-list", "--all", "--name"]);
                if out.status.success() {
                    return;
                }
                last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
            if start.elapsed() > LIBVIRTD_DEADLINE {
                panic!(
                    "libvirt lab: libvirtd did not answer within {LIBVIRTD_DEADLINE:?} (last: \
                     {last}){}",
                    self.diagnostics()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// dnsmasq pids from libvirt's pid files (they outlive libvirtd, which leaves networks up
    /// when it exits).
    fn dnsmasq_pids(&self) -> Vec<u32> {
        let dir = self.root.join("run/libvirt/network");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect()
    }
}

impl Drop for LibvirtLab {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a failed test unwinds. The Lab field is
        // dropped afterwards and kills whatever is left in the namespace.
        let running = self.libvirtd_exit_status().is_none() && self.libvirtd_pid().is_some();
        if running {
            // Stopping the networks runs their `stopped end` hooks (virtzone unbinds) and stops
            // dnsmasq the way libvirt does.
            let list = self
                .virsh_within(TEARDOWN_VIRSH_SECS)
                .args(["net-list", "--name"])
                .output();
            if let Ok(out) = list {
                for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = self
                        .virsh_within(TEARDOWN_VIRSH_SECS)
                        .args(["net-destroy", name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        if let Some(child) = self.libvirtd_child().take() {
            terminate(child, TERM_GRACE);
        }
        let left: Vec<u32> = self
            .dnsmasq_pids()
            .into_iter()
            .filter(|&p| process_alive(p))
            .collect();
        if !left.is_empty() {
            signal(&left, "TERM");
        }
    }
}

/// A guest NIC plugged into a libvirt bridge ([`LibvirtLab::plug_guest`]): `eth0` in its own
/// network namespace. Borrows the lab, so it is dropped (and its namespace removed) first.
pub struct Guest<'a> {
    vlab: &'a LibvirtLab,
    /// The guest's namespace.
    pub netns: String,
    /// The bridge port (the veth end in the lab's namespace).
    pub port: String,
}

/// A DHCP lease as busybox `udhcpc` reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The guest's address.
    pub ip: String,
    /// Prefix length.
    pub mask: String,
    /// Default gateway(s), space separated.
    pub router: String,
    /// DNS server(s), space separated.
    pub dns: String,
}

/// udhcpc's event script: configures the lease on the interface (so the guest can then talk to
/// the gateway) and writes it where [`Guest::dhcp`] reads it.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# libvirt lab: udhcpc event script for a guest (udhcpc passes the lease in the environment).
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    printf 'ip=%s\nmask=%s\nrouter=%s\ndns=%s\n' "$ip" "$mask" "$router" "$dns" >"$LAB_LEASE_FILE"
    ;;
esac
exit 0
"#;

impl Guest<'_> {
    /// A command run inside the guest's namespace, with a minimal environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C");
        cmd
    }

    /// Asks for a DHCP lease with busybox `udhcpc` (`tries` discovers, one second apart, then it
    /// gives up): `Ok(lease)` once bound and configured, `Err(udhcpc's output)` otherwise.
    pub fn dhcp(&self, tries: u32) -> Result<Lease, String> {
        self.dhcp_with(tries, &[])
    }

    /// [`Guest::dhcp`] with more `udhcpc` arguments (e.g. `-C -x 0x3d:HEX`: another client-id).
    pub fn dhcp_with(&self, tries: u32, extra: &[&str]) -> Result<Lease, String> {
        let dir = self.vlab.root.join("guests").join(&self.netns);
        let script = dir.join("udhcpc.script");
        let lease_file = dir.join("lease");
        write(&script, UDHCPC_SCRIPT);
        set_mode(&script, 0o755);
        // A lease file from an earlier run must not pass for this one's.
        let _ = fs::remove_file(&lease_file);
        let out = self
            .command("busybox")
            .args(["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-T", "1", "-t"])
            .arg(tries.to_string())
            .args(extra)
            .arg("-s")
            .arg(&script)
            .env("LAB_LEASE_FILE", &lease_file)
            .output()
            .map_err(|e| format!("cannot run busybox udhcpc: {e}"))?;
        let text = fs::read_to_string(&lease_file).map_err(|_| {
            format!(
                "no lease ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let mut lease = Lease::default();
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                let field = match key {
                    "ip" => &mut lease.ip,
                    "mask" => &mut lease.mask,
                    "router" => &mut lease.router,
                    "dns" => &mut lease.dns,
                    _ => continue,
                };
                *field = value.trim().to_string();
            }
        }
        Ok(lease)
    }
}

impl Guest<'_> {
    /// Whether an HTTP request from the guest to a server on `addr`, port 8000, is answered (2 s at
    /// most; Python's urllib, as Debian 12's busybox wget crashes).
    pub fn reaches_http(&self, addr: &str) -> bool {
        self.command("python3")
            .args([
                "-c",
                &format!(
                    "import urllib.request; urllib.request.urlopen('http://{addr}:8000/', timeout=2)"
                ),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        kill_netns_processes(&self.netns);
        // Deleting the namespace deletes eth0, and with it the port's veth end in the lab.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Parses `hooks.log`: `hook NAME ran ARGS… -> RC` lines, each followed by its stderr lines
/// prefixed `| `.
pub fn parse_hook_log(text: &str) -> Vec<HookRun> {
    let mut runs: Vec<HookRun> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("hook ") {
            let Some((head, status)) = rest.rsplit_once(" -> ") else {
                continue;
            };
            let Some((hook, args)) = head.split_once(" ran ") else {
                continue;
            };
            runs.push(HookRun {
                hook: hook.to_string(),
                args: args.split(' ').map(String::from).collect(),
                status: status.trim().parse().unwrap_or(-1),
                stderr: String::new(),
            });
        } else if let (Some(run), Some(err)) = (runs.last_mut(), line.strip_prefix("| ")) {
            run.stderr.push_str(err);
            run.stderr.push('\n');
        }
    }
    runs
}

/// The `<name>` of a network XML.
pub fn network_name(xml: &str) -> String {
    let start = xml
        .find("<name>")
        .unwrap_or_else(|| panic!("libvirt lab: no <name> in {xml}"))
        + "<name>".len();
    let len = xml[start..]
        .find("</name>")
        .unwrap_or_else(|| panic!("libvirt lab: no </name> in {xml}"));
    xml[start..start + len].trim().to_string()
}

/// libvirt's network driver module (`…/libvirt/connection-driver/libvirt_driver_network.so`,
/// under the multiarch lib dir on Debian).
fn network_driver() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/lib64/libvirt/connection-driver")];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("libvirt/connection-driver"));
        }
    }
    candidates
        .into_iter()
        .map(|d| d.join("libvirt_driver_network.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libvirt lab: libvirt_driver_network.so not found (apt-get install \
                 libvirt-daemon-system)"
            )
        })
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Polls `probe` until it returns `Some`, panicking with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("libvirt lab: {what} did not happen within {deadline:?}");
        }
        thread::sleep(POLL);
    }
}
