//! A client of the daemon's interface, used by the CLI to go through the daemon when it runs.

use zbus::proxy;

/// The daemon's bus name.
pub const BUS_NAME: &str = "org.virtzone.VirtZone1";
/// Its object.
pub const PATH: &str = "/org/virtzone/VirtZone1";

/// `org.virtzone.VirtZone1`.
#[proxy(
    interface = "org.virtzone.VirtZone1",
    default_service = "org.virtzone.VirtZone1",
    default_path = "/org/virtzone/VirtZone1"
)]
pub trait VirtZone1 {
    /// Binds and records; kept across firewalld reloads.
    fn attach(&self, bridge: &str, zone: &str) -> zbus::Result<String>;
    /// Unbinds and forgets.
    fn detach(&self, bridge: &str) -> zbus::Result<String>;
    /// Completed reconciles.
    #[zbus(property)]
    fn reconcile_count(&self) -> zbus::Result<u64>;
}

/// Turns a daemon error into the sentence it carries, and whether it was bad input.
pub fn describe(e: &zbus::Error) -> (bool, String) {
    match e {
        zbus::Error::MethodError(name, _, _)
            if name.as_str() == "org.virtzone.VirtZone1.Error.AccessDenied" =>
        {
            (
                false,
                "permission denied: only root may change bindings through virtzone's daemon".into(),
            )
        }
        zbus::Error::MethodError(name, detail, _) => {
            let detail = detail.clone().unwrap_or_else(|| name.to_string());
            (
                name.as_str() == "org.virtzone.VirtZone1.Error.InvalidArgument",
                detail,
            )
        }
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            // The bus's own refusal carries a rule dump; the sentence that matters is this one.
            zbus::fdo::Error::AccessDenied(_) => (
                false,
                "permission denied: only root may change bindings through virtzone's daemon".into(),
            ),
            other => (false, other.to_string()),
        },
        other => (false, other.to_string()),
    }
}
