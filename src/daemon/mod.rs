//! `virtzone serve`: owns `org.virtzone.VirtZone1` on the system bus and keeps the recorded bindings
//! applied across firewalld reloads and restarts.
//!
//! firewalld (since 0.7.0) drops runtime interface bindings on every reload without saying so, and a
//! restart drops all of them. The daemon re-applies what virtzone recorded at its own start, after every
//! `Reloaded` signal and whenever firewalld's bus name gets a new owner. It is event driven: between
//! events it sleeps in the kernel, with no timers.

pub mod client;
pub mod reconcile;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{Mutex, Notify};
use tracing::{error, info, warn};
use zbus::fdo::DBusProxy;
use zbus::{Connection, MatchRule, MessageStream};

use crate::bind::{self, Bindings, BINDINGS_FILE};
use crate::firewalld::proxy::{BUS_NAME as FIREWALLD, PATH as FIREWALLD_PATH};
use crate::firewalld::{Firewalld, State, CALL_TIMEOUT};
use crate::state::StateDir;
use service::{Service, ServiceSignals};

/// The daemon's bus name.
pub const BUS_NAME: &str = "org.virtzone.VirtZone1";
/// Its object.
pub const PATH: &str = "/org/virtzone/VirtZone1";

/// Calls in flight at once during a reconcile. The system bus allows 128 pending replies per connection
/// (dbus-daemon's `max_replies_per_connection`) and refuses the rest; staying well below leaves room for
/// the D-Bus methods the daemon serves meanwhile, while still keeping firewalld busy without gaps.
const IN_FLIGHT: usize = 32;
/// Passes over the missing bindings in one reconcile: a call that failed (a transient error) gets
/// another chance before the daemon goes back to waiting for events.
const PASSES: usize = 3;

/// How long a freshly started firewalld may stay in INIT before a reconcile gives up (it is retried at
/// the next event).
const INIT_DEADLINE: Duration = Duration::from_secs(120);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The bus could not be reached or the name not taken.
    #[error("{0}")]
    Bus(String),
}

impl From<zbus::Error> for DaemonError {
    fn from(e: zbus::Error) -> Self {
        DaemonError::Bus(e.to_string())
    }
}

/// What the daemon's properties show.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub count: u64,
    pub last_usec: u64,
    pub version: String,
    pub backend: String,
}

/// State shared by the D-Bus interface and the reconcile loop.
pub(crate) struct Shared {
    pub fw: Firewalld,
    pub state: StateDir,
    pub stats: Mutex<Stats>,
    /// Wakes the reconcile loop; notifications arriving during a reconcile coalesce into one more.
    pub wake: Notify,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(state: StateDir) -> Result<(), DaemonError> {
    let conn = zbus::connection::Builder::system()
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(|e| DaemonError::Bus(format!("cannot connect to the system bus: {e}")))?;
    let shared = Arc::new(Shared {
        fw: Firewalld::from_connection(conn.clone()),
        state,
        stats: Mutex::new(Stats::default()),
        wake: Notify::new(),
    });
    conn.object_server()
        .at(
            PATH,
            Service {
                shared: shared.clone(),
            },
        )
        .await?;

    // Subscribe before the first reconcile, so that no reload between them goes unseen.
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

    conn.request_name(BUS_NAME).await.map_err(|e| {
        DaemonError::Bus(format!("cannot own {BUS_NAME} (is another virtzone daemon running, or does the bus policy forbid it?): {e}"))
    })?;
    info!(
        "serving {BUS_NAME}; state in {}",
        shared.state.path().display()
    );

    let events = shared.clone();
    tokio::spawn(async move {
        while reloaded.next().await.is_some() {
            info!("firewalld reloaded");
            events.wake.notify_one();
        }
    });
    let events = shared.clone();
    tokio::spawn(async move {
        while let Some(change) = owners.next().await {
            let appeared = change
                .args()
                .map(|a| a.new_owner().is_some())
                .unwrap_or(false);
            if appeared {
                info!("firewalld appeared on the bus");
                events.wake.notify_one();
            } else {
                warn!("firewalld left the bus; bindings are re-applied when it returns");
            }
        }
    });

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Bus(format!("cannot watch SIGTERM: {e}")))?;
    shared.wake.notify_one();
    loop {
        tokio::select! {
            _ = shared.wake.notified() => reconcile(&shared, &conn).await,
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("stopping");
    Ok(())
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
    let desired: Bindings = match shared.state.read(BINDINGS_FILE) {
        Ok(d) => d,
        Err(e) => {
            error!("{e}");
            return;
        }
    };
    let (actual, version, backend) =
        match tokio::try_join!(bind::interface_zones(fw), fw.version_text(), fw.backend()) {
            Ok(x) => x,
            Err(e) => {
                error!("cannot read firewalld's bindings: {e}");
                return;
            }
        };
    let plan = reconcile::plan(&desired, &actual);
    for (bridge, wanted, actual) in &plan.drift {
        warn!(
            "bridge {bridge} is in zone {actual}, not {wanted}: someone moved it; leaving it there"
        );
    }
    let mut missing = plan.apply.clone();
    let mut applied = 0u32;
    for pass in 1..=PASSES {
        if missing.is_empty() {
            break;
        }
        // Independent calls, pipelined on one connection (firewalld answers them in order), with a
        // bounded number in flight.
        let results: Vec<_> = futures_util::stream::iter(missing.iter().cloned())
            .map(|(bridge, zone)| async move {
                let result = fw
                    .change_zone_of_interface(zone.as_str(), bridge.as_str())
                    .await;
                (bridge, zone, result)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        missing.clear();
        for (bridge, zone, result) in results {
            match result {
                Ok(()) => applied += 1,
                Err(e) if pass < PASSES => {
                    warn!("cannot bind bridge {bridge} to zone {zone} yet ({e}); trying again");
                    missing.push((bridge, zone));
                }
                Err(e) => error!("cannot bind bridge {bridge} to zone {zone}: {e}"),
            }
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
        plan.apply.len(),
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
