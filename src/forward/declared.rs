//! `virtzone apply`'s part for forwards and allows: the drop-in files' declarations
//! ([`crate::declare`]) merged with what the CLI added, each object recording its `source`, then
//! converged through the same `reconcile::apply_and_record` every CLI change goes through. With
//! `check`, the same plan is made and nothing is touched.

use std::net::IpAddr;

use super::error::ForwardError;
use super::model::{allow_key, forward_key, Allow, Declared, DomainForward, Forward, Opening};
use super::reconcile::{apply_and_record, connect};
use super::request::Request;
use super::store::{declared_in, domains_in, networks_in, store, store_created, FORWARDS_FILE};
use super::validate::{clash_check, is_local, validate, validate_domain};
use super::{apply, domain, plan};
use crate::declare::{Declaration, Object};
use crate::state::StateDir;

/// What an apply changed, or (with `check`) would change.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One line per object added or removed (`+ forward tcp/8080 → labnet 192.0.2.100:80`), and
    /// `~ …` when firewalld lacks part of what is declared already.
    pub changes: Vec<String>,
    /// Steps the executor carried out (or, with `check`, planned).
    pub steps: usize,
}

impl Outcome {
    /// Whether anything changed (or would change).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty() || self.steps > 0
    }
}

fn host_text(
    host_address: Option<IpAddr>,
    proto: impl std::fmt::Display,
    port: impl std::fmt::Display,
) -> String {
    match host_address {
        Some(a) => format!("{proto}/{port} on {a}"),
        None => format!("{proto}/{port}"),
    }
}

fn guest_target(guest: IpAddr, port: impl std::fmt::Display) -> String {
    match guest {
        IpAddr::V6(g) => format!("[{g}]:{port}"),
        IpAddr::V4(g) => format!("{g}:{port}"),
    }
}

/// `forward tcp/8080 → labnet 192.0.2.100:80`.
pub fn describe_forward(f: &Forward) -> String {
    format!(
        "forward {} → {} {}",
        host_text(f.host_address, f.proto, f.host_port),
        f.network,
        guest_target(f.guest, f.guest_port)
    )
}

/// `forward tcp/8080 → domain web1 port 80`.
pub fn describe_domain_forward(f: &DomainForward) -> String {
    format!(
        "forward {} → domain {} port {}",
        host_text(f.host_address, f.proto, f.host_port),
        f.domain,
        f.guest_port
    )
}

/// `allow nfs → labnet`.
pub fn describe_allow(a: &Allow) -> String {
    format!("allow {} → {}", a.opening, a.network)
}

/// A bad declaration: exit status 2, `FILE:LINE: sentence`.
fn bad(d: &Declaration, e: ForwardError) -> ForwardError {
    let m = match e {
        ForwardError::Usage(m) | ForwardError::Failed(m) => m,
        ForwardError::Refused(r) => r.message,
        other => return other,
    };
    ForwardError::Usage(format!("{}: {m}", d.origin_of(&m)))
}

/// What [`merged`] returns: the new record, the removed forwards of both kinds, the change lines.
type Merged = (Declared, Vec<Forward>, Vec<DomainForward>, Vec<String>);

/// The declared state the files and the CLI's record together ask for, from `before` (the
/// record): file objects keep their ids, objects of files no longer declaring them go.
/// Returns the new record, the removed forwards of both kinds, and the changes as lines.
fn merged(before: &Declared, decls: &[Declaration]) -> Result<Merged, ForwardError> {
    let mut next = before.clone();
    let mut changes = Vec::new();
    // Start from the CLI's objects alone; each file object is then put back (same id) or added.
    let owned = |key: &str| before.sources.contains_key(key);
    next.forwards.retain(|f| !owned(&forward_key(f.id)));
    next.domain_forwards.retain(|f| !owned(&forward_key(f.id)));
    next.allows.retain(|a| !owned(&allow_key(a)));
    next.sources.clear();
    for d in decls {
        let file = d.origin.file.clone();
        match &d.object {
            Object::Forward(Request::Guest(r)) => {
                let mut new = r.forward(0);
                if let Some(old) = before.forwards.iter().find(|f| f.same_as(&new)) {
                    new.id = old.id;
                    // A CLI forward now declared in a file: adopted as it is.
                    next.forwards.retain(|f| f.id != old.id);
                } else {
                    clash_check(&next, &new.host_side()).map_err(|e| bad(d, e))?;
                    new.id = next.next_id;
                    next.next_id += 1;
                    changes.push(format!("+ {}", describe_forward(&new)));
                }
                next.sources.insert(forward_key(new.id), file);
                next.forwards.push(new);
            }
            Object::Forward(Request::Domain(r)) => {
                let mut new = r.forward(0);
                if let Some(old) = before.domain_forwards.iter().find(|f| f.same_as(&new)) {
                    new.id = old.id;
                    next.domain_forwards.retain(|f| f.id != old.id);
                } else {
                    clash_check(&next, &new.host_side()).map_err(|e| bad(d, e))?;
                    new.id = next.next_id;
                    next.next_id += 1;
                    changes.push(format!("+ {}", describe_domain_forward(&new)));
                }
                next.sources.insert(forward_key(new.id), file);
                next.domain_forwards.push(new);
            }
            Object::Allow(a) => {
                if !before.allows.contains(a) {
                    changes.push(format!("+ {}", describe_allow(a)));
                }
                next.allows.retain(|x| x != a);
                next.sources.insert(allow_key(a), file);
                next.allows.push(a.clone());
            }
            // Bindings are `crate::bind`'s.
            Object::Bind(_) => {}
        }
    }
    next.forwards.sort_by_key(|f| f.id);
    next.domain_forwards.sort_by_key(|f| f.id);
    next.allows.sort();
    let gone: Vec<Forward> = before
        .forwards
        .iter()
        .filter(|f| !next.forwards.iter().any(|n| n.id == f.id))
        .cloned()
        .collect();
    let removed: Vec<DomainForward> = before
        .domain_forwards
        .iter()
        .filter(|f| !next.domain_forwards.iter().any(|n| n.id == f.id))
        .cloned()
        .collect();
    changes.extend(gone.iter().map(|f| format!("- {}", describe_forward(f))));
    changes.extend(
        removed
            .iter()
            .map(|f| format!("- {}", describe_domain_forward(f))),
    );
    changes.extend(
        before
            .allows
            .iter()
            .filter(|a| !next.allows.contains(a))
            .map(|a| format!("- {}", describe_allow(a))),
    );
    Ok((next, gone, removed, changes))
}

/// Converges forwards and allows to the files' `decls` and the CLI's record (with `check`: says
/// what would change and touches nothing). Every declaration is validated first, against the
/// recorded networks as `forward add` validates it: one bad value and nothing is applied.
pub async fn apply_declared(
    state: &StateDir,
    decls: &[Declaration],
    check: bool,
) -> Result<Outcome, ForwardError> {
    // `--check` creates nothing, not even the state directory.
    let state = &if check {
        store(state)?
    } else {
        store_created(state)?
    };
    let _lock = if check {
        None
    } else {
        Some(state.lock().await?)
    };
    let before = declared_in(state)?;
    let networks = networks_in(state)?;
    let domains = domains_in(state)?;
    for d in decls {
        match &d.object {
            Object::Forward(Request::Guest(r)) => {
                validate(r, &networks, is_local).map_err(|e| bad(d, e))?
            }
            Object::Forward(Request::Domain(r)) => {
                validate_domain(r, &networks, &domains, is_local).map_err(|e| bad(d, e))?
            }
            Object::Allow(a) if !networks.networks.contains_key(&a.network) => {
                return Err(bad(
                    d,
                    ForwardError::Usage(format!(
                        "virtzone knows no libvirt network {:?}: start it with virtzone's network \
                         hook installed (virsh net-start {0}), then try again",
                        a.network
                    )),
                ))
            }
            _ => {}
        }
    }
    let (next, gone, removed, changes) = merged(&before, decls)?;
    let nothing = next.forwards.is_empty()
        && next.domain_forwards.is_empty()
        && next.allows.is_empty()
        && gone.is_empty()
        && removed.is_empty()
        && domains.applied.is_empty();
    if nothing {
        // Nothing declared anywhere, nothing to take out: firewalld is not asked.
        if !check && next != before {
            state.write(FORWARDS_FILE, &next)?;
        }
        return Ok(Outcome::default());
    }
    let fw = connect().await?;
    for d in decls {
        if let Object::Allow(Allow {
            opening: Opening::Service(name),
            ..
        }) = &d.object
        {
            if !fw.services().await?.contains(name) {
                return Err(bad(
                    d,
                    ForwardError::Usage(format!(
                        "firewalld knows no service {name:?}; see firewall-cmd --get-services"
                    )),
                ));
            }
        }
    }
    if check {
        let seen = domain::observe(&domain::lease_dir()?, &next, &domains, &networks);
        let res = domain::effective(&next, &removed, &domains, &networks, &seen);
        let mut all_gone = gone.clone();
        all_gone.extend(res.gone.iter().cloned());
        let removing = !all_gone.is_empty();
        let facts = apply::facts(
            &fw,
            &res.declared,
            networks.clone(),
            removing,
            &mut Default::default(),
        )
        .await?;
        let planned =
            plan::plan(&res.declared, &all_gone, &facts).map_err(ForwardError::Refused)?;
        let mut changes = changes;
        if changes.is_empty() && !planned.is_empty() {
            changes.push(format!(
                "~ firewalld lacks part of the declared forwards and allows ({} changes)",
                planned.steps.len()
            ));
        }
        return Ok(Outcome {
            changes,
            steps: planned.steps.len(),
        });
    }
    let (steps, _) =
        apply_and_record(&fw, state, &next, &gone, &removed, &before, &networks).await?;
    let mut changes = changes;
    if changes.is_empty() && steps > 0 {
        changes.push(format!(
            "~ firewalld lacked part of the declared forwards and allows ({steps} changes)"
        ));
    }
    Ok(Outcome { changes, steps })
}

/// The daemon's part: applies the drop-in files of `dirs` when they declare something else than
/// the record holds. A bad file is logged (priority 3, with FILE:LINE) once per distinct error, and
/// the record, the last good state, stays in force; `last_bad` remembers what was logged.
pub async fn follow_files(
    state: &StateDir,
    dirs: &[std::path::PathBuf],
    last_bad: &mut Option<String>,
) {
    let decls = match crate::declare::read(dirs).and_then(|f| crate::declare::declarations(&f)) {
        Ok(d) => d,
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let text = text.join("; ");
            if last_bad.as_deref() != Some(text.as_str()) {
                tracing::error!("drop-in files not applied, the last good state stays: {text}");
                *last_bad = Some(text);
            }
            return;
        }
    };
    // Most checks follow a ruleset change, not an edit: only a difference is applied here (the
    // check after this converges firewalld either way).
    let Ok(store) = store(state) else { return };
    let Ok(before) = declared_in(&store) else {
        return;
    };
    match merged(&before, &decls) {
        Ok((next, ..)) if next == before => {
            *last_bad = None;
            return;
        }
        _ => {}
    }
    match apply_declared(state, &decls, false).await {
        Ok(o) => {
            *last_bad = None;
            for c in &o.changes {
                tracing::info!("drop-in files: {c}");
            }
        }
        Err(e) => {
            let text = e.to_string();
            if last_bad.as_deref() != Some(text.as_str()) {
                tracing::error!("drop-in files not applied, the last good state stays: {text}");
                *last_bad = Some(text);
            }
        }
    }
}
