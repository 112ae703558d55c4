//! The message bus itself, not any service on it: whether a name has an owner, and how long one
//! call of this process may take. A leaf: firewalld's client, its errors, NetworkManager's client,
//! `doctor` and the commands all build on it, and it names none of them.

use std::time::Duration;

use zbus::Connection;

/// How long one call may take in the daemon. Before firewalld 2.4.0 the bus name appears before the
/// rules are loaded and calls queue behind the load, which can take many seconds on a big ruleset.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one call of a command may take unless `CommandTimeout=` says otherwise: a person waits at
/// the prompt, and a firewalld that answers nothing for this long is stopped or hung, not loading.
pub const COMMAND_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The call timeout of this process, set once by a command before it connects.
static CALL_BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets how long each firewalld call of this process may take (the first setting wins). Without it,
/// [`CALL_TIMEOUT`] applies.
pub fn set_call_timeout(timeout: Duration) {
    let _ = CALL_BUDGET.set(timeout);
}

/// How long each firewalld call of this process may take.
pub fn call_timeout() -> Duration {
    CALL_BUDGET.get().copied().unwrap_or(CALL_TIMEOUT)
}

/// Whether anybody owns `name` on the bus of `conn` (`NameHasOwner`). Asked of the bus daemon, so it
/// never starts the service by D-Bus activation. The one implementation: firewalld's "is it
/// running" ([`super::Firewalld::is_running`]), NetworkManager's, the daemon's presence for the
/// commands and `doctor` are all this call.
pub async fn name_has_owner(conn: &Connection, name: &str) -> zbus::Result<bool> {
    let name = zbus::names::BusName::try_from(name)?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    Ok(dbus.name_has_owner(name).await?)
}
