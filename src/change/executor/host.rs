//! The host's own mutations, those that need no firewalld: nft transactions, sysctls, iptables
//! rules of other programs' chains and virtzone's files under /etc, and the one read a plan of
//! them needs (a file's previous text). [`Live`](super::Live) and [`Local`](super::local::Local)
//! both carry out their local steps with these. A leaf, so that neither the executor nor `Local`
//! names the other for them.

use std::path::Path;

use crate::firewalld::{self, Error};

/// How long `iptables` waits for the xtables lock (iptables-legacy; Docker holds it while it
/// starts), within [`crate::external::COMMAND_TIMEOUT`].
const XTABLES_WAIT: &str = "5";

/// `nft -j -f -` with `commands`, one transaction.
pub(crate) async fn nft(commands: &[serde_json::Value]) -> firewalld::Result<()> {
    // Through the nftables crate's schema: a command it cannot represent is a bug here, said
    // before nft runs.
    let mut batch = nftables::batch::Batch::new();
    for command in commands {
        let cmd: nftables::schema::NfCmd<'static> = serde_json::from_value(command.clone())
            .map_err(|e| Error::Local(format!("internal error: bad nft command {command}: {e}")))?;
        batch.add_cmd(cmd);
    }
    let ruleset = serde_json::to_string(&batch.to_nftables())
        .map_err(|e| Error::Local(format!("internal error: nft commands: {e}")))?;
    tokio::task::spawn_blocking(move || crate::external::nft_apply(&ruleset))
        .await
        .map_err(|e| Error::Local(format!("nft did not finish: {e}")))?
        .map_err(|e| Error::Local(format!("nft failed: {e}")))
}

/// Writes `/proc/sys/KEY`.
pub(crate) fn write_sysctl(key: &str, value: &str) -> firewalld::Result<()> {
    crate::host::write_sysctl(key, value).map_err(|e| Error::Local(e.to_string()))
}

/// `iptables -w 5 ARGS` (the iptables Docker uses: iptables-nft on current distributions), with
/// the external commands' deadline.
pub(crate) async fn iptables(args: &[String]) -> firewalld::Result<()> {
    let mut all = vec!["-w".to_string(), XTABLES_WAIT.to_string()];
    all.extend(args.iter().cloned());
    tokio::task::spawn_blocking(move || {
        crate::external::checked(std::process::Command::new("iptables").args(&all), None)
    })
    .await
    .map_err(|e| Error::Local(format!("iptables did not finish: {e}")))?
    .map(|_| ())
    .map_err(Error::Local)
}

/// Replaces `path` with `content` atomically (a new file beside it, renamed over it: a symlink
/// planted at `path` is replaced, never followed), or removes it (`None`; already gone is done).
pub(crate) async fn write_file(
    path: &Path,
    content: Option<&str>,
    mode: u32,
) -> firewalld::Result<()> {
    let shown = path.display();
    match content {
        Some(text) => crate::state::write_atomically(path, text.as_bytes(), mode)
            .map_err(|e| Error::Local(format!("cannot write {shown}: {e}"))),
        None => {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(Error::Local(format!("{shown} names no file")));
            };
            let dir = match crate::state::open_dir(dir) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::Local(format!("cannot remove {shown}: {e}"))),
            };
            match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(Error::Local(format!("cannot remove {shown}: {e}"))),
            }
        }
    }
}

/// A small file's text, `None` when it does not exist; opened without following a symlink (the
/// `previous` of a [`Step::WriteFile`](crate::change::Step::WriteFile)).
pub fn read_file(path: &Path) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let mut text = String::new();
    match file {
        Ok(f) => {
            crate::state::regular(&f)
                .map_err(|e| format!("cannot read {}: not a regular file ({e})", path.display()))?;
            f.take(1 << 20)
                .read_to_string(&mut text)
                .map(|_| Some(text))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
