//! Port forwards to guests and per-network host access (`virtzone forward`, `virtzone allow`).
//!
//! Declared forwards and allows are desired state in the state directory (`forwards.json`); the
//! networks they refer to are recorded by the network hook (`networks.json`). [`plan`] turns those
//! and firewalld's facts into a `change::Plan`, [`apply`] gathers the facts and applies the plan
//! with the shared `change::Executor`, [`watch`] lets the daemon re-apply
//! after every rebuild of the ruleset, and [`guard`] keeps the localnet guard in place on its own. docs/forwards.md explains the design.

pub mod accept;
pub mod apply;
pub mod declared;
pub mod domain;
pub mod guard;
pub mod iptables;
pub mod masquerade;
pub mod model;
pub mod nat;
pub mod network;
pub mod nft;
pub mod plan;
pub mod request;
pub mod watch;

use std::net::IpAddr;

use crate::change::{Reason, Refusal};
use crate::firewalld::{self, Firewalld};
use crate::libvirt::{Domain, ForwardMode, Network};
use crate::names::NetworkName;
use crate::state::{StateDir, StateError};
use domain::{DomainRecord, Domains, Status, DOMAINS_FILE};
use model::{Allow, Declared, DomainForward, Forward, ForwardRule, Opening, FORMAT_VERSION};
use network::{NetworkRecord, Networks, NETWORKS_FILE};

/// The state file of declared forwards and allows.
pub const FORWARDS_FILE: &str = "forwards.json";

/// Why a forward or allow operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Bad input: exit status 2, nothing changed.
    #[error("{0}")]
    Usage(String),
    /// Refused, with a stable reason: exit status 1, nothing changed.
    #[error("{0}")]
    Refused(crate::change::Refusal),
    /// Failed after firewalld was changed (the sentence says what was undone): exit status 1.
    #[error("{0}")]
    Failed(String),
    /// Reading firewalld's state failed (nothing of this operation was changed by the read).
    #[error("cannot read firewalld's state: {0}")]
    Firewalld(#[from] firewalld::Error),
    /// A change failed; the executor's sentence says what failed and how the rollback went.
    #[error("{0}")]
    Change(Box<crate::change::ExecError>),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] StateError),
}

impl From<crate::change::ExecError> for ForwardError {
    /// A plan the executor rolled back: its sentence (what failed, how the rollback went) is what the
    /// user reads; each rollback failure is logged too.
    fn from(e: crate::change::ExecError) -> Self {
        for failure in &e.rollback_failures {
            tracing::warn!("after the failure to {}: {failure}", e.step);
        }
        ForwardError::Change(Box::new(e))
    }
}

/// A typed refusal (exit status 1, nothing changed).
fn refused(reason: Reason, message: impl Into<String>) -> ForwardError {
    ForwardError::Refused(Refusal::new(reason, message))
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

/// Reads the running-domain facts of state directory `state`.
pub fn read_domains(state: &StateDir) -> Result<Domains, ForwardError> {
    domains_in(&store(state)?)
}

fn domains_in(state: &StateDir) -> Result<Domains, ForwardError> {
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

/// Resolves the domain forwards, then converges firewalld and iptables to the result (removing
/// `gone`'s and `removed`'s entries and those of domain forwards no longer resolved), and records
/// what was applied for them. Every change of forwards goes through here, so a domain forward is
/// never dropped by a plan made without it.
async fn converge_all(
    fw: &Firewalld,
    state: &StateDir,
    declared: &Declared,
    gone: &[Forward],
    removed: &[DomainForward],
    networks: &Networks,
    memo: &mut apply::Memo,
) -> Result<(usize, domain::Resolution), ForwardError> {
    let mut domains = domains_in(state)?;
    let seen = domain::observe(&domain::lease_dir()?, declared, &domains, networks);
    let res = domain::effective(declared, removed, &domains, networks, &seen);
    let mut all_gone = gone.to_vec();
    all_gone.extend(res.gone.iter().cloned());
    let steps = apply::converge(fw, &res.declared, &all_gone, networks, memo).await?;
    if domains.applied != res.applied || domains.uuids != res.uuids {
        domains.applied = res.applied.clone();
        domains.uuids = res.uuids.clone();
        // Not fatal: firewalld already holds the change, and the caller's own record write (or
        // its undo) decides the operation; a stale `applied` only costs a later removal.
        if let Err(e) = state.write(DOMAINS_FILE, &domains) {
            tracing::warn!("forwards: cannot record the applied domain forwards: {e}");
        }
    }
    Ok((steps, res))
}

/// Reads the declared forwards and allows, refusing a file from a newer virtzone. A version-1 file
/// is read as the current version (it only lacks domain forwards), so the next write upgrades it.
fn declared_in(state: &StateDir) -> Result<Declared, ForwardError> {
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

fn networks_in(state: &StateDir) -> Result<Networks, ForwardError> {
    Ok(state.read(NETWORKS_FILE)?)
}

/// Applies `declared` (taking `gone`'s and `removed`'s entries out, domain forwards resolved) and
/// then records it. When the record cannot be written, firewalld is brought back to `before`, the
/// declaration still on disk: an operation completes or leaves nothing behind, and firewalld never
/// holds a forward the state file does not know (the daemon could never remove it).
async fn apply_and_record(
    fw: &Firewalld,
    state: &StateDir,
    declared: &Declared,
    gone: &[Forward],
    removed: &[DomainForward],
    before: &Declared,
    networks: &Networks,
) -> Result<(usize, domain::Resolution), ForwardError> {
    let (steps, res) = converge_all(
        fw,
        state,
        declared,
        gone,
        removed,
        networks,
        &mut apply::Memo::default(),
    )
    .await?;
    let Err(e) = state.write(FORWARDS_FILE, declared) else {
        // The forwards' DNATs in virtzone's own NAT table follow the record (issue #21).
        nat::check_store(fw, state).await;
        return Ok((steps, res));
    };
    // What this operation added is what the old declaration must take out again.
    let added: Vec<Forward> = declared
        .forwards
        .iter()
        .filter(|f| !before.forwards.iter().any(|b| b.id == f.id))
        .cloned()
        .collect();
    let added_domain: Vec<DomainForward> = declared
        .domain_forwards
        .iter()
        .filter(|f| !before.domain_forwards.iter().any(|b| b.id == f.id))
        .cloned()
        .collect();
    let mut memo = apply::Memo::default();
    let undo = converge_all(
        fw,
        state,
        before,
        &added,
        &added_domain,
        networks,
        &mut memo,
    );
    match undo.await {
        Ok(_) => Err(ForwardError::Failed(format!(
            "{e}; the change to firewalld was undone"
        ))),
        Err(undo) => Err(ForwardError::Failed(format!(
            "{e}; undoing the change to firewalld failed too ({undo}): run the command again once the \
             state directory is writable"
        ))),
    }
}

/// A `forward add` request, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddForward {
    /// The network.
    pub network: NetworkName,
    /// The guest.
    pub guest: IpAddr,
    /// What to forward.
    pub rule: ForwardRule,
    /// The opt-in to `route_localnet` that a loopback host address needs.
    pub route_localnet: bool,
}

impl AddForward {
    /// The forward it declares, numbered `id`.
    fn forward(&self, id: u32) -> Forward {
        Forward {
            id,
            network: self.network.clone(),
            guest: self.guest,
            rule: self.rule,
        }
    }
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
    if rec.forward == ForwardMode::None {
        return Err(refused(Reason::NetworkIsolated, format!(
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
    if let Some(host) = req.rule.host_address {
        if host.is_ipv4() != req.guest.is_ipv4() {
            return Err(ForwardError::Usage(format!(
                "host address {host} and guest address {} are of different IP versions",
                req.guest
            )));
        }
    }
    check_host_side(&req.rule, req.route_localnet, local)
}

/// The checks of `--host-address`, `--from-host` and `--route-localnet` every forward gets.
fn check_host_side(
    rule: &ForwardRule,
    route_localnet: bool,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    let (host_address, from_host) = (rule.host_address, rule.from_host);
    if route_localnet && host_address.is_none() {
        return Err(ForwardError::Usage(
            "--route-localnet is only for a loopback --host-address such as 127.0.0.1".into(),
        ));
    }
    if from_host && host_address.is_none() {
        return Err(ForwardError::Usage(
            "--from-host needs --host-address: without a destination, a forward of the host's own \
             connections would capture them to that port on every server"
                .into(),
        ));
    }
    if let Some(host) = host_address {
        if host.is_loopback() {
            if host.is_ipv6() {
                return Err(ForwardError::Usage(format!(
                    "host address {host} cannot be forwarded: Linux never routes the IPv6 loopback \
                     address off the host; use another address of the host"
                )));
            }
            if !route_localnet {
                return Err(ForwardError::Usage(format!(
                    "host address {host} is a loopback address, which needs route_localnet on the \
                     network's bridge, a known risk (guests could reach the host's loopback-only \
                     services; virtzone's guard drops that traffic): pass --route-localnet to accept \
                     it, or use another address of the host"
                )));
            }
            if !from_host {
                return Err(ForwardError::Usage(format!(
                    "only the host itself can connect to {host}: a forward of a loopback address \
                     needs --from-host"
                )));
            }
        } else if route_localnet {
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
        return Err(refused(
            Reason::FirewalldNotRunning,
            "firewalld is not running; start it (systemctl start firewalld) and try again",
        ));
    }
    Ok(fw)
}

/// Puts back whatever of `declared` firewalld or libvirt lost: a repeated `forward add` records
/// nothing, but leaves the forward working.
async fn put_back(
    state: &StateDir,
    declared: &Declared,
    networks: &Networks,
) -> Result<(), ForwardError> {
    let fw = connect().await?;
    converge_all(
        &fw,
        state,
        declared,
        &[],
        &[],
        networks,
        &mut apply::Memo::default(),
    )
    .await?;
    Ok(())
}

/// A forward of either kind, as `forward add` records it.
trait Declarable: Clone + std::ops::Deref<Target = ForwardRule> {
    /// Its id.
    fn id(&self) -> u32;
    /// Whether it describes the same forward as `other`, ignoring ids.
    fn same(&self, other: &Self) -> bool;
    /// The declared forwards of its kind.
    fn all(declared: &mut Declared) -> &mut Vec<Self>;
}

impl Declarable for Forward {
    fn id(&self) -> u32 {
        self.id
    }
    fn same(&self, other: &Self) -> bool {
        self.same_as(other)
    }
    fn all(declared: &mut Declared) -> &mut Vec<Self> {
        &mut declared.forwards
    }
}

impl Declarable for DomainForward {
    fn id(&self) -> u32 {
        self.id
    }
    fn same(&self, other: &Self) -> bool {
        self.same_as(other)
    }
    fn all(declared: &mut Declared) -> &mut Vec<Self> {
        &mut declared.domain_forwards
    }
}

/// What [`add_declarable`] did.
enum Added {
    /// The same forward was declared already (numbered so): nothing recorded, whatever of it
    /// firewalld or libvirt lost put back.
    Exists(u32),
    /// Recorded and applied.
    New(Box<Applied>),
}

/// A new forward recorded and applied: what its message needs.
struct Applied {
    /// The connection it was applied on.
    fw: Firewalld,
    /// The recorded networks.
    networks: Networks,
    /// How the domain forwards resolved.
    res: domain::Resolution,
}

/// The part of `forward add` both kinds share, under the store's lock: `make` validates the
/// request against the store (recorded networks, for a domain its record too) and numbers the
/// forward; an equal forward is only put back, a clash refused; then it is recorded and applied.
async fn add_declarable<F: Declarable>(
    state: &StateDir,
    make: impl FnOnce(&StateDir, &Networks, u32) -> Result<F, ForwardError>,
) -> Result<(F, Added), ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    let new = make(state, &networks, declared.next_id)?;
    if let Some(same) = F::all(&mut declared).iter().find(|f| f.same(&new)) {
        let id = same.id();
        put_back(state, &declared, &networks).await?;
        return Ok((new, Added::Exists(id)));
    }
    clash_check(&declared, &new.host_side())?;
    let before = declared.clone();
    F::all(&mut declared).push(new.clone());
    declared.next_id += 1;
    let fw = connect().await?;
    let (_, res) = apply_and_record(&fw, state, &declared, &[], &[], &before, &networks).await?;
    Ok((new, Added::New(Box::new(Applied { fw, networks, res }))))
}

/// `forward add`: records and applies a forward. Returns the message to print.
pub async fn add_forward(state: &StateDir, req: AddForward) -> Result<String, ForwardError> {
    let (new, added) = add_declarable(state, |_, networks, id| {
        validate(&req, networks, is_local)?;
        Ok(req.forward(id))
    })
    .await?;
    let Applied { fw, networks, .. } = match added {
        Added::Exists(id) => return Ok(format!("forward {id} exists already")),
        Added::New(applied) => *applied,
    };
    let nat_active = networks
        .networks
        .get(&new.network)
        .is_some_and(|n| n.active && n.forward == ForwardMode::Nat);
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

/// A `forward add --domain` request, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddDomainForward {
    /// The libvirt domain.
    pub domain: String,
    /// Which of its networks (`None`: its only one virtzone knows).
    pub network: Option<NetworkName>,
    /// What to forward.
    pub rule: ForwardRule,
    /// The opt-in to `route_localnet` that a loopback host address needs.
    pub route_localnet: bool,
}

impl AddDomainForward {
    /// The forward it declares, numbered `id`.
    fn forward(&self, id: u32) -> DomainForward {
        DomainForward {
            id,
            domain: self.domain.clone(),
            network: self.network.clone(),
            rule: self.rule,
        }
    }
}

/// The pure validation of `forward add --domain`: the network (if named) must be known, the host
/// side valid, and a running domain's interface choice clear now (a stopped domain's is checked,
/// and logged, when it starts).
pub fn validate_domain(
    req: &AddDomainForward,
    networks: &Networks,
    domains: &Domains,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    if let Some(net) = &req.network {
        let Some(rec) = networks.networks.get(net) else {
            return Err(ForwardError::Usage(format!(
                "virtzone knows no libvirt network {net:?}: start it with virtzone's network hook \
                 installed (virsh net-start {net}), then try again"
            )));
        };
        if rec.forward == ForwardMode::None {
            return Err(refused(
                Reason::NetworkIsolated,
                format!(
                "network {net} is isolated, so libvirt lets no forwarded traffic reach its guests; \
                 use a NAT or routed network"
            ),
            ));
        }
    }
    check_host_side(&req.rule, req.route_localnet, local)?;
    let boot = domain::boot_id();
    if let Some(rec) = domains
        .domains
        .get(&req.domain)
        .filter(|r| r.runs(boot.as_deref()))
    {
        domain::interface_for(&req.forward(0), rec, networks).map_err(ForwardError::Usage)?;
    }
    Ok(())
}

/// `forward add --domain`: records and applies (once resolved) a forward to a domain.
pub async fn add_domain_forward(
    state: &StateDir,
    req: AddDomainForward,
) -> Result<String, ForwardError> {
    let (new, added) = add_declarable(state, |state, networks, id| {
        validate_domain(&req, networks, &domains_in(state)?, is_local)?;
        Ok(req.forward(id))
    })
    .await?;
    let res = match added {
        Added::Exists(id) => return Ok(format!("forward {id} exists already")),
        Added::New(applied) => applied.res,
    };
    let how = match res.statuses.get(&new.id) {
        Some(Status::Active(t)) => format!("active, {} on network {}", t.guest, t.network),
        Some(Status::Waiting { network, mac }) => {
            format!("waiting for the address of {mac} on network {network}")
        }
        Some(Status::Unresolvable(m)) => format!("inactive: {m}"),
        Some(Status::Ambiguous(m)) => format!("ambiguous address: {m}"),
        Some(Status::Inactive(m)) => format!("inactive until it runs: {m}"),
        None => "inactive".into(),
    };
    Ok(format!(
        "forward {}: host {}{} → domain {} port {} ({how})",
        new.id,
        new.host_address.map_or(String::new(), |a| format!("{a} ")),
        format_args!("{}/{}", new.proto, new.host_port),
        new.domain,
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
    /// By the `--domain` arguments it was added with.
    DomainSpec(AddDomainForward),
}

/// `forward remove`: takes a forward out of firewalld and iptables, then forgets it.
pub async fn remove_forward(state: &StateDir, which: Which) -> Result<String, ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    let pos = match &which {
        Which::Id(id) => declared.forwards.iter().position(|f| f.id == *id),
        Which::Spec(req) => {
            let wanted = req.forward(0);
            declared.forwards.iter().position(|f| f.same_as(&wanted))
        }
        Which::DomainSpec(_) => None,
    };
    let domain_pos = match &which {
        Which::Id(id) => declared.domain_forwards.iter().position(|f| f.id == *id),
        Which::DomainSpec(req) => {
            let wanted = req.forward(0);
            declared
                .domain_forwards
                .iter()
                .position(|f| f.same_as(&wanted))
        }
        Which::Spec(_) => None,
    };
    let owner = pos
        .map(|p| declared.forwards[p].id)
        .or(domain_pos.map(|p| declared.domain_forwards[p].id))
        .and_then(|id| declared.forward_source(id).map(|s| (id, s.to_string())));
    if let Some((id, file)) = owner {
        return Err(refused(
            Reason::DeclaredInFile,
            format!("forward {id} is declared in {file}: remove it there and run virtzone apply"),
        ));
    }
    let before = declared.clone();
    let (id, gone, removed) = match (pos, domain_pos) {
        (Some(pos), _) => {
            let f = declared.forwards.remove(pos);
            (f.id, vec![f], Vec::new())
        }
        (None, Some(pos)) => {
            let f = declared.domain_forwards.remove(pos);
            (f.id, Vec::new(), vec![f])
        }
        (None, None) => {
            return Err(ForwardError::Usage(match which {
                Which::Id(id) => format!("there is no forward {id}; see virtzone forward list"),
                Which::Spec(_) | Which::DomainSpec(_) => {
                    "no forward matches these arguments; see virtzone forward list".into()
                }
            }))
        }
    };
    let fw = connect().await?;
    apply_and_record(&fw, state, &declared, &gone, &removed, &before, &networks).await?;
    Ok(format!("forward {id} removed"))
}

/// `forward purge`: what the package's removal runs. Takes every forward (to guests and to
/// domains) and every allow virtzone declared out of firewalld — both layers — and iptables, then
/// virtzone's own policies, and forgets them; no record is left of what is no longer there. When
/// firewalld cannot be asked, nothing is changed and the error names what remains.
pub async fn purge(state: &StateDir) -> Result<String, ForwardError> {
    let store = &store(state)?;
    if !store.path().is_dir() {
        return Ok("virtzone declared no forwards or allows; nothing to remove".into());
    }
    let _lock = store.lock().await?;
    let before = declared_in(store)?;
    let networks = networks_in(store)?;
    let remains = |e: ForwardError| {
        let what = declared_summary(&before);
        ForwardError::Failed(if what.is_empty() {
            format!(
                "{e}; virtzone's own policies may remain in firewalld's permanent configuration"
            )
        } else {
            format!("{e}; these remain in firewalld's permanent configuration: {what}")
        })
    };
    let fw = connect().await.map_err(remains)?;
    let declared = Declared {
        next_id: before.next_id,
        ..Declared::default()
    };
    apply_and_record(
        &fw,
        store,
        &declared,
        &before.forwards,
        &before.domain_forwards,
        &before,
        &networks,
    )
    .await
    .map_err(remains)?;
    let facts = apply::facts(&fw, &declared, networks, true, &mut Default::default())
        .await
        .map_err(|e| remains(e.into()))?;
    let live = crate::change::executor::Live::new(&fw, None);
    crate::change::Executor::new(&live)
        .run(&plan::purge_policies(&facts))
        .await
        .map_err(|e| remains(e.into()))?;
    // virtzone's own NAT table goes too; libvirt's masquerade, still in place, takes over.
    crate::change::Executor::new(&live)
        .run(&crate::change::Plan {
            steps: vec![crate::change::Step::OwnNat {
                masquerades: Vec::new(),
                dnats: Vec::new(),
            }],
            warnings: Vec::new(),
        })
        .await
        .map_err(|e| remains(e.into()))?;
    let what = declared_summary(&before);
    Ok(if what.is_empty() {
        "virtzone declared no forwards or allows; its own policies are gone from firewalld".into()
    } else {
        format!("removed from firewalld: {what}, and virtzone's own policies")
    })
}

/// `N forward(s) (ids …), M allow(s)`, or empty when nothing is declared.
fn declared_summary(d: &Declared) -> String {
    let ids: Vec<String> = d
        .forwards
        .iter()
        .map(|f| f.id)
        .chain(d.domain_forwards.iter().map(|f| f.id))
        .map(|id| id.to_string())
        .collect();
    let mut parts = Vec::new();
    if !ids.is_empty() {
        parts.push(format!("{} forward(s) (ids {})", ids.len(), ids.join(", ")));
    }
    if !d.allows.is_empty() {
        parts.push(format!(
            "{} allow(s) ({})",
            d.allows.len(),
            d.allows
                .iter()
                .map(|a| format!("{} to network {}", a.opening, a.network))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join(" and ")
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
        if let Some(file) = declared.allow_source(&allow) {
            return Err(refused(
                Reason::DeclaredInFile,
                format!(
                    "{} for network {} is declared in {file}: remove it there and run virtzone apply",
                    allow.opening, allow.network
                ),
            ));
        }
        declared.allows.retain(|a| *a != allow);
    }
    apply_and_record(&fw, state, &declared, &[], &[], &before, &networks).await?;
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
    let mut memo = apply::Memo::default();
    Ok(reconcile_checked(fw, state, None, &mut memo).await?.steps)
}

/// What one re-application did and found.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    /// Steps carried out.
    pub steps: usize,
    /// Whether a running domain's forward waits for its guest's lease (the daemon polls then).
    pub waiting: bool,
    /// Domain forwards that cannot be resolved, one sentence each (logged by the caller).
    pub problems: Vec<String>,
}

/// [`reconcile`], also telling whether a domain forward waits and which cannot be resolved.
/// `memo`: the caller's record of its earlier checks ([`apply::Memo`]); with a ruleset basis in
/// it (the check after the daemon's own ruleset-only changes) firewalld is not asked again whether
/// it runs nor waited for: the check reads only the ruleset side.
pub async fn reconcile_checked(
    fw: &Firewalld,
    state: &StateDir,
    daemon: Option<watch::Triggers<'_>>,
    memo: &mut apply::Memo,
) -> Result<Reconciled, ForwardError> {
    // A first look without the lock, which would create the state directory: most hosts declare
    // nothing, and then nothing is touched (nor waited for, nor asked of firewalld).
    if !has_work(state)? {
        return Ok(Reconciled::default());
    }
    // The daemon's check waits for its binding reconcile, before taking the store's lock (which
    // `forward add` needs meanwhile).
    // A firewalld reload or restart since the last gather (a binding reconcile asked for) means a
    // full gather.
    let light = memo.has_ruleset_basis()
        && daemon
            .as_ref()
            .is_none_or(|d| d.bindings.requested() == memo.reconciles);
    if !light {
        memo.forget_ruleset_basis();
    }
    if let Some(mut daemon) = daemon {
        if !light {
            daemon.bindings.settle(fw).await;
            memo.reconciles = daemon.bindings.requested();
        }
        daemon.gathering();
    }
    let state = &store(state)?;
    let _lock = state.lock().await?;
    let declared = declared_in(state)?;
    if !light && !crate::change::Reads::is_running(fw).await? {
        return Ok(Reconciled::default());
    }
    let networks = networks_in(state)?;
    let (steps, res) = converge_all(fw, state, &declared, &[], &[], &networks, memo).await?;
    Ok(Reconciled {
        steps,
        waiting: res.waiting(),
        problems: res
            .statuses
            .iter()
            .filter_map(|(id, s)| match s {
                Status::Unresolvable(m) | Status::Ambiguous(m) => {
                    Some(format!("forward {id}: {m}"))
                }
                _ => None,
            })
            .collect(),
    })
}

/// Whether state directory `state` declares any forward or allow, or records applied domain
/// forwards: otherwise a check has nothing to do and asks nothing of firewalld. Takes no lock and
/// creates nothing.
fn has_work(state: &StateDir) -> Result<bool, ForwardError> {
    let state = &store(state)?;
    let declared = declared_in(state)?;
    Ok(!declared.forwards.is_empty()
        || !declared.domain_forwards.is_empty()
        || !declared.allows.is_empty()
        || !domains_in(state)?.applied.is_empty())
}

/// Refuses (exit 1) a forward whose host port another forward already claims.
fn clash_check(declared: &Declared, new: &model::HostSide) -> Result<(), ForwardError> {
    let plain = declared
        .forwards
        .iter()
        .map(|f| (f.id, f.host_side(), f.guest.to_string()));
    let by_domain = declared
        .domain_forwards
        .iter()
        .map(|f| (f.id, f.host_side(), format!("domain {}", f.domain)));
    if let Some((id, _, to)) = plain.chain(by_domain).find(|(_, h, _)| h.clashes_with(new)) {
        return Err(refused(
            Reason::HostPortTaken,
            format!(
                "host port {}/{} is already forwarded by forward {id} (to {to}); remove it first \
             (virtzone forward remove {id})",
                new.proto, new.ports
            ),
        ));
    }
    Ok(())
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
                        networks.networks.insert(net.name.clone(), rec);
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
            // The masquerade first: it is what every guest of the network needs.
            nat::check_state(fw, &main).await;
            reconcile(fw, &main).await?;
        }
        Ok::<(), ForwardError>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("virtzone: warning: forwards of network {name}: {e}");
    }
}

/// The qemu hook's part: records a domain's interfaces when it runs (`started`, `reconnect`) or
/// marks it stopped (`stopped end`), then re-applies the forwards, so its domain forwards follow
/// it. Never asks libvirt anything (the hook runs while libvirt holds the domain). `connect` (to
/// firewalld) is called only for a domain that has forwards. Problems are warnings on stderr: a
/// forward must never stop a domain.
pub async fn domain_hook<C>(dom: &Domain, running: bool, connect: impl FnOnce() -> C)
where
    C: std::future::Future<Output = Option<Firewalld>>,
{
    let name = dom.name.as_str();
    // No forward can name a domain whose name virtzone does not accept (`forward add --domain`
    // refuses it): nothing to record, and no unbounded name reaches the state.
    if !crate::names::is_libvirt_name(name) {
        return;
    }
    let result = async {
        let main = StateDir::locate(None)?;
        let state = store_created(&main)?;
        let concerned = {
            let _lock = state.lock().await?;
            let mut domains = domains_in(&state)?;
            let declared = declared_in(&state)?;
            let before = domains.clone();
            let boot = domain::boot_id();
            if running {
                domains
                    .domains
                    .insert(name.to_string(), DomainRecord::running(dom, boot.clone()));
            } else if let Some(rec) = domains.domains.get_mut(name) {
                rec.running = false;
            }
            // Stopped domains no forward names (this one included) are forgotten: the file holds
            // what forwards need, not every domain that ever ran.
            domains.prune(&declared, boot.as_deref());
            if domains != before {
                state.write(DOMAINS_FILE, &domains)?;
            }
            declared.domain_forwards.iter().any(|f| f.domain == name)
        };
        // Only a domain with forwards needs firewalld (and the bus): every other start costs a
        // file write.
        if !concerned {
            return Ok(());
        }
        if let Some(fw) = connect().await {
            let mut memo = apply::Memo::default();
            let check = reconcile_checked(&fw, &main, None, &mut memo);
            let done = check.await?;
            for p in done.problems {
                eprintln!("virtzone: warning: {p}");
            }
        }
        Ok::<(), ForwardError>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("virtzone: warning: forwards of domain {name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Interface;
    use network::Subnet;

    fn req(domain: &str, network: Option<&str>) -> AddDomainForward {
        AddDomainForward {
            domain: domain.into(),
            network: network.map(|n| n.parse().unwrap()),
            rule: ForwardRule::new("tcp/8080:80".parse().unwrap(), None, false, false),
            route_localnet: false,
        }
    }

    fn world() -> (Networks, Domains) {
        let mut networks = Networks::default();
        for (name, bridge) in [("n1", "virbr1"), ("n2", "virbr2")] {
            networks.networks.insert(
                name.parse().unwrap(),
                NetworkRecord {
                    bridge: crate::names::BridgeName::new(bridge).unwrap(),
                    forward: ForwardMode::Nat,
                    subnets: vec!["192.0.2.0/24".parse::<Subnet>().unwrap()],
                    host: vec![],
                    active: true,
                    hosts: vec![],
                    nat: None,
                },
            );
        }
        let iface = |n: &str| Interface {
            network: n.parse().unwrap(),
            mac: Some("52:54:00:00:00:01".into()),
        };
        let mut domains = Domains::default();
        domains.domains.insert(
            "two".into(),
            DomainRecord {
                running: true,
                uuid: None,
                boot: None,
                interfaces: vec![iface("n1"), iface("n2")],
            },
        );
        domains.domains.insert(
            "off".into(),
            DomainRecord {
                running: false,
                uuid: None,
                boot: None,
                interfaces: vec![iface("n1"), iface("n2")],
            },
        );
        (networks, domains)
    }

    #[test]
    fn domain_forwards_are_checked_at_add_time_only_while_the_domain_runs() {
        let (networks, domains) = world();
        let local = |_| true;
        let usage = |r: Result<(), ForwardError>| matches!(r, Err(ForwardError::Usage(_)));
        // Running with two interfaces: --network is needed, and must be one of them.
        assert!(usage(validate_domain(
            &req("two", None),
            &networks,
            &domains,
            local
        )));
        assert!(validate_domain(&req("two", Some("n2")), &networks, &domains, local).is_ok());
        assert!(usage(validate_domain(
            &req("two", Some("nosuch")),
            &networks,
            &domains,
            local
        )));
        // Stopped (or never seen): checked when it starts.
        assert!(validate_domain(&req("off", None), &networks, &domains, local).is_ok());
        assert!(validate_domain(&req("new", None), &networks, &domains, local).is_ok());
        // The host side as for --guest forwards.
        let mut r = req("off", None);
        r.rule.from_host = true;
        assert!(usage(validate_domain(&r, &networks, &domains, local)));
        r.rule.host_address = Some("203.0.113.7".parse().unwrap());
        assert!(usage(validate_domain(&r, &networks, &domains, |_| false)));
    }

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
