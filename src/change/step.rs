//! The plan every change goes through: ordered [`Step`]s with their inverses, and the typed
//! [`Refusal`]s and [`Warning`]s planners answer with. Plain data, shared by the planners, the
//! executor and the runner.

use std::fmt;

use serde::Serialize;

use crate::firewalld::{Entries, ForwardPortEntry, OwnPolicy};
use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Zone};

/// One change to firewalld (or, for the nft steps, to libvirt's nftables table). Every step but
/// [`Step::Reload`], [`Step::Iptables`] and the nft steps has an inverse
/// (see [`Step::inverse`]), which is what the executor applies to roll back.
///
/// The zone of the forward-port and rich-rule steps is a name firewalld reported (its default
/// zone), not user input, so it is a plain string.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Binds `interface` to `zone` at runtime, moving it out of `previous` (`None`: it was unbound).
    ChangeZoneOfInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
        /// Where it was before, for the inverse.
        previous: Option<ZoneName>,
    },
    /// Unbinds `interface` from `zone` at runtime.
    RemoveInterface {
        /// The zone it is in.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Binds `interface` to `zone` in the permanent configuration.
    AddPermanentInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Unbinds `interface` from `zone` in the permanent configuration.
    RemovePermanentInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Adds a permanent zone.
    AddZone(Zone),
    /// Adds a permanent policy.
    AddPolicy(Policy),
    /// Replaces a permanent zone's definition (its bindings stay).
    UpdateZone {
        /// The new definition.
        zone: Box<Zone>,
        /// The definition before, for the inverse.
        previous: Box<Zone>,
    },
    /// Removes a permanent zone; `previous` is its definition, for the inverse.
    RemoveZone(Zone),
    /// Removes a permanent policy; `previous` is its definition, for the inverse.
    RemovePolicy(Policy),
    /// Reloads firewalld so the permanent configuration becomes live. A failed reload keeps the rules
    /// that ran before, so it needs no inverse.
    Reload,
    /// Adds a `forward-port` to a runtime zone.
    AddForwardPort {
        /// The zone.
        zone: String,
        /// The entry.
        entry: ForwardPortEntry,
    },
    /// Removes a `forward-port` from a runtime zone.
    RemoveForwardPort {
        /// The zone.
        zone: String,
        /// The entry.
        entry: ForwardPortEntry,
    },
    /// Adds a `forward-port` to a permanent zone.
    AddPermanentForwardPort {
        /// The zone.
        zone: String,
        /// The entry.
        entry: ForwardPortEntry,
    },
    /// Removes a `forward-port` from a permanent zone.
    RemovePermanentForwardPort {
        /// The zone.
        zone: String,
        /// The entry.
        entry: ForwardPortEntry,
    },
    /// Adds a rich rule to a runtime zone.
    AddRichRule {
        /// The zone.
        zone: String,
        /// The rule, as firewalld prints it.
        rule: String,
    },
    /// Removes a rich rule from a runtime zone.
    RemoveRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Adds a rich rule to a permanent zone.
    AddPermanentRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Removes a rich rule from a permanent zone.
    RemovePermanentRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Adds one of virtzone's own policies to the permanent configuration (a reload makes it live:
    /// firewalld cannot create a runtime policy any other way).
    AddOwnPolicy(OwnPolicy),
    /// Removes one of virtzone's own policies from the permanent configuration; it carries the
    /// policy as created, for the inverse.
    RemoveOwnPolicy(OwnPolicy),
    /// Sets the entries of one of virtzone's own runtime policies (the keys of [`Entries`] only).
    SetPolicyEntries {
        /// The policy.
        name: String,
        /// The entries wanted.
        entries: Entries,
        /// The entries before, for the inverse.
        previous: Entries,
    },
    /// Sets the entries of one of virtzone's own permanent policies.
    SetPermanentPolicyEntries {
        /// The policy.
        name: String,
        /// The entries wanted.
        entries: Entries,
        /// The entries before, for the inverse.
        previous: Entries,
    },
    /// One `iptables -t TABLE ARGS` command (IPv4), run by firewalld's direct `passthrough` so it
    /// uses the same iptables as firewalld and libvirt. No inverse: iptables steps are planned from
    /// `iptables -S` on every check and re-planned, and some cannot be undone in place (a deleted
    /// jump cannot be put back at its old position).
    Iptables {
        /// The table (`filter` for accepts, `nat` for hairpin masquerades).
        table: String,
        /// Arguments after `-t TABLE`.
        args: Vec<String>,
    },
    /// Inserts rules at the top of a chain of another program's nftables table (libvirt's
    /// `guest_input` with its nftables firewall backend), all in one `nft -j -f -` transaction
    /// (one nft run however many rules: the run, not the rule, is what costs time after every
    /// rebuild). No inverse, like [`Step::Iptables`]: planned from `nft -j list table` on every
    /// check.
    NftInsertRules {
        /// The table's family (`ip` or `ip6`).
        family: String,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The rules.
        rules: Vec<NftRule>,
    },
    /// Deletes rules, by handle, from a chain of an nftables table, in one transaction.
    NftDeleteRules {
        /// The table's family.
        family: String,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// nft's handles of the rules.
        handles: Vec<u64>,
    },
    /// Makes virtzone's own NAT table (`ip virtzone_nat`, [`crate::forward::nat`]) hold exactly
    /// these networks' masquerades and these forwards' DNATs, in one nft transaction; none: the
    /// table goes. No inverse: planned from the table's listing on every check.
    OwnNat {
        /// The masquerades wanted.
        masquerades: Vec<crate::forward::masquerade::Masquerade>,
        /// The forwards' DNATs wanted.
        dnats: Vec<crate::forward::masquerade::Dnat>,
    },
    /// Puts virtzone's localnet guard (see [`crate::host::LOCALNET_GUARD`]) in place or takes it
    /// away. Not firewalld either, and for the same reason in the same plan.
    LocalnetGuard {
        /// In place (`true`) or gone.
        present: bool,
    },
    /// Writes `value` to the kernel setting `/proc/sys/KEY` of virtzone's network namespace (the
    /// only one: `route_localnet` of a bridge, for forwards of the host's loopback address). Not a
    /// firewalld change, but a change of the same plan, so it goes through the same executor.
    Sysctl {
        /// The path below `/proc/sys`, e.g. `net/ipv4/conf/virbr0/route_localnet` (a path, not
        /// the dotted name: bridge names may contain dots).
        key: String,
        /// The value wanted.
        value: String,
        /// The value before, for the inverse.
        previous: String,
    },
    /// Sets `connection.zone` of a NetworkManager profile (the owner of a bridge NetworkManager
    /// manages: it re-sends that zone to firewalld on every activation, reload and restart). Not a
    /// firewalld call, but the binding of the same plan.
    SetConnectionZone {
        /// The profile's uuid.
        uuid: String,
        /// The profile's name, for messages.
        profile: String,
        /// The zone wanted; empty: NetworkManager's default placement (firewalld's default zone).
        zone: String,
        /// The zone before, for the inverse.
        previous: String,
        /// Written to the profile's file (`--permanent`), or in memory only.
        to_disk: bool,
    },
    /// Inserts (at the top) or deletes one rule of a chain of the host's IPv4 filter table, by
    /// running `iptables` itself: for the chains of a program that does not go through firewalld
    /// (Docker's `DOCKER-USER`), which firewalld may not even be running beside. The inverse is the
    /// other operation.
    IptablesRule {
        /// The chain.
        chain: String,
        /// The rule's arguments after the chain (`-i virbr0 -o eth0 -j ACCEPT`).
        rule: Vec<String>,
        /// Inserted (`-I`) or deleted (`-D`).
        insert: bool,
    },
    /// Replaces a file (one of virtzone's own under /etc, e.g. a sysctl.d drop-in) atomically, or
    /// removes it (`content` `None`), never following a symlink; `previous` is the content before
    /// (`None`: there was no file), for the inverse.
    WriteFile {
        /// The file.
        path: std::path::PathBuf,
        /// The content wanted; `None`: no file.
        content: Option<String>,
        /// The content before, for the inverse.
        previous: Option<String>,
        /// The file's mode when written.
        mode: u32,
    },
    /// Adds an empty nftables table where none of that name exists (`nft add table` leaves an
    /// existing one alone). After a wipe, firewalld's reload begins by deleting its table and fails
    /// when the table is gone (measured with 1.3.3): the heal gives it one to delete. Not firewalld,
    /// but the plan of its reload.
    NftAddTable {
        /// The table's family (`inet`).
        family: String,
        /// The table.
        name: String,
    },
}

impl Step {
    /// The step that undoes this one, `None` for [`Step::Reload`], [`Step::Iptables`], the nft
    /// steps and the localnet guard's addition.
    pub fn inverse(&self) -> Option<Step> {
        Some(match self {
            Step::ChangeZoneOfInterface {
                zone,
                interface,
                previous: Some(previous),
            } => Step::ChangeZoneOfInterface {
                zone: previous.clone(),
                interface: interface.clone(),
                previous: Some(zone.clone()),
            },
            Step::ChangeZoneOfInterface {
                zone,
                interface,
                previous: None,
            } => Step::RemoveInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::RemoveInterface { zone, interface } => Step::ChangeZoneOfInterface {
                zone: zone.clone(),
                interface: interface.clone(),
                previous: None,
            },
            Step::AddPermanentInterface { zone, interface } => Step::RemovePermanentInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::RemovePermanentInterface { zone, interface } => Step::AddPermanentInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::AddZone(z) => Step::RemoveZone(z.clone()),
            Step::AddPolicy(p) => Step::RemovePolicy(p.clone()),
            Step::UpdateZone { zone, previous } => Step::UpdateZone {
                zone: previous.clone(),
                previous: zone.clone(),
            },
            Step::RemoveZone(z) => Step::AddZone(z.clone()),
            Step::RemovePolicy(p) => Step::AddPolicy(p.clone()),
            Step::AddForwardPort { zone, entry } => Step::RemoveForwardPort {
                zone: zone.clone(),
                entry: entry.clone(),
            },
            Step::RemoveForwardPort { zone, entry } => Step::AddForwardPort {
                zone: zone.clone(),
                entry: entry.clone(),
            },
            Step::AddPermanentForwardPort { zone, entry } => Step::RemovePermanentForwardPort {
                zone: zone.clone(),
                entry: entry.clone(),
            },
            Step::RemovePermanentForwardPort { zone, entry } => Step::AddPermanentForwardPort {
                zone: zone.clone(),
                entry: entry.clone(),
            },
            Step::AddRichRule { zone, rule } => Step::RemoveRichRule {
                zone: zone.clone(),
                rule: rule.clone(),
            },
            Step::RemoveRichRule { zone, rule } => Step::AddRichRule {
                zone: zone.clone(),
                rule: rule.clone(),
            },
            Step::AddPermanentRichRule { zone, rule } => Step::RemovePermanentRichRule {
                zone: zone.clone(),
                rule: rule.clone(),
            },
            Step::RemovePermanentRichRule { zone, rule } => Step::AddPermanentRichRule {
                zone: zone.clone(),
                rule: rule.clone(),
            },
            Step::AddOwnPolicy(p) => Step::RemoveOwnPolicy(p.clone()),
            Step::RemoveOwnPolicy(p) => Step::AddOwnPolicy(p.clone()),
            Step::SetPolicyEntries {
                name,
                entries,
                previous,
            } => Step::SetPolicyEntries {
                name: name.clone(),
                entries: previous.clone(),
                previous: entries.clone(),
            },
            Step::SetPermanentPolicyEntries {
                name,
                entries,
                previous,
            } => Step::SetPermanentPolicyEntries {
                name: name.clone(),
                entries: previous.clone(),
                previous: entries.clone(),
            },
            Step::Sysctl {
                key,
                value,
                previous,
            } => Step::Sysctl {
                key: key.clone(),
                value: previous.clone(),
                previous: value.clone(),
            },
            // A rollback never takes the guard away: `route_localnet` may be on from before this
            // plan (or for another interface), and the guard costs nothing without it. The next
            // plan removes it once no interface has the setting on.
            Step::LocalnetGuard { present: true } => return None,
            Step::LocalnetGuard { present: false } => Step::LocalnetGuard { present: true },
            Step::SetConnectionZone {
                uuid,
                profile,
                zone,
                previous,
                to_disk,
            } => Step::SetConnectionZone {
                uuid: uuid.clone(),
                profile: profile.clone(),
                zone: previous.clone(),
                previous: zone.clone(),
                to_disk: *to_disk,
            },
            Step::IptablesRule {
                chain,
                rule,
                insert,
            } => Step::IptablesRule {
                chain: chain.clone(),
                rule: rule.clone(),
                insert: !insert,
            },
            Step::WriteFile {
                path,
                content,
                previous,
                mode,
            } => Step::WriteFile {
                path: path.clone(),
                content: previous.clone(),
                previous: content.clone(),
                mode: *mode,
            },
            Step::Reload
            | Step::Iptables { .. }
            | Step::NftInsertRules { .. }
            | Step::NftDeleteRules { .. }
            | Step::OwnNat { .. }
            | Step::NftAddTable { .. } => return None,
        })
    }

    /// Whether the step changes the permanent configuration (which a reload makes live).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Step::AddPermanentInterface { .. }
                | Step::RemovePermanentInterface { .. }
                | Step::AddZone(_)
                | Step::AddPolicy(_)
                | Step::UpdateZone { .. }
                | Step::RemoveZone(_)
                | Step::RemovePolicy(_)
                | Step::AddPermanentForwardPort { .. }
                | Step::RemovePermanentForwardPort { .. }
                | Step::AddPermanentRichRule { .. }
                | Step::RemovePermanentRichRule { .. }
                | Step::AddOwnPolicy(_)
                | Step::RemoveOwnPolicy(_)
                | Step::SetPermanentPolicyEntries { .. }
        )
    }

    /// Whether the step changes only the running firewall (which a reload rebuilds from the
    /// permanent configuration), iptables included.
    pub fn is_runtime(&self) -> bool {
        !self.is_permanent() && *self != Step::Reload
    }
}

impl fmt::Display for Step {
    /// What the step does, as the object of "firewalld refused to …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ChangeZoneOfInterface {
                zone, interface, ..
            } => write!(f, "bind bridge {interface} to zone {zone}"),
            Step::RemoveInterface { zone, interface } => {
                write!(f, "unbind bridge {interface} from zone {zone}")
            }
            Step::AddPermanentInterface { zone, interface } => write!(
                f,
                "bind bridge {interface} to zone {zone} in the permanent configuration"
            ),
            Step::RemovePermanentInterface { zone, interface } => write!(
                f,
                "unbind bridge {interface} from zone {zone} in the permanent configuration"
            ),
            Step::AddZone(z) => write!(f, "add zone {}", z.name),
            Step::AddPolicy(p) => write!(f, "add policy {}", p.name),
            Step::UpdateZone { zone, .. } => write!(f, "update zone {}", zone.name),
            Step::RemoveZone(z) => write!(f, "remove zone {}", z.name),
            Step::RemovePolicy(p) => write!(f, "remove policy {}", p.name),
            Step::Reload => f.write_str("reload"),
            Step::AddForwardPort { zone, entry } => {
                write!(f, "add forward port {} to zone {zone}", FwdPort(entry))
            }
            Step::RemoveForwardPort { zone, entry } => {
                write!(f, "remove forward port {} from zone {zone}", FwdPort(entry))
            }
            Step::AddPermanentForwardPort { zone, entry } => write!(
                f,
                "add forward port {} to zone {zone} in the permanent configuration",
                FwdPort(entry)
            ),
            Step::RemovePermanentForwardPort { zone, entry } => write!(
                f,
                "remove forward port {} from zone {zone} in the permanent configuration",
                FwdPort(entry)
            ),
            Step::AddRichRule { zone, rule } => write!(f, "add rich rule '{rule}' to zone {zone}"),
            Step::RemoveRichRule { zone, rule } => {
                write!(f, "remove rich rule '{rule}' from zone {zone}")
            }
            Step::AddPermanentRichRule { zone, rule } => write!(
                f,
                "add rich rule '{rule}' to zone {zone} in the permanent configuration"
            ),
            Step::RemovePermanentRichRule { zone, rule } => write!(
                f,
                "remove rich rule '{rule}' from zone {zone} in the permanent configuration"
            ),
            Step::AddOwnPolicy(p) => write!(f, "add policy {}", p.name),
            Step::RemoveOwnPolicy(p) => write!(f, "remove policy {}", p.name),
            Step::SetPolicyEntries { name, .. } => write!(f, "update policy {name}"),
            Step::SetPermanentPolicyEntries { name, .. } => {
                write!(f, "update policy {name} in the permanent configuration")
            }
            Step::Iptables { table, args } => {
                write!(f, "run iptables -t {table} {}", args.join(" "))
            }
            Step::NftInsertRules {
                family,
                table,
                chain,
                rules,
            } => {
                let texts: Vec<&str> = rules.iter().map(|r| r.text.as_str()).collect();
                write!(
                    f,
                    "run nft insert rule {family} {table} {chain} {}",
                    texts.join(" ; ")
                )
            }
            Step::NftDeleteRules {
                family,
                table,
                chain,
                handles,
            } => {
                let handles: Vec<String> = handles.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "run nft delete rule {family} {table} {chain} handle {}",
                    handles.join(", ")
                )
            }
            Step::Sysctl { key, value, .. } => write!(f, "set /proc/sys/{key} to {value}"),
            Step::OwnNat { masquerades, dnats } if masquerades.is_empty() && dnats.is_empty() => {
                write!(f, "delete nftables table ip virtzone_nat (virtzone's NAT)")
            }
            Step::OwnNat { masquerades, dnats } => {
                let nets: Vec<String> = masquerades.iter().map(|m| m.subnet.to_string()).collect();
                let ports: Vec<String> = dnats
                    .iter()
                    .map(|d| format!("{}/{} to {}:{}", d.proto, d.port, d.to_addr, d.to_port))
                    .collect();
                write!(
                    f,
                    "set nftables table ip virtzone_nat to masquerade {} and DNAT {}",
                    if nets.is_empty() {
                        "nothing".to_string()
                    } else {
                        nets.join(", ")
                    },
                    if ports.is_empty() {
                        "nothing".to_string()
                    } else {
                        ports.join(", ")
                    }
                )
            }
            Step::LocalnetGuard { present: true } => {
                write!(f, "add nftables table inet virtzone (the localnet guard)")
            }
            Step::LocalnetGuard { present: false } => {
                write!(
                    f,
                    "delete nftables table inet virtzone (the localnet guard)"
                )
            }
            Step::NftAddTable { family, name } => {
                write!(f, "add nftables table {family} {name} (empty)")
            }
            Step::SetConnectionZone {
                profile,
                zone,
                to_disk,
                ..
            } => {
                let zone = if zone.is_empty() {
                    "empty (the default zone)"
                } else {
                    zone
                };
                let place = if *to_disk { "" } else { " in memory" };
                write!(
                    f,
                    "set connection.zone of NetworkManager profile {profile} to {zone}{place}"
                )
            }
            Step::IptablesRule {
                chain,
                rule,
                insert,
            } => {
                let op = if *insert { "-I" } else { "-D" };
                write!(f, "run iptables {op} {chain} {}", rule.join(" "))
            }
            Step::WriteFile {
                path,
                content: Some(_),
                ..
            } => write!(f, "write {}", path.display()),
            Step::WriteFile {
                path,
                content: None,
                ..
            } => write!(f, "remove {}", path.display()),
        }
    }
}

/// One rule of [`Step::NftInsertRules`].
#[derive(Debug, Clone, PartialEq)]
pub struct NftRule {
    /// The rule's statements, nft JSON (`expr`).
    pub expr: serde_json::Value,
    /// The rule's comment (how virtzone recognises its rules).
    pub comment: String,
    /// The rule in nft's syntax, for messages.
    pub text: String,
}

/// A forward-port entry as `firewall-cmd` writes it: `port=…:proto=…:toport=…:toaddr=…`.
struct FwdPort<'a>(&'a ForwardPortEntry);

impl fmt::Display for FwdPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (port, proto, toport, toaddr) = self.0;
        write!(
            f,
            "port={port}:proto={proto}:toport={toport}:toaddr={toaddr}"
        )
    }
}

/// What a planner decided: the steps, in order, and what the user should know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The steps, applied in order.
    pub steps: Vec<Step>,
    /// Things the user should know that do not stop the plan.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Why a planner refused, by stable name (the JSON's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The zone asked for does not exist.
    ZoneMissing,
    /// The bridge sits in a zone virtzone did not put it in (runtime).
    AdminBinding,
    /// The bridge sits in a zone virtzone did not put it in (permanent configuration).
    AdminPermanentBinding,
    /// A zone reported by firewalld has a name virtzone cannot handle.
    UnusableName,
    /// firewalld is too old for what is asked.
    FirewalldTooOld,
    /// firewalld is in FAILED state.
    FirewalldFailed,
    /// firewalld is not running.
    FirewalldNotRunning,
    /// A zone to remove still holds bridges.
    ZoneInUse,
    /// A zone to remove is named by a policy that stays: firewalld would not start.
    ZoneReferenced,
    /// iptables' tables cannot be read through firewalld's direct interface (forwards to NAT guests
    /// need them).
    IptablesUnreadable,
    /// `nft` cannot run (the localnet guard needs it).
    NftMissing,
    /// firewalld's default zone cannot be read (forwards live there before firewalld 2.2).
    DefaultZoneUnreadable,
    /// A network lets no forwarded traffic reach its guests.
    NetworkIsolated,
    /// The host port is forwarded already.
    HostPortTaken,
    /// The NetworkManager profile that owns a bridge cannot hold the zone (volatile, or in memory
    /// only while `--permanent` asks for disk).
    NmProfileUnusable,
    /// The object is declared in a drop-in file: it is removed by removing the declaration.
    DeclaredInFile,
}

impl Reason {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ZoneMissing => "zone-missing",
            Reason::AdminBinding => "admin-binding",
            Reason::AdminPermanentBinding => "admin-permanent-binding",
            Reason::UnusableName => "unusable-name",
            Reason::FirewalldTooOld => "firewalld-too-old",
            Reason::FirewalldFailed => "firewalld-failed",
            Reason::FirewalldNotRunning => "firewalld-not-running",
            Reason::ZoneInUse => "zone-in-use",
            Reason::ZoneReferenced => "zone-referenced",
            Reason::IptablesUnreadable => "iptables-unreadable",
            Reason::NftMissing => "nft-missing",
            Reason::DefaultZoneUnreadable => "default-zone-unreadable",
            Reason::NetworkIsolated => "network-isolated",
            Reason::HostPortTaken => "host-port-taken",
            Reason::NmProfileUnusable => "nm-profile-unusable",
            Reason::DeclaredInFile => "declared-in-file",
        }
    }
}

/// A planner's refusal: nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The stable reason.
    pub reason: Reason,
    /// One sentence naming the thing, the reason and the fix.
    pub message: String,
}

impl Refusal {
    /// A refusal for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// Why a planner warns, by stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningReason {
    /// The bridge stays bound in the permanent configuration and comes back on reload.
    PermanentBindingStays,
    /// Someone moved a managed bridge to another zone; it is left there.
    MovedByOthers,
    /// A kernel setting a forward needs cannot be changed by this process (the daemon's sandbox).
    KernelSettingReadOnly,
}

/// Something the user should know that does not stop the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The stable reason.
    pub reason: WarningReason,
    /// One sentence.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_but_reload_and_iptables_is_undone_by_its_inverse() {
        let br = BridgeName::new("virbr0").unwrap();
        let z = ZoneName::libvirt();
        let trusted = ZoneName::new("trusted").unwrap();
        let zone = crate::zone::shipped_zone("libvirt");
        let policy = crate::zone::shipped_policy("libvirt-to-host");
        let steps = [
            Step::ChangeZoneOfInterface {
                zone: z.clone(),
                interface: br.clone(),
                previous: None,
            },
            Step::ChangeZoneOfInterface {
                zone: z.clone(),
                interface: br.clone(),
                previous: Some(trusted.clone()),
            },
            Step::RemoveInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::AddPermanentInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::RemovePermanentInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::AddZone(zone.clone()),
            Step::AddPolicy(policy.clone()),
            Step::RemoveZone(zone),
            Step::RemovePolicy(policy),
        ];
        let fwd: crate::firewalld::ForwardPortEntry =
            ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
        let public = "public".to_string();
        let rule =
            "rule family=\"ipv4\" source address=\"192.0.2.0/24\" service name=\"nfs\" accept";
        let entries = |r: &str| Entries {
            rich_rules: [r.to_string()].into(),
            ..Entries::default()
        };
        let own = OwnPolicy {
            name: "virtzone-allow".into(),
            ingress: vec!["libvirt".into()],
            egress: vec!["HOST".into()],
            priority: -100,
            target: "CONTINUE".into(),
            description: String::new(),
            entries: entries(rule),
        };
        let forward_steps = [
            Step::AddForwardPort {
                zone: public.clone(),
                entry: fwd.clone(),
            },
            Step::RemoveForwardPort {
                zone: public.clone(),
                entry: fwd.clone(),
            },
            Step::AddPermanentForwardPort {
                zone: public.clone(),
                entry: fwd.clone(),
            },
            Step::RemovePermanentForwardPort {
                zone: public.clone(),
                entry: fwd,
            },
            Step::AddRichRule {
                zone: public.clone(),
                rule: rule.into(),
            },
            Step::RemoveRichRule {
                zone: public.clone(),
                rule: rule.into(),
            },
            Step::AddPermanentRichRule {
                zone: public.clone(),
                rule: rule.into(),
            },
            Step::RemovePermanentRichRule {
                zone: public,
                rule: rule.into(),
            },
            Step::AddOwnPolicy(own.clone()),
            Step::RemoveOwnPolicy(own),
            Step::SetPolicyEntries {
                name: "virtzone-allow".into(),
                entries: entries(rule),
                previous: Entries::default(),
            },
            Step::SetPermanentPolicyEntries {
                name: "virtzone-allow".into(),
                entries: entries(rule),
                previous: Entries::default(),
            },
            Step::Sysctl {
                key: "net/ipv4/conf/virbr0/route_localnet".into(),
                value: "1".into(),
                previous: "0".into(),
            },
            Step::SetConnectionZone {
                uuid: "6f1c0d9e-0000-4000-8000-000000000001".into(),
                profile: "br0".into(),
                zone: "internal".into(),
                previous: String::new(),
                to_disk: false,
            },
            Step::IptablesRule {
                chain: "DOCKER-USER".into(),
                rule: vec!["-i".into(), "virbr0".into(), "-j".into(), "ACCEPT".into()],
                insert: true,
            },
            Step::WriteFile {
                path: "/etc/sysctl.d/90-virtzone-bridge.conf".into(),
                content: Some("new".into()),
                previous: None,
                mode: 0o644,
            },
        ];
        // A rollback never takes the localnet guard away (route_localnet may be on from before).
        assert_eq!(Step::LocalnetGuard { present: true }.inverse(), None);
        assert_eq!(
            Step::LocalnetGuard { present: false }.inverse(),
            Some(Step::LocalnetGuard { present: true })
        );
        for step in &forward_steps {
            // Exact: each inverse carries all its inverse needs, and stays in the same layer.
            let inverse = step.inverse().unwrap();
            assert_ne!(&inverse, step);
            assert_eq!(inverse.is_permanent(), step.is_permanent(), "{step}");
            assert_eq!(inverse.inverse().as_ref(), Some(step));
        }
        for step in steps {
            let inverse = step.inverse().unwrap();
            // Undoing the undo is the step again, except that an unbind restores the binding without
            // knowing where the bridge was before it.
            let back = inverse.inverse().unwrap();
            match (&step, &back) {
                (Step::ChangeZoneOfInterface { previous: None, .. }, _) => assert_eq!(back, step),
                (Step::RemoveInterface { .. }, Step::RemoveInterface { .. }) => {}
                _ => assert_eq!(back.to_string(), step.to_string()),
            }
        }
        assert_eq!(Step::Reload.inverse(), None);
        let iptables = Step::Iptables {
            table: "filter".into(),
            args: vec!["-N".into(), "VIRTZONE_FWD".into()],
        };
        assert_eq!(iptables.inverse(), None);
        assert!(iptables.is_runtime() && !Step::Reload.is_runtime());
    }
}
