//! The daemon's D-Bus interface, `org.virtzone.VirtZone1` (documented in dbus/org.virtzone.VirtZone1.xml).

use std::sync::Arc;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface, Connection};

use std::time::Instant;

use super::shared::{Shared, READ_CACHE, READ_SLOTS, READ_TIMEOUT};
use crate::bind::{self, Attach, Bindings, BINDINGS_FILE};
use crate::firewalld::FirewalldFacts;
use crate::libvirt::parse_network_xml;
use crate::names::{BridgeName, ZoneName};
use crate::precheck::{self, Request};

/// The daemon's errors, as named D-Bus errors (`org.virtzone.VirtZone1.Error.*`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.virtzone.VirtZone1.Error")]
pub enum ServiceError {
    /// zbus itself failed.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// An argument is invalid (a name, XML): nothing was changed.
    InvalidArgument(String),
    /// The operation was refused (the admin's choice stands, a zone is missing, …).
    Refused(String),
    /// firewalld failed or is not running.
    Firewalld(String),
    /// The caller may not do this (only root may change bindings).
    AccessDenied(String),
    /// Too many read calls are being served; try again shortly.
    Busy(String),
}

impl From<bind::BindError> for ServiceError {
    fn from(e: bind::BindError) -> Self {
        match e {
            bind::BindError::Refused(m) => ServiceError::Refused(m),
            bind::BindError::Firewalld(e) => ServiceError::Firewalld(e.to_string()),
            bind::BindError::State(e) if e.is_bad_input() => {
                ServiceError::InvalidArgument(e.to_string())
            }
            bind::BindError::State(e) => ServiceError::Refused(e.to_string()),
            bind::BindError::NetworkManager(e) => ServiceError::Refused(e.to_string()),
        }
    }
}

/// The object served at `/org/virtzone/VirtZone1`.
pub struct Service {
    pub(super) shared: Arc<Shared>,
}

impl Service {
    /// Runs one read method: at most [`READ_SLOTS`] at once (the rest are refused at once, so a flood
    /// costs nothing but refusals), each within [`READ_TIMEOUT`].
    async fn read<T, F>(&self, what: &str, read: F) -> Result<T, ServiceError>
    where
        F: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let Ok(_slot) = self.shared.read_slots.try_acquire() else {
            return Err(ServiceError::Busy(format!(
                "{READ_SLOTS} read calls are already being served; try again shortly"
            )));
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| {
                Err(ServiceError::Firewalld(format!(
                    "{what}: firewalld did not answer within {} s",
                    READ_TIMEOUT.as_secs()
                )))
            })
    }

    /// firewalld's facts from the reader connection, reused for [`READ_CACHE`].
    async fn facts(&self) -> Result<FirewalldFacts, ServiceError> {
        if let Some((at, facts)) = &self.shared.read_cache.lock().await.facts {
            if at.elapsed() < READ_CACHE {
                return Ok(facts.clone());
            }
        }
        let facts = crate::change::snapshot::firewalld_facts(&self.shared.reader)
            .await
            .map_err(|e| ServiceError::Firewalld(e.to_string()))?;
        self.shared.read_cache.lock().await.facts = Some((Instant::now(), facts.clone()));
        Ok(facts)
    }

    /// Only root may change bindings. The bus policy says so too; this holds even under a laxer policy.
    async fn require_root(
        &self,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(), ServiceError> {
        let sender = header
            .sender()
            .ok_or_else(|| ServiceError::AccessDenied("the call has no sender".into()))?;
        let dbus = fdo::DBusProxy::new(conn).await?;
        let uid = dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| ServiceError::AccessDenied(format!("cannot identify the caller: {e}")))?;
        if uid != 0 {
            return Err(ServiceError::AccessDenied(format!(
                "uid {uid} may not change bindings; only root may"
            )));
        }
        Ok(())
    }
}

#[interface(name = "org.virtzone.VirtZone1")]
impl Service {
    /// Binds BRIDGE to ZONE at runtime, records it, and keeps it bound across firewalld reloads and
    /// restarts. Refused when the bridge sits in a zone virtzone did not set.
    #[zbus(out_args("message"))]
    async fn attach(
        &self,
        bridge: &str,
        zone: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, ServiceError> {
        self.require_root(conn, &header).await?;
        let bridge =
            BridgeName::new(bridge).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let zone = ZoneName::new(zone).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let req = Attach {
            bridge,
            zone,
            permanent: false,
            force: false,
            network: None,
            source: None,
        };
        Ok(bind::attach(&self.shared.fw, &self.shared.state, &req).await?)
    }

    /// Unbinds BRIDGE (when virtzone bound it) and forgets it.
    #[zbus(out_args("message"))]
    async fn detach(
        &self,
        bridge: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, ServiceError> {
        self.require_root(conn, &header).await?;
        let bridge =
            BridgeName::new(bridge).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        Ok(bind::detach(&self.shared.fw, &self.shared.state, &bridge, false, false).await?)
    }

    /// The managed bindings: (bridge, wanted zone, actual zone or "", state: bound|missing|moved|unknown).
    #[zbus(out_args("bindings"))]
    async fn list(&self) -> Result<Vec<(String, String, String, String)>, ServiceError> {
        self.read("List", self.list_rows()).await
    }

    /// The net-start pre-check for a libvirt network XML (or hookData): (ok, reason, zone or "", message).
    #[zbus(out_args("ok", "reason", "zone", "message"))]
    async fn check(
        &self,
        network_xml: &str,
    ) -> Result<(bool, String, String, String), ServiceError> {
        let network = parse_network_xml(network_xml, None)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let facts = self.read("Check", self.facts()).await?;
        let v = precheck::decide(
            &Request {
                network: &network,
                zone: None,
            },
            &facts,
        );
        let reason = serde_json::to_value(v.reason)
            .ok()
            .and_then(|r| r.as_str().map(String::from))
            .unwrap_or_default();
        Ok((
            v.ok,
            reason,
            v.zone.map(|z| z.to_string()).unwrap_or_default(),
            v.message,
        ))
    }

    /// `virtzone status --json`, as a JSON string.
    #[zbus(out_args("json"))]
    async fn status(&self) -> Result<String, ServiceError> {
        self.read("Status", self.status_json()).await
    }

    /// firewalld's version as last seen ("" before firewalld was seen).
    #[zbus(property)]
    async fn firewalld_version(&self) -> String {
        self.shared.stats.lock().await.version.clone()
    }

    /// firewalld's backend as last seen ("" before firewalld was seen).
    #[zbus(property)]
    async fn firewalld_backend(&self) -> String {
        self.shared.stats.lock().await.backend.clone()
    }

    /// How many reconciles completed since the daemon started.
    #[zbus(property)]
    async fn reconcile_count(&self) -> u64 {
        self.shared.stats.lock().await.count
    }

    /// When the last reconcile completed, in microseconds since the Unix epoch (0: none yet).
    #[zbus(property)]
    async fn last_reconcile(&self) -> u64 {
        self.shared.stats.lock().await.last_usec
    }

    /// Emitted after every completed reconcile: its number, the bindings it re-applied, and the bridges
    /// found in another zone than virtzone set (reported, not changed).
    #[zbus(signal)]
    async fn reconciled(
        emitter: &SignalEmitter<'_>,
        count: u64,
        applied: u32,
        drifted: u32,
    ) -> zbus::Result<()>;
}

impl Service {
    async fn list_rows(&self) -> Result<Vec<(String, String, String, String)>, ServiceError> {
        let bindings: Bindings = self
            .shared
            .state
            .read(BINDINGS_FILE)
            .map_err(|e| ServiceError::Refused(e.to_string()))?;
        let actual = match self.shared.reader.is_running().await {
            Ok(true) => Some(
                bind::interface_zones(&self.shared.reader)
                    .await
                    .map_err(|e| ServiceError::Firewalld(e.to_string()))?,
            ),
            _ => None,
        };
        let profiles = bind::profiles(&self.shared.reader, &bindings)
            .await
            .map_err(|e| ServiceError::Refused(e.to_string()))?;
        Ok(bind::compare(&bindings, actual.as_ref(), &profiles)
            .into_iter()
            .map(|r| {
                let state = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (
                    r.bridge.to_string(),
                    r.zone.to_string(),
                    r.actual.unwrap_or_default(),
                    state,
                )
            })
            .collect())
    }

    async fn status_json(&self) -> Result<String, ServiceError> {
        if let Some((at, json)) = &self.shared.read_cache.lock().await.status {
            if at.elapsed() < READ_CACHE {
                return Ok(json.clone());
            }
        }
        let status = crate::status::gather_on(&self.shared.reader, Some(&self.shared.state))
            .await
            .map_err(|e| ServiceError::Firewalld(e.to_string()))?;
        let json =
            serde_json::to_string(&status).map_err(|e| ServiceError::Refused(e.to_string()))?;
        self.shared.read_cache.lock().await.status = Some((Instant::now(), json.clone()));
        Ok(json)
    }
}
