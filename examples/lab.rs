//! Runs a command inside a private firewalld lab: its own D-Bus system bus and a real firewalld in its
//! own network namespace, torn down afterwards. Used by `scripts/demo.sh` and `scripts/bench.sh`.
//!
//! ```text
//! lab [--backend nftables|iptables] [--release debian12|debian13] [--reported-version V]
//!     [--no-firewalld] [--bus-policy FILE] -- COMMAND [ARGS…]
//! ```
//! COMMAND runs inside the lab's namespace with `DBUS_SYSTEM_BUS_ADDRESS` set to the lab's bus, and
//! `LAB_DIR`, `LAB_CONFIG_DIR` (firewalld's /etc), `LAB_NETNS` and `LAB_FIREWALLD_PID` exported.
//! The example's exit status is COMMAND's.

// The test suite's lab; this program uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;

use common::{Backend, Lab, LabConfig, Release};

fn usage(msg: &str) -> ExitCode {
    eprintln!("lab: {msg}");
    eprintln!("usage: lab [--backend nftables|iptables] [--release debian12|debian13] [--reported-version V] [--no-firewalld] [--bus-policy FILE] -- COMMAND [ARGS...]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut cfg = LabConfig::default();
    let mut args = std::env::args().skip(1);
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => match args.next().as_deref() {
                Some("nftables") => cfg.backend = Backend::Nftables,
                Some("iptables") => cfg.backend = Backend::Iptables,
                _ => return usage("--backend takes nftables or iptables"),
            },
            "--release" => match args.next().as_deref() {
                Some("debian12") => cfg.release = Release::Debian12,
                Some("debian13") => cfg.release = Release::Debian13,
                _ => return usage("--release takes debian12 or debian13"),
            },
            "--reported-version" => match args.next() {
                Some(v) => cfg.reported_version = Some(v),
                None => return usage("--reported-version takes a version"),
            },
            "--no-firewalld" => cfg.firewalld = false,
            "--bus-policy" => match args.next() {
                Some(p) => cfg.bus_policies.push(p.into()),
                None => return usage("--bus-policy takes a D-Bus policy file"),
            },
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            other => return usage(&format!("unknown option {other:?}")),
        }
    }
    let Some((program, rest)) = command.split_first() else {
        return usage("no command given");
    };
    let lab = Lab::start(cfg);
    let status = lab
        .command(program)
        .args(rest)
        .env("LAB_DIR", lab.dir())
        .env("LAB_CONFIG_DIR", &lab.config_dir)
        .env("LAB_NETNS", &lab.netns)
        .env(
            "LAB_FIREWALLD_PID",
            lab.firewalld_pid()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        )
        .status();
    drop(lab);
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("lab: cannot run {program}: {e}");
            ExitCode::from(1)
        }
    }
}
