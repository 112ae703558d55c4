//! firewalld's nftables table (`nft -j list table inet firewalld`, parsed by the `nftables` crate)
//! into the [`Ruleset`] model.

use std::net::IpAddr;

use nftables::expr::{Expression, MetaKey, NamedExpression, Payload, SetItem};
use nftables::schema::{NfListObject, NfObject, Nftables};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::rules::{
    normalize_proto, BaseChain, Chain, Cond, Family, Hook, MapKey, Rule, Ruleset, Verdict, Vmap,
};

/// firewalld's table: family `inet`, name `firewalld` (every release with the nftables backend).
pub const TABLE: &str = "firewalld";

/// Parses `nft -j` output and reads firewalld's table from it.
pub fn parse(json: &str) -> Result<Ruleset, String> {
    let nft: Nftables = serde_json::from_str(json).map_err(|e| format!("nft -j output: {e}"))?;
    Ok(from_nftables(&nft))
}

/// Reads the chains and rules of table `inet firewalld` (other tables in the listing are ignored).
pub fn from_nftables(nft: &Nftables) -> Ruleset {
    let mut rs = Ruleset::default();
    let ours = |family: &NfFamily, table: &str| matches!(family, NfFamily::INet) && table == TABLE;
    for obj in nft.objects.iter() {
        match obj {
            NfObject::ListObject(NfListObject::Chain(c)) if ours(&c.family, &c.table) => {
                rs.chains
                    .entry(c.name.to_string())
                    .or_insert_with(|| Chain { rules: Vec::new() });
                let hook = match c.hook {
                    Some(NfHook::Prerouting) => Some(Hook::Prerouting),
                    Some(NfHook::Input) => Some(Hook::Input),
                    Some(NfHook::Forward) => Some(Hook::Forward),
                    _ => None,
                };
                // nat and route chains do not filter.
                if let (Some(hook), Some(NfChainType::Filter)) = (hook, &c._type) {
                    rs.base.push(BaseChain {
                        hook,
                        prio: c.prio.unwrap_or(0),
                        name: c.name.to_string(),
                        policy_accept: !matches!(c.policy, Some(NfChainPolicy::Drop)),
                    });
                }
            }
            NfObject::ListObject(NfListObject::Rule(r)) if ours(&r.family, &r.table) => {
                let rule = convert_rule(&r.expr);
                rs.chains
                    .entry(r.chain.to_string())
                    .or_insert_with(|| Chain { rules: Vec::new() })
                    .rules
                    .push(rule);
            }
            _ => {}
        }
    }
    rs
}

/// Converts one rule's statements.
fn convert_rule(stmts: &[Statement<'_>]) -> Rule {
    let mut conds = Vec::new();
    let mut verdict = Verdict::Continue;
    let mut vmap = None;
    let mut text: Vec<String> = Vec::new();
    for stmt in stmts {
        match stmt {
            Statement::Match(m) => {
                let (c, t) = convert_match(m);
                conds.extend(c);
                text.push(t);
            }
            Statement::Accept(_) => {
                verdict = Verdict::Accept;
                text.push("accept".into());
            }
            Statement::Drop(_) => {
                verdict = Verdict::Drop;
                text.push("drop".into());
            }
            Statement::Reject(r) => {
                let t = match r {
                    Some(r) => {
                        let kind = r._type.as_ref().map(enum_text);
                        let code = r.expr.as_ref().map(enum_text);
                        match (kind, code) {
                            // nft lists its default for inet tables as a bare `reject`.
                            (Some(k), Some(c)) if k == "icmpx" && c == "port-unreachable" => {
                                "reject".into()
                            }
                            (Some(k), Some(c)) => format!("reject with {k} {c}"),
                            (Some(k), None) => format!("reject with {k}"),
                            (None, Some(c)) => format!("reject with {c}"),
                            (None, None) => "reject".into(),
                        }
                    }
                    None => "reject".into(),
                };
                verdict = Verdict::Reject(t.clone());
                text.push(t);
            }
            Statement::Jump(t) => {
                verdict = Verdict::Jump(t.target.to_string());
                text.push(format!("jump {}", t.target));
            }
            Statement::Goto(t) => {
                verdict = Verdict::Goto(t.target.to_string());
                text.push(format!("goto {}", t.target));
            }
            Statement::Return(_) => {
                verdict = Verdict::Return;
                text.push("return".into());
            }
            Statement::Continue(_) => text.push("continue".into()),
            Statement::VerdictMap(v) => match convert_vmap(&v.key, &v.data) {
                Some((map, t)) => {
                    vmap = Some(map);
                    text.push(t);
                }
                None => {
                    conds.push(Cond::Unknown("vmap …".into()));
                    text.push("vmap …".into());
                }
            },
            // Statements without a verdict that always let the packet go on.
            Statement::Counter(_) => text.push("counter".into()),
            Statement::Log(_) => text.push("log …".into()),
            Statement::CTHelper(h) => text.push(format!("ct helper set \"{h}\"")),
            Statement::Mangle(_) => text.push("… set …".into()),
            Statement::Notrack => text.push("notrack".into()),
            // Anything else may stop some packets (limit, quota) or ends elsewhere (nat, queue):
            // such a rule is not one that applies to every packet of a kind.
            other => {
                let name = statement_name(other);
                conds.push(Cond::Unknown(name.clone()));
                text.push(name);
            }
        }
    }
    Rule {
        conds,
        verdict,
        vmap,
        text: text.join(" "),
    }
}

/// The JSON key of a statement (`limit`, `quota`, `snat`, …), for messages.
fn statement_name(stmt: &Statement<'_>) -> String {
    match serde_json::to_value(stmt) {
        Ok(serde_json::Value::Object(map)) => match map.keys().next() {
            Some(k) => format!("{k} …"),
            None => "…".into(),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => "…".into(),
    }
}

/// An enum's serde spelling (`icmpx`, `admin-prohibited`, `iifname`).
fn enum_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// The values of a match's right-hand side: single values, anonymous sets and lists.
fn values<'e>(right: &'e Expression<'e>) -> Vec<&'e Expression<'e>> {
    match right {
        Expression::List(items) => items.iter().collect(),
        Expression::Named(NamedExpression::Set(items)) => items
            .iter()
            .filter_map(|i| match i {
                SetItem::Element(e) => Some(e),
                _ => None,
            })
            .collect(),
        single => vec![single],
    }
}

fn strings(right: &Expression<'_>) -> Option<Vec<String>> {
    values(right)
        .into_iter()
        .map(|v| match v {
            Expression::String(s) => Some(s.to_string()),
            _ => None,
        })
        .collect()
}

fn port_ranges(right: &Expression<'_>) -> Option<Vec<(u16, u16)>> {
    let num = |e: &Expression<'_>| match e {
        Expression::Number(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    values(right)
        .into_iter()
        .map(|v| match v {
            Expression::Range(r) => Some((num(&r.range[0])?, num(&r.range[1])?)),
            other => num(other).map(|n| (n, n)),
        })
        .collect()
}

fn nets(right: &Expression<'_>) -> Option<Vec<(IpAddr, u8)>> {
    values(right)
        .into_iter()
        .map(|v| match v {
            Expression::String(s) => {
                let a: IpAddr = s.parse().ok()?;
                Some((a, if a.is_ipv4() { 32 } else { 128 }))
            }
            Expression::Named(NamedExpression::Prefix(p)) => match p.addr.as_ref() {
                Expression::String(s) => Some((s.parse().ok()?, u8::try_from(p.len).ok()?)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// nft's rendering of a right-hand side: `"virbr0"`, `{ 53, 67 }`, `1-5`.
fn render_right(right: &Expression<'_>, quote: bool) -> String {
    fn one(e: &Expression<'_>, quote: bool) -> String {
        match e {
            Expression::String(s) if quote => format!("\"{s}\""),
            Expression::String(s) => s.to_string(),
            Expression::Number(n) => n.to_string(),
            Expression::Boolean(b) => b.to_string(),
            Expression::Range(r) => {
                format!("{}-{}", one(&r.range[0], quote), one(&r.range[1], quote))
            }
            Expression::Named(NamedExpression::Prefix(p)) => {
                format!("{}/{}", one(&p.addr, false), p.len)
            }
            _ => "…".into(),
        }
    }
    let vals = values(right);
    match right {
        Expression::List(_) | Expression::Named(NamedExpression::Set(_)) => format!(
            "{{ {} }}",
            vals.iter()
                .map(|v| one(v, quote))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        single => one(single, quote),
    }
}

/// A match as conditions plus its nft text.
fn convert_match(m: &Match<'_>) -> (Vec<Cond>, String) {
    let negate = match m.op {
        Operator::EQ | Operator::IN => false,
        Operator::NEQ => true,
        // Bit operations and comparisons: not modelled.
        _ => return (vec![Cond::Unknown(describe(&m.left))], describe(&m.left)),
    };
    let op = if negate { "!= " } else { "" };
    let unknown = || {
        let t = format!(
            "{} {op}{}",
            describe(&m.left),
            render_right(&m.right, false)
        );
        (vec![Cond::Unknown(t.clone())], t)
    };
    match &m.left {
        Expression::Named(NamedExpression::Meta(meta)) => {
            let key = enum_text(&meta.key);
            let text = format!(
                "{}{key} {op}{}",
                if matches!(meta.key, MetaKey::Iifname | MetaKey::Oifname) {
                    ""
                } else {
                    "meta "
                },
                render_right(
                    &m.right,
                    matches!(meta.key, MetaKey::Iifname | MetaKey::Oifname)
                )
            );
            let cond = match (meta.key, strings(&m.right)) {
                (MetaKey::Iifname, Some(names)) => Cond::Iif { names, negate },
                (MetaKey::Oifname, Some(names)) => Cond::Oif { names, negate },
                (MetaKey::L4proto, Some(p)) => Cond::L4proto {
                    protos: p.iter().map(|p| normalize_proto(p)).collect(),
                    negate,
                },
                (MetaKey::Nfproto, Some(f)) if !negate && f.len() == 1 => match f[0].as_str() {
                    "ipv4" => Cond::Family(Family::V4),
                    "ipv6" => Cond::Family(Family::V6),
                    _ => Cond::Unknown(text.clone()),
                },
                _ => Cond::Unknown(text.clone()),
            };
            (vec![cond], text)
        }
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            let proto: &str = &f.protocol;
            let field: &str = &f.field;
            let text = format!("{proto} {field} {op}{}", render_right(&m.right, false));
            match (proto, field) {
                ("tcp" | "udp" | "sctp" | "dccp" | "udplite", "dport") => {
                    match port_ranges(&m.right) {
                        Some(ranges) => (
                            vec![Cond::Dport {
                                proto: proto.to_string(),
                                ranges,
                                negate,
                            }],
                            text,
                        ),
                        None => (vec![Cond::Unknown(text.clone())], text),
                    }
                }
                ("ip" | "ip6", "daddr") => {
                    let family = if proto == "ip" {
                        Family::V4
                    } else {
                        Family::V6
                    };
                    match nets(&m.right) {
                        Some(nets) => (
                            vec![Cond::Daddr {
                                family,
                                nets,
                                negate,
                            }],
                            text,
                        ),
                        None => (vec![Cond::Unknown(text.clone())], text),
                    }
                }
                _ => (vec![Cond::Unknown(text.clone())], text),
            }
        }
        Expression::Named(NamedExpression::CT(ct)) if ct.key == "state" => {
            let text = format!("ct state {op}{}", render_right(&m.right, false));
            match strings(&m.right) {
                Some(states) => (vec![Cond::CtState { states, negate }], text),
                None => (vec![Cond::Unknown(text.clone())], text),
            }
        }
        _ => unknown(),
    }
}

/// A short description of a match's left-hand side, for rules the model does not follow.
fn describe(left: &Expression<'_>) -> String {
    match left {
        Expression::Named(NamedExpression::Meta(m)) => format!("meta {}", enum_text(&m.key)),
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            format!("{} {}", f.protocol, f.field)
        }
        Expression::Named(NamedExpression::CT(c)) => format!("ct {}", c.key),
        Expression::Named(NamedExpression::Fib(_)) => "fib …".into(),
        Expression::Named(NamedExpression::Concat(_)) => "… . …".into(),
        _ => "…".into(),
    }
}

/// A verdict map keyed on interface names (alone or concatenated).
fn convert_vmap(key: &Expression<'_>, data: &Expression<'_>) -> Option<(Vmap, String)> {
    let map_key = |e: &Expression<'_>| match e {
        Expression::Named(NamedExpression::Meta(m)) => match m.key {
            MetaKey::Iifname => Some(MapKey::Iif),
            MetaKey::Oifname => Some(MapKey::Oif),
            _ => None,
        },
        _ => None,
    };
    let keys: Vec<MapKey> = match key {
        Expression::Named(NamedExpression::Concat(parts)) => {
            parts.iter().map(map_key).collect::<Option<_>>()?
        }
        single => vec![map_key(single)?],
    };
    let Expression::Named(NamedExpression::Set(items)) = data else {
        return None;
    };
    let mut entries = Vec::new();
    let mut text = Vec::new();
    for item in items {
        // nft writes a mapping as a two-element array, which the crate reads as a list.
        let (k, v) = match item {
            SetItem::Mapping(k, v) => (k, v),
            SetItem::Element(Expression::List(pair)) if pair.len() == 2 => (&pair[0], &pair[1]),
            _ => return None,
        };
        let names: Vec<String> = match k {
            Expression::Named(NamedExpression::Concat(parts)) => parts
                .iter()
                .map(|p| match p {
                    Expression::String(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect::<Option<_>>()?,
            Expression::String(s) => vec![s.to_string()],
            _ => return None,
        };
        let verdict = match v {
            Expression::Verdict(v) => match v {
                nftables::expr::Verdict::Accept => Verdict::Accept,
                nftables::expr::Verdict::Drop => Verdict::Drop,
                nftables::expr::Verdict::Continue => Verdict::Continue,
                nftables::expr::Verdict::Return => Verdict::Return,
                nftables::expr::Verdict::Jump(t) => Verdict::Jump(t.target.to_string()),
                nftables::expr::Verdict::Goto(t) => Verdict::Goto(t.target.to_string()),
            },
            _ => return None,
        };
        let verdict_text = match &verdict {
            Verdict::Jump(t) => format!("jump {t}"),
            Verdict::Goto(t) => format!("goto {t}"),
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            _ => "continue".into(),
        };
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        text.push(format!("{} : {verdict_text}", quoted.join(" . ")));
        entries.push((names, verdict));
    }
    let key_text: Vec<&str> = keys
        .iter()
        .map(|k| match k {
            MapKey::Iif => "iifname",
            MapKey::Oif => "oifname",
        })
        .collect();
    let text = format!("{} vmap {{ {} }}", key_text.join(" . "), text.join(", "));
    Some((Vmap { keys, entries }, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rules::{Final, Probe};

    #[test]
    fn reads_rules_as_nft_shows_them() {
        let json = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}},
          {"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT", "handle": 1,
                     "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}},
          {"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT_ZONES", "handle": 2}},
          {"chain": {"family": "inet", "table": "firewalld", "name": "filter_IN_libvirt", "handle": 3}},
          {"chain": {"family": "ip", "table": "other", "name": "input", "handle": 1,
                     "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "handle": 4,
                    "expr": [{"match": {"op": "==", "left": {"ct": {"key": "state"}},
                              "right": {"set": ["established", "related"]}}}, {"accept": null}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "handle": 5,
                    "expr": [{"jump": {"target": "filter_INPUT_ZONES"}}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "handle": 6,
                    "expr": [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT_ZONES", "handle": 7,
                    "expr": [{"vmap": {"key": {"meta": {"key": "iifname"}},
                              "data": {"set": [["virbr0", {"goto": {"target": "filter_IN_libvirt"}}]]}}}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_IN_libvirt", "handle": 8,
                    "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                              "right": {"set": [53, {"range": [67, 68]}]}}}, {"accept": null}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_IN_libvirt", "handle": 9,
                    "expr": [{"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["saddr"]}},
                              "right": false}}, {"drop": null}]}},
          {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_IN_libvirt", "handle": 10,
                    "expr": [{"reject": null}]}},
          {"rule": {"family": "ip", "table": "other", "chain": "input", "handle": 2,
                    "expr": [{"drop": null}]}}
        ]}"#;
        let rs = parse(json).unwrap();
        assert_eq!(rs.base.len(), 1, "only firewalld's table");
        let texts: Vec<&str> = rs.chains["filter_INPUT"]
            .rules
            .iter()
            .map(|r| r.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "ct state { established, related } accept",
                "jump filter_INPUT_ZONES",
                "reject with icmpx admin-prohibited"
            ]
        );
        assert_eq!(
            rs.chains["filter_INPUT_ZONES"].rules[0].text,
            "iifname vmap { \"virbr0\" : goto filter_IN_libvirt }"
        );
        assert_eq!(
            rs.chains["filter_IN_libvirt"].rules[0].text,
            "udp dport { 53, 67-68 } accept"
        );
        let dispatch = rs.dispatch(Hook::Input, "virbr0", "libvirt").unwrap();
        assert_eq!(dispatch.chain, "filter_INPUT_ZONES");
        let probe = |port| Probe {
            family: Family::V4,
            iif: Some("virbr0".into()),
            oif: None,
            proto: "udp",
            dport: Some(port),
            daddr: None,
        };
        let d = rs.evaluate(Hook::Input, &probe(68)).unwrap();
        assert_eq!(d.verdict, Final::Accept);
        // The fib rule is not followed: the catch-all decides.
        let d = rs.evaluate(Hook::Input, &probe(69)).unwrap();
        assert_eq!(d.verdict, Final::Reject("reject".into()));
        assert_eq!(d.by.unwrap().index, 3);
    }
}
