//! How long a guest loses DHCP after `firewall-cmd --reload` and after `systemctl restart firewalld`,
//! with virtzone's daemon beside libvirt's own re-binding, and with libvirt's re-binding alone.
//!
//! Everything runs as deployed, in the booted-system lab (tests/common/booted.rs): Debian 12 booted
//! with systemd as PID 1, this tree's .deb installed with apt, firewalld 1.3.3 (nftables backend),
//! libvirtd 9.0.0 as a service, 1 and then 20 NAT networks started with `virsh`. A guest network
//! namespace on the first network's bridge sends a DHCPDISCOVER every 100 ms
//! (benches/dhcp_probe.py) and notes which got their DHCPOFFER. The window of one disruption runs from
//! the first unanswered request after the trigger to the next answered one (0 when none was lost).
//! "libvirt alone" is the same system with virtzone.service stopped and masked. libvirtd runs without
//! Debian's idle timeout (see `main`).
//!
//! Run as root: `cargo bench --bench dhcp_window` (`VIRTZONE_BENCH_REPS`, default 3, runs per figure;
//! the median is reported beside the largest).

#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::booted::{deb_named, debs, Booted};

/// Requests sent per second by the guest: one every PERIOD.
const PERIOD: f64 = 0.1;
/// How long the probe runs after the trigger: longer windows are reported as "more than" this.
const AFTER: f64 = 15.0;
/// Probe time before the trigger (a baseline: DHCP must be answered then).
const BEFORE: f64 = 1.0;

/// One disruption's window: `Some(seconds)`, or `None` when DHCP did not come back within AFTER.
type Window = Option<f64>;

/// A NAT network. dnsmasq runs with `no-ping`: before offering an address it otherwise pings it
/// and waits 3 s for an answer, again whenever its memory of that check expires (about every 30 s
/// for a client that never takes its lease, like the probe): a 3 s gap in offers that has nothing
/// to do with firewalld and, falling into a measurement, looked like a 3 s loss window.
fn network_xml(i: usize) -> String {
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
         <name>vzn{i}</name><forward mode='nat'/><bridge name='virbr1{i:02}'/>\
         <ip address='10.77.{i}.1' netmask='255.255.255.0'><dhcp><range start='10.77.{i}.10' \
         end='10.77.{i}.200'/></dhcp></ip>\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>"
    )
}

/// Starts networks `from..to`.
fn start_networks(b: &Booted, from: usize, to: usize) {
    for i in from..to {
        let xml = b.put(&format!("vzn{i}.xml"), &network_xml(i));
        b.sh_ok(&format!(
            "virsh -q net-define {xml} && virsh -q net-start vzn{i}"
        ));
    }
}

/// Parses the probe's lines into (send time, answered).
fn parse(out: &str) -> Vec<(f64, bool)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()? == "1"))
        })
        .collect()
}

/// The window after `trigger_at`: first unanswered request to the next answered one.
fn window(samples: &[(f64, bool)], trigger_at: f64) -> Window {
    let first_lost = samples
        .iter()
        .position(|&(t, ok)| t >= trigger_at - PERIOD && !ok);
    let Some(i) = first_lost else {
        return Some(0.0);
    };
    let lost_at = samples[i].0;
    samples[i..]
        .iter()
        .find(|&&(_, ok)| ok)
        .map(|&(t, _)| t - lost_at)
}

/// Waits until the guest gets answers again (after the previous disruption).
fn wait_dhcp(b: &Booted) {
    let start = Instant::now();
    loop {
        let out = b.sh_out("ip netns exec guest python3 /mnt/dhcp_probe.py eth0 1");
        let samples = parse(&out);
        if !samples.is_empty() && samples.iter().all(|&(_, ok)| ok) {
            return;
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!(
                "the guest's DHCP did not come back within 120 s:\n{out}\n{}",
                b.sh_out(
                    "systemctl is-system-running; systemctl --failed --no-pager; \
                     firewall-cmd --get-active-zones; virsh net-list; bridge link; \
                     journalctl -b --no-pager -n 400 | grep -v ' kernel: ' | tail -n 40"
                )
            );
        }
    }
}

/// One disruption, measured; `None` when a request went unanswered before the trigger (something
/// else disturbed the guest: the run does not count).
fn measure_once(b: &Booted, trigger: &str) -> Option<Window> {
    wait_dhcp(b);
    // The probe starts first; the trigger follows BEFORE seconds later (a fixed lead-in of the
    // measurement, whose samples must all be answered).
    let out = b.sh_ok(&format!(
        "ip netns exec guest python3 /mnt/dhcp_probe.py eth0 {} > /tmp/probe.txt & \
         sleep {BEFORE}; date +%s.%N > /tmp/trigger.txt; {trigger} >/dev/null; wait; \
         cat /tmp/trigger.txt /tmp/probe.txt",
        BEFORE + AFTER
    ));
    let mut lines = out.lines();
    let trigger_at: f64 = lines.next().unwrap().trim().parse().unwrap();
    let samples = parse(&lines.collect::<Vec<_>>().join("\n"));
    samples
        .iter()
        .filter(|&&(t, _)| t < trigger_at - PERIOD)
        .all(|&(_, ok)| ok)
        .then(|| window(&samples, trigger_at))
}

/// One disruption, measured (runs disturbed before the trigger are repeated).
fn measure(b: &Booted, trigger: &str) -> Window {
    for _ in 0..5 {
        if let Some(w) = measure_once(b, trigger) {
            return w;
        }
        eprintln!("(a request before the trigger went unanswered: measuring again)");
    }
    panic!("the guest's DHCP kept failing before the trigger");
}

fn show(w: Window) -> String {
    match w {
        Some(s) => format!("{:.0} ms", s * 1e3),
        None => format!("> {AFTER:.0} s"),
    }
}

/// Median and largest of the runs (a window that never closed counts as the largest).
fn summary(mut runs: Vec<Window>) -> (Window, Window) {
    runs.sort_by(|a, b| {
        a.unwrap_or(f64::INFINITY)
            .total_cmp(&b.unwrap_or(f64::INFINITY))
    });
    (runs[runs.len() / 2], runs[runs.len() - 1])
}

fn main() {
    let reps: usize = std::env::var("VIRTZONE_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let started = Instant::now();
    let b = Booted::boot();
    let deb = b.copy_in(&deb_named(debs(), "virtzone_"));
    b.sh_ok(&format!("apt-get install -y {deb} >/dev/null 2>&1"));
    // Debian's libvirtd exits after 120 s without running guests (`--timeout 120`), and then
    // nothing of libvirt re-binds a bridge after a firewalld reload: keep it running, as running
    // guests would, so that "libvirt alone" is libvirt's best case.
    b.sh_ok("echo 'LIBVIRTD_ARGS=\"\"' >> /etc/default/libvirtd && systemctl restart libvirtd");
    b.put("dhcp_probe.py", include_str!("dhcp_probe.py"));
    start_networks(&b, 0, 1);
    b.sh_ok(
        "ip netns add guest && ip link add vg0 type veth peer name eth0 netns guest \
         && ip link set vg0 master virbr100 up && ip -n guest link set lo up \
         && ip -n guest link set eth0 up",
    );
    let versions = b.sh_ok(
        "dpkg-query -W -f '${Package} ${Version}\\n' firewalld libvirt-daemon-system virtzone",
    );

    let triggers = [
        ("firewall-cmd --reload", "firewall-cmd --reload"),
        ("systemctl restart firewalld", "systemctl restart firewalld"),
    ];
    let mut rows = Vec::new();
    let mut started_networks = 1;
    for n in [1usize, 20] {
        start_networks(&b, started_networks, n);
        started_networks = n;
        for (mode, setup) in [
            (
                "virtzone + libvirt",
                "systemctl unmask virtzone && systemctl start virtzone",
            ),
            (
                "libvirt alone",
                "systemctl stop virtzone && systemctl mask virtzone",
            ),
        ] {
            b.sh_ok(&format!("{setup} 2>/dev/null"));
            for (name, trigger) in triggers {
                let runs: Vec<Window> = (0..reps).map(|_| measure(&b, trigger)).collect();
                eprintln!(
                    "{n} network(s), {name}, {mode}: {}",
                    runs.iter().map(|w| show(*w)).collect::<Vec<_>>().join(", ")
                );
                rows.push((n, name, mode, summary(runs)));
            }
        }
    }
    b.sh_ok("systemctl unmask virtzone");

    println!("DHCP loss window of a guest (request every 100 ms), median of {reps} (largest):");
    println!("{}", versions.trim_end());
    println!("| networks | disruption | virtzone + libvirt | libvirt alone | ratio |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 20] {
        for (name, _) in triggers {
            let get = |mode: &str| {
                rows.iter()
                    .find(|r| r.0 == n && r.1 == name && r.2 == mode)
                    .map(|r| r.3)
                    .unwrap()
            };
            let (vz, vz_max) = get("virtzone + libvirt");
            let (lv, lv_max) = get("libvirt alone");
            let ratio = match (vz, lv) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                (Some(_), None) => "< 1/…".to_string(),
                _ => "–".to_string(),
            };
            println!(
                "| {n} | {name} | {} ({}) | {} ({}) | {ratio} |",
                show(vz),
                show(vz_max),
                show(lv),
                show(lv_max)
            );
        }
    }
    println!(
        "(boot {:?}; whole benchmark {:?})",
        b.boot_time,
        started.elapsed()
    );
}
