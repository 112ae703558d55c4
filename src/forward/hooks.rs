//! libvirt's hooks' part in forwards: the network hook records a network's facts, the qemu hook a
//! domain's interfaces, and both re-apply the forwards that follow them. Problems are warnings: a
//! forward must never stop a network or a domain.

use super::domain::{self, DomainRecord, DOMAINS_FILE};
use super::error::ForwardError;
use super::nat;
use super::network::{NetworkRecord, NETWORKS_FILE};
use super::reconcile::{reconcile, reconcile_checked};
use super::runner::Memo;
use super::store::{declared_in, domains_in, networks_in, store_created};
use crate::firewalld::Firewalld;
use crate::libvirt::{Domain, Network};
use crate::state::StateDir;

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
            nat::check_state(fw, &main, &mut nat::ForwardShape::default(), None).await;
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
            let mut memo = Memo::default();
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
