//! What the daemon asks of firewalld when firewalld reloads: the D-Bus calls `virtzone serve` sends
//! in reaction to one `firewall-cmd --reload`, counted on the real bus with `dbus-monitor`, with the
//! time from its first to its last call and the calls by method.
//!
//! Cells: firewalld 1.3.3 and 2.5.2 (nftables), with 5 bindings and 1 forward (the figure issue 19
//! measured: 124 calls on 1.3.3) and with 200 bindings and 200 forwards. The forwards' network is
//! recorded through virtzone's network hook, so no libvirtd runs; every call the daemon makes is
//! the daemon's own. firewalld's own time per call is the cost: it is single-threaded Python.
//!
//! Run as root: `cargo bench --bench reaction` (or, a debug build, `cargo test --locked --bench
//! reaction`; `REACTION_SMALL=1` measures the 5 + 1 cells only).

// The test suite's lab; this program uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_input, virtzone_binary, Backend, Lab, LabConfig, Release};

const DAEMON: &str = "org.virtzone.VirtZone1";
/// How long the daemon must stay silent on the bus before its reaction counts as over.
const QUIET: Duration = Duration::from_secs(3);

/// Runs a command to completion, panicking with its stderr on failure.
fn must(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One method call seen on the bus.
struct Call {
    /// `time=` of dbus-monitor, in seconds.
    time: f64,
    sender: String,
    member: String,
}

/// `KEY=value` of one dbus-monitor header line.
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(|v| v.trim_end_matches(';').to_string())
}

/// The method calls in dbus-monitor's output.
fn calls(monitor_log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(monitor_log).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("method call "))
        .filter_map(|l| {
            Some(Call {
                time: field(l, "time=")?.parse().ok()?,
                sender: field(l, "sender=")?,
                member: field(l, "member=")?,
            })
        })
        .collect()
}

/// How many method calls of `senders` have no reply (or error) yet: a reaction is not over while
/// firewalld still works on the daemon's calls (under load it may take seconds to answer).
fn unanswered(monitor_log: &Path, senders: &BTreeMap<String, bool>) -> usize {
    let text = std::fs::read_to_string(monitor_log).unwrap_or_default();
    let ours = |who: Option<String>| who.is_some_and(|w| senders.get(&w) == Some(&true));
    let mut open = BTreeSet::new();
    for l in text.lines() {
        if l.starts_with("method call ") && ours(field(l, "sender=")) {
            if let Some(serial) = field(l, "serial=") {
                open.insert((field(l, "sender="), serial));
            }
        } else if (l.starts_with("method return ") || l.starts_with("error "))
            && ours(field(l, "destination="))
        {
            if let Some(serial) = field(l, "reply_serial=") {
                open.remove(&(field(l, "destination="), serial));
            }
        }
    }
    open.len()
}

struct Cell {
    lab: Lab,
    state: PathBuf,
}

impl Cell {
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.lab.command(program);
        c.env("VIRTZONE_STATE_DIR", &self.state);
        c
    }

    fn virtzone(&self, args: &[&str]) -> String {
        must(self.cmd(virtzone_binary()).args(args))
    }

    /// The process id behind a unique bus name.
    fn pid_of(&self, unique: &str) -> Option<u32> {
        let out = self
            .lab
            .busctl()
            .args([
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetConnectionUnixProcessID",
                "s",
                unique,
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

/// Sets up one lab with `bindings` bound bridges and `forwards` forwards, starts the daemon, reloads
/// firewalld once and returns the daemon's calls in reaction.
fn measure(
    release: Release,
    bindings: usize,
    forwards: usize,
) -> (usize, Duration, BTreeMap<String, usize>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lab = Lab::start(LabConfig {
        bus_policies: vec![repo.join("dbus/org.virtzone.VirtZone1.conf")],
        ..LabConfig::new(release, Backend::Nftables)
    });
    let state = lab.dir().join("state");
    let cell = Cell { lab, state };
    cell.virtzone(&["install"]);
    // The network of the forwards, as libvirt's hook records it (one running NAT network).
    let hook_data = "<hookData><network><name>bench</name><forward mode='nat'/>\
                     <bridge name='virbr90'/><ip address='192.0.2.1' netmask='255.255.255.0'/>\
                     </network></hookData>";
    let mut hook = cell.cmd(virtzone_binary());
    hook.args(["hook", "network", "bench", "started", "begin", "-"]);
    let out = run_with_input(&mut hook, hook_data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The network's own binding counts as one of the bindings.
    for i in 1..bindings {
        cell.virtzone(&["attach", &format!("vzb{i}"), "--zone", "libvirt"]);
    }
    for i in 0..forwards {
        let guest = format!("192.0.2.{}", 10 + i % 200);
        let ports = format!("tcp/{}:{}", 10000 + i, 80 + i / 200);
        cell.virtzone(&[
            "forward",
            "add",
            "--network",
            "bench",
            "--guest",
            &guest,
            &ports,
        ]);
    }

    let log = std::fs::File::create(cell.lab.dir().join("daemon.log")).expect("log");
    let mut daemon = cell
        .cmd(virtzone_binary())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve");
    wait("the daemon owns its name", Duration::from_secs(60), || {
        cell.lab.name_has_owner(DAEMON)
    });
    let monitor_log = cell.lab.dir().join("monitor.log");
    let mut monitor = start_monitor(&cell, &monitor_log);
    let mut seen = Seen {
        log: monitor_log,
        daemon_pid: daemon.id(),
        senders: BTreeMap::new(),
    };
    // Let the daemon's start-up work finish: its calls are not part of the reaction.
    seen.quiet(&cell);
    let before = seen.daemon_calls(&cell).len();

    must(cell.cmd("firewall-cmd").arg("--reload"));
    seen.quiet(&cell);
    let reaction: Vec<Call> = seen.daemon_calls(&cell).split_off(before);
    let _ = monitor.kill();
    let _ = monitor.wait();
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    // `REACTION_LOGS=DIR`: keep the daemon's log of each cell (run with `VIRTZONE_LOG=debug` to
    // see each forward check).
    if let Some(dir) = std::env::var_os("REACTION_LOGS") {
        let name = format!("daemon-{}-{bindings}.log", release.version());
        let _ = std::fs::copy(
            cell.lab.dir().join("daemon.log"),
            Path::new(&dir).join(name),
        );
    }

    let span = match (reaction.first(), reaction.last()) {
        (Some(a), Some(b)) => Duration::from_secs_f64((b.time - a.time).max(0.0)),
        _ => Duration::ZERO,
    };
    let mut by_member = BTreeMap::new();
    for c in &reaction {
        *by_member.entry(c.member.clone()).or_insert(0) += 1;
    }
    (reaction.len(), span, by_member)
}

fn start_monitor(cell: &Cell, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("monitor log");
    let child = Command::new("dbus-monitor")
        .args(["--address", &cell.lab.bus_address, "--monitor"])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor (Debian package dbus)");
    // It is listening once it has printed its own NameAcquired.
    wait("dbus-monitor listens", Duration::from_secs(10), || {
        std::fs::read_to_string(log)
            .is_ok_and(|t| t.contains("NameLost") || t.contains("NameAcquired"))
    });
    child
}

/// What dbus-monitor saw, and which senders are the daemon's (it has two connections).
struct Seen {
    log: PathBuf,
    daemon_pid: u32,
    senders: BTreeMap<String, bool>,
}

impl Seen {
    /// The daemon's method calls so far.
    fn daemon_calls(&mut self, cell: &Cell) -> Vec<Call> {
        let (senders, pid) = (&mut self.senders, self.daemon_pid);
        calls(&self.log)
            .into_iter()
            .filter(|c| {
                *senders
                    .entry(c.sender.clone())
                    .or_insert_with(|| cell.pid_of(&c.sender) == Some(pid))
            })
            .collect()
    }

    /// Waits until the daemon has sent nothing for [`QUIET`], every call of its answered.
    fn quiet(&mut self, cell: &Cell) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = usize::MAX;
        let mut since = Instant::now();
        loop {
            let n = self.daemon_calls(cell).len();
            if n != seen || unanswered(&self.log, &self.senders) > 0 {
                seen = n;
                since = Instant::now();
            } else if since.elapsed() >= QUIET {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon never went quiet");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn main() {
    println!("| firewalld | bindings | forwards | daemon's D-Bus calls after one reload | first→last call | calls by method |");
    println!("|---|---|---|---|---|---|");
    // `REACTION_SMALL=1`: the 5 + 1 cells only (minutes less, for iterating on the figure).
    let small = std::env::var_os("REACTION_SMALL").is_some();
    for release in [Release::Debian12, Release::Sid] {
        for (bindings, forwards) in [(5, 1), (200, 200)] {
            if small && bindings > 5 {
                continue;
            }
            let (n, span, by_member) = measure(release, bindings, forwards);
            let members: BTreeSet<(usize, String)> =
                by_member.into_iter().map(|(m, c)| (c, m)).collect();
            let top: Vec<String> = members
                .iter()
                .rev()
                .take(6)
                .map(|(c, m)| format!("{m} {c}"))
                .collect();
            println!(
                "| {} | {bindings} | {forwards} | {n} | {:.0} ms | {} |",
                release.version(),
                span.as_secs_f64() * 1e3,
                top.join(", ")
            );
        }
    }
}
