//! `virtzone serve`: owns `org.virtzone.VirtZone1` on the system bus and keeps the recorded bindings
//! applied across firewalld reloads and restarts.
//!
//! firewalld (since 0.7.0) drops runtime interface bindings on every reload without saying so, and a
//! restart drops all of them. The daemon re-applies what virtzone recorded at its own start, after every
//! `Reloaded` signal and whenever firewalld's bus name gets a new owner. Bindings held by a
//! NetworkManager profile are NetworkManager's to re-send after firewalld's reloads and restarts (the
//! daemon does not race it); the daemon sets their in-memory `connection.zone` again when
//! NetworkManager lost it, checked at its start and whenever NetworkManager's bus name gets a new
//! owner. It is event driven: between events it sleeps in the kernel. Its only timer is the lease
//! poll while a domain forward waits for its guest's address (`forward::watch`, backing off to 60 s).

pub mod client;
pub mod service;
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{Mutex, Notify, Semaphore};
use tracing::{error, info, warn};
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};
use zbus::{Connection, MatchRule, MessageStream};

use crate::bind::{Bindings, BINDINGS_FILE};
use crate::firewalld::proxy::{BUS_NAME as FIREWALLD, PATH as FIREWALLD_PATH};
use crate::firewalld::{Firewalld, State, CALL_TIMEOUT};
use crate::forward::triggers::{BindingReconciles, Reconciles};
use crate::state::StateDir;
use service::{Service, ServiceSignals};

pub use client::{BUS_NAME, PATH};
use shared::{ReadCache, Shared, Stats};
pub use shared::{READ_CACHE, READ_SLOTS, READ_TIMEOUT};

/// Calls in flight at once during a reconcile. The system bus allows 128 pending replies per connection
/// (dbus-daemon's `max_replies_per_connection`) and refuses the rest; staying well below leaves room for
/// `Attach` and `Detach` on the same connection, while still keeping firewalld busy without gaps.
const IN_FLIGHT: usize = 32;
/// How long a freshly started firewalld may stay in INIT before a reconcile gives up (it is retried at
/// the next event).
const INIT_DEADLINE: Duration = Duration::from_secs(120);

/// Why the daemon could not run, or stopped running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The bus could not be reached, the name not taken, or the connection or name was lost.
    #[error("{0}")]
    Bus(String),
}

impl From<zbus::Error> for DaemonError {
    fn from(e: zbus::Error) -> Self {
        DaemonError::Bus(e.to_string())
    }
}

/// Connects to the system bus with a call timeout.
async fn connect(timeout: Duration) -> Result<Connection, DaemonError> {
    zbus::connection::Builder::system()
        .method_timeout(timeout)
        .build()
        .await
        .map_err(|e| DaemonError::Bus(format!("cannot connect to the system bus: {e}")))
}

/// Runs the daemon until SIGTERM or SIGINT (success), or until it loses the bus connection or its name
/// (an error, so that a supervisor restarts it: a daemon that can no longer hear firewalld's signals
/// must not linger).
pub async fn serve(state: StateDir) -> Result<(), DaemonError> {
    let conn = connect(CALL_TIMEOUT).await?;
    // A little longer than the read budget, so that the budget's own clear message is what callers see.
    let reader = connect(READ_TIMEOUT + Duration::from_secs(2)).await?;
    let shared = Arc::new(Shared {
        fw: Firewalld::from_connection(conn.clone()),
        reader: Firewalld::from_connection(reader.clone()),
        read_slots: Semaphore::new(READ_SLOTS),
        read_cache: Mutex::new(ReadCache::default()),
        state,
        stats: Mutex::new(Stats::default()),
        wake: Notify::new(),
        reconciles: tokio::sync::watch::Sender::new(Reconciles::default()),
    });
    conn.object_server()
        .at(
            PATH,
            Service {
                shared: shared.clone(),
            },
        )
        .await?;

    // Subscribe before the first reconcile, so that no reload between them goes unseen, and before
    // taking the name, so that its loss cannot go unseen either.
    let reloaded = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(FIREWALLD)
        .interface(FIREWALLD)
        .member("Reloaded")
        .path(FIREWALLD_PATH)
        .build()?;
    let mut reloaded = MessageStream::for_match_rule(reloaded, &conn, None).await?;
    let dbus = DBusProxy::new(&conn).await?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, FIREWALLD)])
        .await?;
    let mut lost = dbus.receive_name_lost_with_args(&[(0, BUS_NAME)]).await?;
    let mut nm_owners = dbus
        .receive_name_owner_changed_with_args(&[(0, crate::networkmanager::proxy::BUS_NAME)])
        .await?;

    // Without ALLOW_REPLACEMENT nobody can take the name from a running daemon, whatever the policy.
    let taken = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .map_err(|e| DaemonError::Bus(format!("cannot own {BUS_NAME}: {e}")))?;
    if !matches!(
        taken,
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner
    ) {
        return Err(DaemonError::Bus(format!(
            "cannot own {BUS_NAME}: another process owns it (is another virtzone daemon running?)"
        )));
    }
    info!(
        "serving {BUS_NAME}; state in {}",
        shared.state.path().display()
    );

    // Whatever ends the bus side ends the daemon with an error.
    let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<String>(4);
    let events = shared.clone();
    let tx = fatal_tx.clone();
    tokio::spawn(async move {
        loop {
            match reloaded.next().await {
                Some(Ok(_)) => {
                    info!("firewalld reloaded");
                    // Before anything awaits: the forward watch looks for this right after
                    // firewalld's next answer (see BindingReconciles::settle).
                    events.request_reconcile();
                    events.read_cache.lock().await.clear();
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(format!("the system bus connection failed: {e}"))
                        .await;
                    return;
                }
                None => {
                    let _ = tx.send("the system bus connection closed".into()).await;
                    return;
                }
            }
        }
    });
    let events = shared.clone();
    let tx = fatal_tx.clone();
    tokio::spawn(async move {
        while let Some(change) = owners.next().await {
            let appeared = change
                .args()
                .map(|a| a.new_owner().is_some())
                .unwrap_or(false);
            if appeared {
                events.new_owner();
            }
            events.read_cache.lock().await.clear();
            if appeared {
                info!("firewalld appeared on the bus");
            } else {
                warn!("firewalld left the bus; bindings are re-applied when it returns");
            }
        }
        let _ = tx.send("the system bus connection closed".into()).await;
    });
    // NetworkManager's side runs on its own, so a NetworkManager still starting (or hung) never
    // delays firewalld's reconcile: at the daemon's start, and whenever NM's name gets an owner.
    let nm_wake = Arc::new(Notify::new());
    let events = shared.clone();
    let wake = nm_wake.clone();
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            reconcile_networkmanager(&events).await;
        }
    });
    let wake = nm_wake.clone();
    let tx = fatal_tx.clone();
    tokio::spawn(async move {
        while let Some(change) = nm_owners.next().await {
            let appeared = change
                .args()
                .map(|a| a.new_owner().is_some())
                .unwrap_or(false);
            if appeared {
                info!("NetworkManager appeared on the bus");
                wake.notify_one();
            }
        }
        let _ = tx.send("the system bus connection closed".into()).await;
    });
    nm_wake.notify_one();
    let tx = fatal_tx;
    tokio::spawn(async move {
        if lost.next().await.is_some() {
            let _ = tx.send(format!("lost the bus name {BUS_NAME}")).await;
        }
    });
    // The reader connection's end is as fatal: reads would fail from then on.
    let reader_conn = reader.clone();
    let reader_closed = async move {
        let mut stream = MessageStream::from(&reader_conn);
        loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                _ => return "the system bus connection closed".to_string(),
            }
        }
    };

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Bus(format!("cannot watch SIGTERM: {e}")))?;
    // A stop request or a fatal event ends the daemon even in the middle of a reconcile.
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => None,
            _ = tokio::signal::ctrl_c() => None,
            reason = fatal.recv() => Some(reason.unwrap_or_else(|| "event watchers ended".into())),
            reason = reader_closed => Some(reason),
        }
    };
    tokio::pin!(stop);
    // The localnet guard first and on its own: it must come back after a wipe of the ruleset
    // whatever firewalld does (stopped, hung), so it never waits behind firewalld's answers.
    tokio::spawn(crate::forward::guard::run(shared.fw.clone()));
    // Docker's chains likewise: the accepts doctor --fix put in DOCKER-USER, without firewalld.
    tokio::spawn(crate::doctor::docker::run(shared.state.clone()));
    // virtzone's own NAT table likewise: only a wipe of the ruleset takes it away (issue #21).
    tokio::spawn(crate::forward::nat::run(
        shared.fw.clone(),
        shared.state.clone(),
        BindingReconciles::following(shared.reconciles.subscribe()),
    ));
    // A wiped ruleset (firewalld's and libvirt's rules gone) is healed by one firewalld reload.
    tokio::spawn(crate::heal::run(shared.fw.clone(), shared.state.clone()));
    // Forwards and allows (src/forward) keep themselves applied, triggered by ruleset changes.
    shared.request_reconcile();
    tokio::spawn(crate::forward::watch::run(
        shared.fw.clone(),
        shared.state.clone(),
        BindingReconciles::following(shared.reconciles.subscribe()),
    ));
    let outcome = loop {
        tokio::select! {
            outcome = &mut stop => break outcome,
            _ = shared.wake.notified() => {
                // Requests up to here are served by this reconcile; later ones wake the loop again.
                let serving = shared.reconciles.borrow().requested;
                tokio::select! {
                    outcome = &mut stop => break outcome,
                    () = reconcile(&shared, &conn) => {}
                }
                shared.reconciles.send_modify(|r| r.done = r.done.max(serving));
            }
        }
    };
    match outcome {
        None => {
            info!("stopping");
            Ok(())
        }
        Some(reason) => {
            error!("{reason}; exiting so that the service manager restarts virtzone");
            Err(DaemonError::Bus(reason))
        }
    }
}

/// Waits while a freshly started firewalld is still loading (before 2.4.0 it owns its name first). Only
/// runs during that transition, never while idle.
async fn wait_until_loaded(fw: &Firewalld) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match fw.state().await {
            Ok(State::Init) if start.elapsed() < INIT_DEADLINE => {}
            Ok(State::Init) => return false,
            Ok(_) => return true,
            Err(e) => {
                warn!("cannot read firewalld's state: {e}");
                return false;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// How long a NetworkManager that just took its bus name may take to export its profiles (it owns
/// the name before its `Settings` object answers).
const NM_STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// The NetworkManager side of a reconcile: sets an in-memory `connection.zone` again where
/// NetworkManager lost it; only reads when nothing was lost, and asks nothing without such bindings.
/// While NetworkManager is still starting its calls fail: they are tried again, with growing pauses,
/// until [`NM_STARTUP_DEADLINE`] (the state lock is not held during the pauses).
async fn reconcile_networkmanager(shared: &Shared) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match reconcile_networkmanager_once(shared).await {
            Ok(()) => return,
            Err(e) if start.elapsed() < NM_STARTUP_DEADLINE => {
                info!("NetworkManager is not ready yet ({e}); trying again");
            }
            Err(e) => {
                warn!("cannot read NetworkManager's profiles: {e}");
                return;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn reconcile_networkmanager_once(
    shared: &Shared,
) -> Result<(), crate::networkmanager::Error> {
    let _lock = match shared.state.lock().await {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return Ok(());
        }
    };
    let desired: Bindings = match shared.state.read(BINDINGS_FILE) {
        Ok(d) => d,
        Err(e) => {
            error!("{e}");
            return Ok(());
        }
    };
    if desired
        .bindings
        .values()
        .all(|b| b.networkmanager.is_none())
    {
        return Ok(());
    }
    let (plan, results) = crate::bind::reconcile_nm(&shared.fw, &desired).await?;
    for warning in &plan.plan.warnings {
        warn!("{}", warning.message);
    }
    for (step, result) in results {
        match result {
            Ok(()) => info!("NetworkManager had lost virtzone's zone: {step}"),
            Err(e) => error!("cannot {step}: {e}"),
        }
    }
    Ok(())
}

/// One reconcile: read desired and actual bindings, send only the missing calls, publish the outcome.
async fn reconcile(shared: &Shared, conn: &Connection) {
    let fw = &shared.fw;
    match fw.is_running().await {
        Ok(true) => {}
        Ok(false) => {
            info!("firewalld is not running; waiting for it");
            return;
        }
        Err(e) => {
            error!("cannot ask the bus about firewalld: {e}");
            return;
        }
    }
    if !wait_until_loaded(fw).await {
        warn!("firewalld did not finish loading; retrying at the next event");
        return;
    }
    // Held until the calls are sent: a `detach` between reading the record and re-binding would
    // otherwise see its bridge bound again.
    let _lock = match shared.state.lock().await {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return;
        }
    };
    let desired: Bindings = match shared.state.read(BINDINGS_FILE) {
        Ok(d) => d,
        Err(e) => {
            error!("{e}");
            return;
        }
    };
    // snapshot → plan → executor, as every change to firewalld goes (`bind::reconcile`).
    let done = match crate::bind::reconcile(fw, &desired, IN_FLIGHT).await {
        Ok(done) => done,
        Err(e) => {
            error!("cannot read firewalld's bindings: {e}");
            return;
        }
    };
    let Some((version, backend)) = done
        .snapshot
        .running()
        .map(|r| (r.version_text.clone(), r.backend.as_str().to_string()))
    else {
        info!("firewalld is not running; waiting for it");
        return;
    };
    let plan = &done.plan;
    for warning in &plan.plan.warnings {
        warn!("{}", warning.message);
    }
    let mut applied = 0u32;
    for (step, result) in &done.results {
        match result {
            Ok(()) => applied += 1,
            Err(e) => error!("cannot {step}: {e}"),
        }
    }
    let count = {
        let mut stats = shared.stats.lock().await;
        stats.count += 1;
        stats.last_usec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        stats.version = version;
        stats.backend = backend.as_str().to_string();
        stats.count
    };
    info!(
        "reconcile {count}: re-applied {applied} of {} missing bindings, {} in place, {} moved by others",
        plan.plan.steps.len(),
        plan.in_place,
        plan.drift.len()
    );
    if let Err(e) = publish(conn, count, applied, plan.drift.len() as u32).await {
        warn!("cannot publish reconcile {count}: {e}");
    }
}

async fn publish(conn: &Connection, count: u64, applied: u32, drifted: u32) -> zbus::Result<()> {
    let iface = conn.object_server().interface::<_, Service>(PATH).await?;
    {
        let service = iface.get().await;
        let emitter = iface.signal_emitter();
        service.reconcile_count_changed(emitter).await?;
        service.last_reconcile_changed(emitter).await?;
        service.firewalld_version_changed(emitter).await?;
        service.firewalld_backend_changed(emitter).await?;
    }
    iface.reconciled(count, applied, drifted).await
}
