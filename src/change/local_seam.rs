//! The host without firewalld as a [`Seam`]: [`Local`] mutations (the local steps only) and reads
//! that answer the host's questions (nft listings, `/proc/sys`) and say "firewalld is not running"
//! to every firewalld question. What `doctor --fix` changes on the host (Docker's accepts,
//! br_netfilter) and the daemon's keeper of Docker's accepts converge over it, so that their plans
//! can never reach firewalld. A leaf beside the runner and the executor, which name neither it nor
//! each other through it.

use std::collections::{BTreeMap, BTreeSet};

use super::converge::Seam;
use super::executor::Local;
use super::reads::Reads;
use crate::firewalld::{self, Backend, Capabilities, Entries, Error, Object, State};
use crate::networkmanager::{self, Owner, Profile};
use crate::zone::ObjectKind;

impl Seam for Local {
    type Reads = Local;
    type Mutations<'a> = Local;
    fn reads(&self) -> &Local {
        self
    }
    fn mutations(&self, _caps: Option<Capabilities>) -> Local {
        Local
    }
}

/// A firewalld read on the firewalld-less seam: a domain that asks is a bug, said as "not running"
/// so that nothing is planned from it.
fn no_firewalld<T>() -> firewalld::Result<T> {
    Err(Error::NotRunning)
}

fn no_networkmanager<T>() -> networkmanager::Result<T> {
    Err(networkmanager::Error(
        "internal error: a read of NetworkManager on the seam without firewalld".into(),
    ))
}

impl Reads for Local {
    async fn is_running(&self) -> firewalld::Result<bool> {
        Ok(false)
    }
    async fn version_text(&self) -> firewalld::Result<String> {
        no_firewalld()
    }
    async fn state(&self) -> firewalld::Result<State> {
        no_firewalld()
    }
    async fn backend(&self) -> firewalld::Result<Backend> {
        no_firewalld()
    }
    async fn default_zone(&self) -> firewalld::Result<String> {
        no_firewalld()
    }
    async fn services(&self) -> firewalld::Result<BTreeSet<String>> {
        no_firewalld()
    }
    async fn zones(&self) -> firewalld::Result<BTreeSet<String>> {
        no_firewalld()
    }
    async fn permanent_zones(&self) -> firewalld::Result<BTreeSet<String>> {
        no_firewalld()
    }
    async fn policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
        no_firewalld()
    }
    async fn permanent_policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
        no_firewalld()
    }
    async fn active_zones(&self) -> firewalld::Result<BTreeSet<String>> {
        no_firewalld()
    }
    async fn zone_entries(&self, _zone: &str) -> firewalld::Result<Entries> {
        no_firewalld()
    }
    async fn permanent_zone_entries(&self, _zone: &str) -> firewalld::Result<Entries> {
        no_firewalld()
    }
    async fn policy_entries(&self, _policy: &str) -> firewalld::Result<Entries> {
        no_firewalld()
    }
    async fn permanent_policy_entries(&self, _policy: &str) -> firewalld::Result<Entries> {
        no_firewalld()
    }
    async fn zone_of_interface(&self, _interface: &str) -> firewalld::Result<Option<String>> {
        no_firewalld()
    }
    async fn interface_zones(&self) -> firewalld::Result<BTreeMap<String, String>> {
        no_firewalld()
    }
    async fn permanent_zone_of_interface(
        &self,
        _interface: &str,
    ) -> firewalld::Result<Option<String>> {
        no_firewalld()
    }
    async fn permanent_object(
        &self,
        _kind: ObjectKind,
        _name: &str,
        _dict_api: bool,
    ) -> firewalld::Result<Object> {
        no_firewalld()
    }
    async fn bridge_owner(&self, _bridge: &str) -> networkmanager::Result<Owner> {
        no_networkmanager()
    }
    async fn profile(&self, _uuid: &str) -> networkmanager::Result<Option<Profile>> {
        no_networkmanager()
    }
    /// Through firewalld's direct interface, which is not there.
    async fn iptables_rules(&self, _table: &str) -> Option<String> {
        None
    }
    async fn nft_table(&self, family: &'static str, table: &'static str) -> Option<String> {
        super::reads::host_nft_table(family, table).await
    }
    async fn localnet_guard_present(&self) -> Option<bool> {
        super::reads::host_localnet_guard_present().await
    }
    fn sysctl(&self, key: &str) -> Option<String> {
        crate::host::read_sysctl(key)
    }
    fn sysctl_writable(&self, key: &str) -> bool {
        crate::host::sysctl_writable(key)
    }
    fn route_localnet_on(&self) -> Vec<String> {
        crate::host::route_localnet_on()
    }
}
