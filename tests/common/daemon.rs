//! `virtzone serve` in a lab: started, waited for, stopped on drop (also when the test failed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{Lab, POLL};

/// The daemon's bus name.
pub const NAME: &str = "org.virtzone.VirtZone1";
/// Its object.
pub const PATH: &str = "/org/virtzone/VirtZone1";
/// How long a wait for the daemon may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The project's bus policy, which a lab needs for the daemon to own its name.
pub fn policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf")
}

/// A running `virtzone serve`, logging to `<lab>/daemon.log`. Dropping it sends SIGTERM, the way
/// systemd stops it, and SIGKILL if it has not exited within 5 s.
pub struct Daemon {
    /// The process.
    pub child: Child,
}

impl Daemon {
    /// Starts the daemon without waiting for it.
    pub fn spawn(lab: &Lab) -> Daemon {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.dir().join("daemon.log"))
            .unwrap_or_else(|e| panic!("lab: cannot open daemon.log: {e}"));
        let child = lab
            .virtzone()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot start virtzone serve: {e}"));
        Daemon { child }
    }

    /// Starts the daemon and waits until it owns its name.
    pub fn start(lab: &Lab) -> Daemon {
        let daemon = Daemon::spawn(lab);
        wait_until(lab, "the daemon owns its name", || lab.name_has_owner(NAME));
        daemon
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until it exits and returns its status code; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                start.elapsed() < within,
                "the daemon did not exit within {within:?}"
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        self.kill9();
    }
}

/// Polls `cond` until it holds; panics after a minute with the daemon's and firewalld's logs.
pub fn wait_until(lab: &Lab, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            let log = fs::read_to_string(lab.dir().join("daemon.log")).unwrap_or_default();
            panic!(
                "timed out waiting until {what}\ndaemon log:\n{log}\nfirewalld log:\n{}",
                lab.firewalld_log()
            );
        }
        thread::sleep(POLL);
    }
}
