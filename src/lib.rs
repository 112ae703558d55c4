//! virtzone: firewalld zones and bridge bindings that keep libvirt guest networking working.
//!
//! The crate follows the layering described in `docs/architecture.md`: inputs (CLI, hookData, D-Bus)
//! are parsed into validated values, facts are gathered once per command into a
//! [`change::snapshot::Snapshot`], pure planners turn them into a [`change::Plan`] (or a typed refusal), and
//! [`change::Executor`], the only code that changes firewalld, applies it.

pub mod bind;
pub mod change;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod declare;
pub mod doctor;
pub mod external;
pub mod firewalld;
pub mod forward;
pub mod heal;
// Fuzz targets of the parsers of outside input (docs/fuzzing.md): unit tests, so crate-private
// parsers stay private.
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod install;
pub mod libvirt;
pub mod names;
pub mod networkmanager;
pub mod precheck;
pub mod state;
pub mod status;
pub mod verify;
pub mod zone;

/// The zone for NAT, isolated and forwardless networks.
pub const LIBVIRT_ZONE: &str = "libvirt";
/// The zone for routed networks.
pub const LIBVIRT_ROUTED_ZONE: &str = "libvirt-routed";
/// The policy whose presence tells that routed networks can use `libvirt-routed`.
pub const LIBVIRT_ROUTED_OUT_POLICY: &str = "libvirt-routed-out";
