//! Port forwards to guests and per-network host access (`virtzone forward`, `virtzone allow`).
//!
//! Declared forwards and allows are desired state in the state directory (`forwards.json`); the
//! networks they refer to are recorded by the network hook (`networks.json`). [`plan`] turns those
//! and firewalld's facts into a `change::Plan`, [`apply`] gathers the facts, [`runner`] makes them
//! a `Domain` of the one runner (`change::converge`), which applies the plan with the shared
//! `change::Executor` and records it; [`watch`] lets the daemon re-apply after every rebuild of the
//! ruleset, and [`guard`] keeps the localnet guard in place on its own. docs/forwards.md explains
//! the design.
//!
//! The operations are split by job: the state files ([`store`]), the checks before anything is
//! recorded ([`validate`](mod@validate)), the commands' operations ([`ops`]), the one converge-and-record path
//! they, the hooks and the daemon share ([`reconcile`](mod@reconcile)), the hooks' part ([`hooks`]), the daemon's
//! triggers ([`triggers`]) and the error they all return ([`error`], a leaf). This file only
//! declares the modules and re-exports what callers name as `crate::forward::…`; no child uses it.

pub mod accept;
pub mod apply;
pub mod declared;
pub mod domain;
pub mod error;
pub mod guard;
pub mod hooks;
pub mod iptables;
pub mod masquerade;
pub mod model;
pub mod nat;
pub mod network;
pub mod nft;
pub mod ops;
pub mod plan;
pub mod reconcile;
pub mod request;
pub mod runner;
pub mod store;
pub mod triggers;
pub mod validate;
pub mod watch;

pub use error::ForwardError;
pub use hooks::{domain_hook, network_hook};
pub use ops::{add_domain_forward, add_forward, change_allow, purge, remove_forward, Which};
pub use reconcile::{reconcile, reconcile_checked, Reconciled};
pub use request::{AddDomainForward, AddForward};
pub use store::{
    domain_statuses, read_declared, read_domains, read_networks, FORWARDS_FILE, STORE_DIR,
};
pub use validate::{validate, validate_domain};
