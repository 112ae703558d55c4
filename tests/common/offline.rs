//! virtzone's commands without any daemon: a private state directory, configuration file and lease
//! directory, and no system bus (firewalld cannot be asked; what virtzone records and resolves
//! still happens). For the hook's and the state's own behaviour, which involve no daemon.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{run_with_input, virtzone_binary};

/// A temporary directory with `state/`, `leases/` and `virtzone.conf`.
pub struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    /// An empty state directory and a configuration file holding `config` (plus `LeaseDirectory=`).
    pub fn new(config: &str) -> Offline {
        let dir = tempfile::tempdir().unwrap();
        let leases = dir.path().join("leases");
        fs::create_dir(&leases).unwrap();
        fs::write(
            dir.path().join("virtzone.conf"),
            format!("LeaseDirectory={}\n{config}", leases.display()),
        )
        .unwrap();
        Offline { dir }
    }

    /// The state directory (created by virtzone's first write).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The forwards' store inside it.
    pub fn store(&self) -> PathBuf {
        self.state().join("forwards")
    }

    /// The lease directory.
    pub fn leases(&self) -> PathBuf {
        self.dir.path().join("leases")
    }

    /// `virtzone ARGS` with a cleared environment (as libvirt runs its hooks) pointing here.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(virtzone_binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("VIRTZONE_STATE_DIR", self.state())
            .env("VIRTZONE_CONFIG", self.dir.path().join("virtzone.conf"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        cmd
    }

    /// `virtzone hook qemu ARGS` with `xml` on standard input.
    pub fn hook_qemu(&self, args: &[&str], xml: &str) -> Output {
        let mut all = vec!["hook", "qemu"];
        all.extend_from_slice(args);
        run_with_input(&mut self.command(&all), xml)
    }

    /// `virtzone hook network ARGS` with `xml` on standard input.
    pub fn hook_network(&self, args: &[&str], xml: &str) -> Output {
        let mut all = vec!["hook", "network"];
        all.extend_from_slice(args);
        run_with_input(&mut self.command(&all), xml)
    }

    /// Writes the store's file `name` (creating the directories as virtzone does, 0700).
    pub fn write_store(&self, name: &str, json: &str) {
        for d in [self.state(), self.store()] {
            match fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("{}: {e}", d.display()),
            }
        }
        fs::write(self.store().join(name), json).unwrap();
    }

    /// The store's file `name`, if any.
    pub fn read_store(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.store().join(name)).ok()
    }

    /// `virtzone forward list --json`, killed after `deadline`: `None` if it did not end by then.
    pub fn forward_list(&self, deadline: Duration) -> Option<serde_json::Value> {
        let out = output_within(self.command(&["forward", "list", "--json"]), deadline)?;
        assert!(
            out.status.success(),
            "forward list: {}",
            super::text(&out.stderr)
        );
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// Runs `cmd`, killing it after `deadline`: `None` if it had not ended by then.
pub fn output_within(mut cmd: Command, deadline: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}
