//! libvirt's **nftables** firewall backend (libvirt ≥ 10.4, `firewall_backend = "nftables"`): the
//! accepts for forwarded connections go *into* libvirt's own chain `guest_input` of
//! `table ip libvirt_network` (`ip6` for IPv6 guests), ahead of its reject. Pure: JSON of
//! `nft -j list table ip libvirt_network` in, steps out. See docs/forwards.md ("libvirt's nftables backend") for the
//! measurements behind it.
//!
//! Measured on libvirt 12.8: libvirt deletes only its own rules (by handle) and never the table,
//! and it re-inserts its rules at the top of the chain on `net-start`, libvirtd start and
//! firewalld's `Reloaded`. A rule of virtzone's thus survives every rebuild but ends up *behind*
//! libvirt's reject, where it is worth nothing: the plan re-inserts it at the top and deletes the
//! stale copy, in that order, so there is never less than one accept.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::accept::{Accept, COMMENT};
use super::model::{Ports, Proto};
use crate::change::{NftRule, Step};

/// libvirt's table, in family `ip` and, for IPv6 networks, `ip6` (IPv6 is NATed, and rejected like
/// IPv4, only with `<nat ipv6='yes'>`; a routed IPv6 subnet has an accept of its own).
pub const TABLE: &str = crate::libvirt::firewall::NFT_TABLE;
/// The IPv4 family.
pub const FAMILY: &str = "ip";
/// The IPv6 family.
pub const FAMILY6: &str = "ip6";

/// The table family for guests of `guest`'s IP version.
pub fn family_of(guest: std::net::IpAddr) -> &'static str {
    if guest.is_ipv4() {
        FAMILY
    } else {
        FAMILY6
    }
}
/// libvirt's chain for traffic towards the guests, ending in a reject per NAT bridge.
pub const CHAIN: &str = "guest_input";

/// One rule of `guest_input`, as far as the planner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRule {
    /// nft's handle (for `delete rule … handle N`).
    pub handle: u64,
    /// For virtzone's rules (comment [`COMMENT`]): what it accepts; `None` when its shape is not
    /// one virtzone writes (it is deleted then).
    pub ours: Option<Option<Accept>>,
    /// For libvirt's rules: the bridge it names (`oif`/`oifname`).
    pub bridge: Option<String>,
    /// Whether it rejects or drops (a rule of ours behind it is dead).
    pub rejects: bool,
}

/// `guest_input` of libvirt's table, in rule order; empty when the table or chain is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestInput {
    /// The rules, first to last.
    pub rules: Vec<SeenRule>,
}

impl GuestInput {
    /// Parses nft's JSON listing of `table FAMILY libvirt_network` (other tables and chains are
    /// ignored). Errors name what did not parse.
    pub fn parse(json: &str, family: &str) -> Result<GuestInput, String> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| format!("nft printed bad JSON: {e}"))?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("nft's JSON has no \"nftables\" array")?;
        let mut rules = Vec::new();
        for item in items {
            let Some(rule) = item.get("rule") else {
                continue;
            };
            let is = |k: &str, want: &str| rule.get(k).and_then(Value::as_str) == Some(want);
            if !(is("family", family) && is("table", TABLE) && is("chain", CHAIN)) {
                continue;
            }
            let handle = rule
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or("a rule of guest_input has no handle")?;
            let expr = rule
                .get("expr")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let ours = rule.get("comment").and_then(Value::as_str) == Some(COMMENT);
            let rejects = expr
                .iter()
                .any(|s| s.get("reject").is_some() || s.get("drop").is_some());
            rules.push(SeenRule {
                handle,
                ours: ours.then(|| accept_of(expr)),
                bridge: if ours { None } else { bridge_of(expr) },
                rejects,
            });
        }
        Ok(GuestInput { rules })
    }

    /// The handles of libvirt's own rules (not virtzone's).
    pub fn libvirt_handles(&self) -> BTreeSet<u64> {
        self.rules
            .iter()
            .filter(|r| r.ours.is_none())
            .map(|r| r.handle)
            .collect()
    }

    /// Whether libvirt has rebuilt its rules since `before`: none of its old rules is left (it
    /// deletes them by handle) and every bridge it named then is named again (it inserts the new
    /// ones one by one, the reject first, so an accept of ours inserted after this stays in front
    /// of the reject). `false` when `before` named no bridge: then there is nothing to wait for.
    pub fn rebuilt_since(&self, before: &GuestInput) -> bool {
        let old = before.libvirt_handles();
        let bridges = before.bridges();
        !bridges.is_empty()
            && self.libvirt_handles().is_disjoint(&old)
            && self.bridges().is_superset(&bridges)
    }

    /// The bridges libvirt's own rules in `guest_input` name: the networks whose rules libvirt
    /// keeps with its nftables backend.
    pub fn bridges(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .filter(|r| r.ours.is_none())
            .filter_map(|r| r.bridge.clone())
            .collect()
    }
}

/// The string a `match` compares `==` against `left`, when `left` is `{key: {inner: name}}`.
fn matched<'v>(s: &'v Value, outer: &str, inner: &str, name: &str) -> Option<&'v Value> {
    let m = s.get("match")?;
    if m.get("op").and_then(Value::as_str) != Some("==") {
        return None;
    }
    (m.get("left")?.get(outer)?.get(inner)?.as_str() == Some(name)).then(|| m.get("right"))?
}

fn bridge_of(expr: &[Value]) -> Option<String> {
    expr.iter().find_map(|s| {
        matched(s, "meta", "key", "oif")
            .or_else(|| matched(s, "meta", "key", "oifname"))
            .and_then(Value::as_str)
            .map(String::from)
    })
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|n| u16::try_from(n).ok())
}

/// Ports from a `dport` match's right side: a number, `{"range": [a, b]}`, or `{"set": [...]}`
/// of those.
fn ports_of(v: &Value) -> Option<Vec<Ports>> {
    if let Some(p) = port_of(v) {
        return Some(vec![Ports { lo: p, hi: p }]);
    }
    if let Some([lo, hi]) = v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
        return Some(vec![Ports {
            lo: port_of(lo)?,
            hi: port_of(hi)?,
        }]);
    }
    let mut out = Vec::new();
    for item in v.get("set")?.as_array()? {
        out.extend(ports_of(item)?);
    }
    Some(out)
}

/// The accept a rule of ours holds, when it has exactly the shape [`accept_expr`] writes.
fn accept_of(expr: &[Value]) -> Option<Accept> {
    let [oif, daddr, dport, ct, counter, verdict] = expr else {
        return None;
    };
    let bridge = matched(oif, "meta", "key", "oifname")?
        .as_str()?
        .to_string();
    let guest: std::net::IpAddr = matched(daddr, "payload", "field", "daddr")?
        .as_str()?
        .parse()
        .ok()?;
    let proto_of_daddr = daddr
        .get("match")?
        .get("left")?
        .get("payload")?
        .get("protocol")?;
    if proto_of_daddr.as_str()? != family_of(guest) {
        return None;
    }
    let m = dport.get("match")?;
    let payload = m.get("left")?.get("payload")?;
    if payload.get("field")?.as_str()? != "dport" || m.get("op")?.as_str()? != "==" {
        return None;
    }
    let proto: Proto = payload.get("protocol")?.as_str()?.parse().ok()?;
    let ports = ports_of(m.get("right")?)?;
    let ct_ok = matched_in(ct, "ct", "key", "status")? == "dnat";
    (ct_ok && counter.get("counter").is_some() && verdict.get("accept").is_some()).then_some(
        Accept {
            guest,
            bridge,
            proto,
            ports,
        },
    )
}

/// `ct status dnat` is printed with op `in`.
fn matched_in<'v>(s: &'v Value, outer: &str, inner: &str, name: &str) -> Option<&'v str> {
    let m = s.get("match")?;
    if !matches!(m.get("op").and_then(Value::as_str), Some("in" | "==")) {
        return None;
    }
    if m.get("left")?.get(outer)?.get(inner)?.as_str()? != name {
        return None;
    }
    m.get("right")?.as_str()
}

fn port_value(p: Ports) -> Value {
    if p.lo == p.hi {
        json!(p.lo)
    } else {
        json!({"range": [p.lo, p.hi]})
    }
}

/// The statements of the accept for `a`:
/// `oifname BRIDGE ip daddr GUEST PROTO dport {PORTS} ct status dnat counter accept`.
pub fn accept_expr(a: &Accept) -> Value {
    let ports = match &a.ports[..] {
        [one] => port_value(*one),
        many => json!({"set": many.iter().map(|p| port_value(*p)).collect::<Vec<_>>()}),
    };
    json!([
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": a.bridge}},
        {"match": {"op": "==", "left": {"payload": {"protocol": family_of(a.guest), "field": "daddr"}},
                   "right": a.guest.to_string()}},
        {"match": {"op": "==", "left": {"payload": {"protocol": a.proto.as_str(), "field": "dport"}},
                   "right": ports}},
        {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
        {"counter": null},
        {"accept": null}
    ])
}

/// How `a` reads in nft's own syntax (for messages).
pub fn accept_text(a: &Accept) -> String {
    let ports: Vec<String> = a.ports.iter().map(|p| p.to_string()).collect();
    let ports = match &ports[..] {
        [one] => one.clone(),
        many => format!("{{ {} }}", many.join(", ")),
    };
    format!(
        "oifname \"{}\" {} daddr {} {} dport {ports} ct status dnat counter accept comment \"{COMMENT}\"",
        a.bridge,
        family_of(a.guest),
        a.guest,
        a.proto
    )
}

/// The ports an accept covers, as sorted, merged intervals: nft may print a set differently from
/// how it was written (merged ranges, another order), and the comparison must not make the
/// daemon re-add an accept that is in place.
fn coverage(ports: &[Ports]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ports.iter().map(|p| (p.lo, p.hi)).collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn same(a: &Accept, b: &Accept) -> bool {
    a.guest == b.guest
        && a.bridge == b.bridge
        && a.proto == b.proto
        && coverage(&a.ports) == coverage(&b.ports)
}

/// The steps that make `guest_input` of `family` start with exactly the accepts `wanted` (for bridges libvirt
/// keeps with its nftables backend): missing or misplaced ones are inserted at the top *before*
/// anything is deleted (`before`), and rules of ours that are unwanted, duplicated or stuck behind
/// a reject are deleted by handle afterwards (`after`, which on removal runs after firewalld's DNAT
/// is gone).
pub fn steps(chain: &GuestInput, family: &str, wanted: &[Accept]) -> (Vec<Step>, Vec<Step>) {
    let mut rejected = false;
    let mut stale: Vec<u64> = Vec::new();
    // Rules of ours still usable: in front of every reject, by index into `wanted`.
    let mut kept: Vec<bool> = vec![false; wanted.len()];
    for r in &chain.rules {
        match &r.ours {
            None => rejected |= r.rejects,
            Some(seen) => {
                let slot = seen.as_ref().and_then(|s| {
                    wanted
                        .iter()
                        .enumerate()
                        .position(|(i, w)| !kept[i] && same(w, s))
                });
                match slot {
                    Some(i) if !rejected => kept[i] = true,
                    _ => stale.push(r.handle),
                }
            }
        }
    }
    let rules: Vec<NftRule> = wanted
        .iter()
        .zip(&kept)
        .filter(|(_, k)| !**k)
        .map(|(w, _)| NftRule {
            expr: accept_expr(w),
            comment: COMMENT.into(),
            text: accept_text(w),
        })
        .collect();
    // One step each, so one nft run each however many accepts there are.
    let before = if rules.is_empty() {
        Vec::new()
    } else {
        vec![Step::NftInsertRules {
            family: family.into(),
            table: TABLE.into(),
            chain: CHAIN.into(),
            rules,
        }]
    };
    let after = if stale.is_empty() {
        Vec::new()
    } else {
        vec![Step::NftDeleteRules {
            family: family.into(),
            table: TABLE.into(),
            chain: CHAIN.into(),
            handles: stale,
        }]
    };
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nft 1.1.7 printed in the lab (libvirt 12.8's rules for virbr12 plus three of ours: one
    /// in front, two that libvirt's restart pushed behind its reject).
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.1.7", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "libvirt_network", "handle": 5}},
 {"chain": {"family": "ip", "table": "libvirt_network", "name": "guest_input", "handle": 4}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 34, "comment": "virtzone-fwd",
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "virbr12"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.50"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}},
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 39,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr12"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}},
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 36,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr12"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"reject": {"type": "icmp", "expr": "port-unreachable"}}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 32, "comment": "virtzone-fwd",
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "virbr12"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.52"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 31, "comment": "virtzone-fwd",
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "virbr12"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.51"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [8000, 8010]}}},
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}
]}"#;

    fn accept(guest: &str, proto: Proto, ports: &[(u16, u16)]) -> Accept {
        Accept {
            guest: guest.parse().unwrap(),
            bridge: "virbr12".into(),
            proto,
            ports: ports.iter().map(|&(lo, hi)| Ports { lo, hi }).collect(),
        }
    }

    #[test]
    fn parses_libvirts_rules_and_ours() {
        let c = GuestInput::parse(LISTING, FAMILY).unwrap();
        assert_eq!(c.rules.len(), 5);
        assert_eq!(c.bridges(), BTreeSet::from(["virbr12".to_string()]));
        assert_eq!(
            c.rules[0].ours,
            Some(Some(accept(
                "192.0.2.50",
                Proto::Tcp,
                &[(80, 80), (443, 443)]
            )))
        );
        assert!(c.rules[2].rejects && c.rules[2].ours.is_none());
        assert_eq!(
            c.rules[4].ours,
            Some(Some(accept("192.0.2.51", Proto::Tcp, &[(8000, 8010)])))
        );
        // What we write parses back to the same accept.
        for a in [
            accept("192.0.2.9", Proto::Udp, &[(53, 53), (5000, 5010)]),
            accept("2001:db8::9", Proto::Tcp, &[(80, 80)]),
        ] {
            assert_eq!(accept_of(accept_expr(&a).as_array().unwrap()), Some(a));
        }
        assert!(accept_text(&accept("2001:db8::9", Proto::Tcp, &[(80, 80)]))
            .contains(" ip6 daddr 2001:db8::9 tcp dport 80 "));
        assert!(GuestInput::parse("{}", FAMILY).is_err());
    }

    #[test]
    fn accepts_behind_the_reject_are_inserted_again_then_deleted() {
        let c = GuestInput::parse(LISTING, FAMILY).unwrap();
        let wanted = [
            accept("192.0.2.50", Proto::Tcp, &[(443, 443), (80, 80)]),
            accept("192.0.2.51", Proto::Tcp, &[(8000, 8010)]),
        ];
        let (before, after) = steps(&c, FAMILY, &wanted);
        // The first is in front already; the second is stuck behind the reject.
        assert!(
            matches!(&before[..], [Step::NftInsertRules { rules, .. }]
                if rules.len() == 1 && rules[0].text.contains("192.0.2.51")),
            "{before:?}"
        );
        // 32 is not wanted at all, 31 is misplaced: one step, one nft run.
        assert!(
            matches!(&after[..], [Step::NftDeleteRules { handles, .. }] if handles == &[32, 31]),
            "{after:?}"
        );
        // Nothing wanted: every rule of ours goes, libvirt's stay.
        let (b, a) = steps(&c, FAMILY, &[]);
        assert!(b.is_empty());
        assert!(
            matches!(&a[..], [Step::NftDeleteRules { handles, .. }] if handles.len() == 3),
            "{a:?}"
        );
    }

    #[test]
    fn what_we_write_round_trips_through_the_nftables_crate() {
        // The executor hands the statements to nft through the crate's schema: nothing may be
        // lost on the way.
        for a in [
            accept("192.0.2.9", Proto::Tcp, &[(80, 80)]),
            accept("192.0.2.9", Proto::Sctp, &[(8000, 8010)]),
            accept("192.0.2.9", Proto::Udp, &[(53, 53), (5000, 5010)]),
            accept("2001:db8::9", Proto::Tcp, &[(80, 80)]),
        ] {
            let expr = accept_expr(&a);
            let typed: Vec<nftables::stmt::Statement<'static>> =
                serde_json::from_value(expr.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), expr, "{a:?}");
        }
    }

    #[test]
    fn a_rebuild_is_new_handles_for_the_same_bridges() {
        let before = GuestInput::parse(LISTING, FAMILY).unwrap();
        let mut now = before.clone();
        assert!(!now.rebuilt_since(&before));
        // libvirt deleted its rules: not rebuilt yet.
        now.rules.retain(|r| r.ours.is_some());
        assert!(!now.rebuilt_since(&before));
        // The reject is back under a new handle.
        now.rules.push(SeenRule {
            handle: 70,
            ours: None,
            bridge: Some("virbr12".into()),
            rejects: true,
        });
        assert!(now.rebuilt_since(&before));
        assert!(!now.rebuilt_since(&GuestInput::default()));
    }

    #[test]
    fn a_merged_set_counts_as_in_place() {
        let mut c = GuestInput::parse(LISTING, FAMILY).unwrap();
        c.rules[0].ours = Some(Some(accept("192.0.2.50", Proto::Tcp, &[(80, 82)])));
        let wanted = [accept(
            "192.0.2.50",
            Proto::Tcp,
            &[(80, 80), (81, 81), (82, 82)],
        )];
        let (b, _) = steps(&c, FAMILY, &wanted);
        assert!(b.is_empty(), "{b:?}");
    }
}
