//! The command line, as clap definitions (also the source of the man pages and completions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::names::{BridgeName, ZoneName};

/// Keep libvirt's virtual networks working behind firewalld.
#[derive(Debug, Parser)]
#[command(name = "virtzone", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show firewalld's presence, version, backend and capabilities, libvirt's zones and policies, and
    /// the zone of every bridge.
    Status {
        /// Print JSON (shape documented in docs/json.md).
        #[arg(long)]
        json: bool,
        /// Also read firewalld's live ruleset and confirm each bound bridge reaches its zone's rules
        /// (exit 1 when it does not).
        #[arg(long)]
        verify: bool,
    },
    /// The net-start pre-check: exit 0 when guest networking will work, 1 when it will not.
    Check {
        /// libvirt network XML (or hookData) to check; `-` reads standard input.
        #[arg(long, value_name = "FILE|-")]
        network_xml: Option<PathBuf>,
        /// The network's bridge (needed without --network-xml; overrides the XML's).
        #[arg(long, value_name = "BRIDGE")]
        bridge: Option<BridgeName>,
        /// Request this zone, as `<bridge zone=…>` would.
        #[arg(long, value_name = "ZONE")]
        zone: Option<ZoneName>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add the libvirt zones and policies to firewalld: live over D-Bus (then one reload), or as files
    /// under DIR/usr/lib/firewalld with --root (packaging) or into /etc/firewalld when firewalld is not
    /// running. Existing zones and policies are kept as they are.
    Install {
        /// Write files into the firewalld tree under DIR (a DESTDIR-style root) instead of talking to
        /// firewalld.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Add to the permanent configuration but do not reload firewalld.
        #[arg(long)]
        no_reload: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Remove the zones and policies virtzone installed and nobody changed since.
    Uninstall {
        /// Remove files from the firewalld tree under DIR instead of talking to firewalld.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Remove zones even while bridges are bound to them.
        #[arg(long)]
        force: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Bind a bridge to a zone at runtime (and with --permanent in the permanent configuration), and
    /// record it so that it is kept across firewalld reloads.
    Attach {
        /// The bridge.
        bridge: BridgeName,
        /// The zone (default libvirt).
        #[arg(long, default_value = "libvirt")]
        zone: ZoneName,
        /// Also bind it in firewalld's permanent configuration.
        #[arg(long)]
        permanent: bool,
        /// Move the bridge even out of a zone virtzone did not put it in.
        #[arg(long)]
        force: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Unbind a bridge virtzone bound, and forget it.
    Detach {
        /// The bridge.
        bridge: BridgeName,
        /// Also remove the binding from firewalld's permanent configuration.
        #[arg(long)]
        permanent: bool,
        /// Unbind it even from a zone virtzone did not put it in.
        #[arg(long)]
        force: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// The bindings virtzone manages, desired beside actual.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// libvirt's hook entry point: `virtzone hook network NAME OP SUBOP [EXTRA]` with hookData on
    /// standard input (install libvirt/hooks/network.d/50-virtzone to use it).
    Hook {
        /// The hooked object: `network`.
        object: String,
        /// The network's name.
        name: String,
        /// The operation (`start`, `started`, `stopped`, …).
        op: String,
        /// The sub-operation (`begin`, `end`).
        subop: String,
        /// Extra argument (libvirt passes `-`).
        extra: Option<String>,
    },
    /// Run the daemon: own org.virtzone.VirtZone1 on the system bus and keep the recorded bindings
    /// applied across firewalld reloads and restarts.
    Serve {
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}
