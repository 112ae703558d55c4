//! virtzone's own persisted state: a directory of small JSON files.
//!
//! The state decides what the daemon re-applies to firewalld after every reload, so it is guarded like
//! a configuration file of a root daemon:
//! - The directory must belong to the effective user and must not be writable by group or others;
//!   anything else is refused before a byte is read ([`StateError::Untrusted`]). It is created 0700,
//!   files 0600, whoever creates them first and whatever the umask.
//! - Files are opened relative to the directory's descriptor with `O_NOFOLLOW`, so a symlink planted
//!   in place of `lock` or a state file is refused, never followed; reads are capped in size.
//! - Every write is atomic: a temp file with an unpredictable name created with `O_EXCL`, fsync, rename,
//!   fsync of the directory. A crash at any moment leaves the old file or the new one, never a torn one.
//! - Read-modify-write sequences take an exclusive lock on `DIR/lock`, so concurrent invocations
//!   serialise instead of losing updates. Inside one process (the daemon serves concurrent calls on one
//!   thread) an async mutex comes first: a second `flock` from the same process would block the thread
//!   that the first holder needs to finish.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where state lives unless `--state-dir`, `VIRTZONE_STATE_DIR` or the configuration file say otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/virtzone";
/// The environment variable that overrides the state directory.
pub const STATE_DIR_ENV: &str = "VIRTZONE_STATE_DIR";
/// virtzone's configuration file: the one place the hook (whose environment libvirt clears), the CLI
/// and the daemon all read.
pub const CONFIG_FILE: &str = "/etc/virtzone/virtzone.conf";
/// The environment variable naming another configuration file (tests, unusual layouts).
pub const CONFIG_ENV: &str = "VIRTZONE_CONFIG";
/// A state file larger than this is not virtzone's: refused rather than read into memory.
pub const MAX_STATE_FILE: u64 = 4 << 20;
/// How often a held state lock is tried again: short against the lock holders' work (a state write,
/// a firewalld call), so waiting adds little.
const LOCK_RETRY: Duration = Duration::from_millis(20);
/// How long a wait for the lock goes on before it is said what it waits for.
const LOCK_NOTE: Duration = Duration::from_secs(2);
/// The configuration file is a few lines; larger is refused.
const MAX_CONFIG_FILE: u64 = 64 << 10;

/// A state-file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or locking failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists but is not what virtzone writes.
    #[error("{path} is corrupt ({}); move it away to start afresh", crate::names::visible(.reason))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// The directory or a file in it could have been planted by somebody else: refused (bad input,
    /// exit status 2).
    #[error("refusing state directory {path}: {reason}")]
    Untrusted {
        /// The directory or file.
        path: PathBuf,
        /// Why it is not trusted, and what to do.
        reason: String,
    },
    /// The configuration file is unreadable or invalid (bad input, exit status 2).
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl StateError {
    /// Whether the error is bad input (an untrusted directory, a broken configuration): exit status 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StateError::Untrusted { .. } | StateError::Config { .. }
        )
    }
}

/// Settings read from [`CONFIG_FILE`] (`Key=value` lines, `#` comments, like `firewalld.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `StateDirectory=`: where the state lives.
    pub state_directory: Option<PathBuf>,
    /// `HookTimeout=`: seconds the libvirt hook may take in all (1–300).
    pub hook_timeout: Option<Duration>,
    /// `CommandTimeout=`: seconds a command waits for one answer of firewalld (1–300) before it says
    /// firewalld did not answer.
    pub command_timeout: Option<Duration>,
    /// `LeaseDirectory=`: where libvirt's dnsmasq keeps its `BRIDGE.status` lease files.
    pub lease_directory: Option<PathBuf>,
    /// `OwnNat=yes|no`: whether virtzone carries the NAT networks' masquerade in its own nftables
    /// table (src/forward/nat.rs; default yes).
    pub own_nat: Option<bool>,
}

impl Config {
    /// Parses the configuration text; unknown keys and malformed lines are errors, never ignored.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected Key=value", n + 1));
            };
            match key.trim() {
                "StateDirectory" => {
                    let value = value.trim();
                    if !value.starts_with('/') {
                        return Err(format!(
                            "line {}: StateDirectory must be an absolute path",
                            n + 1
                        ));
                    }
                    config.state_directory = Some(PathBuf::from(value));
                }
                key @ ("HookTimeout" | "CommandTimeout") => {
                    let secs = value
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|s| (1..=300).contains(s))
                        .ok_or_else(|| format!("line {}: {key} must be 1 to 300 seconds", n + 1))?;
                    let secs = Some(Duration::from_secs(secs));
                    if key == "HookTimeout" {
                        config.hook_timeout = secs;
                    } else {
                        config.command_timeout = secs;
                    }
                }
                "LeaseDirectory" => {
                    let value = value.trim();
                    if !value.starts_with('/') {
                        return Err(format!(
                            "line {}: LeaseDirectory must be an absolute path",
                            n + 1
                        ));
                    }
                    config.lease_directory = Some(PathBuf::from(value));
                }
                "OwnNat" => {
                    config.own_nat = Some(match value.trim() {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(format!("line {}: OwnNat must be yes or no", n + 1)),
                    });
                }
                other => return Err(format!("line {}: unknown setting {other:?}", n + 1)),
            }
        }
        Ok(config)
    }

    /// Reads the configuration file (`$VIRTZONE_CONFIG` or [`CONFIG_FILE`]); a missing file is the
    /// default configuration.
    pub fn load() -> Result<Config, StateError> {
        let path = match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(CONFIG_FILE),
        };
        let bad = |reason: String| StateError::Config {
            path: path.clone(),
            reason,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        if text.len() as u64 > MAX_CONFIG_FILE {
            return Err(bad(format!("larger than {MAX_CONFIG_FILE} bytes")));
        }
        Config::parse(&text).map_err(bad)
    }
}

/// Replaces `path` with `bytes` atomically: a temp file beside it (unpredictable name, `O_EXCL`, 0600),
/// fsync, rename, fsync of the directory. A crash at any moment leaves the old file or the new one.
/// The final mode is `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir_path = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir_path)?;
    let dir = open_dir(dir_path)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    write_at(&dir, Path::new(name), bytes, Mode::from_raw_mode(mode))
}

/// Opens a directory without following a symlink in its last component.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A temp name nobody can predict, so it cannot be planted in advance.
fn temp_name(name: &Path) -> io::Result<PathBuf> {
    let mut random = [0u8; 12];
    let mut filled = 0;
    while filled < random.len() {
        filled +=
            rustix::rand::getrandom(&mut random[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(PathBuf::from(format!(
        ".{}.{suffix}.tmp",
        name.to_string_lossy()
    )))
}

/// The atomic write, relative to an open directory.
fn write_at(dir: &OwnedFd, name: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let tmp = temp_name(name)?;
    let fd = rustix::fs::openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    let result = (|| {
        // The umask narrowed the create mode at most; set exactly what is wanted.
        rustix::fs::fchmod(&fd, mode)?;
        let mut file = File::from(fd);
        file.write_all(bytes)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        // The rename is durable only once the directory entry is.
        rustix::fs::fsync(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

/// The state directory. Clones share the in-process lock.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    local: Arc<tokio::sync::Mutex<()>>,
}

/// Holds the state directory's exclusive lock until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: OwnedFd,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl StateDir {
    /// The state directory: `explicit`, else `$VIRTZONE_STATE_DIR`, else `StateDirectory=` of the
    /// configuration file, else `/var/lib/virtzone`.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, StateError> {
        let path = match (explicit, std::env::var_os(STATE_DIR_ENV)) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
            _ => Config::load()?
                .state_directory
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        Ok(Self::at(path))
    }

    /// The state directory at `path`, as given.
    pub fn at(path: PathBuf) -> Self {
        StateDir {
            path,
            local: Arc::default(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
        move |source| StateError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn untrusted(path: &Path, reason: impl Into<String>) -> StateError {
        StateError::Untrusted {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Opens the directory and checks that only its owner, who must be us, can change what is in it.
    /// `None` when it does not exist and `create` is false.
    fn open(&self, create: bool) -> Result<Option<OwnedFd>, StateError> {
        if create {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(Self::io("create", parent))?;
            }
            match rustix::fs::mkdir(&self.path, Mode::RWXU) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Self::io("create", &self.path)(e.into())),
            }
        }
        let dir = match open_dir(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP): tell which it is.
            Err(e)
                if [rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                let link = fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_symlink());
                return Err(Self::untrusted(
                    &self.path,
                    if link {
                        "it is a symbolic link; name the real directory"
                    } else {
                        "it is not a directory"
                    },
                ));
            }
            Err(e) => return Err(Self::io("open", &self.path)(e)),
        };
        let stat =
            rustix::fs::fstat(&dir).map_err(|e| Self::io("inspect", &self.path)(e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        if stat.st_uid != me {
            return Err(Self::untrusted(
                &self.path,
                format!(
                    "it belongs to uid {}, not to uid {me} who runs virtzone; use a directory of your own",
                    stat.st_uid
                ),
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(Self::untrusted(
                &self.path,
                format!(
                    "it is writable by group or others (mode {:o}); run chmod go-w on it",
                    stat.st_mode & 0o7777
                ),
            ));
        }
        Ok(Some(dir))
    }

    /// Checks that the directory, if it exists, can be trusted (the daemon does so before serving).
    pub fn check(&self) -> Result<(), StateError> {
        self.open(false).map(|_| ())
    }

    /// Creates the directory if needed and takes its exclusive lock (waits for other holders, in this
    /// process and in others). The wait never blocks a thread: a `tokio::time::timeout` around this
    /// call bounds it.
    pub async fn lock(&self) -> Result<Lock, StateError> {
        let local = self.local.clone().lock_owned().await;
        let path = self.path.join("lock");
        let Some(dir) = self.open(true)? else {
            return Err(Self::io("create", &self.path)(
                io::ErrorKind::NotFound.into(),
            ));
        };
        let file = rustix::fs::openat(
            &dir,
            "lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| self.refuse_link(&path, "open", e))?;
        regular(&file).map_err(|e| self.refuse_link(&path, "open", e))?;
        // Another process may hold it for a while. Never a blocking flock, not even on a thread of
        // its own: a caller's timeout (the hook's budget) could not end the wait, and the runtime's
        // shutdown would wait for that thread. Try, and retry after a pause, so dropping this future
        // ends the wait at once.
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                    // A long wait says what it waits for, once.
                    if !said && start.elapsed() >= LOCK_NOTE {
                        said = true;
                        tracing::warn!(
                            "waiting for the lock of {}: another virtzone process (the daemon's reconcile, the hook or a command) holds it",
                            self.path.display()
                        );
                    }
                    tokio::time::sleep(LOCK_RETRY).await
                }
                Err(e) => return Err(Self::io("lock", &path)(e.into())),
            }
        }
        Ok(Lock {
            _file: file,
            _local: local,
        })
    }

    /// Whether another process holds this directory's lock now (a probe that takes and drops it at
    /// once; creates nothing, follows no link): for saying why a wait ran out.
    pub fn held_elsewhere(&self) -> bool {
        let Ok(Some(dir)) = self.open(false) else {
            return false;
        };
        let Ok(file) = rustix::fs::openat(
            &dir,
            "lock",
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return false;
        };
        matches!(
            rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }

    /// A symlink where a state file should be was planted: say so rather than "too many levels".
    fn refuse_link(&self, path: &Path, action: &'static str, e: rustix::io::Errno) -> StateError {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NXIO {
            Self::untrusted(
                path,
                "it is a symbolic link or not a regular file; remove it",
            )
        } else {
            Self::io(action, path)(e.into())
        }
    }

    /// Reads `name`; a missing file (or directory) is the default value.
    pub fn read<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, StateError> {
        let path = self.path.join(name);
        let Some(dir) = self.open(false)? else {
            return Ok(T::default());
        };
        let fd = match rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(T::default()),
            Err(e) => return Err(self.refuse_link(&path, "read", e)),
        };
        regular(&fd).map_err(|e| self.refuse_link(&path, "read", e))?;
        let mut bytes = Vec::new();
        File::from(fd)
            .take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(Self::io("read", &path))?;
        if bytes.len() as u64 > MAX_STATE_FILE {
            return Err(StateError::Corrupt {
                path,
                reason: format!("larger than {MAX_STATE_FILE} bytes"),
            });
        }
        parse_state(&path, &bytes)
    }

    /// Replaces `name` atomically with `value` (hold the [`Lock`] around read-modify-write).
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.path.join(name);
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        let Some(dir) = self.open(true)? else {
            return Err(Self::io("create", &self.path)(
                io::ErrorKind::NotFound.into(),
            ));
        };
        write_at(&dir, Path::new(name), &bytes, Mode::RUSR | Mode::WUSR).map_err(|source| {
            StateError::Io {
                action: "write",
                path,
                source,
            }
        })
    }
}

/// Parses the bytes of state file `path` (what [`StateDir::read`] does once it has them).
pub(crate) fn parse_state<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Refuses anything but a regular file (a FIFO would block a read forever, a device is not ours).
pub(crate) fn regular(fd: &impl AsFd) -> Result<(), rustix::io::Errno> {
    let stat = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
        Ok(())
    } else {
        Err(rustix::io::Errno::NXIO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn state_in(dir: &Path) -> StateDir {
        StateDir::at(dir.to_path_buf())
    }

    #[tokio::test]
    async fn round_trip_and_missing_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_in(dir.path());
        let empty: BTreeMap<String, String> = state.read("x.json").unwrap();
        assert!(empty.is_empty());
        let value = BTreeMap::from([("virbr0".to_string(), "libvirt".to_string())]);
        let _lock = state.lock().await.unwrap();
        state.write("x.json", &value).unwrap();
        assert_eq!(
            state.read::<BTreeMap<String, String>>("x.json").unwrap(),
            value
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "only x.json and lock: {leftovers:?}");
    }

    /// A writer into a shared buffer, for reading what was logged.
    #[derive(Clone, Default)]
    struct Logged(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_wait_for_the_lock_says_what_it_waits_for() {
        let dir = tempfile::tempdir().unwrap();
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
                .block_on(async {
                    // Two handles of one directory: the second waits on the file lock.
                    let (holder, waiter) = (state_in(dir.path()), state_in(dir.path()));
                    let held = holder.lock().await.unwrap();
                    let release = async {
                        tokio::time::sleep(LOCK_NOTE + Duration::from_millis(300)).await;
                        drop(held);
                    };
                    let (_, got) = tokio::join!(release, waiter.lock());
                    got.unwrap();
                });
        });
        let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("waiting for the lock of").count(), 1, "{text}");
    }

    #[test]
    fn corrupt_and_oversized_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.json"), "{not json").unwrap();
        let err = state_in(dir.path())
            .read::<BTreeMap<String, String>>("x.json")
            .unwrap_err();
        assert!(err.to_string().contains("x.json is corrupt"), "{err}");
        let big = vec![b' '; MAX_STATE_FILE as usize + 10];
        fs::write(dir.path().join("big.json"), big).unwrap();
        let err = state_in(dir.path())
            .read::<BTreeMap<String, String>>("big.json")
            .unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[tokio::test]
    async fn created_private_whatever_the_umask() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("a/state");
        let state = state_in(&path);
        let old = rustix::process::umask(Mode::empty());
        let result = async {
            let _lock = state.lock().await?;
            state.write("x.json", &1u32)
        }
        .await;
        rustix::process::umask(old);
        result.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join("x.json")), 0o600);
        assert_eq!(mode(&path.join("lock")), 0o600);
    }

    #[tokio::test]
    async fn planted_symlinks_are_refused_and_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let state_path = dir.path().join("state");
        fs::create_dir(&state_path).unwrap();
        std::os::unix::fs::symlink(&victim, state_path.join("lock")).unwrap();
        std::os::unix::fs::symlink(&victim, state_path.join("x.json")).unwrap();
        let state = state_in(&state_path);
        let err = state.lock().await.unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = state.read::<u32>("x.json").unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        // A write replaces the link itself, never the file it points to.
        state.write("x.json", &7u32).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(state.read::<u32>("x.json").unwrap(), 7);
        // The directory itself as a link is refused too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state_path, &link).unwrap();
        let err = state_in(&link).read::<u32>("x.json").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn directories_others_can_write_or_own_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = state_in(&open).read::<u32>("x.json").unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        if rustix::process::geteuid().is_root() {
            let theirs = dir.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = state_in(&theirs).write("x.json", &1u32).unwrap_err();
            assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
            assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0);
            assert_eq!(fs::metadata(&theirs).unwrap().uid(), 65534);
        }
    }

    #[test]
    fn configuration_is_strict() {
        assert_eq!(
            Config::parse("# c\n\nStateDirectory = /srv/vz\n").unwrap(),
            Config {
                state_directory: Some(PathBuf::from("/srv/vz")),
                hook_timeout: None,
                command_timeout: None,
                lease_directory: None,
                own_nat: None,
            }
        );
        assert_eq!(Config::parse("OwnNat=no").unwrap().own_nat, Some(false));
        assert_eq!(Config::parse("OwnNat = yes").unwrap().own_nat, Some(true));
        assert!(Config::parse("OwnNat=off").is_err());
        assert_eq!(
            Config::parse("HookTimeout=3").unwrap().hook_timeout,
            Some(Duration::from_secs(3))
        );
        assert!(Config::parse("HookTimeout=0").is_err());
        assert_eq!(
            Config::parse("CommandTimeout=7").unwrap().command_timeout,
            Some(Duration::from_secs(7))
        );
        assert!(Config::parse("CommandTimeout=301")
            .unwrap_err()
            .contains("CommandTimeout must be 1 to 300 seconds"));
        assert!(Config::parse("StateDirectory=relative").is_err());
        assert!(Config::parse("Frobnicate=1")
            .unwrap_err()
            .contains("unknown setting"));
        assert!(Config::parse("garbage").unwrap_err().contains("Key=value"));
    }

    /// Found by `fuzz::forwards_json`: serde quotes an unknown variant raw.
    #[test]
    fn corrupt_files_are_reported_in_one_line() {
        let text = r#"{"version":1,"next_id":2,"forwards":[{"id":1,"network":"n1",
            "guest":"192.0.2.5","proto":"\u001b[2J","host_port":"80","guest_port":"80"}]}"#;
        let err =
            parse_state::<crate::forward::model::Declared>(Path::new("/s/f.json"), text.as_bytes())
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("/s/f.json is corrupt (unknown variant `\\u{1b}[2J`"),
            "{err}"
        );
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
}
