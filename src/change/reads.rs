//! The read side of the seam, the mirror of [`Mutations`](super::Mutations): firewalld's reads and
//! the host's (nft listings, kernel settings), one method per read, so that a gather and the
//! orchestration around it can be tested against a recording fake ([`fake::Recorded`]) without
//! root or a bus. Planners never read; they get what a [`Reads`] gathered.
//!
//! The live implementation is [`Firewalld`] itself (firewalld's calls on its connection, the host's
//! reads as external commands and `/proc/sys`). "Is firewalld running" is [`Reads::is_running`];
//! libvirt's backend is decided from what these read by `libvirt::firewall::Rules`.

use std::collections::{BTreeMap, BTreeSet};

use crate::firewalld::{self, Backend, Entries, Firewalld, Object, State};
use crate::networkmanager::{self, NetworkManager, Owner, Profile};
use crate::zone::ObjectKind;

/// The reads of a gather, one method per firewalld call or host read.
// Implemented inside the crate only (the live client, test fakes); callers are generic, not `dyn`.
#[allow(async_fn_in_trait)]
pub trait Reads {
    /// Whether anybody owns firewalld's bus name (`NameHasOwner`; never activates firewalld).
    async fn is_running(&self) -> firewalld::Result<bool>;
    /// firewalld's `version` property, verbatim.
    async fn version_text(&self) -> firewalld::Result<String>;
    /// firewalld's `state` property.
    async fn state(&self) -> firewalld::Result<State>;
    /// firewalld's `FirewallBackend` property (iptables before 0.6.0, which lacks it).
    async fn backend(&self) -> firewalld::Result<Backend>;
    /// `getDefaultZone`.
    async fn default_zone(&self) -> firewalld::Result<String>;
    /// Runtime zone names.
    async fn zones(&self) -> firewalld::Result<BTreeSet<String>>;
    /// The services firewalld knows (`listServices`).
    async fn services(&self) -> firewalld::Result<BTreeSet<String>>;
    /// Permanent zone names.
    async fn permanent_zones(&self) -> firewalld::Result<BTreeSet<String>>;
    /// Runtime policy names; `None` before firewalld 0.9.0 (no policies).
    async fn policies(&self) -> firewalld::Result<Option<BTreeSet<String>>>;
    /// Permanent policy names; `None` before firewalld 0.9.0.
    async fn permanent_policies(&self) -> firewalld::Result<Option<BTreeSet<String>>>;
    /// The zones with interfaces or sources bound at runtime.
    async fn active_zones(&self) -> firewalld::Result<BTreeSet<String>>;
    /// A runtime zone's entries.
    async fn zone_entries(&self, zone: &str) -> firewalld::Result<Entries>;
    /// A permanent zone's entries.
    async fn permanent_zone_entries(&self, zone: &str) -> firewalld::Result<Entries>;
    /// A runtime policy's entries.
    async fn policy_entries(&self, policy: &str) -> firewalld::Result<Entries>;
    /// A permanent policy's entries.
    async fn permanent_policy_entries(&self, policy: &str) -> firewalld::Result<Entries>;
    /// The runtime zone of `interface`, `None` when it is in none.
    async fn zone_of_interface(&self, interface: &str) -> firewalld::Result<Option<String>>;
    /// Every runtime interface → zone binding (`getActiveZones`, one call).
    async fn interface_zones(&self) -> firewalld::Result<BTreeMap<String, String>>;
    /// The permanent zone of `interface`, `None` when it is in none.
    async fn permanent_zone_of_interface(
        &self,
        interface: &str,
    ) -> firewalld::Result<Option<String>>;
    /// The permanent zone or policy `name`, which the caller knows exists; `dict_api`: firewalld
    /// 0.9.0 or newer (zones older ones hold are not compared).
    async fn permanent_object(
        &self,
        kind: ObjectKind,
        name: &str,
        dict_api: bool,
    ) -> firewalld::Result<Object>;
    /// Who sends `bridge`'s zone to firewalld: NetworkManager (from a profile) or nobody.
    async fn bridge_owner(&self, bridge: &str) -> networkmanager::Result<Owner>;
    /// NetworkManager's profile `uuid`, `None` when it is gone or NetworkManager does not run.
    async fn profile(&self, uuid: &str) -> networkmanager::Result<Option<Profile>>;
    /// `iptables -t TABLE -S` (IPv4) through firewalld's direct interface; `None` when firewalld
    /// cannot run it.
    async fn iptables_rules(&self, table: &str) -> Option<String>;
    /// `nft -j list table FAMILY TABLE`; `None` when the table does not exist or nft cannot run.
    async fn nft_table(&self, family: &'static str, table: &'static str) -> Option<String>;
    /// Whether virtzone's localnet guard is in place; `None` when nft cannot run.
    async fn localnet_guard_present(&self) -> Option<bool>;
    /// `/proc/sys/KEY`, trimmed; `None` when it cannot be read.
    fn sysctl(&self, key: &str) -> Option<String>;
    /// Whether `/proc/sys/KEY` may be written.
    fn sysctl_writable(&self, key: &str) -> bool;
    /// The interfaces (and `all`) whose `route_localnet` is on.
    fn route_localnet_on(&self) -> Vec<String>;
}

impl Reads for Firewalld {
    async fn is_running(&self) -> firewalld::Result<bool> {
        Firewalld::is_running(self).await
    }
    async fn version_text(&self) -> firewalld::Result<String> {
        Firewalld::version_text(self).await
    }
    async fn state(&self) -> firewalld::Result<State> {
        Firewalld::state(self).await
    }
    async fn backend(&self) -> firewalld::Result<Backend> {
        Firewalld::backend(self).await
    }
    async fn default_zone(&self) -> firewalld::Result<String> {
        Firewalld::default_zone(self).await
    }
    async fn zones(&self) -> firewalld::Result<BTreeSet<String>> {
        Firewalld::zones(self).await
    }
    async fn services(&self) -> firewalld::Result<BTreeSet<String>> {
        Firewalld::services(self).await
    }
    async fn permanent_zones(&self) -> firewalld::Result<BTreeSet<String>> {
        Firewalld::permanent_zones(self).await
    }
    async fn policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
        Firewalld::policies(self).await
    }
    async fn permanent_policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
        Firewalld::permanent_policies(self).await
    }
    async fn active_zones(&self) -> firewalld::Result<BTreeSet<String>> {
        Ok(Firewalld::active_zones(self).await?.into_keys().collect())
    }
    async fn zone_entries(&self, zone: &str) -> firewalld::Result<Entries> {
        Firewalld::zone_entries(self, zone).await
    }
    async fn permanent_zone_entries(&self, zone: &str) -> firewalld::Result<Entries> {
        Firewalld::permanent_zone_entries(self, zone).await
    }
    async fn policy_entries(&self, policy: &str) -> firewalld::Result<Entries> {
        Firewalld::policy_entries(self, policy).await
    }
    async fn permanent_policy_entries(&self, policy: &str) -> firewalld::Result<Entries> {
        Firewalld::permanent_policy_entries(self, policy).await
    }
    async fn zone_of_interface(&self, interface: &str) -> firewalld::Result<Option<String>> {
        Firewalld::zone_of_interface(self, interface).await
    }
    async fn interface_zones(&self) -> firewalld::Result<BTreeMap<String, String>> {
        Firewalld::interface_zones(self).await
    }
    async fn permanent_zone_of_interface(
        &self,
        interface: &str,
    ) -> firewalld::Result<Option<String>> {
        Firewalld::permanent_zone_of_interface(self, interface).await
    }
    async fn permanent_object(
        &self,
        kind: ObjectKind,
        name: &str,
        dict_api: bool,
    ) -> firewalld::Result<Object> {
        Firewalld::permanent_object(self, kind, name, dict_api).await
    }
    async fn bridge_owner(&self, bridge: &str) -> networkmanager::Result<Owner> {
        NetworkManager::new(self.connection()).owner(bridge).await
    }
    async fn profile(&self, uuid: &str) -> networkmanager::Result<Option<Profile>> {
        NetworkManager::new(self.connection()).profile(uuid).await
    }
    async fn iptables_rules(&self, table: &str) -> Option<String> {
        Firewalld::iptables_rules(self, table).await
    }
    async fn nft_table(&self, family: &'static str, table: &'static str) -> Option<String> {
        host_nft_table(family, table).await
    }
    async fn localnet_guard_present(&self) -> Option<bool> {
        host_localnet_guard_present().await
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

/// [`Reads::nft_table`] on this host, for every live implementation (with or without firewalld).
pub(crate) async fn host_nft_table(family: &'static str, table: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        crate::external::nft_json(&["list", "table", family, table])
    })
    .await
    .ok()?
    .ok()
}

/// [`Reads::localnet_guard_present`] on this host.
pub(crate) async fn host_localnet_guard_present() -> Option<bool> {
    tokio::task::spawn_blocking(crate::host::localnet_guard_present)
        .await
        .ok()
        .flatten()
}

/// A recording fake of [`Reads`] for unit tests of gathers and orchestration (no root, no bus).
#[cfg(test)]
pub mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use crate::firewalld::{self, Backend, Entries, Error, Object, State};
    use crate::networkmanager::{self, Owner, Profile};
    use crate::zone::ObjectKind;

    /// A firewalld and host that answer from these fields; every read is recorded in `calls`
    /// (firewalld's by its D-Bus method name, as `dbus-monitor` shows them, host reads as `nft`,
    /// `sysctl`).
    #[derive(Debug, Default)]
    pub struct Recorded {
        /// `None`: nobody owns firewalld's name.
        pub version: Option<String>,
        /// The default zone.
        pub default_zone: String,
        /// Runtime zones and their entries.
        pub zones: BTreeMap<String, Entries>,
        /// Permanent zones and their entries.
        pub permanent_zones: BTreeMap<String, Entries>,
        /// Runtime policies (`None`: before 0.9.0).
        pub policies: Option<BTreeMap<String, Entries>>,
        /// Permanent policies.
        pub permanent_policies: Option<BTreeMap<String, Entries>>,
        /// interface → runtime zone.
        pub interfaces: BTreeMap<String, String>,
        /// interface → permanent zone.
        pub permanent_interfaces: BTreeMap<String, String>,
        /// The permanent shipped objects' definitions, by kind and name.
        pub objects: BTreeMap<(ObjectKind, String), Object>,
        /// bridge → the NetworkManager profile that holds its zone (absent: firewalld's bindings).
        pub nm_owners: BTreeMap<String, Profile>,
        /// The services firewalld knows.
        pub services: BTreeSet<String>,
        /// `iptables -t TABLE -S` by table.
        pub iptables: BTreeMap<String, String>,
        /// `nft -j list table FAMILY TABLE` by family.
        pub nft: BTreeMap<String, String>,
        /// `/proc/sys` by key.
        pub sysctls: BTreeMap<String, String>,
        /// The reads made, in order.
        pub calls: Mutex<Vec<String>>,
        /// Reads whose record starts with one of these do not answer (a firewalld that stopped
        /// answering part-way).
        pub fail_reads: Vec<&'static str>,
    }

    impl Recorded {
        fn record(&self, call: impl Into<String>) -> firewalld::Result<()> {
            let call = call.into();
            let fails = self.fail_reads.iter().any(|f| call.starts_with(f));
            self.calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(call.clone());
            match fails {
                true => Err(Error::NoAnswer {
                    what: call,
                    after: std::time::Duration::from_secs(30),
                }),
                false => Ok(()),
            }
        }

        /// The reads made so far, and forgets them.
        pub fn take_calls(&self) -> Vec<String> {
            std::mem::take(
                &mut *self
                    .calls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
        }

        fn running(&self) -> firewalld::Result<()> {
            match self.version {
                Some(_) => Ok(()),
                None => Err(Error::NotRunning),
            }
        }
    }

    fn entries_of(
        map: Option<&BTreeMap<String, Entries>>,
        name: &str,
    ) -> firewalld::Result<Entries> {
        map.and_then(|m| m.get(name))
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("INVALID_ZONE: {name}")))
    }

    impl super::Reads for Recorded {
        async fn is_running(&self) -> firewalld::Result<bool> {
            self.record("NameHasOwner")?;
            Ok(self.version.is_some())
        }
        async fn version_text(&self) -> firewalld::Result<String> {
            self.record("Get version")?;
            self.running()?;
            Ok(self.version.clone().unwrap_or_default())
        }
        async fn state(&self) -> firewalld::Result<State> {
            self.record("Get state")?;
            self.running()?;
            Ok(State::Running)
        }
        async fn backend(&self) -> firewalld::Result<Backend> {
            self.record("Get FirewallBackend")?;
            self.running()?;
            Ok(Backend::Nftables)
        }
        async fn default_zone(&self) -> firewalld::Result<String> {
            self.record("getDefaultZone")?;
            self.running()?;
            Ok(self.default_zone.clone())
        }
        async fn zones(&self) -> firewalld::Result<BTreeSet<String>> {
            self.record("getZones")?;
            self.running()?;
            Ok(self.zones.keys().cloned().collect())
        }
        async fn services(&self) -> firewalld::Result<BTreeSet<String>> {
            self.record("listServices")?;
            self.running()?;
            Ok(self.services.clone())
        }
        async fn permanent_zones(&self) -> firewalld::Result<BTreeSet<String>> {
            self.record("getZoneNames")?;
            self.running()?;
            Ok(self.permanent_zones.keys().cloned().collect())
        }
        async fn policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
            self.record("getPolicies")?;
            self.running()?;
            Ok(self.policies.as_ref().map(|p| p.keys().cloned().collect()))
        }
        async fn permanent_policies(&self) -> firewalld::Result<Option<BTreeSet<String>>> {
            self.record("getPolicyNames")?;
            self.running()?;
            Ok(self
                .permanent_policies
                .as_ref()
                .map(|p| p.keys().cloned().collect()))
        }
        async fn active_zones(&self) -> firewalld::Result<BTreeSet<String>> {
            self.record("getActiveZones")?;
            self.running()?;
            Ok(self.interfaces.values().cloned().collect())
        }
        async fn zone_entries(&self, zone: &str) -> firewalld::Result<Entries> {
            self.record(format!("getZoneSettings2 {zone}"))?;
            entries_of(Some(&self.zones), zone)
        }
        async fn permanent_zone_entries(&self, zone: &str) -> firewalld::Result<Entries> {
            self.record(format!("getZoneByName+getSettings2 {zone}"))?;
            entries_of(Some(&self.permanent_zones), zone)
        }
        async fn policy_entries(&self, policy: &str) -> firewalld::Result<Entries> {
            self.record(format!("getPolicySettings {policy}"))?;
            entries_of(self.policies.as_ref(), policy)
        }
        async fn permanent_policy_entries(&self, policy: &str) -> firewalld::Result<Entries> {
            self.record(format!("getPolicyByName+getSettings {policy}"))?;
            entries_of(self.permanent_policies.as_ref(), policy)
        }
        async fn zone_of_interface(&self, interface: &str) -> firewalld::Result<Option<String>> {
            self.record(format!("getZoneOfInterface {interface}"))?;
            self.running()?;
            Ok(self.interfaces.get(interface).cloned())
        }
        async fn interface_zones(&self) -> firewalld::Result<BTreeMap<String, String>> {
            self.record("getActiveZones")?;
            self.running()?;
            Ok(self.interfaces.clone())
        }
        async fn permanent_zone_of_interface(
            &self,
            interface: &str,
        ) -> firewalld::Result<Option<String>> {
            self.record(format!("config.getZoneOfInterface {interface}"))?;
            self.running()?;
            Ok(self.permanent_interfaces.get(interface).cloned())
        }
        async fn permanent_object(
            &self,
            kind: ObjectKind,
            name: &str,
            _dict_api: bool,
        ) -> firewalld::Result<Object> {
            self.record(format!("getSettings {name}"))?;
            self.running()?;
            self.objects
                .get(&(kind, name.to_string()))
                .cloned()
                .ok_or_else(|| Error::Protocol(format!("INVALID_ZONE: {name}")))
        }
        async fn bridge_owner(&self, bridge: &str) -> networkmanager::Result<Owner> {
            self.record(format!("GetDeviceByIpIface {bridge}"))
                .map_err(|e| networkmanager::Error(e.to_string()))?;
            Ok(match self.nm_owners.get(bridge) {
                Some(p) => Owner::NetworkManager(p.clone()),
                None => Owner::Firewalld,
            })
        }
        async fn profile(&self, uuid: &str) -> networkmanager::Result<Option<Profile>> {
            self.record(format!("GetConnectionByUuid {uuid}"))
                .map_err(|e| networkmanager::Error(e.to_string()))?;
            Ok(self.nm_owners.values().find(|p| p.uuid == uuid).cloned())
        }
        async fn iptables_rules(&self, table: &str) -> Option<String> {
            self.record(format!("passthrough -t {table} -S")).ok()?;
            self.iptables.get(table).cloned()
        }
        async fn nft_table(&self, family: &'static str, table: &'static str) -> Option<String> {
            self.record(format!("nft list table {family} {table}"))
                .ok()?;
            self.nft.get(family).cloned()
        }
        async fn localnet_guard_present(&self) -> Option<bool> {
            self.record("nft list tables inet").ok()?;
            Some(false)
        }
        fn sysctl(&self, key: &str) -> Option<String> {
            self.record(format!("sysctl {key}")).ok()?;
            self.sysctls.get(key).cloned()
        }
        fn sysctl_writable(&self, _key: &str) -> bool {
            true
        }
        fn route_localnet_on(&self) -> Vec<String> {
            self.sysctls
                .iter()
                .filter(|(k, v)| k.ends_with("/route_localnet") && v.as_str() == "1")
                .filter_map(|(k, _)| k.split('/').nth(3).map(str::to_string))
                .collect()
        }
    }
}
