//! A real Docker daemon (Debian 12's docker.io) inside a lab's network namespace, for what meets
//! Docker's firewall rules: its `FORWARD` policy DROP, `DOCKER-USER`, the isolation chains.
//!
//! dockerd needs a cgroup2 hierarchy, and `ip netns exec` remounts /sys (hiding one): so it runs in
//! a private mount namespace with cgroup2 mounted there, entering only the lab's network namespace
//! (`/work/shared/design/labs.md`). It keeps its data and exec roots and its socket in the lab's
//! directory, and gets no system bus: it does not find the lab's firewalld and writes its iptables
//! rules itself, as on a host without firewalld integration. No image is needed: Docker's rules
//! apply to whatever is plugged into `docker0`. The host's firewall, bus and /var/lib/docker are
//! never touched; dropping the handle stops it (and the lab kills whatever is left in its
//! namespace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long dockerd may take to say "API listen on".
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running dockerd in a lab's network namespace.
pub struct Dockerd {
    child: Child,
    dir: PathBuf,
}

impl Dockerd {
    /// Starts dockerd in network namespace `netns`, keeping its state under `dir`; returns once its
    /// API listens (its chains and `docker0` exist then).
    pub fn start(netns: &str, dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).expect("dockerd's directory");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd's log");
        let d = dir.display();
        let script = format!(
            "mount -t cgroup2 none /sys/fs/cgroup && exec nsenter --net=/var/run/netns/{netns} \
             dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \
             -H unix://{d}/docker.sock"
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux) and dockerd (Debian package docker.io)");
        let mut dockerd = Dockerd {
            child,
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if dockerd.log().contains("API listen on") {
                return dockerd;
            }
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                panic!("dockerd exited ({status}):\n{}", dockerd.log());
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "dockerd did not listen within {START_DEADLINE:?}:\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What dockerd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd and removes its pidfile; SIGKILL after a grace.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
