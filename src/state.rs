//! virtzone's own persisted state: a directory of small JSON files.
//!
//! Every write is atomic (temp file, fsync, rename, fsync of the directory), so a crash or `kill -9` at
//! any moment leaves either the old or the new file, never a torn one. Read-modify-write sequences take
//! an exclusive lock on `DIR/lock`, so concurrent invocations serialise instead of losing updates. Inside
//! one process (the daemon serves concurrent calls on one thread) an async mutex comes first: a second
//! `flock` from the same process would block the thread that the first holder needs to finish.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where state lives unless `--state-dir` or `VIRTZONE_STATE_DIR` say otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/virtzone";
/// The environment variable that overrides the state directory.
pub const STATE_DIR_ENV: &str = "VIRTZONE_STATE_DIR";

/// Replaces `path` with `bytes` atomically: a temp file beside it, fsync, rename, fsync of the directory.
/// A crash at any moment leaves the old file or the new one, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

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
    #[error("{path} is corrupt ({reason}); move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
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
    _file: File,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl StateDir {
    /// The state directory: `explicit`, else `$VIRTZONE_STATE_DIR`, else `/var/lib/virtzone`.
    pub fn locate(explicit: Option<&Path>) -> Self {
        let path = match (explicit, std::env::var_os(STATE_DIR_ENV)) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_STATE_DIR),
        };
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

    /// Creates the directory if needed and takes its exclusive lock (waits for other holders, in this
    /// process and in others).
    pub async fn lock(&self) -> Result<Lock, StateError> {
        let local = self.local.clone().lock_owned().await;
        fs::create_dir_all(&self.path).map_err(Self::io("create", &self.path))?;
        let path = self.path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        // Another process may hold it for a while: wait off the async thread.
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| StateError::Io {
                action: "lock",
                path: path.clone(),
                source: io::Error::other(e),
            })?
            .map_err(Self::io("lock", &path))?;
        Ok(Lock {
            _file: file,
            _local: local,
        })
    }

    /// Reads `name`; a missing file is the default value.
    pub fn read<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, StateError> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(StateError::Io {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    /// Replaces `name` atomically with `value` (hold the [`Lock`] around read-modify-write).
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.path.join(name);
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomically(&path, &bytes).map_err(|source| StateError::Io {
            action: "write",
            path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn round_trip_and_missing_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::locate(Some(dir.path()));
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

    #[test]
    fn corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.json"), "{not json").unwrap();
        let err = StateDir::locate(Some(dir.path()))
            .read::<BTreeMap<String, String>>("x.json")
            .unwrap_err();
        assert!(err.to_string().contains("x.json is corrupt"), "{err}");
    }
}
