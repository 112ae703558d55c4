//! The host's own mutations, those that need no firewalld: nft transactions, sysctls, iptables
//! rules of other programs' chains and virtzone's files under /etc. [`Live`](super::Live) uses
//! them for its local steps; [`Local`] is the executor's [`Mutations`] where firewalld is not
//! needed or not there (`doctor --fix` for Docker's chains and br_netfilter, the daemon's
//! re-application of Docker's accepts), and refuses every firewalld call.

use std::path::Path;

use crate::firewalld::{self, Entries, Error, ForwardPortEntry, OwnPolicy};
use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Zone};

use crate::change::mutations::Mutations;

/// How long `iptables` waits for the xtables lock (iptables-legacy; Docker holds it while it
/// starts), within [`crate::external::COMMAND_TIMEOUT`].
const XTABLES_WAIT: &str = "5";

/// [`Mutations`] without firewalld: the local steps only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

/// A firewalld call in a plan meant to run without firewalld: a bug of the planner.
fn no_firewalld(call: &str) -> firewalld::Result<()> {
    Err(Error::Local(format!(
        "internal error: {call} needs firewalld, but this plan runs without it"
    )))
}

/// `nft -j -f -` with `commands`, one transaction.
pub(super) async fn nft(commands: &[serde_json::Value]) -> firewalld::Result<()> {
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
pub(super) fn write_sysctl(key: &str, value: &str) -> firewalld::Result<()> {
    crate::host::write_sysctl(key, value).map_err(|e| Error::Local(e.to_string()))
}

/// `iptables -w 5 ARGS` (the iptables Docker uses: iptables-nft on current distributions), with
/// the external commands' deadline.
pub(super) async fn iptables(args: &[String]) -> firewalld::Result<()> {
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
pub(super) async fn write_file(
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

impl Mutations for Local {
    async fn change_zone_of_interface(
        &self,
        _: &ZoneName,
        _: &BridgeName,
    ) -> firewalld::Result<()> {
        no_firewalld("changeZoneOfInterface")
    }
    async fn remove_interface(&self, _: &ZoneName, _: &BridgeName) -> firewalld::Result<()> {
        no_firewalld("removeInterface")
    }
    async fn add_permanent_interface(&self, _: &ZoneName, _: &BridgeName) -> firewalld::Result<()> {
        no_firewalld("config.zone.addInterface")
    }
    async fn remove_permanent_interface(
        &self,
        _: &ZoneName,
        _: &BridgeName,
    ) -> firewalld::Result<()> {
        no_firewalld("config.zone.removeInterface")
    }
    async fn add_zone(&self, _: &Zone) -> firewalld::Result<()> {
        no_firewalld("addZone2")
    }
    async fn add_policy(&self, _: &Policy) -> firewalld::Result<()> {
        no_firewalld("addPolicy")
    }
    async fn update_zone(&self, _: &Zone) -> firewalld::Result<()> {
        no_firewalld("config.zone.update2")
    }
    async fn remove_zone(&self, _: &str) -> firewalld::Result<()> {
        no_firewalld("config.zone.remove")
    }
    async fn remove_policy(&self, _: &str) -> firewalld::Result<()> {
        no_firewalld("config.policy.remove")
    }
    async fn reload(&self) -> firewalld::Result<()> {
        no_firewalld("reload")
    }
    async fn add_forward_port(&self, _: &str, _: &ForwardPortEntry) -> firewalld::Result<()> {
        no_firewalld("addForwardPort")
    }
    async fn remove_forward_port(&self, _: &str, _: &ForwardPortEntry) -> firewalld::Result<()> {
        no_firewalld("removeForwardPort")
    }
    async fn add_permanent_forward_port(
        &self,
        _: &str,
        _: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        no_firewalld("config.zone.addForwardPort")
    }
    async fn remove_permanent_forward_port(
        &self,
        _: &str,
        _: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        no_firewalld("config.zone.removeForwardPort")
    }
    async fn add_rich_rule(&self, _: &str, _: &str) -> firewalld::Result<()> {
        no_firewalld("addRichRule")
    }
    async fn remove_rich_rule(&self, _: &str, _: &str) -> firewalld::Result<()> {
        no_firewalld("removeRichRule")
    }
    async fn add_permanent_rich_rule(&self, _: &str, _: &str) -> firewalld::Result<()> {
        no_firewalld("config.zone.addRichRule")
    }
    async fn remove_permanent_rich_rule(&self, _: &str, _: &str) -> firewalld::Result<()> {
        no_firewalld("config.zone.removeRichRule")
    }
    async fn add_own_policy(&self, _: &OwnPolicy) -> firewalld::Result<()> {
        no_firewalld("addPolicy")
    }
    async fn set_policy_entries(&self, _: &str, _: &Entries) -> firewalld::Result<()> {
        no_firewalld("setPolicySettings")
    }
    async fn set_permanent_policy_entries(&self, _: &str, _: &Entries) -> firewalld::Result<()> {
        no_firewalld("config.policy.update")
    }
    async fn passthrough(&self, _: &str, _: &[String]) -> firewalld::Result<()> {
        no_firewalld("direct.passthrough")
    }
    async fn nft(&self, commands: &[serde_json::Value]) -> firewalld::Result<()> {
        nft(commands).await
    }
    async fn write_sysctl(&self, key: &str, value: &str) -> firewalld::Result<()> {
        write_sysctl(key, value)
    }
    async fn set_connection_zone(&self, _: &str, _: &str, _: bool) -> firewalld::Result<()> {
        Err(Error::Local(
            "internal error: a NetworkManager profile needs the system bus, but this plan runs without it"
                .into(),
        ))
    }
    async fn iptables(&self, args: &[String]) -> firewalld::Result<()> {
        iptables(args).await
    }
    async fn write_file(
        &self,
        path: &Path,
        content: Option<&str>,
        mode: u32,
    ) -> firewalld::Result<()> {
        write_file(path, content, mode).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A symlink planted where virtzone's file goes is replaced, never followed; removal takes the
    /// file (or the link) itself, and a missing file is already removed.
    #[test]
    fn files_are_written_and_removed_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("sysctl.d/90-virtzone-bridge.conf");
        std::fs::create_dir(dir.path().join("sysctl.d")).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(read_file(&path).is_err(), "a link is not read through");
        block_on(write_file(&path, Some("a = 0\n"), 0o644)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(read_file(&path).unwrap().as_deref(), Some("a = 0\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        block_on(write_file(&path, None, 0o644)).unwrap();
        assert_eq!(read_file(&path).unwrap(), None);
        block_on(write_file(&path, None, 0o644)).unwrap();
        assert!(victim.exists());
    }
}
