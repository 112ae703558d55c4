//! The booted-system lab: a Debian 12 root booted with systemd as PID 1 in its own namespaces, so a
//! test sees virtzone as a distribution deploys it (package installed by apt, unit started by
//! systemd with its hardening, D-Bus activation, the journal, libvirtd as a service).
//!
//! - The root is built once by `scripts/build-root.sh` (mmdebstrap, cached under
//!   `target/lab/roots/`); every boot gets an overlay of it (upper and work dirs under
//!   `target/lab/boots/<id>/`), so tests never change the cached root and a boot costs no copy.
//! - `unshare --pid --mount --uts --ipc --net --cgroup --fork` starts a shell that mounts the overlay,
//!   `/proc`, a fresh sysfs (an rbind of the host's would show the host's interfaces), cgroup2,
//!   tmpfs `/run` and `/tmp`, an rbind of `/dev`, and execs `chroot ROOT /lib/systemd/systemd`.
//!   Mount propagation is private, so nothing reaches the host's mount table.
//! - Each boot has its own cgroup (`<cgroup2>/virtzone-lab/<id>`) entered before the cgroup
//!   namespace is made: the booted systemd manages that subtree only (without it, two booted systems
//!   would share the host's cgroup root), and `cgroup.kill` ends every process of a boot at once.
//! - Commands run with `nsenter` into all of its namespaces and its root.
//! - Teardown (Drop, also after a failed assertion): `cgroup.kill` and SIGKILL of PID 1 (which ends
//!   the pid namespace), wait until every process is gone (mount and network namespaces go with the
//!   last one), remove the cgroups and the boot dir. A test process killed by SIGKILL cannot run
//!   Drop: unshare dies with it (parent-death signal) and takes PID 1 along (`--kill-child`), and
//!   the next boot finds the boot dir (its owner is dead) and removes what is left the same way.
//! - The booted system has no network beyond its own namespace: packages come in through
//!   `/mnt` (a bind mount of `target/lab/boots/<id>/share`).
//!
//! Traps met on the way (see also the design notes, labs.md): `netbase` is needed or firewalld dies
//! with `INVALID_PROTOCOL: esp`; `serial-getty@ttyS0` waits for ever for its device (masked in the root).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::text;

/// How long a boot may take to reach `running` (≈20 s alone; several boots may share 2 cores).
pub const BOOT_DEADLINE: Duration = Duration::from_secs(180);
/// Poll interval for every wait.
const POLL: Duration = Duration::from_millis(100);

static BOOTS: AtomicU32 = AtomicU32::new(0);

/// Runs a repo script that prints a path on its last stdout line (building what it caches first).
fn cached_path(script: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    let path = text(&out.stdout);
    PathBuf::from(path.lines().last().unwrap_or("").trim())
}

/// The cached Debian 12 root (built by `scripts/build-root.sh` when missing).
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| cached_path("scripts/build-root.sh"))
}

/// The directory holding this tree's cached `virtzone_*.deb` (built by `scripts/deb-cached.sh`).
pub fn debs() -> &'static Path {
    static DEBS: OnceLock<PathBuf> = OnceLock::new();
    DEBS.get_or_init(|| cached_path("scripts/deb-cached.sh"))
}

/// The one file in `dir` whose name starts with `prefix` and ends with `.deb`.
pub fn deb_named(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".deb")
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*.deb in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// Where per-boot dirs live.
fn boots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab/boots")
}

/// The host's cgroup2 mount point (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified`
/// on a hybrid one).
fn cgroup2_mount() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        // … mount-point … - fstype source options
        let (pre, post) = line.split_once(" - ").unwrap();
        if post.split_whitespace().next() == Some("cgroup2") {
            return PathBuf::from(pre.split_whitespace().nth(4).unwrap());
        }
    }
    panic!("booted lab: no cgroup2 mount on this host");
}

/// The cgroup of a boot.
fn cgroup_of(id: &str) -> PathBuf {
    cgroup2_mount().join("virtzone-lab").join(id)
}

/// Kills every process of a cgroup subtree and removes it, waiting until it is empty.
fn kill_cgroup(cg: &Path) {
    if !cg.exists() {
        return;
    }
    let _ = fs::write(cg.join("cgroup.kill"), "1");
    let start = Instant::now();
    // rmdir fails while processes remain (they die asynchronously); children go first.
    while remove_cgroup_tree(cg).is_err() {
        // Runs in Drop, maybe while a failed test unwinds: say it, do not panic.
        if start.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "booted lab: cgroup {} still has processes 30 s after cgroup.kill; left behind",
                cg.display()
            );
            return;
        }
        let _ = fs::write(cg.join("cgroup.kill"), "1");
        thread::sleep(Duration::from_millis(20));
    }
}

fn remove_cgroup_tree(cg: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(cg) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(cg) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether process `pid` exists and is the process that started at `start` (field 22 of stat).
fn alive(pid: u32, start: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_string();
            rest.split_whitespace().nth(19).map(|f| f == start)
        })
        .unwrap_or(false)
}

fn start_time(pid: u32) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit_once(") ").unwrap().1;
    rest.split_whitespace().nth(19).unwrap().to_string()
}

/// Tears down boots whose test process is gone (killed before its Drop could run).
fn reap_stale_boots() {
    let Ok(entries) = fs::read_dir(boots_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let mut it = owner.split_whitespace();
        let (Some(pid), Some(start)) = (it.next(), it.next()) else {
            // Not (yet) claimed: a boot being set up writes its owner first thing, so an old one
            // without it is debris.
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
                .unwrap_or(true);
            if !young {
                teardown(&dir, None);
            }
            continue;
        };
        if !alive(pid.parse().unwrap_or(0), start) {
            teardown(&dir, None);
        }
    }
}

/// Ends a boot: every process (cgroup.kill, then PID 1), its cgroups, its dir.
fn teardown(dir: &Path, unshare: Option<&mut Child>) {
    halt(dir, unshare);
    // The overlay was mounted in the boot's own mount namespace, gone with its last process: the
    // dir holds only plain files now.
    let _ = fs::remove_dir_all(dir);
}

/// Stops a boot (PID 1, unshare, its cgroup) and keeps its dir: the overlay's upper layer is the
/// system's disk for the next boot.
fn halt(dir: &Path, unshare: Option<&mut Child>) {
    let id = dir.file_name().unwrap().to_string_lossy().to_string();
    if let Ok(pid1) = fs::read_to_string(dir.join("pid1")) {
        let mut it = pid1.split_whitespace();
        if let (Some(pid), Some(start)) = (it.next(), it.next()) {
            let pid: u32 = pid.parse().unwrap_or(0);
            if alive(pid, start) {
                unsafe { libc_kill(pid as i32, 9) };
            }
        }
    }
    // unshare reaps PID 1 and exits; waiting for it leaves no zombie behind.
    if let Some(child) = unshare {
        let start = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    // Anything else of the boot (there should be nothing once its pid namespace is gone).
    kill_cgroup(&cgroup_of(&id));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "prctl"]
    fn libc_prctl(option: i32, ...) -> i32;
}

/// prctl(2)'s option: the signal a child gets when its parent thread dies.
const PR_SET_PDEATHSIG: i32 = 1;

/// A booted Debian 12 system.
pub struct Booted {
    dir: PathBuf,
    unshare: Child,
    pid1: u32,
    /// How long the boot took to reach `running`.
    pub boot_time: Duration,
}

impl Booted {
    /// Boots a fresh overlay of the cached root and waits until `systemctl is-system-running`
    /// says `running` (panics with the failed units when it says `degraded`).
    pub fn boot() -> Booted {
        fs::create_dir_all(boots_dir()).unwrap();
        reap_stale_boots();
        let id = format!(
            "{}-{}",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::SeqCst)
        );
        let dir = boots_dir().join(&id);
        let _ = fs::remove_dir_all(&dir);
        for d in ["upper", "work", "root", "share"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let me = std::process::id();
        fs::write(dir.join("owner"), format!("{me} {}", start_time(me))).unwrap();
        Booted::start(&dir, &id)
    }

    /// Stops the system (like a power cut: PID 1 killed) and boots the same disk (the overlay's
    /// upper layer, the root's /etc and /var as the first boot left them) again, waiting for
    /// `running` as [`Booted::boot`] does.
    pub fn reboot(&mut self) {
        halt(&self.dir, Some(&mut self.unshare));
        let id = self.dir.file_name().unwrap().to_string_lossy().to_string();
        let mut halted = Booted::start(&self.dir, &id);
        std::mem::swap(self, &mut halted);
        // `halted` holds the stopped boot now; dropping it must not remove the disk the new boot
        // runs on (nothing exists under this name: its teardown finds nothing to do).
        halted.dir = self.dir.join("halted");
    }

    /// Boots the overlay of boot dir `dir` (named `id`) and waits for `running`.
    fn start(dir: &Path, id: &str) -> Booted {
        let lower = root().to_path_buf();
        let dir = dir.to_path_buf();
        let cg = cgroup_of(id);
        fs::create_dir_all(&cg).unwrap();

        let script = r#"set -e
L=$1 D=$2 R=$2/root
mount -t overlay overlay -o "lowerdir=$L,upperdir=$D/upper,workdir=$D/work" "$R"
mount --bind "$D/share" "$R/mnt"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t cgroup2 none "$R/sys/fs/cgroup"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mount --rbind /dev "$R/dev"
exec chroot "$R" /lib/systemd/systemd --system --log-target=console --log-level=warning
"#;
        let procs = cg.join("cgroup.procs");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--cgroup",
            "--propagation",
            "private",
            "--kill-child",
            "sh",
            "-c",
            script,
            "boot",
        ])
        .arg(&lower)
        .arg(&dir)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("console.log")).unwrap())
        .stderr(fs::File::create(dir.join("console.err")).unwrap());
        // Enter the boot's cgroup before the cgroup namespace is made, so that it is the booted
        // system's cgroup root.
        {
            use std::os::unix::process::CommandExt;
            let procs = procs.clone();
            unsafe {
                cmd.pre_exec(move || {
                    // If the test process dies, unshare dies too, and --kill-child takes PID 1
                    // with it (Drop cannot run after a SIGKILL).
                    libc_prctl(PR_SET_PDEATHSIG, 9);
                    fs::write(&procs, "0")
                });
            }
        }
        let started = Instant::now();
        let mut unshare = cmd.spawn().expect("cannot run unshare");
        // PID 1 is unshare's only child.
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let pid1 = loop {
            if let Some(pid) = fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            {
                break pid;
            }
            if let Ok(Some(status)) = unshare.try_wait() {
                let err = fs::read_to_string(dir.join("console.err")).unwrap_or_default();
                teardown(&dir, None);
                panic!("booted lab: unshare exited with {status}: {err}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        fs::write(dir.join("pid1"), format!("{pid1} {}", start_time(pid1))).unwrap();
        let mut booted = Booted {
            dir,
            unshare,
            pid1,
            boot_time: Duration::ZERO,
        };
        let state = booted.wait_for("systemctl is-system-running", BOOT_DEADLINE, |b| {
            let out = b.sh("systemctl is-system-running");
            let s = text(&out.stdout).trim().to_string();
            (s == "running" || s == "degraded").then_some(s)
        });
        if state == "degraded" {
            panic!(
                "booted lab: the system is degraded:\n{}",
                booted.sh_out("systemctl --failed --no-pager; journalctl -b --no-pager -p err")
            );
        }
        booted.boot_time = started.elapsed();
        eprintln!("booted lab {}: running after {:?}", id, booted.boot_time);
        booted
    }

    /// A command run inside the booted system (all its namespaces, its root, cwd `/`), with a
    /// plain environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid1.to_string())
            .args([
                "-m", "-p", "-u", "-i", "-n", "-C", "-r", "-w", "--", program,
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a shell script inside the booted system.
    pub fn sh(&self, script: &str) -> Output {
        self.command("sh")
            .args(["-c", script])
            .output()
            .expect("cannot run nsenter")
    }

    /// Runs a script, asserting success; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "booted: `{script}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs a script; returns stdout and stderr together, whatever its status.
    pub fn sh_out(&self, script: &str) -> String {
        let out = self.sh(script);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Polls `probe` until it returns `Some`, panicking with `what` and the journal's tail after
    /// `deadline`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if start.elapsed() > deadline {
                panic!(
                    "booted lab: {what} did not happen within {deadline:?}\n-- console:\n{}\n-- journal:\n{}",
                    fs::read_to_string(self.dir.join("console.log")).unwrap_or_default(),
                    // The host's kernel messages reach every booted journal: left out.
                    self.sh_out("journalctl -b --no-pager -n 300 | grep -v ' kernel: ' | tail -n 60")
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until `script` succeeds inside the booted system.
    pub fn wait_ok(&self, what: &str, deadline: Duration, script: &str) {
        self.wait_for(what, deadline, |b| {
            b.sh(script).status.success().then_some(())
        });
    }

    /// Copies a host file into the booted system's `/mnt` (the share dir); returns its path there.
    pub fn copy_in(&self, host: &Path) -> String {
        let name = host.file_name().unwrap().to_string_lossy().to_string();
        fs::copy(host, self.dir.join("share").join(&name)).unwrap();
        format!("/mnt/{name}")
    }

    /// Writes `contents` to the booted system's `/mnt/NAME`; returns that path.
    pub fn put(&self, name: &str, contents: &str) -> String {
        fs::write(self.dir.join("share").join(name), contents).unwrap();
        format!("/mnt/{name}")
    }

    /// The host-side pid of the booted system's PID 1.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// The boot's cgroup on the host.
    pub fn cgroup(&self) -> PathBuf {
        cgroup_of(&self.dir.file_name().unwrap().to_string_lossy())
    }

    /// The per-boot dir (overlay upper and work dirs, share, console log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        teardown(&dir, Some(&mut self.unshare));
    }
}
