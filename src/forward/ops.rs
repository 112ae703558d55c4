//! The commands' operations on forwards and allows: `forward add` (to a guest address or a domain),
//! `forward remove`, `forward purge`, `allow add`/`remove`. Each takes the store's lock, checks the
//! request ([`validate`](mod@super::validate)), converges firewalld and records the result
//! (`reconcile::apply_and_record`).

use super::apply;
use super::domain::{self, Status};
use super::error::{refused, ForwardError};
use super::model::{Allow, Declared, DomainForward, Forward, ForwardRule, Opening};
use super::network::Networks;
use super::plan;
use super::reconcile::{apply_and_record, connect, put_back, AfterRecord};
use super::request::{AddDomainForward, AddForward};
use super::store::{declared_in, domains_in, networks_in, store, store_created};
use super::validate::{clash_check, is_local, validate, validate_domain};
use crate::change::converge::Seam;
use crate::change::reads::Reads;
use crate::change::Reason;
use crate::libvirt::ForwardMode;
use crate::state::StateDir;

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
enum Added<S> {
    /// The same forward was declared already (numbered so): nothing recorded, whatever of it
    /// firewalld or libvirt lost put back.
    Exists(u32),
    /// Recorded and applied.
    New(Box<Applied<S>>),
}

/// A new forward recorded and applied: what its message needs.
struct Applied<S> {
    /// The connection it was applied on.
    seam: S,
    /// The recorded networks.
    networks: Networks,
    /// How the domain forwards resolved.
    res: domain::Resolution,
}

/// The part of `forward add` both kinds share, under the store's lock: `make` validates the
/// request against the store (recorded networks, for a domain its record too) and numbers the
/// forward; an equal forward is only put back, a clash refused; then it is recorded and applied.
async fn add_declarable<F: Declarable, S: Seam + AfterRecord>(
    state: &StateDir,
    make: impl FnOnce(&StateDir, &Networks, u32) -> Result<F, ForwardError>,
    connect: impl AsyncFnOnce() -> Result<S, ForwardError>,
) -> Result<(F, Added<S>), ForwardError> {
    let state = &store_created(state)?;
    let _lock = state.lock().await?;
    let mut declared = declared_in(state)?;
    let networks = networks_in(state)?;
    let new = make(state, &networks, declared.next_id)?;
    if let Some(same) = F::all(&mut declared).iter().find(|f| f.same(&new)) {
        let id = same.id();
        put_back(&connect().await?, state, &declared, &networks).await?;
        return Ok((new, Added::Exists(id)));
    }
    clash_check(&declared, &new.host_side())?;
    let before = declared.clone();
    F::all(&mut declared).push(new.clone());
    declared.next_id += 1;
    let seam = connect().await?;
    let (_, res) = apply_and_record(&seam, state, &declared, &[], &[], &before, &networks).await?;
    Ok((
        new,
        Added::New(Box::new(Applied {
            seam,
            networks,
            res,
        })),
    ))
}

/// `forward add`: records and applies a forward. Returns the message to print.
pub async fn add_forward(state: &StateDir, req: AddForward) -> Result<String, ForwardError> {
    add_forward_on(state, req, connect).await
}

/// [`add_forward`] on the seam `connect` gives once the request is judged.
pub async fn add_forward_on<S: Seam + AfterRecord>(
    state: &StateDir,
    req: AddForward,
    connect: impl AsyncFnOnce() -> Result<S, ForwardError>,
) -> Result<String, ForwardError> {
    let make = |_: &StateDir, networks: &Networks, id| {
        validate(&req, networks, is_local)?;
        Ok(req.forward(id))
    };
    let (new, added) = add_declarable(state, make, connect).await?;
    let Applied { seam, networks, .. } = match added {
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
    if nat_active
        && new.guest.is_ipv4()
        && !apply::libvirt_rules_present(seam.reads(), &bridge).await
    {
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

/// `forward add --domain`: records and applies (once resolved) a forward to a domain.
pub async fn add_domain_forward(
    state: &StateDir,
    req: AddDomainForward,
) -> Result<String, ForwardError> {
    let make = |state: &StateDir, networks: &Networks, id| {
        validate_domain(&req, networks, &domains_in(state)?, is_local)?;
        Ok(req.forward(id))
    };
    let (new, added) = add_declarable(state, make, connect).await?;
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
    let applied = apply_and_record(&fw, state, &declared, &gone, &removed, &before, &networks);
    applied.await?;
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
    let live = fw.mutations(None);
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
    change_allow_on(state, allow, add, connect).await
}

/// [`change_allow`] on the seam `connect` gives once the request is judged.
pub async fn change_allow_on<S: Seam + AfterRecord>(
    state: &StateDir,
    allow: Allow,
    add: bool,
    connect: impl AsyncFnOnce() -> Result<S, ForwardError>,
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
    let seam = connect().await?;
    if add {
        if present {
            return Ok(format!(
                "{} is already open to network {}",
                allow.opening, allow.network
            ));
        }
        if let Opening::Service(name) = &allow.opening {
            if !seam.reads().services().await?.contains(name) {
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
    let applied = apply_and_record(&seam, state, &declared, &[], &[], &before, &networks);
    applied.await?;
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

#[cfg(test)]
pub(super) mod tests;
