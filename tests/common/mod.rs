//! The integration-test lab: a private system bus and a real firewalld inside a private network
//! namespace, so tests exercise the real daemon without touching the host's bus or rules.
//!
//! Every lab gets
//! - its own temp dir `$TMPDIR/vzlab-<pid>-<n>-XXXXXX` (bus socket, configs, logs, private `/run`),
//! - its own network namespace `vzlab-<pid>-<n>`, where firewalld, dbus-daemon and everything started
//!   through [`Lab::command`] run,
//! - its own `dbus-daemon` with a system-bus policy (see [`bus_config`]),
//! - optionally its own firewalld ([`Release`]: Debian 12's 1.3.3, the host's; Debian 11's 0.9.3,
//!   Debian 13's 2.3.1 and sid's 2.5.2 unpacked by `scripts/fetch-firewalld.sh`).
//!
//! The API is blocking (`std::process`), so plain `#[test]` functions can use it; tests that need
//! async build their own tokio runtime. Needs root.
//!
//! # What parallel firewalld instances would share, and how the lab isolates it
//! Read from firewalld 1.3.3's and 2.3.1's sources (`firewall/config/__init__.py` and its users):
//! - `/etc/firewalld` (system config, incl. `firewalld.conf`): `--system-config <lab>/etc`.
//! - `/usr/lib/firewalld` (stock config): `--default-config` with a per-lab copy (minus libvirt's
//!   zones and policies, which the libvirt package drops there).
//! - `/var/run/firewalld.pid` and the "already running" check that reads it: `--nopid`.
//! - `/var/log/firewalld` and syslog: `--log-target file --log-file <lab>/firewalld.log`.
//! - `/run/firewalld`: firewalld `mkdir`s it at start without tolerating a concurrent `mkdir` (two
//!   labs starting together could kill one with "Fork #1 failed"), and the iptables/ipset backends
//!   write their restore files there. There is no option for it, so firewalld runs with a bind mount
//!   of `<lab>/run` over `/run` inside the mount namespace `ip netns exec` creates (it makes `/`
//!   a recursive slave first, so nothing propagates to the host). Bonus: firewalld cannot even
//!   see the host's system-bus socket under /run/dbus.
//! - The bus: `DBUS_SYSTEM_BUS_ADDRESS` points at the lab's bus for every lab process.
//! - Netfilter state and `/proc/sys/net/*` (ip_forward, rp_filter): per network namespace.
//! - `/etc/sysconfig/network-scripts` (ifcfg lookup): absent on Debian; harmless.
//! - Python: Debian 12's package ships valid `__pycache__`; 2.3.1's is precompiled by the fetch
//!   script and a reported-version copy keeps the mtimes so its caches stay valid. Python writes
//!   byte code atomically anyway. The host's `PYTHON*` variables are cleared (this machine sets
//!   `PYTHONDONTWRITEBYTECODE`, and a stray `PYTHONPATH` would change what runs).
//! - `/run/xtables.lock` is only used by iptables-legacy; Debian 12 uses iptables-nft (no lock).
//!
//! # Other facts
//! - There is no polkit on the lab bus: firewalld authorizes root only; any other uid gets
//!   `NotAuthorizedException` ("Not Authorized(uid): org.fedoraproject.FirewallD1.info"), even for
//!   reading `version`. The bus itself (dir 0755, socket 0777) is open to every user.
//! - Each release's own bus policy (`FirewallD.conf`) is used; 2.3.1's equals 1.3.3's.
//! - `VIRTZONE_LAB_FIREWALLD_DEBUG=N` starts firewalld with `--debug=N` (long logs).

pub mod booted;
pub mod daemon;
pub mod docker;
pub mod forward;
pub mod libvirt;
pub mod matrix;
pub mod offline;
pub mod outage;
pub mod sidroot;
pub mod topology;
pub mod vz;

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// firewalld's bus name.
pub const FIREWALLD_NAME: &str = "org.fedoraproject.FirewallD1";
/// Runtime object (properties `version`, `state`).
pub const FIREWALLD_PATH: &str = "/org/fedoraproject/FirewallD1";
/// Interface of the runtime object.
pub const FIREWALLD_IFACE: &str = "org.fedoraproject.FirewallD1";
/// Permanent-config object (property `FirewallBackend`).
pub const FIREWALLD_CONFIG_PATH: &str = "/org/fedoraproject/FirewallD1/config";
/// Interface of the permanent-config object.
pub const FIREWALLD_CONFIG_IFACE: &str = "org.fedoraproject.FirewallD1.config";

/// How long a firewalld start may take before the lab gives up. A start takes ≈0.3–0.5 s alone;
/// the margin is for many labs starting at once on a small machine.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long the bus socket may take to appear.
const BUS_DEADLINE: Duration = Duration::from_secs(10);
/// Grace period between SIGTERM and SIGKILL when stopping lab processes.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Poll interval for every wait (state, socket, process exit).
const POLL: Duration = Duration::from_millis(20);

/// Which firewalld backend `firewalld.conf` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `FirewallBackend=nftables` (one `inet firewalld` table).
    Nftables,
    /// `FirewallBackend=iptables` (chains in the ip/ip6 `filter` tables).
    Iptables,
}

impl Backend {
    /// The value firewalld uses in `firewalld.conf` and in the `FirewallBackend` property.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// Which real firewalld runs in the lab. All but Debian 12's are unpacked into cache roots under
/// `target/lab` by `scripts/fetch-firewalld.sh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Debian 11's firewalld 0.9.3 (the RHEL 8 generation: no policies, no `--log-target`).
    Debian11,
    /// Debian 12's firewalld 1.3.3, the system installation.
    Debian12,
    /// Debian 13's firewalld 2.3.1.
    Debian13,
    /// Debian sid's firewalld 2.5.2 (`*_dispatch` chains instead of `*_ZONES`/`*_POLICIES`).
    Sid,
}

impl Release {
    /// Every release the lab runs, oldest first.
    pub const ALL: [Release; 4] = [
        Release::Debian11,
        Release::Debian12,
        Release::Debian13,
        Release::Sid,
    ];

    /// The version this release reports (without a `reported_version` override).
    pub fn version(self) -> &'static str {
        match self {
            Release::Debian11 => "0.9.3",
            Release::Debian12 => "1.3.3",
            Release::Debian13 => "2.3.1",
            Release::Sid => "2.5.2",
        }
    }
}

/// Every release with both backends: the full lab matrix (8 cells).
pub fn all_cells() -> Vec<LabConfig> {
    let mut all = Vec::new();
    for release in Release::ALL {
        for backend in [Backend::Nftables, Backend::Iptables] {
            all.push(LabConfig::new(release, backend));
        }
    }
    all
}

/// What a lab looks like. Start from `LabConfig::default()` and override fields.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Backend chosen in `firewalld.conf`.
    pub backend: Backend,
    /// Which firewalld runs.
    pub release: Release,
    /// Make firewalld report this `version` (runs it from a patched copy of its Python package;
    /// everything else is the real release).
    pub reported_version: Option<String>,
    /// `false`: only the bus, nobody owns firewalld's name (the "no firewalld" case).
    /// [`Lab::start_firewalld`] can still start it later.
    pub firewalld: bool,
    /// Files written into the system-config dir (`/etc/firewalld` of the lab) before firewalld
    /// starts, relative to it, e.g. `("zones/broken.xml", "garbage")`. Written after the lab's own
    /// `firewalld.conf`, so a `"firewalld.conf"` entry replaces it.
    pub files: Vec<(PathBuf, String)>,
    /// Files written into the lab's default-config dir (`/usr/lib/firewalld` of the lab), relative
    /// to it, e.g. to emulate libvirt's package dropping its zone files there.
    pub default_files: Vec<(PathBuf, String)>,
    /// Extra D-Bus policy files for the bus (copied into its `<includedir>`).
    pub bus_policies: Vec<PathBuf>,
    /// The state `Lab::start` waits for: `"RUNNING"`, or `"FAILED"` for broken-config tests.
    pub expect_state: &'static str,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            backend: Backend::Nftables,
            release: Release::Debian12,
            reported_version: None,
            firewalld: true,
            files: Vec::new(),
            default_files: Vec::new(),
            bus_policies: Vec::new(),
            expect_state: "RUNNING",
        }
    }
}

impl LabConfig {
    /// The default config with the given release and backend.
    pub fn new(release: Release, backend: Backend) -> Self {
        LabConfig {
            release,
            backend,
            ..LabConfig::default()
        }
    }
}

/// [`all_cells`] under its name from when there were two releases; new code calls `all_cells`.
/// Kept (unused here) for test files written in parallel against the old name.
#[allow(dead_code)]
pub fn both_releases_both_backends() -> Vec<LabConfig> {
    all_cells()
}

/// The cache root holding Debian 13's firewalld (`VIRTZONE_LAB_CACHE`, else
/// `<repo>/target/lab/firewalld-2.3.1`, the default of `scripts/fetch-firewalld.sh`).
pub fn debian13_root() -> PathBuf {
    match std::env::var_os("VIRTZONE_LAB_CACHE") {
        // Relative paths are relative to the repo, as in the fetch script.
        Some(dir) if !dir.is_empty() => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab/firewalld-2.3.1"),
    }
}

/// The cache root of an unpacked release (`None` for Debian 12's, which is the host's).
pub fn release_root(release: Release) -> Option<PathBuf> {
    match release {
        Release::Debian12 => None,
        Release::Debian13 => Some(debian13_root()),
        other => Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/lab")
                .join(format!("firewalld-{}", other.version())),
        ),
    }
}

/// Where a release's pieces live.
#[derive(Clone, Debug)]
struct Install {
    /// Directory holding the `firewall` Python package.
    site: PathBuf,
    /// The `firewalld` script (run with `/usr/bin/python3`).
    firewalld: PathBuf,
    /// The `firewall-cmd` script.
    firewall_cmd: PathBuf,
    /// The `firewall-offline-cmd` script.
    firewall_offline_cmd: PathBuf,
    /// Stock config (`/usr/lib/firewalld`).
    stock_config: PathBuf,
    /// The release's bus policy (`FirewallD.conf`).
    bus_policy: PathBuf,
    /// The release's stock `firewalld.conf` text.
    firewalld_conf: String,
}

/// Debian 12's stock `/etc/firewalld/firewalld.conf` (1.3.3-1~deb12u2) without comments. Not read
/// from the host's /etc, which an admin may have changed.
const DEBIAN12_FIREWALLD_CONF: &str = "\
DefaultZone=public
CleanupOnExit=yes
CleanupModulesOnExit=no
Lockdown=no
IPv6_rpfilter=yes
IndividualCalls=no
LogDenied=off
FirewallBackend=nftables
FlushAllOnReload=yes
RFC3964_IPv4=yes
";

impl Install {
    fn of(release: Release) -> Install {
        match release {
            Release::Debian12 => Install {
                site: "/usr/lib/python3/dist-packages".into(),
                firewalld: "/usr/sbin/firewalld".into(),
                firewall_cmd: "/usr/bin/firewall-cmd".into(),
                firewall_offline_cmd: "/usr/bin/firewall-offline-cmd".into(),
                stock_config: "/usr/lib/firewalld".into(),
                bus_policy: "/usr/share/dbus-1/system.d/FirewallD.conf".into(),
                firewalld_conf: DEBIAN12_FIREWALLD_CONF.into(),
            },
            Release::Debian11 | Release::Debian13 | Release::Sid => {
                let root = release_root(release).unwrap_or_default();
                if !root.join(".complete").is_file() {
                    panic!(
                        "firewalld {} is not unpacked at {}: run \
                         scripts/fetch-firewalld.sh (honours VIRTZONE_LAB_CACHE) first",
                        release.version(),
                        root.display()
                    );
                }
                // The 2.3.1 tree is complete in itself: with --default-config, nothing else in
                // its config module points outside the root that the daemon uses (DATADIR,
                // /usr/share/firewalld, is only for the GUI). It uses the host's nft/iptables
                // binaries and Debian 12's python3-nftables/python3-dbus/python3-gi.
                let conf = root.join("etc/firewalld/firewalld.conf");
                Install {
                    site: root.join("usr/lib/python3/dist-packages"),
                    firewalld: root.join("usr/sbin/firewalld"),
                    firewall_cmd: root.join("usr/bin/firewall-cmd"),
                    firewall_offline_cmd: root.join("usr/bin/firewall-offline-cmd"),
                    stock_config: root.join("usr/lib/firewalld"),
                    bus_policy: root.join("usr/share/dbus-1/system.d/FirewallD.conf"),
                    firewalld_conf: read(&conf),
                }
            }
        }
    }
}

/// A running lab. Dropping it stops everything and removes the namespace and temp dir, also when
/// the test panicked.
pub struct Lab {
    /// `unix:path=<lab>/bus.sock`, the lab's system bus.
    pub bus_address: String,
    /// Name of the lab's network namespace (`vzlab-<pid>-<n>`).
    pub netns: String,
    /// firewalld's `--system-config` (the lab's `/etc/firewalld`).
    pub config_dir: PathBuf,
    /// firewalld's `--default-config` (the lab's `/usr/lib/firewalld`).
    pub default_config_dir: PathBuf,
    /// The release running in the lab.
    pub release: Release,
    /// The backend chosen in `firewalld.conf`.
    pub backend: Backend,
    /// The lab's temp dir (removed on drop, after the processes are gone).
    dir: tempfile::TempDir,
    install: Install,
    /// `PYTHONPATH` for firewalld and its tools: a reported-version copy and/or the 2.3.1 root.
    python_path: Option<OsString>,
    netns_created: bool,
    bus: Option<Child>,
    /// In a mutex so that `&self` methods can notice a dead firewalld (`try_wait` needs `&mut`)
    /// while `Lab` stays `Sync` for async tests.
    firewalld: Mutex<Option<Child>>,
    /// Why this test may leave ERROR lines in firewalld's log (see [`Lab::allow_firewalld_errors`]).
    errors_allowed: Mutex<Option<&'static str>>,
}

/// Counter making lab names unique within a process (the pid makes them unique across processes).
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Starts a lab: bus, namespace and (if `cfg.firewalld`) firewalld, waiting until firewalld's
    /// `state` is `cfg.expect_state`. Panics with firewalld's log when anything fails; whatever was
    /// already set up is torn down by the drop during unwinding.
    pub fn start(cfg: LabConfig) -> Lab {
        remove_stale_labs();
        let install = Install::of(cfg.release);

        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = format!("vzlab-{pid}-{n}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{netns}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("lab: cannot create temp dir: {e}"));
        // World-readable so a test can let an unprivileged user reach the bus socket.
        set_mode(dir.path(), 0o755);
        let root = dir.path().to_path_buf();

        let mut lab = Lab {
            bus_address: format!("unix:path={}", root.join("bus.sock").display()),
            netns,
            config_dir: root.join("etc"),
            default_config_dir: root.join("defaults"),
            release: cfg.release,
            backend: cfg.backend,
            dir,
            install,
            python_path: None,
            netns_created: false,
            bus: None,
            firewalld: Mutex::new(None),
            errors_allowed: Mutex::new(None),
        };
        lab.prepare_firewalld_files(&cfg);
        lab.create_netns();
        lab.start_bus(&cfg.bus_policies);
        if cfg.firewalld {
            lab.spawn_firewalld();
            lab.poll_state(cfg.expect_state, START_DEADLINE, true);
        }
        lab
    }

    /// [`Lab::start`], then `virtzone install`: a lab with virtzone's zones and policies loaded.
    pub fn start_installed(cfg: LabConfig) -> Lab {
        let lab = Lab::start(cfg);
        ok(&lab.run_virtzone(&["install"]));
        lab
    }

    /// A command that runs `program` inside the lab's network namespace with
    /// `DBUS_SYSTEM_BUS_ADDRESS` set to the lab's bus and every other `DBUS_*` variable of the
    /// host removed.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DBUS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address);
        cmd
    }

    /// [`Lab::command`] for the crate's `virtzone` binary, with its state directory inside the lab
    /// (`VIRTZONE_STATE_DIR=<lab>/state`), so that no test reads or writes the host's.
    pub fn virtzone(&self) -> Command {
        let mut cmd = self.command(virtzone_binary());
        cmd.env("VIRTZONE_STATE_DIR", self.state_dir());
        // Never the host's /etc/virtzone/virtzone.conf.
        cmd.env("VIRTZONE_CONFIG", self.dir().join("virtzone.conf"));
        cmd
    }

    /// The lab's virtzone state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// Runs `virtzone ARGS…` in the lab and returns its output, whatever the exit status.
    pub fn run_virtzone(&self, args: &[&str]) -> Output {
        self.virtzone()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run virtzone: {e}"))
    }

    /// Runs `firewall-cmd ARGS…`, asserting success, and returns its standard output.
    pub fn firewall_cmd_ok(&self, args: &[&str]) -> String {
        let out = self.firewall_cmd(args);
        assert!(
            out.status.success(),
            "firewall-cmd {args:?}: {}{}",
            text(&out.stderr),
            self.diagnostics()
        );
        text(&out.stdout)
    }

    /// firewalld's runtime interface → zone map, from one `getActiveZones` call (empty when firewalld
    /// does not answer).
    pub fn interface_zones(&self) -> std::collections::BTreeMap<String, String> {
        let out = self
            .busctl()
            .args([
                "--json=short",
                "call",
                FIREWALLD_NAME,
                FIREWALLD_PATH,
                "org.fedoraproject.FirewallD1.zone",
                "getActiveZones",
            ])
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run busctl: {e}"));
        let mut map = std::collections::BTreeMap::new();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return map;
        };
        for (zone, parts) in v["data"][0].as_object().into_iter().flatten() {
            for iface in parts["interfaces"].as_array().into_iter().flatten() {
                if let Some(iface) = iface.as_str() {
                    map.insert(iface.to_string(), zone.clone());
                }
            }
        }
        map
    }

    /// Runs the lab release's `firewall-cmd` (with the lab's Python package, so a reported version
    /// shows in `--version` too) and returns its output, whatever the exit status.
    pub fn firewall_cmd(&self, args: &[&str]) -> Output {
        let script = self.install.firewall_cmd.clone();
        self.python_tool(&script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run firewall-cmd: {e}{}", self.diagnostics()))
    }

    /// Runs the lab release's `firewall-offline-cmd` on the lab's config dirs (the
    /// `--system-config`/`--default-config` options come first), e.g. `["--check-config"]`.
    pub fn firewall_offline_cmd(&self, args: &[&str]) -> Output {
        let script = self.install.firewall_offline_cmd.clone();
        self.python_tool(&script)
            .arg("--system-config")
            .arg(&self.config_dir)
            .arg("--default-config")
            .arg(&self.default_config_dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "lab: cannot run firewall-offline-cmd: {e}{}",
                    self.diagnostics()
                )
            })
    }

    /// A `busctl` command on the lab's bus (run in the host namespace: the bus is a socket path).
    pub fn busctl(&self) -> Command {
        let mut cmd = Command::new("busctl");
        cmd.arg(format!("--address={}", self.bus_address));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DBUS_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Reads a D-Bus property of firewalld; `Ok` holds busctl's JSON `data` (a JSON string for
    /// `s`), `Err` the error text (e.g. for a property this release lacks).
    pub fn property(
        &self,
        path: &str,
        interface: &str,
        name: &str,
    ) -> Result<serde_json::Value, String> {
        self.property_with_timeout(path, interface, name, Duration::from_secs(25))
    }

    /// Reads a string property of firewalld, panicking (with the log) on any error.
    pub fn string_property(&self, path: &str, interface: &str, name: &str) -> String {
        match self.property(path, interface, name) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(other) => panic!(
                "lab: property {interface}.{name} is not a string: {other}{}",
                self.diagnostics()
            ),
            Err(e) => panic!(
                "lab: cannot read {interface}.{name}: {e}{}",
                self.diagnostics()
            ),
        }
    }

    /// Whether some connection owns `name` on the lab's bus.
    pub fn name_has_owner(&self, name: &str) -> bool {
        let out = self
            .busctl()
            .args([
                "--json=short",
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args(["org.freedesktop.DBus", "NameHasOwner", "s", name])
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run busctl: {e}"));
        let value = busctl_data(&out).unwrap_or_else(|e| {
            panic!(
                "lab: NameHasOwner({name}) failed: {e}{}",
                self.diagnostics()
            )
        });
        match value.get(0).and_then(serde_json::Value::as_bool) {
            Some(owned) => owned,
            None => panic!("lab: unexpected NameHasOwner reply {value}"),
        }
    }

    /// Stops firewalld (SIGTERM, SIGKILL after a grace period) and waits until its bus name is
    /// released. No-op when it is not running.
    pub fn stop_firewalld(&mut self) {
        let child = self.firewalld_child().take();
        if let Some(child) = child {
            terminate(child, TERM_GRACE);
            let deadline = Instant::now() + BUS_DEADLINE;
            while self.name_has_owner(FIREWALLD_NAME) {
                if Instant::now() > deadline {
                    panic!(
                        "lab: {FIREWALLD_NAME} still owned after firewalld exited{}",
                        self.diagnostics()
                    );
                }
                thread::sleep(POLL);
            }
        }
    }

    /// Starts firewalld (again) with the lab's config and waits until it is RUNNING.
    pub fn start_firewalld(&mut self) {
        self.start_firewalld_expecting("RUNNING");
    }

    /// Starts firewalld (again) and waits for `state` (e.g. `"FAILED"` after writing a broken file).
    pub fn start_firewalld_expecting(&mut self, state: &str) {
        self.start_firewalld_expecting_or_not(Some(state));
    }

    /// Starts firewalld (again), waiting for `state` when given; `None` returns at once (benchmarks
    /// time the start themselves).
    pub fn start_firewalld_expecting_or_not(&mut self, state: Option<&str>) {
        let running = {
            let mut guard = self.firewalld_child();
            // A firewalld that died on its own is reaped here, so it can be started again.
            if guard
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                *guard = None;
            }
            guard.is_some()
        };
        if running {
            panic!("lab: firewalld is already running{}", self.diagnostics());
        }
        self.spawn_firewalld();
        if let Some(state) = state {
            self.poll_state(state, START_DEADLINE, true);
        }
    }

    /// Polls firewalld's `state` property until it equals `want` (e.g. after a reload); panics with
    /// the log when `deadline` passes or firewalld exits.
    pub fn wait_for_state(&self, want: &str, deadline: Duration) {
        self.poll_state(want, deadline, false);
    }

    /// firewalld's log file, plus anything it wrote to stdout/stderr (tracebacks before logging
    /// was set up). Accumulates over restarts.
    pub fn firewalld_log(&self) -> String {
        let mut log = fs::read_to_string(self.path("firewalld.log")).unwrap_or_default();
        let out = fs::read_to_string(self.path("firewalld.out")).unwrap_or_default();
        if !out.trim().is_empty() {
            let _ = write!(log, "\n--- firewalld stdout/stderr ---\n{out}");
        }
        log
    }

    /// Lets this test leave ERROR lines in firewalld's log. Only for tests that deliberately break
    /// firewalld's configuration (a bad file, a failing reload): `why` says which. Every other lab
    /// fails at its end when firewalld logged an ERROR, because virtzone must never be the source of
    /// the lines admins search for when guest networking breaks (firewalld's own suite does the same).
    pub fn allow_firewalld_errors(&self, why: &'static str) {
        *self
            .errors_allowed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// The ERROR lines of firewalld's log so far.
    pub fn firewalld_errors(&self) -> Vec<String> {
        fs::read_to_string(self.path("firewalld.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR: ") || l.starts_with("ERROR: "))
            .map(str::to_string)
            .collect()
    }

    /// The `version` firewalld reports.
    pub fn version(&self) -> String {
        self.string_property(FIREWALLD_PATH, FIREWALLD_IFACE, "version")
    }

    /// The `state` firewalld reports (`INIT`, `RUNNING`, `FAILED`).
    pub fn state(&self) -> String {
        self.string_property(FIREWALLD_PATH, FIREWALLD_IFACE, "state")
    }

    /// The `FirewallBackend` property of the permanent config.
    pub fn firewall_backend(&self) -> String {
        self.string_property(
            FIREWALLD_CONFIG_PATH,
            FIREWALLD_CONFIG_IFACE,
            "FirewallBackend",
        )
    }

    /// Kills the lab's dbus-daemon (SIGKILL), as a crash of the system bus would.
    pub fn kill_bus(&mut self) {
        if let Some(mut child) = self.bus.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of the running firewalld, if any (e.g. to send it SIGHUP).
    pub fn firewalld_pid(&self) -> Option<u32> {
        self.firewalld_child().as_ref().map(Child::id)
    }

    /// The lab's temp dir (bus socket, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // --- setup ---

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn firewalld_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock cannot leave the Option inconsistent.
        self.firewalld.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the system config, the default config copy and (for a reported version) the patched
    /// Python package: everything firewalld needs, also for a lab that starts it only later.
    fn prepare_firewalld_files(&mut self, cfg: &LabConfig) {
        fs::create_dir_all(&self.config_dir).unwrap_or_else(|e| panic!("lab: {e}"));
        fs::create_dir_all(self.path("run")).unwrap_or_else(|e| panic!("lab: {e}"));

        let conf = set_conf_key(
            &self.install.firewalld_conf,
            "FirewallBackend",
            cfg.backend.as_str(),
        );
        write(&self.config_dir.join("firewalld.conf"), &conf);
        for (rel, text) in &cfg.files {
            write(&self.config_dir.join(rel), text);
        }

        // libvirt's Debian package drops libvirt.xml, libvirt-routed.xml and its policies into
        // /usr/lib/firewalld/{zones,policies}: the lab shows firewalld only its own stock config.
        // Only zones and policies are filtered: services/libvirt*.xml belong to firewalld itself.
        copy_tree(
            &self.install.stock_config,
            &self.default_config_dir,
            &is_libvirt_zone_or_policy,
        );
        for (rel, text) in &cfg.default_files {
            write(&self.default_config_dir.join(rel), text);
        }

        let mut python_path: Vec<PathBuf> = Vec::new();
        if let Some(version) = &cfg.reported_version {
            // A copy of the release's `firewall` package with only VERSION changed; first on
            // PYTHONPATH, so it wins over dist-packages (PYTHONPATH precedes site dirs, and the
            // scripts' own dirs hold no `firewall` package).
            let site = self.path("python");
            let package = site.join("firewall");
            copy_tree(&self.install.site.join("firewall"), &package, &|_| false);
            patch_version(&package, version);
            python_path.push(site);
        }
        if self.release != Release::Debian12 {
            python_path.push(self.install.site.clone());
        }
        if !python_path.is_empty() {
            self.python_path = Some(
                std::env::join_paths(&python_path)
                    .unwrap_or_else(|e| panic!("lab: bad PYTHONPATH: {e}")),
            );
        }
    }

    fn create_netns(&mut self) {
        run_quiet(
            Command::new("ip").args(["netns", "add", &self.netns]),
            "ip netns add",
        );
        self.netns_created = true;
        // Loopback up, as on any host: local services in tests may need it.
        run_quiet(
            Command::new("ip").args(["-n", &self.netns, "link", "set", "lo", "up"]),
            "ip link set lo up",
        );
    }

    fn start_bus(&mut self, extra_policies: &[PathBuf]) {
        let policy_dir = self.path("bus.d");
        fs::create_dir_all(&policy_dir).unwrap_or_else(|e| panic!("lab: {e}"));
        copy_file(&self.install.bus_policy, &policy_dir.join("FirewallD.conf"));
        for (i, policy) in extra_policies.iter().enumerate() {
            // <includedir> only reads `*.conf`; the index keeps same-named files apart.
            let name = policy
                .file_name()
                .unwrap_or_else(|| panic!("lab: bus policy {} has no file name", policy.display()))
                .to_string_lossy()
                .into_owned();
            let name = if name.ends_with(".conf") {
                name
            } else {
                format!("{name}.conf")
            };
            copy_file(policy, &policy_dir.join(format!("{i:02}-{name}")));
        }
        let socket = self.path("bus.sock");
        let config = self.path("bus.conf");
        write(&config, &bus_config(&socket, &policy_dir));

        // Inside the lab's netns only so that a stale lab's processes can be found with
        // `ip netns pids`; the bus is a socket path, reachable from every namespace.
        let log = log_file(&self.path("dbus.log"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "dbus-daemon",
                "--nofork",
                "--nopidfile",
            ])
            .arg(format!("--config-file={}", config.display()))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(clone_file(&log))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("lab: cannot start dbus-daemon: {e} (apt-get install dbus)")
            });
        self.bus = Some(child);

        let deadline = Instant::now() + BUS_DEADLINE;
        while UnixStream::connect(&socket).is_err() {
            if let Some(status) = self.bus.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "lab: dbus-daemon exited with {status}{}",
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "lab: bus socket did not appear in {BUS_DEADLINE:?}{}",
                    self.diagnostics()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn spawn_firewalld(&self) {
        let out = log_file(&self.path("firewalld.out"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "/bin/sh", "-c"])
            // `ip netns exec` already gave us a private (slave) mount namespace: a private /run
            // there is invisible to the host and to other labs (see the module docs).
            .arg(r#"mount --bind "$0" /run && exec "$@""#)
            .arg(self.path("run"))
            .arg("/usr/bin/python3")
            .arg(&self.install.firewalld)
            .args(["--nofork", "--nopid"]);
        // 0.9.3 has no --log-target; its --log-file alone logs to the file.
        if self.release != Release::Debian11 {
            cmd.args(["--log-target", "file"]);
        }
        cmd.arg("--log-file")
            .arg(self.path("firewalld.log"))
            .arg("--system-config")
            .arg(&self.config_dir)
            .arg("--default-config")
            .arg(&self.default_config_dir);
        // Debug logs are long (~900 lines at start); opt in when chasing a failure.
        if let Some(level) = std::env::var_os("VIRTZONE_LAB_FIREWALLD_DEBUG") {
            cmd.arg(format!("--debug={}", level.to_string_lossy()));
        }
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address);
        if let Some(pp) = &self.python_path {
            cmd.env("PYTHONPATH", pp);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(clone_file(&out))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot start firewalld: {e}"));
        *self.firewalld_child() = Some(child);
    }

    /// `/usr/bin/python3 SCRIPT` in the netns with the lab's PYTHONPATH and a fixed locale.
    fn python_tool(&self, script: &Path) -> Command {
        let mut cmd = self.command("/usr/bin/python3");
        cmd.arg(script);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PYTHON") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LC_ALL", "C.UTF-8");
        if let Some(pp) = &self.python_path {
            cmd.env("PYTHONPATH", pp);
        }
        cmd
    }

    fn property_with_timeout(
        &self,
        path: &str,
        interface: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let out = self
            .busctl()
            .arg("--json=short")
            .arg(format!("--timeout={}", timeout.as_secs().max(1)))
            .args(["get-property", FIREWALLD_NAME, path, interface, name])
            .output()
            .map_err(|e| format!("cannot run busctl: {e}"))?;
        busctl_data(&out)
    }

    /// Polls `state` until `want`. With `fail_fast` (at start), another final state (RUNNING vs
    /// FAILED) panics at once instead of waiting for the deadline.
    fn poll_state(&self, want: &str, deadline: Duration, fail_fast: bool) {
        let start = Instant::now();
        let mut last = String::from("(no answer)");
        loop {
            if let Some(status) = self.firewalld_exit_status() {
                panic!(
                    "lab: firewalld exited with {status} while waiting for state {want} (last: \
                     {last}){}",
                    self.diagnostics()
                );
            }
            let left = deadline.saturating_sub(start.elapsed());
            match self.property_with_timeout(FIREWALLD_PATH, FIREWALLD_IFACE, "state", left) {
                Ok(serde_json::Value::String(state)) => {
                    if state == want {
                        return;
                    }
                    if fail_fast && (state == "RUNNING" || state == "FAILED") {
                        panic!(
                            "lab: firewalld reached state {state}, expected {want}{}",
                            self.diagnostics()
                        );
                    }
                    last = state;
                }
                Ok(other) => last = other.to_string(),
                // Not on the bus yet (ServiceUnknown) or still starting.
                Err(e) => last = e,
            }
            if start.elapsed() > deadline {
                panic!(
                    "lab: firewalld not in state {want} after {deadline:?} (last: {last}){}",
                    self.diagnostics()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// `Some(status)` when the firewalld this lab started has exited.
    fn firewalld_exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.firewalld_child();
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Text appended to panic messages: the lab's names and firewalld's (and the bus's) logs.
    fn diagnostics(&self) -> String {
        let mut s = format!(
            "\n--- lab {} ({:?}, {}, dir {}) ---\n--- firewalld log ---\n{}",
            self.netns,
            self.release,
            self.backend.as_str(),
            self.dir.path().display(),
            self.firewalld_log()
        );
        let bus = fs::read_to_string(self.path("dbus.log")).unwrap_or_default();
        // dbus-daemon always complains that it cannot raise its fd limit: not worth showing.
        let bus: Vec<&str> = bus.lines().filter(|l| !l.contains("fd limit")).collect();
        if !bus.is_empty() {
            let _ = write!(s, "\n--- dbus-daemon log ---\n{}", bus.join("\n"));
        }
        s
    }
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a command succeeded and returns its standard output; the panic shows both streams.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `cmd` with `input` on its standard input and returns its output.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits before reading everything closes the pipe: that is its business.
        let _ = stdin.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"))
}

/// The `virtzone` binary: cargo names it for integration tests; an example (the demo's `lab`) finds it
/// beside its own directory, `target/<profile>/virtzone`.
pub fn virtzone_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_virtzone") {
        return PathBuf::from(path);
    }
    let exe =
        std::env::current_exe().unwrap_or_else(|e| panic!("lab: cannot find own executable: {e}"));
    exe.parent()
        .and_then(Path::parent)
        .map(|profile_dir| profile_dir.join("virtzone"))
        .unwrap_or_else(|| {
            panic!(
                "lab: cannot locate the virtzone binary next to {}",
                exe.display()
            )
        })
}

/// The start of an `sh` script that shows a process the lab as a host's fixed paths: run inside a
/// private mount namespace in the lab's network namespace (`unshare --mount --propagation private`
/// under [`Lab::command`]), it puts an overlay over /etc whose upper layer is `layer` (so writes land
/// there, never in the host's /etc), binds the lab's firewalld config dirs over firewalld's, mounts a
/// tmpfs /run and, with a libvirt lab's `root`, binds its /etc/libvirt and /run/libvirt. `doctor`
/// reads exactly those paths; the Cockpit test serves its page from such a namespace.
pub fn host_view_script(lab: &Lab, libvirt: Option<&Path>, layer: &Path) -> String {
    for d in ["upper", "work"] {
        fs::create_dir_all(layer.join(d))
            .unwrap_or_else(|e| panic!("lab: cannot create {}: {e}", layer.join(d).display()));
    }
    let q = |p: &Path| format!("'{}'", p.display());
    let mut script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={up},workdir={work} /etc\n\
         mount --bind {conf} /etc/firewalld\n\
         mount --bind {default} /usr/lib/firewalld\n\
         mount -t tmpfs tmpfs /run\n",
        up = q(&layer.join("upper")),
        work = q(&layer.join("work")),
        conf = q(&lab.config_dir),
        default = q(&lab.default_config_dir),
    );
    if let Some(root) = libvirt {
        script.push_str(&format!(
            "mount --bind {etc} /etc/libvirt\nmkdir -p /run/libvirt\nmount --bind {run} /run/libvirt\n",
            etc = q(&root.join("etc")),
            run = q(&root.join("run/libvirt")),
        ));
    }
    script
}

/// Where `doctor`'s private /etc layer lives for this lab (kept across runs, like a real /etc).
pub fn doctor_etc_layer(lab: &Lab) -> PathBuf {
    lab.dir().join("doctor-etc")
}

/// Runs `virtzone doctor ARGS` in a private mount namespace inside the lab's network namespace,
/// seeing the host as [`host_view_script`] makes it (so `--fix` writes to /etc land in
/// [`doctor_etc_layer`], never in the host's /etc); `setup` is sh run inside the namespace first.
pub fn doctor_in(
    lab: &Lab,
    libvirt: Option<&Path>,
    setup: &str,
    args: &[&str],
    input: &str,
) -> Output {
    let mut script = host_view_script(lab, libvirt, &doctor_etc_layer(lab));
    script.push_str(setup);
    script.push_str("\nexec \"$@\"\n");
    let mut cmd = lab.command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(virtzone_binary())
    .arg("doctor")
    .args(args)
    .env("VIRTZONE_STATE_DIR", lab.state_dir())
    .env("VIRTZONE_CONFIG", lab.dir().join("virtzone.conf"));
    run_with_input(&mut cmd, input)
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a failed test unwinds.
        if let Some(child) = self.firewalld_child().take() {
            terminate(child, TERM_GRACE);
        }
        // Whatever tests started in the namespace and left behind (e.g. a daemon of the product).
        if self.netns_created {
            kill_netns_processes(&self.netns);
        }
        if let Some(child) = self.bus.take() {
            terminate(child, TERM_GRACE);
        }
        if self.netns_created {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Everything is cleaned up; now the test may still fail on a noisy firewalld log (only when it
        // has not failed already: a second panic would abort).
        let allowed = self
            .errors_allowed
            .lock()
            .map(|g| g.is_some())
            .unwrap_or(true);
        if !thread::panicking() && !allowed {
            let errors = self.firewalld_errors();
            if !errors.is_empty() {
                panic!(
                    "lab {}: firewalld logged ERROR lines (virtzone must never cause them; a test that breaks \
                     firewalld on purpose says so with Lab::allow_firewalld_errors):\n{}",
                    self.netns,
                    errors.join("\n")
                );
            }
        }
        // The TempDir field removes the directory after this.
    }
}

/// The lab bus's config: the standard system bus (policy as in /usr/share/dbus-1/system.conf:
/// everyone may connect, nobody may own names or call methods unless a policy file allows it, root
/// may monitor) minus what needs a system: no `<user>` switch (it runs as root), no fork/pidfile,
/// no syslog, no service activation, no includes of the host's /etc/dbus-1.
fn bus_config(socket: &Path, policy_dir: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <includedir>{policy_dir}</includedir>
</busconfig>
"#,
        socket = xml_escape(&socket.to_string_lossy()),
        policy_dir = xml_escape(&policy_dir.to_string_lossy()),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whether a path relative to a stock-config dir is one of the zone or policy files libvirt's
/// package installs there (`zones/libvirt*.xml`, `policies/libvirt*.xml`). Other `libvirt*` files,
/// such as `services/libvirt.xml`, ship with firewalld itself and stay.
pub fn is_libvirt_zone_or_policy(rel: &Path) -> bool {
    let libvirt = rel
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("libvirt"));
    let tier = rel.parent().and_then(Path::to_str);
    libvirt && matches!(tier, Some("zones" | "policies"))
}

/// Parses `busctl --json=short` output (`{"type":"s","data":"RUNNING"}`) into its `data`.
fn busctl_data(out: &Output) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let mut value: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "bad busctl output {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(value["data"].take())
}

/// Replaces `KEY=…` in a firewalld.conf text (appending it when absent).
fn set_conf_key(conf: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut found = false;
    let mut out = String::new();
    for line in conf.lines() {
        if line.starts_with(&prefix) {
            found = true;
            let _ = writeln!(out, "{key}={value}");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    if !found {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

/// Sets `VERSION` in a copied `firewall/config/__init__.py` and drops that module's byte code
/// (the rest of the copy keeps valid caches because `copy_tree` keeps mtimes).
fn patch_version(package: &Path, version: &str) {
    let init = package.join("config/__init__.py");
    let text = read(&init);
    let mut replaced = 0;
    let patched: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("VERSION = ") {
                replaced += 1;
                format!("VERSION = {version:?}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if replaced != 1 {
        panic!(
            "lab: expected one `VERSION = ` line in {}, found {replaced}",
            init.display()
        );
    }
    write(&init, &(patched.join("\n") + "\n"));
    let _ = fs::remove_dir_all(package.join("config/__pycache__"));
}

/// Removes what SIGKILLed test processes left behind: namespaces `vzlab-<pid>-<n>` (and the
/// processes inside them) and temp dirs `vzlab-<pid>-<n>-*` whose `<pid>` is no longer alive.
/// Labs of live processes are never touched; concurrent cleaners racing on one leftover is fine.
fn remove_stale_labs() {
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((pid, rest)) = lab_owner(&name) {
                if rest.is_empty() && !process_alive(pid) {
                    kill_netns_processes(&name);
                    let _ = Command::new("ip")
                        .args(["netns", "del", &name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((pid, rest)) = lab_owner(&name) {
                if rest.starts_with('-') && !process_alive(pid) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// For `vzlab-<pid>-<n><rest>`: `(pid, rest)`.
fn lab_owner(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("vzlab-")?;
    let (pid, rest) = rest.split_once('-')?;
    let pid: u32 = pid
        .parse()
        .ok()
        .filter(|_| pid.bytes().all(|b| b.is_ascii_digit()))?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    Some((pid, &rest[digits..]))
}

/// Alive means: exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A process a test started, killed and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM, then SIGKILL after `grace`, for every process inside a lab namespace.
pub fn kill_netns_processes(netns: &str) {
    let pids = match Command::new("ip").args(["netns", "pids", netns]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .collect::<Vec<_>>(),
        Err(_) => return,
    };
    if pids.is_empty() {
        return;
    }
    signal(&pids, "TERM");
    let deadline = Instant::now() + TERM_GRACE;
    while pids.iter().any(|&p| process_alive(p)) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    let left: Vec<u32> = pids.into_iter().filter(|&p| process_alive(p)).collect();
    if !left.is_empty() {
        signal(&left, "KILL");
    }
}

fn signal(pids: &[u32], sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM a child, SIGKILL it after `grace`, and reap it.
fn terminate(mut child: Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(&[child.id()], "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a setup command, panicking with its output on failure.
fn run_quiet(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("lab: cannot run {what}: {e} (the lab needs root and iproute2)")
    });
    if !out.status.success() {
        panic!(
            "lab: {what} failed ({}): {} (the lab needs root)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// Copies a directory tree, keeping file mtimes (Python byte-code caches check them), skipping
/// files for which `skip(relative path)` is true.
fn copy_tree(src: &Path, dst: &Path, skip: &dyn Fn(&Path) -> bool) {
    fn walk(src: &Path, dst: &Path, rel: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        fs::create_dir_all(dst.join(rel))?;
        for entry in fs::read_dir(src.join(rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(src, dst, &rel, skip)?;
            } else if !skip(&rel) {
                let from = src.join(&rel);
                let to = dst.join(&rel);
                fs::copy(&from, &to)?;
                let mtime = fs::metadata(&from)?.modified()?;
                fs::File::options()
                    .write(true)
                    .open(&to)?
                    .set_modified(mtime)?;
            }
        }
        Ok(())
    }
    walk(src, dst, Path::new(""), skip).unwrap_or_else(|e| {
        panic!(
            "lab: cannot copy {} to {}: {e}",
            src.display(),
            dst.display()
        )
    });
}

fn copy_file(src: &Path, dst: &Path) {
    fs::copy(src, dst).unwrap_or_else(|e| {
        panic!(
            "lab: cannot copy {} to {}: {e}",
            src.display(),
            dst.display()
        )
    });
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("lab: cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("lab: cannot create {}: {e}", parent.display()));
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("lab: cannot write {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("lab: cannot chmod {}: {e}", path.display()));
}

/// Opens a log file for appending (logs accumulate over firewalld restarts).
fn log_file(path: &Path) -> fs::File {
    fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("lab: cannot open {}: {e}", path.display()))
}

fn clone_file(file: &fs::File) -> fs::File {
    file.try_clone()
        .unwrap_or_else(|e| panic!("lab: cannot dup log file: {e}"))
}
