//! virtzone's benchmarks, all against one private firewalld lab (its own bus and network namespace),
//! each figure beside the baseline it is compared with, measured in the same run:
//!
//! - `virtzone check` (a whole process) beside `firewall-cmd --get-zones`, median of many runs;
//! - attaching N = 200 bridges one process at a time: `virtzone attach` (directly, and through the
//!   daemon) beside a `firewall-cmd` loop and a raw `busctl changeZoneOfInterface` loop;
//! - restoring N = 50 and 200 bindings after a firewalld restart: from firewalld answering in state
//!   RUNNING to the daemon's reconcile completing, beside the floor of N sequential raw
//!   `changeZoneOfInterface` calls (a `busctl` loop);
//! - the daemon's resident memory while idle with 200 bindings.
//!
//! Run as root: `cargo bench --bench virtzone` (or `scripts/bench.sh`).

// The test suite's lab; this program uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{virtzone_binary, Lab, LabConfig};

const DAEMON: &str = "org.virtzone.VirtZone1";
const DAEMON_PATH: &str = "/org/virtzone/VirtZone1";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs a command to completion, panicking with its stderr on failure.
fn must(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Bench {
    lab: Lab,
    state: PathBuf,
}

impl Bench {
    /// A command run directly against the lab's bus (no `ip netns exec`, whose cost is not ours).
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.lab.bus_address)
            .env("VIRTZONE_STATE_DIR", &self.state);
        c
    }

    fn busctl(&self) -> Command {
        let mut c = Command::new("busctl");
        c.arg(format!("--address={}", self.lab.bus_address));
        c
    }

    fn time_runs(&self, runs: usize, mut make: impl FnMut() -> Command) -> Duration {
        let times = (0..runs)
            .map(|_| {
                let mut c = make();
                let start = Instant::now();
                must(&mut c);
                start.elapsed()
            })
            .collect();
        median(times)
    }

    /// Drops every runtime binding and virtzone's record.
    fn reset(&self) {
        must(self.cmd("firewall-cmd").arg("--reload"));
        let _ = std::fs::remove_file(self.state.join("bindings.json"));
    }

    fn bound(&self) -> usize {
        self.lab.interface_zones().len()
    }

    fn daemon_property(&self, name: &str) -> u64 {
        let out = self
            .busctl()
            .args([
                "--json=short",
                "get-property",
                DAEMON,
                DAEMON_PATH,
                DAEMON,
                name,
            ])
            .output()
            .expect("busctl");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["data"].as_u64())
            .unwrap_or(0)
    }

    fn start_daemon(&self) -> Child {
        let child = self
            .cmd(virtzone_binary())
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        self.wait("the daemon owns its name", || {
            self.lab.name_has_owner(DAEMON)
        });
        child
    }

    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn bridges(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("vzb{i}")).collect()
}

fn main() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let mut files = Vec::new();
    for (name, xml) in virtzone::zone::SHIPPED_ZONES {
        files.push((PathBuf::from(format!("zones/{name}.xml")), xml.to_string()));
    }
    for (name, xml) in virtzone::zone::SHIPPED_POLICIES {
        files.push((
            PathBuf::from(format!("policies/{name}.xml")),
            xml.to_string(),
        ));
    }
    let lab = Lab::start(LabConfig {
        bus_policies: vec![policy],
        files,
        ..LabConfig::default()
    });
    let state = lab.dir().join("state");
    let mut b = Bench { lab, state };
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // 1. The pre-check, as libvirt's hook runs it: a whole process.
    let check = b.time_runs(41, || {
        let mut c = b.cmd(virtzone_binary());
        c.args(["check", "--bridge", "virbr0"]);
        c
    });
    let fwcmd = b.time_runs(21, || {
        let mut c = b.cmd("firewall-cmd");
        c.arg("--get-zones");
        c
    });
    rows.push((
        "virtzone check (whole process, median of 41)".into(),
        ms(check),
        format!("firewall-cmd --get-zones {}", ms(fwcmd)),
        format!("1/{:.0}", fwcmd.as_secs_f64() / check.as_secs_f64()),
    ));

    // 2. Attaching 200 bridges, one process each.
    let n = 200;
    let names = bridges(n);
    let time_loop = |b: &Bench, make: &dyn Fn(&str) -> Command| {
        b.reset();
        let start = Instant::now();
        for br in &names {
            must(&mut make(br));
        }
        let t = start.elapsed();
        assert_eq!(b.bound(), n);
        t
    };
    let raw = time_loop(&b, &|br| {
        let mut c = b.busctl();
        c.args([
            "call",
            common::FIREWALLD_NAME,
            common::FIREWALLD_PATH,
            "org.fedoraproject.FirewallD1.zone",
            "changeZoneOfInterface",
            "ss",
            "libvirt",
            br,
        ]);
        c
    });
    let direct = time_loop(&b, &|br| {
        let mut c = b.cmd(virtzone_binary());
        c.args(["attach", br]);
        c
    });
    let daemon = b.start_daemon();
    let through = time_loop(&b, &|br| {
        let mut c = b.cmd(virtzone_binary());
        c.args(["attach", br]);
        c
    });
    stop(daemon);
    let fw_loop = time_loop(&b, &|br| {
        let mut c = b.cmd("firewall-cmd");
        c.args(["--zone=libvirt", &format!("--change-interface={br}")]);
        c
    });
    let ratio =
        |x: Duration, base: Duration| format!("{:.2}x", x.as_secs_f64() / base.as_secs_f64());
    rows.push((
        format!("virtzone attach x{n}, direct"),
        ms(direct),
        format!("busctl loop {}", ms(raw)),
        ratio(direct, raw),
    ));
    rows.push((
        format!("virtzone attach x{n}, through the daemon"),
        ms(through),
        format!("busctl loop {}", ms(raw)),
        ratio(through, raw),
    ));
    rows.push((
        format!("virtzone attach x{n}, direct"),
        ms(direct),
        format!("firewall-cmd loop {}", ms(fw_loop)),
        ratio(direct, fw_loop),
    ));

    // 3. Restoring N bindings after a firewalld restart, beside N sequential raw calls.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rss_kib = 0;
    for n in [50usize, 200] {
        b.reset();
        let names = bridges(n);
        let daemon = b.start_daemon();
        for chunk in names.chunks(50) {
            let children: Vec<Child> = chunk
                .iter()
                .map(|br| {
                    b.busctl()
                        .args([
                            "call",
                            DAEMON,
                            DAEMON_PATH,
                            DAEMON,
                            "Attach",
                            "ss",
                            br,
                            "libvirt",
                        ])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("busctl")
                })
                .collect();
            for mut c in children {
                assert!(c.wait().expect("wait").success());
            }
        }
        assert_eq!(b.bound(), n);
        let mut restores = Vec::new();
        for _ in 0..3 {
            b.lab.stop_firewalld();
            let before = b.daemon_property("ReconcileCount");
            b.lab.start_firewalld_expecting_or_not(None);
            // RUNNING is when firewalld first answers `state` so (before 2.4.0 calls queue behind its
            // load, so the first answer already comes from the loaded firewalld).
            let t0 = rt.block_on(async {
                let conn = zbus::connection::Builder::address(b.lab.bus_address.as_str())
                    .build()
                    .await
                    .expect("bus");
                let fw = virtzone::firewalld::Firewalld::from_connection(conn);
                loop {
                    if let Ok(virtzone::firewalld::State::Running) = fw.state().await {
                        return now_usec();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            b.wait("the daemon's reconcile", || {
                b.daemon_property("ReconcileCount") > before
            });
            let t1 = b.daemon_property("LastReconcile");
            assert_eq!(b.bound(), n, "all {n} bindings restored");
            restores.push(Duration::from_micros(t1.saturating_sub(t0)));
        }
        if n == 200 {
            std::thread::sleep(Duration::from_secs(1));
            let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id()))
                .unwrap_or_default();
            rss_kib = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        stop(daemon);
        let mut floors = Vec::new();
        for _ in 0..3 {
            b.reset();
            let start = Instant::now();
            for br in &names {
                must(b.busctl().args([
                    "call",
                    common::FIREWALLD_NAME,
                    common::FIREWALLD_PATH,
                    "org.fedoraproject.FirewallD1.zone",
                    "changeZoneOfInterface",
                    "ss",
                    "libvirt",
                    br,
                ]));
            }
            floors.push(start.elapsed());
        }
        let (restore, floor) = (median(restores), median(floors));
        rows.push((
            format!("restore {n} bindings after a restart (median of 3)"),
            ms(restore),
            format!("busctl loop {}", ms(floor)),
            ratio(restore, floor),
        ));
    }
    rows.push((
        "daemon idle RSS with 200 bindings".into(),
        format!("{:.1} MiB", rss_kib as f64 / 1024.0),
        "target 10 MiB".into(),
        format!("{:.2}x", rss_kib as f64 / 10240.0),
    ));

    let machine = format!(
        "{} cores, firewalld {} (nftables backend), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        b.lab.version(),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    println!("\nvirtzone benchmarks: {machine}\n");
    println!("| measurement | virtzone | baseline | ratio |");
    println!("|---|---|---|---|");
    for (what, ours, base, ratio) in rows {
        println!("| {what} | {ours} | {base} | {ratio} |");
    }
}
