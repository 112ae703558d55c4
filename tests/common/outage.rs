//! Outage probes (issue #21): the three paths a NAT guest depends on, probed every 20 ms while
//! firewalld reloads and restarts, and the runs of failed probes they saw.
//!
//! - `dns`: a DNS query from the guest to libvirt's dnsmasq on the bridge address (guest → host);
//! - `out`: a new TCP connection from the guest to an upstream server (a new conntrack entry each,
//!   so each one needs libvirt's masquerade: the upstream has no route back to the guest's subnet);
//! - `fwd`: a new TCP connection from upstream to the host's address, through a `virtzone forward`
//!   to the guest.
//!
//! Each probe runs in its own thread so a lost packet does not delay the next probe; a probe fails
//! when no answer came within [`TIMEOUT`] (below TCP's first SYN retransmission at 1 s, so a
//! retransmitted SYN never passes for a working path). The probers stop when their standard input
//! closes and then print one line per probe. Used by `benches/outage.rs` and `tests/outage.rs`.

use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds between probes of one path.
pub const PERIOD: f64 = 0.02;
/// Seconds a probe waits for its answer.
pub const TIMEOUT: f64 = 0.5;

/// The prober: `python3 -c PROBER PERIOD TIMEOUT SPEC…`, each SPEC `dns:NAME:ADDR` or
/// `tcp:NAME:ADDR:PORT`; prints `NAME SEND_TIME 1|0` per probe after standard input closes.
pub const PROBER: &str = r#"
import socket, sys, threading, time
period, timeout = float(sys.argv[1]), float(sys.argv[2])
specs = [a.split(':') for a in sys.argv[3:]]
results, lock, stop = [], threading.Lock(), threading.Event()
QUERY = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x03lab\x00\x00\x01\x00\x01'
def dns(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(QUERY, (addr, 53))
        return len(s.recv(512)) > 0
    finally:
        s.close()
def tcp(addr, port):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, int(port)))
        return len(s.recv(64)) > 0
    finally:
        s.close()
def one(spec, sent):
    try:
        ok = dns(spec[2]) if spec[0] == 'dns' else tcp(spec[2], spec[3])
    except OSError:
        ok = False
    with lock:
        results.append((spec[1], sent, ok))
def stdin_closed():
    sys.stdin.read()
    stop.set()
threading.Thread(target=stdin_closed, daemon=True).start()
threads, start, k = [], time.time(), 0
while not stop.is_set():
    due = start + k * period
    now = time.time()
    if due > now:
        time.sleep(due - now)
    for spec in specs:
        t = threading.Thread(target=one, args=(spec, due))
        t.start()
        threads.append(t)
    threads = [t for t in threads if t.is_alive()]
    k += 1
for t in threads:
    t.join()
for name, sent, ok in sorted(results, key=lambda r: r[1]):
    print(name, '%.3f' % sent, 1 if ok else 0)
"#;

/// The upstream server: answers every connection on `PORT` (its one argument) with `up` and the
/// peer's address (after NAT: the host's upstream address).
pub const UPSTREAM_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(512)
while True:
    c, a = s.accept()
    try:
        c.sendall(('up %s\n' % a[0]).encode())
    except OSError:
        pass
    c.close()
"#;

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The path (`dns`, `out`, `fwd`).
    pub path: String,
    /// When it was sent (seconds since the epoch).
    pub sent: f64,
    /// Whether it was answered in time.
    pub ok: bool,
}

/// A run of consecutive failed probes of one path.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRun {
    /// When its first probe was sent (seconds since the epoch).
    pub from: f64,
    /// How many probes failed in a row.
    pub probes: usize,
}

impl DeadRun {
    /// Its length in milliseconds (probes × period).
    pub fn ms(&self) -> f64 {
        self.probes as f64 * PERIOD * 1e3
    }
}

/// Running probers, stopped (and their samples read) by [`Probers::stop`]; killed on drop.
pub struct Probers {
    children: Vec<Child>,
}

/// Starts a prober with `python3` (a command running `/usr/bin/python3` in the probing namespace)
/// for `specs`.
pub fn prober(mut python3: Command, specs: &[String]) -> Child {
    python3
        .args(["-c", PROBER, &PERIOD.to_string(), &TIMEOUT.to_string()])
        .args(specs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the prober")
}

impl Probers {
    /// Runs the given probers (see [`prober`]).
    pub fn start(children: Vec<Child>) -> Probers {
        Probers { children }
    }

    /// Stops every prober and returns all samples, oldest first.
    pub fn stop(mut self) -> Vec<Sample> {
        let mut samples = Vec::new();
        for child in std::mem::take(&mut self.children) {
            let mut child = child;
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("prober output");
            samples.extend(parse(&String::from_utf8_lossy(&out.stdout)));
        }
        samples.sort_by(|a, b| a.sent.total_cmp(&b.sent));
        samples
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parses the probers' lines.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(Sample {
                path: it.next()?.to_string(),
                sent: it.next()?.parse().ok()?,
                ok: it.next()? == "1",
            })
        })
        .collect()
}

/// The runs of failed probes of `path` in `samples` (sorted by send time).
pub fn dead_runs(samples: &[Sample], path: &str) -> Vec<DeadRun> {
    let mut runs: Vec<DeadRun> = Vec::new();
    let mut current: Option<DeadRun> = None;
    for s in samples.iter().filter(|s| s.path == path) {
        match (&mut current, s.ok) {
            (Some(run), false) => run.probes += 1,
            (None, false) => {
                current = Some(DeadRun {
                    from: s.sent,
                    probes: 1,
                })
            }
            (Some(_), true) => runs.extend(current.take()),
            (None, true) => {}
        }
    }
    runs.extend(current);
    runs
}

/// The longest run's length in probes (0 when none failed).
pub fn longest(runs: &[DeadRun]) -> usize {
    runs.iter().map(|r| r.probes).max().unwrap_or(0)
}

/// How many probes of `path` there were and how many succeeded.
pub fn counts(samples: &[Sample], path: &str) -> (usize, usize) {
    let of: Vec<&Sample> = samples.iter().filter(|s| s.path == path).collect();
    (of.len(), of.iter().filter(|s| s.ok).count())
}

/// Now, in seconds since the epoch (the probers' clock).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The runs of `path`, one line: each run as `+T s: N ms` relative to the latest event in
/// `events` (name, time) at or before it.
pub fn describe(runs: &[DeadRun], events: &[(String, f64)]) -> String {
    if runs.is_empty() {
        return "none".into();
    }
    runs.iter()
        .map(|r| {
            let ev = events.iter().rev().find(|(_, t)| *t <= r.from + PERIOD);
            match ev {
                Some((name, t)) => format!("{:.0} ms at {name}+{:.2}s", r.ms(), r.from - t),
                None => format!("{:.0} ms", r.ms()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts a rule counting packets from `subnet` at the top of `INPUT`; `iptables` runs iptables
/// in the namespace that receives them (upstream: a packet from a guest's subnet there left the
/// host un-NATed).
pub fn count_from(mut iptables: Command, subnet: &str) {
    let out = iptables
        .args(["-w", "-I", "INPUT", "-s", subnet])
        .output()
        .expect("iptables");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The packets counted by [`count_from`]'s rule.
pub fn counted_from(mut iptables: Command, subnet: &str) -> u64 {
    let out = iptables
        .args(["-w", "-L", "INPUT", "-v", "-x", "-n"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(subnet))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The first reload (events `reloadN`, in order, each followed by the next event; `calls` the
/// reload calls' durations) after which `path`'s longest dead run outlasted the reload call by
/// more than two probes: `(event, run ms, call ms)`.
pub fn reload_overrun(
    samples: &[Sample],
    path: &str,
    events: &[(String, f64)],
    calls: &[std::time::Duration],
) -> Option<(String, f64, f64)> {
    let runs = dead_runs(samples, path);
    let reloads = events.windows(2).filter(|w| w[0].0.starts_with("reload"));
    reloads.zip(calls).find_map(|(w, call)| {
        let longest = runs
            .iter()
            .filter(|r| r.from >= w[0].1 - PERIOD && r.from < w[1].1)
            .map(DeadRun::ms)
            .fold(0.0, f64::max);
        let call = call.as_secs_f64() * 1e3;
        (longest > call + 2.0 * PERIOD * 1e3).then(|| (w[0].0.clone(), longest, call))
    })
}
