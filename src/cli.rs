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
}
