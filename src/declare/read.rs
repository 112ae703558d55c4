//! Reading the drop-in directories: no symlink followed (a mask is seen with `lstat`/`readlink`),
//! files capped at [`MAX_FILE`], and a directory that root (the user running virtzone) does not
//! own, or that others may write, is refused as the state directory is: whatever it says is
//! applied to the firewall.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::error::{err, DeclError};

/// The three directories, lowest priority first (a same-named file in a later one wins).
pub const DIRS: [&str; 3] = [
    "/usr/lib/virtzone/virtzone.d",
    "/run/virtzone/virtzone.d",
    "/etc/virtzone/virtzone.d",
];

/// The largest drop-in file read (a file is a handful of sections; anything bigger is a mistake).
pub const MAX_FILE: u64 = 256 * 1024;

/// What a directory holds under one `*.conf` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File,
    /// A symlink to /dev/null: the name is masked.
    Mask,
}

/// systemd's drop-in merge: `listing[i]` are the `*.conf` names of directory `i` (lowest priority
/// first); a name is taken from the highest-priority directory holding it, a mask hides it
/// everywhere, and the result is in lexical order of the names. Returns (directory index, name).
pub fn merge(listing: &[Vec<(String, Entry)>]) -> Vec<(usize, String)> {
    let mut chosen: BTreeMap<&str, (usize, &Entry)> = BTreeMap::new();
    for (dir, names) in listing.iter().enumerate() {
        for (name, entry) in names {
            chosen.insert(name, (dir, entry));
        }
    }
    chosen
        .into_iter()
        .filter(|(_, (_, e))| **e == Entry::File)
        .map(|(name, (dir, _))| (dir, name.to_string()))
        .collect()
}

/// The environment variable naming other directories (colon-separated, lowest priority first),
/// for tests and for hosts that keep the files elsewhere.
pub const DIRS_ENV: &str = "VIRTZONE_DROPIN_DIRS";

/// The drop-in directories, lowest priority first.
pub fn dirs() -> Vec<PathBuf> {
    match std::env::var_os(DIRS_ENV) {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => DIRS.iter().map(PathBuf::from).collect(),
    }
}

fn dir_error(dir: &Path, message: impl Into<String>) -> DeclError {
    err(&dir.display().to_string(), 0, message)
}

/// Opens `dir` (`None` when it does not exist) and checks who may write it.
fn open(dir: &Path) -> Result<Option<OwnedFd>, DeclError> {
    let fd = match crate::state::open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink());
            return Err(dir_error(
                dir,
                if link {
                    "it is a symbolic link; virtzone reads only a real directory".to_string()
                } else {
                    format!("cannot open it: {e}")
                },
            ));
        }
    };
    let stat =
        rustix::fs::fstat(&fd).map_err(|e| dir_error(dir, format!("cannot inspect it: {e}")))?;
    let me = rustix::process::geteuid().as_raw();
    if stat.st_uid != me {
        return Err(dir_error(
            dir,
            format!(
                "it belongs to uid {}, not to uid {me} who runs virtzone",
                stat.st_uid
            ),
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(dir_error(
            dir,
            format!(
                "it is writable by group or others (mode {:o}); run chmod go-w on it",
                stat.st_mode & 0o7777
            ),
        ));
    }
    Ok(Some(fd))
}

/// The `*.conf` entries of an open directory.
fn list(dir: &Path, fd: &OwnedFd) -> Result<Vec<(String, Entry)>, DeclError> {
    let mut out = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(fd)
        .map_err(|e| dir_error(dir, format!("cannot list it: {e}")))?;
    for entry in entries.by_ref() {
        let entry = entry.map_err(|e| dir_error(dir, format!("cannot list it: {e}")))?;
        let Ok(name) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        if !name.ends_with(".conf") || name.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let stat = rustix::fs::statat(fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| dir_error(&path, format!("cannot inspect it: {e}")))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => out.push((name, Entry::File)),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(fd, name.as_str(), Vec::new())
                    .map_err(|e| dir_error(&path, format!("cannot read the link: {e}")))?;
                if target.as_bytes() != b"/dev/null" {
                    return Err(dir_error(
                        &path,
                        "it is a symbolic link; only a link to /dev/null (a mask) is accepted, \
                         put the file itself here",
                    ));
                }
                out.push((name, Entry::Mask));
            }
            _ => return Err(dir_error(&path, "it is not a regular file")),
        }
    }
    Ok(out)
}

/// Reads one chosen file.
fn contents(path: &Path, dir: &OwnedFd, name: &str) -> Result<String, DeclError> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| dir_error(path, format!("cannot open it: {e}")))?;
    crate::state::regular(&fd).map_err(|_| dir_error(path, "it is not a regular file"))?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| dir_error(path, format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(dir_error(
            path,
            format!("it is larger than {MAX_FILE} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| dir_error(path, "it is not UTF-8 text"))
}

/// The files that count (systemd's drop-in rules, see [`merge`]), as (path, text), in order; or
/// every error found.
pub fn read(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, Vec<DeclError>> {
    let mut errors = Vec::new();
    let mut fds = Vec::new();
    let mut listing = Vec::new();
    for dir in dirs {
        let opened = open(dir).and_then(|fd| match fd {
            Some(fd) => list(dir, &fd).map(|l| (Some(fd), l)),
            None => Ok((None, Vec::new())),
        });
        match opened {
            Ok((fd, l)) => {
                fds.push(fd);
                listing.push(l);
            }
            Err(e) => {
                errors.push(e);
                fds.push(None);
                listing.push(Vec::new());
            }
        }
    }
    let mut files = Vec::new();
    for (i, name) in merge(&listing) {
        let path = dirs[i].join(&name);
        let Some(fd) = &fds[i] else { continue };
        match contents(&path, fd, &name) {
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}
