//! The command line, as clap definitions (also the source of the man pages and completions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::names::{BridgeName, ZoneName};

/// Keep libvirt's virtual networks working behind firewalld.
///
/// virtzone ships the libvirt and libvirt-routed firewalld zones and their policies, installs them
/// safely, checks before a network starts that guest networking will work, binds bridges to zones, and
/// keeps those bindings across firewalld reloads and restarts.
#[derive(Debug, Parser)]
#[command(name = "virtzone", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show firewalld, libvirt's zones and policies, and each bridge's zone.
    ///
    /// Reports whether firewalld runs, its version, state, backend and capabilities; for each of
    /// libvirt's zones and policies whether it is live and permanent, where it comes from and whether it
    /// matches virtzone's definition; and the zone of every bridge of this network namespace.
    Status {
        /// Print JSON (shape documented in docs/json.md).
        #[arg(long)]
        json: bool,
        /// Also read firewalld's live ruleset and confirm each bound bridge reaches its zone's rules
        /// (exit 1 when it does not).
        #[arg(long)]
        verify: bool,
    },
    /// Follow one packet through the live ruleset and say what happens to it.
    ///
    /// Every table and base chain it crosses, in hook and priority order, each decision with the rule
    /// that made it, and the final verdict: exit status 0 accepted, 1 dropped or rejected, 3 unknown
    /// (an expression outside the evaluator's model, see docs/verify.md), 2 bad input.
    #[command(group(clap::ArgGroup::new("direction").required(true).args(["to_host", "forward", "from"])))]
    Explain {
        /// The guests' bridge.
        #[arg(long, value_name = "BRIDGE")]
        bridge: BridgeName,
        /// A guest's packet to the host: `tcp/22`, `udp/53`, `icmp`.
        #[arg(long, value_name = "PROTO/PORT", conflicts_with = "service")]
        to_host: Option<String>,
        /// A guest's packet forwarded out (to --to ADDR, else the world); bridged between the
        /// bridge's ports when ADDR is on its link or the host has no address on it.
        #[arg(long, requires = "service")]
        forward: bool,
        /// Where the packet goes: with --forward the destination out in the world, with --to-host
        /// one of the host's addresses (default its IPv4 address on the bridge). Its family picks
        /// IPv4 or IPv6.
        #[arg(long, value_name = "ADDR", conflicts_with = "from")]
        to: Option<std::net::IpAddr>,
        /// A new connection from ADDR into a guest.
        #[arg(long, value_name = "ADDR", requires = "service")]
        from: Option<std::net::IpAddr>,
        /// The packet's protocol and port with --forward and --from: `tcp/80`, `udp/53`, `icmp`.
        #[arg(value_name = "PROTO/PORT")]
        service: Option<String>,
        /// Print the path as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that a network's guests will have working networking.
    ///
    /// The net-start pre-check, following libvirt's own rules for a bridge's zone: exit status 0 when
    /// guest networking will work, 1 when it will not (the message says why and what to do).
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
    /// Add libvirt's zones and policies to firewalld.
    ///
    /// Live over D-Bus into firewalld's permanent configuration, then one reload; or as files under
    /// DIR/usr/lib/firewalld with --root (packaging), or into /etc/firewalld when firewalld is not
    /// running. Zones and policies that exist already are kept as they are, with any admin's changes.
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
    /// Remove the zones and policies virtzone installed.
    ///
    /// Only what virtzone added and nobody changed since: never a package's files, never an admin's
    /// edits. Refuses while bridges are bound to a zone it would remove, unless --force.
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
    /// Bind a bridge to a zone.
    ///
    /// At runtime (and with --permanent also in the permanent configuration), recorded so that the
    /// daemon keeps it across firewalld reloads and restarts. A bridge in a zone virtzone did not set is
    /// left there unless --force.
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
    ///
    /// A bridge in a zone virtzone did not set is left there unless --force.
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
    /// List the bindings virtzone manages, desired beside actual.
    ///
    /// Flags drift: bindings firewalld lost (missing) and bridges someone moved to another zone.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// libvirt's network and qemu hooks.
    ///
    /// Called as `virtzone hook network NAME OP SUBOP [EXTRA]` with hookData on standard input, by
    /// /etc/libvirt/hooks/network.d/50-virtzone: `start begin` runs the pre-check, `started begin`
    /// binds the bridge, `stopped end` unbinds it. Called as `virtzone hook qemu DOMAIN OP SUBOP
    /// [EXTRA]` with the domain's XML on standard input, by /etc/libvirt/hooks/qemu.d/50-virtzone:
    /// `started begin` and `reconnect begin` record the domain and apply its `forward add --domain`
    /// forwards, `stopped end` takes them out; it always exits 0.
    Hook {
        /// The hooked object: `network` or `qemu`.
        object: String,
        /// The network's or domain's name. It may start with `-` (libvirt allows it): it is an
        /// argument, never an option, or the hook would fail such a network's start.
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// The operation (`start`, `started`, `stopped`, …).
        op: String,
        /// The sub-operation (`begin`, `end`).
        subop: String,
        /// Extra argument (libvirt passes `-`).
        extra: Option<String>,
    },
    /// Find why guests are blocked, with evidence, and fix what is safe to fix.
    ///
    /// Read-only unless --fix. Exit status 0: no problem found (warnings alone too); 1: at least one
    /// problem; 2: bad input. Checks and JSON ids are documented in docs/troubleshooting.md and
    /// docs/json.md.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only this running libvirt network (repeatable).
        #[arg(long, value_name = "NET")]
        network: Vec<String>,
        /// Apply the safe fixes, each after confirmation, then check again.
        #[arg(long)]
        fix: bool,
        /// With --fix: do not ask.
        #[arg(long, requires = "fix")]
        yes: bool,
        /// Undo what --fix keeps applied for check ID: `forward-drop` removes the accepts it put in
        /// Docker's DOCKER-USER chain, which the daemon otherwise re-applies.
        #[arg(long, value_name = "ID", conflicts_with = "fix")]
        unfix: Option<String>,
    },
    /// Forward ports of the host to a guest of a libvirt network (docs/forwards.md).
    ///
    /// Kept as desired state, shown by firewall-cmd as firewalld objects, and re-applied by the daemon
    /// whenever libvirt or firewalld rebuild their rules. With --domain the guest's address follows
    /// the domain (qemu hook, static DHCP hosts, dnsmasq's leases): inactive while it is stopped,
    /// waiting-for-address until its guest has a lease.
    Forward {
        /// add, remove or list.
        #[command(subcommand)]
        action: ForwardAction,
    },
    /// Open a host service to the guests of one libvirt network only (docs/forwards.md).
    Allow {
        /// add, remove or list.
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Converge to the desired state declared in drop-in files and with the CLI.
    ///
    /// Reads `*.conf` in /usr/lib/virtzone/virtzone.d, /run/virtzone/virtzone.d and
    /// /etc/virtzone/virtzone.d (systemd's drop-in rules: /etc overrides /run overrides /usr/lib, a
    /// symlink to /dev/null masks, lexical order), with `[Forward]`, `[Allow]` and `[Bind]` sections,
    /// and converges firewalld to them and to what the CLI added. Objects of a file belong to it: the
    /// CLI does not remove them, removing the declaration does at the next apply. Exit status 0 in
    /// sync or applied; with --check 3 when changes are pending (nothing is touched); 1 failed (what
    /// was rolled back is said); 2 bad configuration (FILE:LINE, nothing applied).
    Apply {
        /// Change nothing: exit 3 when changes are pending, 0 when in sync.
        #[arg(long)]
        check: bool,
        /// Print what would change (--check) or changed, one line each (`+ forward tcp/8080 → labnet
        /// 192.0.2.100:80`).
        #[arg(long)]
        diff: bool,
        /// Print `{"changed", "changes", "errors"}` (docs/json.md).
        #[arg(long)]
        json: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Run the daemon.
    ///
    /// Owns org.virtzone.VirtZone1 on the system bus and keeps the recorded bindings applied across
    /// firewalld reloads and restarts.
    Serve {
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// What a forward is: the arguments of `forward add`, also accepted by `forward remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForwardSpec {
    /// The libvirt network of the guest (with --domain: which of the domain's networks, when it has
    /// several).
    #[arg(long, value_name = "NET")]
    pub network: Option<String>,
    /// The guest's address (IPv4 or IPv6, in one of the network's subnets).
    #[arg(long, value_name = "ADDR")]
    pub guest: Option<String>,
    /// The guest by libvirt domain name: its address is resolved from the network's static DHCP
    /// hosts or dnsmasq's lease whenever the domain starts (through virtzone's qemu hook); while it
    /// is stopped the forward is inactive.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Forward only connections to this address of the host.
    #[arg(long, value_name = "ADDR")]
    pub host_address: Option<String>,
    /// Also forward connections the host itself opens to --host-address (firewalld 1.1 or later).
    #[arg(long)]
    pub from_host: bool,
    /// Also forward connections of the network's own guests to the host's address (firewalld 2.2.0,
    /// 2.1.2, 2.0.4 or later).
    #[arg(long)]
    pub hairpin: bool,
    /// Accept the known risk of `route_localnet` on the network's bridge, which a loopback
    /// --host-address (127.0.0.1, with --from-host) needs; see docs/forwards.md.
    #[arg(long)]
    pub route_localnet: bool,
}

/// `virtzone forward …`.
#[derive(Debug, Subcommand)]
pub enum ForwardAction {
    /// Forward PROTO/HOSTPORT[:GUESTPORT] (e.g. tcp/8080:80; ranges like tcp/8000-8010) to a guest
    /// (--network NET --guest ADDR) or to a libvirt domain (--domain DOMAIN [--network NET]).
    Add {
        /// The guest and options.
        #[command(flatten)]
        spec: ForwardSpec,
        /// PROTO/HOSTPORT[:GUESTPORT].
        #[arg(value_name = "PROTO/HOSTPORT[:GUESTPORT]")]
        ports: String,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Remove a forward by its ID, or by the arguments it was added with.
    Remove {
        /// The guest and options, when not removing by ID.
        #[command(flatten)]
        spec: ForwardSpec,
        /// ID, or PROTO/HOSTPORT[:GUESTPORT] with --network and --guest, or with --domain.
        #[arg(value_name = "ID|PROTO/HOSTPORT[:GUESTPORT]")]
        target: String,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Remove every forward and allow virtzone declared, and virtzone's own policies, from
    /// firewalld (both layers) and iptables, and forget them: what the package's removal runs.
    Purge {
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// List the forwards virtzone manages.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// `virtzone allow …`.
#[derive(Debug, Subcommand)]
pub enum AllowAction {
    /// Open SERVICE (a firewalld service) or PORT/PROTO on the host to one network's guests.
    Add {
        /// The libvirt network.
        #[arg(long, value_name = "NET")]
        network: String,
        /// SERVICE or PORT/PROTO.
        #[arg(value_name = "SERVICE|PORT/PROTO")]
        what: String,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Close what `allow add` opened.
    Remove {
        /// The libvirt network.
        #[arg(long, value_name = "NET")]
        network: String,
        /// SERVICE or PORT/PROTO.
        #[arg(value_name = "SERVICE|PORT/PROTO")]
        what: String,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// List what virtzone opened.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// virtzone's state directory (default $VIRTZONE_STATE_DIR or /var/lib/virtzone).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}
