//! The shape of virtzone's own NAT table (`table ip virtzone_nat`, issue #21): one network's
//! masquerade as libvirt applies it, one forward's DNAT as firewalld applies it, and the one nft
//! transaction that makes the table hold exactly the wanted rules. Pure, and a leaf: the executor's
//! [`Step::OwnNat`](crate::change::Step::OwnNat) carries these values, and [`super::nat`] plans and
//! checks the table with them.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::network::Subnet;

/// The table's name (family [`FAMILY`]).
pub const TABLE: &str = "virtzone_nat";
/// The table's family: libvirt masquerades IPv4 only, unless `<nat ipv6='yes'>`.
pub const FAMILY: &str = "ip";
/// The base chain.
pub const CHAIN: &str = "postrouting";
/// `srcnat - 1`: before libvirt's and firewalld's NAT chains (both at `srcnat`, 100, or later).
pub const PRIORITY: i64 = 99;
/// The start of every masquerade rule's comment.
pub const COMMENT: &str = "virtzone-nat";
/// The DNAT base chain.
pub const DNAT_CHAIN: &str = "prerouting";
/// `dstnat - 1`: before firewalld's NAT chains (`dstnat + 10`) and Docker's (`dstnat`). The kernel
/// binds a connection's destination NAT at the first chain that sets it and skips the later NAT
/// chains for it, so firewalld's own forward-port (still there) never applies a second time.
pub const DNAT_PRIORITY: i64 = -101;
/// The start of every DNAT rule's comment.
pub const DNAT_COMMENT: &str = "virtzone-dnat";
/// One network's masquerade, as libvirt applies it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Masquerade {
    /// The network's IPv4 subnet.
    pub subnet: Subnet,
    /// `<forward dev>`: only out of this interface.
    pub dev: Option<String>,
    /// TCP's and UDP's source ports.
    pub ports: (u16, u16),
}

/// One forward's DNAT, as firewalld's forward-port in virtzone's `ANY → HOST` policy applies it:
/// every IPv4 packet arriving on any interface for `proto` port `port`, whatever its destination,
/// goes to `to_addr:to_port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dnat {
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// The host's port.
    pub port: u16,
    /// The guest.
    pub to_addr: Ipv4Addr,
    /// The guest's port.
    pub to_port: u16,
}

impl Dnat {
    /// The comment naming the rule (a listing is compared with the wanted rules by these).
    pub fn comment(&self) -> String {
        format!(
            "{DNAT_COMMENT} {} {} to {}:{}",
            self.proto, self.port, self.to_addr, self.to_port
        )
    }

    /// nft's JSON statements of the rule.
    fn expr(&self) -> Value {
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": self.proto, "field": "dport"}},
                "right": self.port}},
            {"counter": null},
            {"dnat": {"addr": self.to_addr.to_string(), "port": self.to_port}}
        ])
    }
}

/// One rule: its comment (which names what it does, so a listing can be compared with the
/// wanted rules) and nft's JSON statements.
pub(super) fn rules(m: &Masquerade) -> Vec<(String, Value)> {
    let ip = |field: &str, op: &str, right: Value| {
        json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}},
            "right": right}})
    };
    let net = json!({"prefix": {"addr": m.subnet.addr.to_string(), "len": m.subnet.prefix}});
    let mut head = vec![ip("saddr", "==", net.clone())];
    if let Some(dev) = &m.dev {
        head.push(
            json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}},
            "right": dev}}),
        );
    }
    let dev = m
        .dev
        .as_deref()
        .map(|d| format!(" oif {d}"))
        .unwrap_or_default();
    let (lo, hi) = m.ports;
    let with = |extra: Vec<Value>, verdict: Value| {
        let mut expr = head.clone();
        expr.extend(extra);
        expr.push(json!({"counter": null}));
        expr.push(verdict);
        Value::Array(expr)
    };
    let l4 = |proto: &str| json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}});
    let not_net = ip("daddr", "!=", net);
    let ports = json!({"masquerade": {"port": {"range": [lo, hi]}}});
    let c = |what: &str| format!("{COMMENT} {} {what}{dev}", m.subnet);
    vec![
        (
            c("return 224.0.0.0/24"),
            with(
                vec![ip(
                    "daddr",
                    "==",
                    json!({"prefix": {"addr": "224.0.0.0", "len": 24}}),
                )],
                json!({"return": null}),
            ),
        ),
        (
            c("return 255.255.255.255"),
            with(
                vec![ip("daddr", "==", json!("255.255.255.255"))],
                json!({"return": null}),
            ),
        ),
        (
            c(&format!("tcp {lo}-{hi}")),
            with(vec![not_net.clone(), l4("tcp")], ports.clone()),
        ),
        (
            c(&format!("udp {lo}-{hi}")),
            with(vec![not_net.clone(), l4("udp")], ports),
        ),
        (
            c("masquerade"),
            with(vec![not_net], json!({"masquerade": null})),
        ),
    ]
}

/// The comments of the rules `wanted` makes, in order.
pub fn wanted_comments(wanted: &[Masquerade]) -> Vec<String> {
    wanted
        .iter()
        .flat_map(|m| rules(m).into_iter().map(|(c, _)| c))
        .collect()
}

/// The nft commands (one transaction) that make the table hold exactly `wanted`'s masquerades
/// (chain [`CHAIN`]) and `dnats` (chain [`DNAT_CHAIN`]; each chain only when it has rules), or
/// take it away when both are empty. The table is deleted and created again in the same
/// transaction: packets see the old table or the new one, never none, and connections already
/// NATed keep their binding either way.
pub fn commands(wanted: &[Masquerade], dnats: &[Dnat]) -> Vec<Value> {
    let table = json!({"table": {"family": FAMILY, "name": TABLE}});
    // Adding first makes the deletion succeed whether or not the table exists.
    let mut cmds = vec![json!({"add": table}), json!({"delete": table})];
    if wanted.is_empty() && dnats.is_empty() {
        return cmds;
    }
    cmds.push(json!({"add": table}));
    let rule = |chain: &str, comment: String, expr: Value| {
        json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain,
        "comment": comment, "expr": expr}}})
    };
    if !dnats.is_empty() {
        cmds.push(
            json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": DNAT_CHAIN,
            "type": "nat", "hook": "prerouting", "prio": DNAT_PRIORITY, "policy": "accept"}}}),
        );
        for d in dnats {
            cmds.push(rule(DNAT_CHAIN, d.comment(), d.expr()));
        }
    }
    if !wanted.is_empty() {
        cmds.push(
            json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN,
            "type": "nat", "hook": "postrouting", "prio": PRIORITY, "policy": "accept"}}}),
        );
        for m in wanted {
            for (comment, expr) in rules(m) {
                cmds.push(rule(CHAIN, comment, expr));
            }
        }
    }
    cmds
}
