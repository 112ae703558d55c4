//! Port forwards to guests and per-network host access (`virtzone forward`, `virtzone allow`).
//!
//! Declared forwards and allows are desired state in the state directory (`forwards.json`); the
//! networks they refer to are recorded by the network hook (`networks.json`). [`plan`] turns those
//! and firewalld's facts into a `change::Plan`, [`apply`] gathers the facts and applies the plan
//! with the shared `change::Executor`, [`watch`] lets the daemon re-apply
//! after every rebuild of the ruleset. docs/forwards.md explains the design.

pub mod apply;
pub mod model;
pub mod network;
pub mod nft;
pub mod plan;
pub mod watch;

use std::net::IpAddr;

use crate::firewalld::{self, Firewalld};
use crate::libvirt::Network;
use crate::state::{StateDir, StateError};
use model::{Allow, Declared, Forward, Opening, PortMap, FORMAT_VERSION};
use network::{NetworkRecord, Networks, NETWORKS_FILE};

/// The state file of declared forwards and allows.
pub const FORWARDS_FILE: &str = "forwards.json";

/// Why a forward or allow operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Bad input: exit status 2, nothing changed.
    #[error("{0}")]
    Usage(String),
    /// Refused: exit status 1, nothing changed.
    #[error("{0}")]
    Refused(String),
    /// firewalld failed a call (what ran was undone).
    #[error("{0}")]
    Firewalld(#[from] firewalld::Error),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] StateError),
}

impl From<crate::change::ExecError> for ForwardError {
    /// A plan the executor rolled back: firewalld's error is what the user reads (the message says
    /// the change was undone); rollback failures are logged, as the executor collected them.
    fn from(e: crate::change::ExecError) -> Self {
        for failure in &e.rollback_failures {
            tracing::warn!("after firewalld refused to {}: {failure}", e.step);
        }
        ForwardError::Firewalld(e.error)
    }
}

/// The subdirectory of the state directory holding forwards' files, with a lock of its own: a
/// forward check must not wait behind a binding reconcile that holds the state lock through its
/// retry pauses (the window in which a forward is dead would grow by them).
pub const STORE_DIR: &str = "forwards";

/// The forwards' own store inside `state` (checking `state` itself first).
fn store(state: &StateDir) -> Result<StateDir, ForwardError> {
    state.check()?;
    Ok(StateDir::at(state.path().join(STORE_DIR)))
}

/// [`store`], creating the state directory first if needed (for the commands that write).
fn store_created(state: &StateDir) -> Result<StateDir, ForwardError> {
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

/// Reads the declared forwards and allows, refusing a file from a newer virtzone.
fn declared_in(state: &StateDir) -> Result<Declared, ForwardError> {
    let d: Declared = state.read(FORWARDS_FILE)?;
    if d.version > FORMAT_VERSION {
        return Err(ForwardError::State(StateError::Corrupt {
            path: state.path().join(FORWARDS_FILE),
            reason: format!(
                "format version {} is newer than this virtzone's {FORMAT_VERSION}",
                d.version
            ),
        }));
    }
    Ok(d)
}

fn networks_in(state: &StateDir) -> Result<Networks, ForwardError> {
    Ok(state.read(NETWORKS_FILE)?)
}

/// Applies `declared` (taking `gone`'s entries out) and then records it. When the record cannot be
/// written, firewalld is brought back to `before`, the declaration still on disk: an operation
/// completes or leaves nothing behind, and firewalld never holds a forward the state file does not
/// know (the daemon could never remove it).
async fn apply_and_record(
    fw: &Firewalld,
    state: &StateDir,
    declared: &Declared,
    gone: &[Forward],
    before: &Declared,
    networks: &Networks,
) -> Result<(), ForwardError> {
    apply::converge(fw, declared, gone, networks).await?;
    let Err(e) = state.write(FORWARDS_FILE, declared) else {
        return Ok(());
    };
    // What this operation added is what the old declaration must take out again.
    let added: Vec<Forward> = declared
        .forwards
        .iter()
        .filter(|f| !before.forwards.iter().any(|b| b.id == f.id))
        .cloned()
        .collect();
    match apply::converge(fw, before, &added, networks).await {
        Ok(_) => Err(ForwardError::Refused(format!(
            "{e}; the change to firewalld was undone"
        ))),
        Err(undo) => Err(ForwardError::Refused(format!(
            "{e}; undoing the change to firewalld failed too ({undo}): run the command again once the \
             state directory is writable"
        ))),
    }
}

/// A `forward add` request, as parsed from the command line.
#[derive(Debug, Clone)]
pub struct AddForward {
    /// The network.
    pub network: String,
    /// The guest.
    pub guest: IpAddr,
    /// Protocol and ports.
    pub ports: PortMap,
    /// Only for connections to this host address.
    pub host_address: Option<IpAddr>,
    /// Also for connections the host itself opens (needs `host_address`).
    pub from_host: bool,
    /// Also for guests of the network reaching it through the host's address.
    pub hairpin: bool,
    /// The opt-in to `route_localnet` that a loopback `host_address` needs.
    pub route_localnet: bool,
}

/// Whether `addr` is one of this host's addresses (binding to it succeeds only then).
fn is_local(addr: IpAddr) -> bool {
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// Checks `req` against the recorded networks: the pure validation of `forward add`.
pub fn validate(
    req: &AddForward,
    networks: &Networks,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    let Some(rec) = networks.networks.get(&req.network) else {
        return Err(ForwardError::Usage(format!(
            "virtzone knows no libvirt network {:?}: start it with virtzone's network hook installed \
             (virsh net-start {0}), then try again",
            req.network
        )));
    };
    if rec.forward == "none" {
        return Err(ForwardError::Refused(format!(
            "network {} is isolated, so libvirt lets no forwarded traffic reach its guests; use a NAT or \
             routed network",
            req.network
        )));
    }
    if !rec.subnets.iter().any(|s| s.contains(req.guest)) || rec.host.contains(&req.guest) {
        let subnets: Vec<String> = rec.subnets.iter().map(ToString::to_string).collect();
        return Err(ForwardError::Usage(format!(
            "guest address {} is not a guest address of network {} (subnets {})",
            req.guest,
            req.network,
            if subnets.is_empty() {
                "none".to_string()
            } else {
                subnets.join(", ")
            }
        )));
    }
    if req.route_localnet && req.host_address.is_none() {
        return Err(ForwardError::Usage(
            "--route-localnet is only for a loopback --host-address such as 127.0.0.1".into(),
        ));
    }
    if req.from_host && req.host_address.is_none() {
        return Err(ForwardError::Usage(
            "--from-host needs --host-address: without a destination, a forward of the host's own \
             connections would capture them to that port on every server"
                .into(),
        ));
    }
    if let Some(host) = req.host_address {
        if host.is_ipv4() != req.guest.is_ipv4() {
            return Err(ForwardError::Usage(format!(
                "host address {host} and guest address {} are of different IP versions",
                req.guest
            )));
        }
        if host.is_loopback() {
            if host.is_ipv6() {
                return Err(ForwardError::Usage(format!(
                    "host address {host} cannot be forwarded: Linux never routes the IPv6 loopback \
                     address off the host; use another address of the host"
                )));
            }
            if !req.route_localnet {
                return Err(ForwardError::Usage(format!(
                    "host address {host} is a loopback address, which needs route_localnet on the \
                     network's bridge, a known risk (guests could reach the host's loopback-only \
                     services; virtzone drops that traffic in policy virtzone-localnet): pass \
                     --route-localnet to accept it, or use another address of the host"
                )));
            }
            if !req.from_host {
                return Err(ForwardError::Usage(format!(
                    "only the host itself can connect to {host}: a forward of a loopback address \
                     needs --from-host"
                )));
            }
        } else if req.route_localnet {
            return Err(ForwardError::Usage(format!(
                "--route-localnet is only for a loopback --host-address such as 127.0.0.1, not {host}"
            )));
        }
        if !local(host) {
            return Err(ForwardError::Usage(format!(
                "host address {host} is not an address of this host"
            )));
        }
    }
    Ok(())
}

/// Connects to firewalld, failing clearly when it does not run.
async fn connect() -> Result<Firewalld, ForwardError> {
    let fw = Firewalld::connect().await?;
    if !fw.is_running().await? {
        return Err(ForwardError::Refused(
            "firewalld is not running; start it (systemctl start firewalld) and try again".into(),
        ));
    }
    Ok(fw)
}

/// `forward add`: records and applies a forward. Returns the message to print.
pub async fn add_forward(state: &StateDir, req: AddForward) -> Result<String, ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    validate(&req, &networks, is_local)?;
    let new = Forward {
        id: declared.next_id,
        network: req.network.clone(),
        guest: req.guest,
        proto: req.ports.proto,
        host_port: req.ports.host,
        guest_port: req.ports.guest,
        host_address: req.host_address,
        from_host: req.from_host,
        hairpin: req.hairpin,
    };
    if let Some(same) = declared.forwards.iter().find(|f| f.same_as(&new)) {
        // Nothing to record; but whatever of it firewalld or libvirt lost is put back.
        let message = format!("forward {} exists already", same.id);
        apply::converge(&connect().await?, &declared, &[], &networks).await?;
        return Ok(message);
    }
    if let Some(other) = declared.forwards.iter().find(|f| f.clashes_with(&new)) {
        return Err(ForwardError::Refused(format!(
            "host port {}/{} is already forwarded by forward {} (to {}); remove it first \
             (virtzone forward remove {})",
            new.proto, new.host_port, other.id, other.guest, other.id
        )));
    }
    let before = declared.clone();
    declared.forwards.push(new.clone());
    declared.next_id += 1;
    let fw = connect().await?;
    apply_and_record(&fw, state, &declared, &[], &before, &networks).await?;
    let nat_active = networks
        .networks
        .get(&new.network)
        .is_some_and(|n| n.active && n.forward == "nat");
    let bridge = networks
        .networks
        .get(&new.network)
        .map(|n| n.bridge.to_string())
        .unwrap_or_default();
    if nat_active && new.guest.is_ipv4() && !apply::libvirt_rules_present(&fw, &bridge).await {
        eprintln!(
            "virtzone: warning: neither libvirt's iptables chain LIBVIRT_FWI nor its nftables chain \
             guest_input (table ip libvirt_network) holds rules for bridge {bridge} although network {} \
             runs; virtzone cannot tell which firewall backend libvirt uses for it, so its accept went \
             into iptables (see docs/forwards.md)",
            new.network
        );
    }
    Ok(format!(
        "forward {}: host {}{} → {} {} port {}",
        new.id,
        new.host_address.map_or(String::new(), |a| format!("{a} ")),
        format_args!("{}/{}", new.proto, new.host_port),
        new.network,
        new.guest,
        new.guest_port
    ))
}

/// Which forward `forward remove` means.
#[derive(Debug, Clone)]
pub enum Which {
    /// By id.
    Id(u32),
    /// By the arguments it was added with.
    Spec(AddForward),
}

/// `forward remove`: takes a forward out of firewalld and iptables, then forgets it.
pub async fn remove_forward(state: &StateDir, which: Which) -> Result<String, ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    let pos = match &which {
        Which::Id(id) => declared.forwards.iter().position(|f| f.id == *id),
        Which::Spec(req) => declared.forwards.iter().position(|f| {
            f.network == req.network
                && f.guest == req.guest
                && f.proto == req.ports.proto
                && f.host_port == req.ports.host
                && f.guest_port == req.ports.guest
                && f.host_address == req.host_address
                && f.from_host == req.from_host
                && f.hairpin == req.hairpin
        }),
    };
    let Some(pos) = pos else {
        return Err(ForwardError::Usage(match which {
            Which::Id(id) => format!("there is no forward {id}; see virtzone forward list"),
            Which::Spec(_) => {
                "no forward matches these arguments; see virtzone forward list".into()
            }
        }));
    };
    let before = declared.clone();
    let gone = declared.forwards.remove(pos);
    let fw = connect().await?;
    apply_and_record(
        &fw,
        state,
        &declared,
        std::slice::from_ref(&gone),
        &before,
        &networks,
    )
    .await?;
    Ok(format!("forward {} removed", gone.id))
}

/// `allow add` / `allow remove`.
pub async fn change_allow(
    state: &StateDir,
    allow: Allow,
    add: bool,
) -> Result<String, ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    if add && !networks.networks.contains_key(&allow.network) {
        return Err(ForwardError::Usage(format!(
            "virtzone knows no libvirt network {:?}: start it with virtzone's network hook installed \
             (virsh net-start {0}), then try again",
            allow.network
        )));
    }
    let present = declared.allows.contains(&allow);
    let before = declared.clone();
    let fw = connect().await?;
    if add {
        if present {
            return Ok(format!(
                "{} is already open to network {}",
                allow.opening, allow.network
            ));
        }
        if let Opening::Service(name) = &allow.opening {
            if !fw.services().await?.contains(name) {
                return Err(ForwardError::Usage(format!(
                    "firewalld knows no service {name:?}; see firewall-cmd --get-services"
                )));
            }
        }
        declared.allows.push(allow.clone());
        declared.allows.sort();
    } else {
        if !present {
            return Err(ForwardError::Usage(format!(
                "{} is not open to network {} by virtzone; see virtzone allow list",
                allow.opening, allow.network
            )));
        }
        declared.allows.retain(|a| *a != allow);
    }
    apply_and_record(&fw, state, &declared, &[], &before, &networks).await?;
    Ok(if add {
        format!(
            "{} opened to network {}'s guests",
            allow.opening, allow.network
        )
    } else {
        format!(
            "{} closed to network {}'s guests",
            allow.opening, allow.network
        )
    })
}

/// Re-applies everything declared (the daemon after ruleset changes, the hook after a network
/// starts or stops). Does nothing, and asks nothing of firewalld, when nothing is declared.
pub async fn reconcile(fw: &Firewalld, state: &StateDir) -> Result<usize, ForwardError> {
    let state = &store(state)?;
    // A first look without the lock, which would create the state directory: most hosts declare
    // nothing, and then nothing is touched.
    let declared = declared_in(state)?;
    if declared.forwards.is_empty() && declared.allows.is_empty() {
        return Ok(0);
    }
    let _lock = state.lock().await?;
    let declared = declared_in(state)?;
    if !fw.is_running().await? {
        return Ok(0);
    }
    let networks = networks_in(state)?;
    apply::converge(fw, &declared, &[], &networks).await
}

/// The network hook's part: records a network (the hookData the hook parsed) at `started begin`
/// or marks it stopped at `stopped end`, then re-applies forwards (their accepts
/// follow the network's bridge). Problems are warnings: a forward must never stop a network.
pub async fn network_hook(fw: Option<&Firewalld>, net: &Network, started: bool) {
    let name = net.name.as_str();
    let result = async {
        let main = StateDir::locate(None)?;
        let state = store_created(&main)?;
        {
            let _lock = state.lock().await?;
            let mut networks = networks_in(&state)?;
            if started {
                match NetworkRecord::of(net) {
                    Ok(Some(rec)) => {
                        networks.networks.insert(name.to_string(), rec);
                    }
                    Ok(_) => return Ok(()),
                    Err(e) => return Err(ForwardError::Usage(format!("hookData: {e}"))),
                }
            } else if let Some(rec) = networks.networks.get_mut(name) {
                rec.active = false;
            } else {
                return Ok(());
            }
            state.write(NETWORKS_FILE, &networks)?;
        }
        if let Some(fw) = fw {
            reconcile(fw, &main).await?;
        }
        Ok::<(), ForwardError>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("virtzone: warning: forwards of network {name}: {e}");
    }
}
