//! The forwards' state files in their own store inside the state directory: the declared forwards
//! and allows (`forwards.json`), the networks the hook recorded (`networks.json`) and the running
//! domains the qemu hook recorded (`domains.json`). Reading only; writes are the operations'.

use super::domain::{self, Domains, Status, DOMAINS_FILE};
use super::error::ForwardError;
use super::model::{Declared, FORMAT_VERSION};
use super::network::{Networks, NETWORKS_FILE};
use crate::state::{StateDir, StateError};

/// The state file of declared forwards and allows.
pub const FORWARDS_FILE: &str = "forwards.json";

/// The subdirectory of the state directory holding forwards' files, with a lock of its own: a
/// forward check must not wait behind a binding reconcile that holds the state lock through its
/// retry pauses (the window in which a forward is dead would grow by them).
pub const STORE_DIR: &str = "forwards";

/// The forwards' own store inside `state` (checking `state` itself first).
pub(super) fn store(state: &StateDir) -> Result<StateDir, ForwardError> {
    state.check()?;
    Ok(StateDir::at(state.path().join(STORE_DIR)))
}

/// [`store`], creating the state directory first if needed (for the commands that write).
pub(super) fn store_created(state: &StateDir) -> Result<StateDir, ForwardError> {
    state.check()?;
    let path = state.path();
    if !path.exists() {
        // Created the way the state directory always is (0700), not by the store's parent
        // creation with the umask's mode.
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StateError::Io {
                    action: "create",
                    path: path.to_path_buf(),
                    source,
                }
                .into())
            }
        }
        state.check()?;
    }
    Ok(StateDir::at(path.join(STORE_DIR)))
}

/// Reads the declared forwards and allows of state directory `state`.
pub fn read_declared(state: &StateDir) -> Result<Declared, ForwardError> {
    declared_in(&store(state)?)
}

/// Reads the recorded networks of state directory `state`.
pub fn read_networks(state: &StateDir) -> Result<Networks, ForwardError> {
    networks_in(&store(state)?)
}

/// Reads the running-domain facts of state directory `state`.
pub fn read_domains(state: &StateDir) -> Result<Domains, ForwardError> {
    domains_in(&store(state)?)
}

pub(super) fn domains_in(state: &StateDir) -> Result<Domains, ForwardError> {
    Ok(state.read(DOMAINS_FILE)?)
}

/// Each domain forward's status now (for `forward list`): reads the lease files it needs.
pub fn domain_statuses(
    state: &StateDir,
) -> Result<std::collections::BTreeMap<u32, Status>, ForwardError> {
    let store = store(state)?;
    let (declared, domains, networks) = (
        declared_in(&store)?,
        domains_in(&store)?,
        networks_in(&store)?,
    );
    let seen = domain::observe(&domain::lease_dir()?, &declared, &domains, &networks);
    Ok(domain::effective(&declared, &[], &domains, &networks, &seen).statuses)
}

/// Reads the declared forwards and allows, refusing a file from a newer virtzone. A version-1 file
/// is read as the current version (it only lacks domain forwards), so the next write upgrades it.
pub(super) fn declared_in(state: &StateDir) -> Result<Declared, ForwardError> {
    let mut d: Declared = state.read(FORWARDS_FILE)?;
    if d.version > FORMAT_VERSION {
        return Err(ForwardError::State(StateError::Corrupt {
            path: state.path().join(FORWARDS_FILE),
            reason: format!(
                "format version {} is newer than this virtzone's {FORMAT_VERSION}",
                d.version
            ),
        }));
    }
    d.version = FORMAT_VERSION;
    Ok(d)
}

pub(super) fn networks_in(state: &StateDir) -> Result<Networks, ForwardError> {
    Ok(state.read(NETWORKS_FILE)?)
}

/// Whether state directory `state` declares any forward or allow, or records applied domain
/// forwards: otherwise a check has nothing to do and asks nothing of firewalld. Takes no lock and
/// creates nothing.
pub(super) fn has_work(state: &StateDir) -> Result<bool, ForwardError> {
    let state = &store(state)?;
    let declared = declared_in(state)?;
    Ok(!declared.forwards.is_empty()
        || !declared.domain_forwards.is_empty()
        || !declared.allows.is_empty()
        || !domains_in(state)?.applied.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_files_are_read_and_newer_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("s"));
        std::fs::create_dir_all(state.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let v1 = r#"{"version":1,"next_id":2,"forwards":[{"id":1,"network":"n1",
            "guest":"192.0.2.5","proto":"tcp","host_port":"80","guest_port":"80"}]}"#;
        std::fs::write(state.path().join(FORWARDS_FILE), v1).unwrap();
        std::fs::set_permissions(
            state.path().join(FORWARDS_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let d = declared_in(&state).unwrap();
        assert_eq!((d.version, d.forwards.len()), (FORMAT_VERSION, 1));
        let v9 = v1.replace("\"version\":1", "\"version\":9");
        std::fs::write(state.path().join(FORWARDS_FILE), v9).unwrap();
        assert!(declared_in(&state).is_err());
    }
}
