//! A small evaluator of a live netfilter ruleset: follows one synthetic packet through every base
//! chain of every table it crosses, in hook and priority order, and tells what happens to it and
//! which rule decided.
//!
//! The input is `nft -j list ruleset` (all tables of all families: firewalld's, libvirt's, Docker's,
//! and on the iptables backend the tables iptables-nft keeps), plus, for rules written by
//! iptables-nft, the `iptables-save` line of the rule: nft's JSON shows their compat matches
//! (`xt match "conntrack"`) without options, the saved line has them.
//!
//! The model is deliberately small (see docs/verify.md): interface names, layer-3/4 protocols,
//! addresses with prefixes, ports, conntrack state of a new connection, `fib` reverse-path and
//! address-type lookups, sets and verdict maps, and the verdicts accept, drop, reject, jump, goto and
//! return. Any expression outside it makes the packet's verdict "unknown" — never a guess — unless
//! the rule it sits in cannot decide anything (a rule with only counters or logging).
//!
//! Everything here is pure: no I/O.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

/// How deep jumps may nest before the ruleset counts as looping (the kernel allows 16 levels).
const MAX_DEPTH: usize = 32;

/// A base chain: where the kernel enters a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`, `ingress`.
    pub hook: String,
    /// Priority: lower runs first.
    pub prio: i64,
    /// `filter`, `nat`, `route`.
    pub kind: String,
    /// `true` = policy accept.
    pub policy_accept: bool,
    /// Devices of a `netdev`/`ingress` chain.
    pub devices: Vec<String>,
}

/// One rule: its expressions as nft's JSON has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's handle.
    pub handle: u64,
    /// Its expressions (matches and statements) in order.
    pub expr: Vec<Value>,
    /// The rule as `iptables-save` shows it, for rules of iptables-nft's tables.
    pub saved: Option<String>,
}

/// A chain of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Table family: `ip`, `ip6`, `inet`, `bridge`, `netdev`, `arp`.
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// Hook, priority and policy of a base chain.
    pub base: Option<Base>,
    /// Its rules in order.
    pub rules: Vec<Rule>,
}

/// All tables of a ruleset.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    /// Every chain, in listing order.
    pub chains: Vec<Chain>,
    /// (family, table, name) → index in `chains`.
    index: HashMap<(String, String, String), usize>,
    /// (family, table, name) → elements of a named set or map.
    sets: HashMap<(String, String, String), Vec<Value>>,
    /// Tables, as (family, name), in listing order.
    pub tables: Vec<(String, String)>,
}

impl Ruleset {
    /// Reads `nft -j list ruleset` output.
    pub fn from_json(json: &str) -> Result<Ruleset, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("nft's JSON: {e}"))?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("nft's JSON has no `nftables` array")?;
        let mut rs = Ruleset::default();
        let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        for item in items {
            if let Some(t) = item.get("table") {
                rs.tables.push((s(t, "family"), s(t, "name")));
            } else if let Some(c) = item.get("chain") {
                let base = c.get("hook").and_then(Value::as_str).map(|hook| Base {
                    hook: hook.to_string(),
                    prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                    kind: s(c, "type"),
                    policy_accept: c.get("policy").and_then(Value::as_str) != Some("drop"),
                    devices: match c.get("dev") {
                        Some(Value::String(d)) => vec![d.clone()],
                        Some(Value::Array(ds)) => ds
                            .iter()
                            .filter_map(|d| d.as_str().map(String::from))
                            .collect(),
                        _ => Vec::new(),
                    },
                });
                let key = (s(c, "family"), s(c, "table"), s(c, "name"));
                rs.index.insert(key.clone(), rs.chains.len());
                rs.chains.push(Chain {
                    family: key.0,
                    table: key.1,
                    name: key.2,
                    base,
                    rules: Vec::new(),
                });
            } else if let Some(r) = item.get("rule") {
                let key = (s(r, "family"), s(r, "table"), s(r, "chain"));
                let Some(&i) = rs.index.get(&key) else {
                    return Err(format!(
                        "rule in unknown chain {} {} {}",
                        key.0, key.1, key.2
                    ));
                };
                rs.chains[i].rules.push(Rule {
                    handle: r.get("handle").and_then(Value::as_u64).unwrap_or(0),
                    expr: r
                        .get("expr")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    saved: None,
                });
            } else if let Some(set) = item.get("set").or_else(|| item.get("map")) {
                let key = (s(set, "family"), s(set, "table"), s(set, "name"));
                let elems = match set.get("elem") {
                    Some(Value::Array(e)) => e.clone(),
                    Some(other) => vec![other.clone()],
                    None => Vec::new(),
                };
                rs.sets.insert(key, elems);
            }
        }
        Ok(rs)
    }

    /// Attaches `iptables-save` (family `ip`) or `ip6tables-save` (family `ip6`) output: the n-th
    /// `-A CHAIN` line of a table section belongs to the n-th rule of that chain. Chains whose rule
    /// counts differ are left without saved lines (their compat matches stay unknown).
    pub fn attach_saved(&mut self, family: &str, text: &str) {
        let mut table = String::new();
        let mut lines: HashMap<(String, String), Vec<String>> = HashMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let chain = rest.split_whitespace().next().unwrap_or("").to_string();
                lines
                    .entry((table.clone(), chain))
                    .or_default()
                    .push(line.to_string());
            }
        }
        for chain in self.chains.iter_mut().filter(|c| c.family == family) {
            if let Some(saved) = lines.get(&(chain.table.clone(), chain.name.clone())) {
                if saved.len() == chain.rules.len() {
                    for (rule, line) in chain.rules.iter_mut().zip(saved) {
                        rule.saved = Some(line.clone());
                    }
                }
            }
        }
    }

    /// Whether a table exists.
    pub fn has_table(&self, family: &str, name: &str) -> bool {
        self.tables.iter().any(|(f, n)| f == family && n == name)
    }

    fn chain(&self, family: &str, table: &str, name: &str) -> Option<&Chain> {
        self.index
            .get(&(family.to_string(), table.to_string(), name.to_string()))
            .map(|&i| &self.chains[i])
    }

    fn set(&self, family: &str, table: &str, name: &str) -> Option<&Vec<Value>> {
        self.sets
            .get(&(family.to_string(), table.to_string(), name.to_string()))
    }
}

/// Layer-4 protocol of a synthetic packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (a SYN).
    Tcp,
    /// UDP.
    Udp,
    /// ICMP or ICMPv6 echo request.
    Icmp,
}

impl Proto {
    /// nft's name for the protocol in the packet's family.
    fn name(self, v6: bool) -> &'static str {
        match (self, v6) {
            (Proto::Tcp, _) => "tcp",
            (Proto::Udp, _) => "udp",
            (Proto::Icmp, false) => "icmp",
            (Proto::Icmp, true) => "ipv6-icmp",
        }
    }
}

/// What kind of address the destination is, as routing (`fib daddr type`) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddrType {
    /// One of the host's own addresses.
    Local,
    /// Someone else's unicast address.
    Unicast,
    /// A broadcast address.
    Broadcast,
    /// A multicast address.
    Multicast,
}

impl AddrType {
    fn name(self) -> &'static str {
        match self {
            AddrType::Local => "local",
            AddrType::Unicast => "unicast",
            AddrType::Broadcast => "broadcast",
            AddrType::Multicast => "multicast",
        }
    }
}

/// The first packet of a new connection, as the evaluator follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// The interface it arrives on.
    pub iif: String,
    /// The interface it leaves by; `None` when it is for the host.
    pub oif: Option<String>,
    /// Bridged between two ports of `iif` (guest to guest): `bridge` tables see it, and with
    /// `br_netfilter` also the IP tables' prerouting, forward and postrouting hooks, with the bridge
    /// as both input and output interface.
    pub bridged: bool,
    /// `br_netfilter` is on (`net.bridge.bridge-nf-call-iptables = 1`): bridged packets cross the
    /// IP hooks too.
    pub br_netfilter: bool,
    /// Source address (its family is the packet's).
    pub saddr: IpAddr,
    /// Destination address.
    pub daddr: IpAddr,
    /// What routing makes of the destination.
    pub daddr_type: AddrType,
    /// Layer-4 protocol.
    pub proto: Proto,
    /// Source port (TCP, UDP).
    pub sport: u16,
    /// Destination port (TCP, UDP).
    pub dport: u16,
}

impl Packet {
    fn v6(&self) -> bool {
        self.saddr.is_ipv6()
    }

    /// The hooks the packet passes, in order.
    pub fn hooks(&self) -> &'static [&'static str] {
        match (&self.oif, self.bridged) {
            (_, true) => &["ingress", "prerouting", "forward", "postrouting"],
            (None, false) => &["ingress", "prerouting", "input"],
            (Some(_), false) => &["ingress", "prerouting", "forward", "postrouting"],
        }
    }

    /// Whether a table of `family` sees this packet at all.
    fn seen_by(&self, family: &str) -> bool {
        let ip = !self.bridged || self.br_netfilter;
        match family {
            "bridge" => self.bridged,
            "netdev" => true,
            "inet" => ip,
            "ip" => ip && !self.v6(),
            "ip6" => ip && self.v6(),
            _ => false,
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.proto.name(self.v6());
        match self.proto {
            Proto::Icmp => write!(f, "{proto} echo-request")?,
            _ => write!(f, "{proto}/{}", self.dport)?,
        }
        write!(f, " {} → {} in {}", self.saddr, self.daddr, self.iif)?;
        match (&self.oif, self.bridged) {
            (Some(o), _) => write!(f, " out {o}"),
            (None, true) => write!(f, " (bridged)"),
            (None, false) => write!(f, " (to the host)"),
        }
    }
}

/// What happened to a packet (in one base chain, or in the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "lowercase")]
pub enum Verdict {
    /// Let through.
    Accept,
    /// Dropped silently.
    Drop,
    /// Rejected (the sender gets an error quickly).
    Reject,
    /// The model cannot tell; the text says which expression.
    Unknown(String),
}

impl Verdict {
    /// `accepted`, `dropped`, `rejected`, `unknown`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Accept => "accepted",
            Verdict::Drop => "dropped",
            Verdict::Reject => "rejected",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// A rule (or a chain's policy) that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Table family.
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle; `None` for a base chain's policy.
    pub handle: Option<u64>,
    /// The rule as nft (or iptables-save, for iptables-nft's rules) shows it; `policy accept` for a
    /// policy.
    pub text: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.handle {
            Some(h) => write!(
                f,
                "{} {} chain {} handle {h} (`{}`)",
                self.family, self.table, self.chain, self.text
            ),
            None => write!(
                f,
                "the {} of {} {} chain {}",
                self.text, self.family, self.table, self.chain
            ),
        }
    }
}

/// One base chain on the packet's path and what it decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Table family.
    pub family: String,
    /// Table name.
    pub table: String,
    /// The base chain.
    pub chain: String,
    /// Its hook.
    pub hook: String,
    /// Its priority.
    pub prio: i64,
    /// Its decision.
    pub verdict: Verdict,
    /// The deciding rule or policy.
    pub by: Option<RuleRef>,
    /// Chains entered by jump or goto, in order.
    pub via: Vec<String>,
}

/// A packet's whole path and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// The packet.
    pub packet: Packet,
    /// Every base chain it crossed, in order (ends at the first that did not accept).
    pub steps: Vec<Step>,
    /// Accepted only if every base chain accepted it.
    pub verdict: Verdict,
    /// The rule that decided: the one that stopped it, or for an accepted packet the last rule
    /// that accepted it at its main hook (input or forward).
    pub by: Option<RuleRef>,
    /// Rules whose match the model cannot evaluate, but whose outcome does not matter: the packet
    /// meets the same verdict whether they match or not (e.g. libvirt nwfilter's `-m physdev`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regardless_of: Vec<String>,
}

impl Trace {
    /// "rejected by inet firewalld chain … handle 9 (`reject with icmpx admin-prohibited`)".
    pub fn describe(&self) -> String {
        let said = match (&self.verdict, &self.by) {
            (Verdict::Unknown(why), _) => format!("of unknown fate: {why}"),
            (v, Some(by)) => format!("{} by {by}", v.word()),
            (v, None) => format!("{} (no base chain on its path)", v.word()),
        };
        if self.regardless_of.is_empty() {
            return said;
        }
        format!(
            "{said}, whether or not {} match{} (outside the model, but either way the same)",
            self.regardless_of.join(" and "),
            if self.regardless_of.len() == 1 {
                "es"
            } else {
                ""
            }
        )
    }
}

/// Follows `packet` through `rs`.
pub fn evaluate(rs: &Ruleset, packet: &Packet) -> Trace {
    evaluate_forking(rs, packet, &mut HashMap::new(), 0)
}

/// How many rules with matches outside the model are tried both ways (2^N evaluations at most).
const MAX_FORKS: usize = 3;

/// A rule, for assumptions about its matches: (family, table, chain, handle).
type RuleKey = (String, String, String, u64);

/// What the walk assumes and learns: assumed outcomes of rules whose matches the model cannot
/// evaluate, and the first such rule met without an assumption.
#[derive(Default)]
struct Ctx {
    assume: HashMap<RuleKey, bool>,
    undecided: Option<(RuleKey, String)>,
}

/// [`evaluate`], trying a rule whose matches are outside the model both ways: when both give the
/// same verdict, that verdict does not depend on it (evaluation, not a guess); otherwise unknown.
fn evaluate_forking(
    rs: &Ruleset,
    packet: &Packet,
    assume: &mut HashMap<RuleKey, bool>,
    depth: usize,
) -> Trace {
    let mut ctx = Ctx {
        assume: assume.clone(),
        undecided: None,
    };
    let trace = evaluate_in(rs, packet, &mut ctx);
    let (Verdict::Unknown(_), Some((key, text))) = (&trace.verdict, ctx.undecided) else {
        return trace;
    };
    if depth >= MAX_FORKS {
        return trace;
    }
    assume.insert(key.clone(), true);
    let matched = evaluate_forking(rs, packet, assume, depth + 1);
    assume.insert(key.clone(), false);
    let mut missed = evaluate_forking(rs, packet, assume, depth + 1);
    assume.remove(&key);
    if matched.verdict != missed.verdict || matches!(missed.verdict, Verdict::Unknown(_)) {
        return trace;
    }
    missed.regardless_of.insert(0, text);
    for r in matched.regardless_of {
        if !missed.regardless_of.contains(&r) {
            missed.regardless_of.push(r);
        }
    }
    missed
}

fn evaluate_in(rs: &Ruleset, packet: &Packet, ctx: &mut Ctx) -> Trace {
    let mut steps = Vec::new();
    for hook in packet.hooks() {
        let mut bases: Vec<(&Chain, &Base)> = rs
            .chains
            .iter()
            .filter_map(|c| c.base.as_ref().map(|b| (c, b)))
            .filter(|(c, b)| b.hook == *hook && packet.seen_by(&c.family))
            .filter(|(c, b)| {
                // Ingress chains hang off devices: only those of the arrival interface count.
                *hook != "ingress"
                    || (b.devices.contains(&packet.iif)
                        && (c.family == "netdev" || c.family == "inet"))
            })
            .collect();
        // Stable: chains of equal priority keep listing order.
        bases.sort_by_key(|(_, b)| b.prio);
        for (chain, base) in bases {
            let step = run_base(rs, chain, base, hook, packet, ctx);
            let stop = step.verdict != Verdict::Accept;
            steps.push(step);
            if stop {
                let last = steps.last().cloned();
                return Trace {
                    packet: packet.clone(),
                    verdict: last.as_ref().map_or(Verdict::Accept, |s| s.verdict.clone()),
                    by: last.and_then(|s| s.by),
                    steps,
                    regardless_of: Vec::new(),
                };
            }
        }
    }
    let main = if packet.oif.is_none() && !packet.bridged {
        "input"
    } else {
        "forward"
    };
    // The accept worth naming: a rule (not a policy) at the main hook, the last such; else any rule.
    let by = steps
        .iter()
        .rev()
        .filter(|s| s.hook == main)
        .find_map(|s| s.by.clone().filter(|b| b.handle.is_some()))
        .or_else(|| {
            steps
                .iter()
                .rev()
                .find_map(|s| s.by.clone().filter(|b| b.handle.is_some()))
        })
        .or_else(|| steps.last().and_then(|s| s.by.clone()));
    Trace {
        packet: packet.clone(),
        steps,
        verdict: Verdict::Accept,
        by,
        regardless_of: Vec::new(),
    }
}

/// What a chain walk ended with.
enum Outcome {
    /// A terminal verdict from a rule.
    Final(Verdict, RuleRef),
    /// Fell off the end or returned: the base chain's policy applies.
    Policy,
}

fn run_base(
    rs: &Ruleset,
    chain: &Chain,
    base: &Base,
    hook: &str,
    p: &Packet,
    ctx: &mut Ctx,
) -> Step {
    let mut via = Vec::new();
    let (verdict, by) = match walk(rs, chain, p, 0, &mut via, ctx) {
        Outcome::Final(v, r) => (v, Some(r)),
        Outcome::Policy => {
            let v = if base.policy_accept {
                Verdict::Accept
            } else {
                Verdict::Drop
            };
            let text = if base.policy_accept {
                "policy accept"
            } else {
                "policy drop"
            };
            (
                v,
                Some(RuleRef {
                    family: chain.family.clone(),
                    table: chain.table.clone(),
                    chain: chain.name.clone(),
                    handle: None,
                    text: text.into(),
                }),
            )
        }
    };
    Step {
        family: chain.family.clone(),
        table: chain.table.clone(),
        chain: chain.name.clone(),
        hook: hook.to_string(),
        prio: base.prio,
        verdict,
        by,
        via,
    }
}

/// What one rule does to the packet.
enum Effect {
    /// Next rule.
    Next,
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    Unknown(String),
}

/// Walks a chain; a `Return`/end of chain gives `Policy` to the caller, which continues.
fn walk(
    rs: &Ruleset,
    chain: &Chain,
    p: &Packet,
    depth: usize,
    via: &mut Vec<String>,
    ctx: &mut Ctx,
) -> Outcome {
    let mut current = chain;
    let mut depth = depth;
    'chain: loop {
        for rule in &current.rules {
            let rref = || RuleRef {
                family: current.family.clone(),
                table: current.table.clone(),
                chain: current.name.clone(),
                handle: Some(rule.handle),
                text: rule
                    .saved
                    .clone()
                    .unwrap_or_else(|| render_rule(&rule.expr)),
            };
            let target = match apply(rs, current, rule, p, ctx) {
                Effect::Next => continue,
                Effect::Accept => return Outcome::Final(Verdict::Accept, rref()),
                Effect::Drop => return Outcome::Final(Verdict::Drop, rref()),
                Effect::Reject => return Outcome::Final(Verdict::Reject, rref()),
                Effect::Return => return Outcome::Policy,
                Effect::Unknown(why) => {
                    let r = rref();
                    return Outcome::Final(Verdict::Unknown(format!("{why} in {r}")), r);
                }
                Effect::Jump(t) => (t, false),
                Effect::Goto(t) => (t, true),
            };
            let Some(next) = rs.chain(&current.family, &current.table, &target.0) else {
                let r = rref();
                return Outcome::Final(
                    Verdict::Unknown(format!("jump to missing chain {} in {r}", target.0)),
                    r,
                );
            };
            if depth >= MAX_DEPTH {
                let r = rref();
                return Outcome::Final(
                    Verdict::Unknown(format!("jumps nest deeper than {MAX_DEPTH} at {r}")),
                    r,
                );
            }
            via.push(next.name.clone());
            if target.1 {
                // goto: the called chain's end returns to our caller, not to us.
                current = next;
                depth += 1;
                continue 'chain;
            }
            match walk(rs, next, p, depth + 1, via, ctx) {
                Outcome::Policy => continue,
                done => return done,
            }
        }
        return Outcome::Policy;
    }
}

/// Three-valued truth of a match.
#[derive(Debug, Clone, PartialEq)]
enum Tri {
    Yes,
    No,
    Unknown(String),
}

/// Applies one rule: all matches, then its statements.
fn apply(rs: &Ruleset, chain: &Chain, rule: &Rule, p: &Packet, ctx: &mut Ctx) -> Effect {
    let saved = rule.saved.as_deref().map(SavedRule::parse);
    let mut xt_match = 0;
    let mut unknown: Option<String> = None;
    let mut effect = Effect::Next;
    for e in &rule.expr {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let truth = match key.as_str() {
            "match" => eval_match(rs, chain, body, p),
            "xt" if body.get("type").and_then(Value::as_str) == Some("match") => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or("");
                let t = match &saved {
                    Some(s) => s.eval_match(name, xt_match, p),
                    None => Tri::Unknown(format!("iptables match `{name}` (options not readable)")),
                };
                xt_match += 1;
                t
            }
            // Statements: only the verdict-bearing ones matter.
            // `flow add @ft` (firewalld's NftablesFlowtable) offloads established traffic only.
            "counter" | "log" | "ct helper" | "notrack" | "set" | "comment" | "flow" => Tri::Yes,
            "limit" | "quota" => Tri::Unknown(format!("rate limit `{}`", render(e))),
            "accept" => {
                effect = Effect::Accept;
                break;
            }
            "drop" => {
                effect = Effect::Drop;
                break;
            }
            "reject" => {
                effect = Effect::Reject;
                break;
            }
            "return" => {
                effect = Effect::Return;
                break;
            }
            "continue" => break,
            "jump" | "goto" => {
                let target = body
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                effect = if key == "jump" {
                    Effect::Jump(target)
                } else {
                    Effect::Goto(target)
                };
                break;
            }
            "vmap" => {
                effect = match eval_vmap(rs, chain, body, p) {
                    Ok(Some(e)) => e,
                    Ok(None) => Effect::Next,
                    Err(why) => Effect::Unknown(why),
                };
                break;
            }
            // NAT: terminal; source NAT does not change where the packet goes.
            "masquerade" | "snat" => {
                effect = Effect::Accept;
                break;
            }
            "xt" => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or("");
                effect = match name {
                    "REJECT" => Effect::Reject,
                    "MASQUERADE" | "SNAT" => Effect::Accept,
                    "CT" | "LOG" | "NFLOG" | "CHECKSUM" | "TCPMSS" => Effect::Next,
                    other => Effect::Unknown(format!("iptables target `{other}`")),
                };
                break;
            }
            other => {
                effect = Effect::Unknown(format!("statement `{other}` ({})", render(e)));
                break;
            }
        };
        match truth {
            Tri::Yes => {}
            Tri::No => return Effect::Next,
            Tri::Unknown(why) => {
                unknown.get_or_insert(why);
            }
        }
    }
    match (effect, unknown) {
        // A rule that decides nothing cannot change the packet's fate, whatever it matches.
        (Effect::Next, _) => Effect::Next,
        (effect, Some(why)) => {
            let key = (
                chain.family.clone(),
                chain.table.clone(),
                chain.name.clone(),
                rule.handle,
            );
            match ctx.assume.get(&key) {
                Some(true) => effect,
                Some(false) => Effect::Next,
                None => {
                    if ctx.undecided.is_none() {
                        let text = rule
                            .saved
                            .clone()
                            .unwrap_or_else(|| render_rule(&rule.expr));
                        ctx.undecided = Some((
                            key,
                            format!(
                                "{} {} chain {} handle {} (`{text}`)",
                                chain.family, chain.table, chain.name, rule.handle
                            ),
                        ));
                    }
                    Effect::Unknown(why)
                }
            }
        }
        (effect, None) => effect,
    }
}

/// A value of a packet field.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(u64),
    Addr(IpAddr),
    Bool(bool),
    /// Several fields (`meta l4proto . th dport`).
    Concat(Vec<Val>),
}

/// A field's value for the packet, `Absent` when the field does not exist in it (a TCP port of a
/// UDP packet: nft's implicit protocol dependency makes the whole rule not match).
enum Field {
    Val(Val),
    Absent,
    Unknown(String),
}

fn field(e: &Value, p: &Packet) -> Field {
    let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
        return Field::Unknown(format!("expression `{}`", render(e)));
    };
    let str_of = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let v6 = p.v6();
    let s = |x: &str| Field::Val(Val::Str(x.to_string()));
    match key.as_str() {
        "meta" => match str_of("key") {
            "iifname" => s(&p.iif),
            // A bridged packet leaves by the bridge it came in on (as br_netfilter shows it).
            "oifname" if p.bridged => s(&p.iif),
            "oifname" => s(p.oif.as_deref().unwrap_or("")),
            "l4proto" => s(p.proto.name(v6)),
            "nfproto" => s(if v6 { "ipv6" } else { "ipv4" }),
            "protocol" => s(if v6 { "ip6" } else { "ip" }),
            "mark" => Field::Val(Val::Int(0)),
            "pkttype" => s(match p.daddr_type {
                AddrType::Broadcast => "broadcast",
                AddrType::Multicast => "multicast",
                _ => "host",
            }),
            other => Field::Unknown(format!("meta {other}")),
        },
        "payload" => {
            let proto = str_of("protocol");
            let f = str_of("field");
            match (proto, f) {
                ("ip", _) if v6 => Field::Absent,
                ("ip6", _) if !v6 => Field::Absent,
                ("ip" | "ip6", "saddr") => Field::Val(Val::Addr(p.saddr)),
                ("ip" | "ip6", "daddr") => Field::Val(Val::Addr(p.daddr)),
                ("ip", "protocol") | ("ip6", "nexthdr") => s(p.proto.name(v6)),
                ("tcp", _) if p.proto != Proto::Tcp => Field::Absent,
                ("udp", _) if p.proto != Proto::Udp => Field::Absent,
                ("th", _) if p.proto == Proto::Icmp => Field::Absent,
                ("tcp" | "udp" | "th", "dport") => Field::Val(Val::Int(p.dport.into())),
                ("tcp" | "udp" | "th", "sport") => Field::Val(Val::Int(p.sport.into())),
                ("icmp", _) if v6 || p.proto != Proto::Icmp => Field::Absent,
                ("icmpv6", _) if !v6 || p.proto != Proto::Icmp => Field::Absent,
                ("icmp" | "icmpv6", "type") => s("echo-request"),
                ("icmp" | "icmpv6", "code") => Field::Val(Val::Int(0)),
                _ => Field::Unknown(format!("{proto} {f}")),
            }
        }
        "ct" => match str_of("key") {
            "state" => s("new"),
            "status" => Field::Val(Val::Str(String::new())),
            "mark" => Field::Val(Val::Int(0)),
            "direction" => s("original"),
            other => Field::Unknown(format!("ct {other}")),
        },
        "fib" => {
            let flags: Vec<&str> = body
                .get("flags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match str_of("result") {
                // Reverse-path lookup: a guest's or the upstream's own address routes back by the
                // interface it came in on (the model sends no spoofed packets).
                "oif" | "oifname" if flags.contains(&"saddr") && flags.contains(&"iif") => {
                    Field::Val(Val::Bool(true))
                }
                "type" if flags.contains(&"daddr") => s(p.daddr_type.name()),
                other => Field::Unknown(format!("fib {} {other}", flags.join(" . "))),
            }
        }
        "concat" => {
            let mut vals = Vec::new();
            for part in body.as_array().into_iter().flatten() {
                match field(part, p) {
                    Field::Val(v) => vals.push(v),
                    other => return other,
                }
            }
            Field::Val(Val::Concat(vals))
        }
        _ => Field::Unknown(format!("expression `{}`", render(e))),
    }
}

fn eval_match(rs: &Ruleset, chain: &Chain, m: &Value, p: &Packet) -> Tri {
    let left = m.get("left").unwrap_or(&Value::Null);
    let right = m.get("right").unwrap_or(&Value::Null);
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let val = match field(left, p) {
        Field::Val(v) => v,
        Field::Absent => return Tri::No,
        Field::Unknown(why) => return Tri::Unknown(why),
    };
    let hit = match op {
        "==" | "in" => contains(rs, chain, right, &val),
        "!=" => contains(rs, chain, right, &val).map(|b| !b),
        "<" | ">" | "<=" | ">=" => match (&val, right.as_u64()) {
            (Val::Int(a), Some(b)) => Ok(match op {
                "<" => *a < b,
                ">" => *a > b,
                "<=" => *a <= b,
                _ => *a >= b,
            }),
            _ => Err(format!("comparison `{}`", render_match(m))),
        },
        other => Err(format!("operator {other}")),
    };
    match hit {
        Ok(true) => Tri::Yes,
        Ok(false) => Tri::No,
        Err(why) => Tri::Unknown(why),
    }
}

/// Whether `val` is matched by `right`: a value, a prefix, a range, an anonymous or named set, a
/// flag list (ct state).
fn contains(rs: &Ruleset, chain: &Chain, right: &Value, val: &Val) -> Result<bool, String> {
    match right {
        Value::Array(items) => any_of(rs, chain, items, val),
        Value::Object(o) => {
            if let Some(Value::Array(items)) = o.get("set") {
                return any_of(rs, chain, items, val);
            }
            if let Some(name) = o.get("@").and_then(Value::as_str) {
                let Some(elems) = rs.set(&chain.family, &chain.table, name) else {
                    return Err(format!("set @{name} not listed"));
                };
                return any_of(rs, chain, elems, val);
            }
            if let Some(elem) = o.get("elem") {
                return contains(rs, chain, elem.get("val").unwrap_or(&Value::Null), val);
            }
            if let Some(pre) = o.get("prefix") {
                let addr = pre.get("addr").and_then(Value::as_str).unwrap_or("");
                let len = pre.get("len").and_then(Value::as_u64).unwrap_or(0);
                return match (val, addr.parse::<IpAddr>()) {
                    (Val::Addr(a), Ok(net)) => Ok(in_prefix(*a, net, len)),
                    _ => Err(format!("prefix {addr}/{len}")),
                };
            }
            if let Some(Value::Array(r)) = o.get("range") {
                return match (val, r.as_slice()) {
                    (Val::Int(x), [lo, hi]) => match (lo.as_u64(), hi.as_u64()) {
                        (Some(lo), Some(hi)) => Ok(lo <= *x && *x <= hi),
                        _ => Err("range".into()),
                    },
                    (Val::Addr(a), [lo, hi]) => {
                        match (
                            lo.as_str().and_then(|s| s.parse::<IpAddr>().ok()),
                            hi.as_str().and_then(|s| s.parse::<IpAddr>().ok()),
                        ) {
                            (Some(lo), Some(hi)) => Ok(lo <= *a && *a <= hi),
                            _ => Err("address range".into()),
                        }
                    }
                    _ => Err("range".into()),
                };
            }
            if let (Some(Value::Array(parts)), Val::Concat(vals)) = (o.get("concat"), val) {
                if parts.len() != vals.len() {
                    return Ok(false);
                }
                for (part, v) in parts.iter().zip(vals) {
                    if !contains(rs, chain, part, v)? {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            Err(format!("value `{}`", render(right)))
        }
        scalar => scalar_eq(scalar, val),
    }
}

fn any_of(rs: &Ruleset, chain: &Chain, items: &[Value], val: &Val) -> Result<bool, String> {
    let mut err = None;
    for item in items {
        // A map's element is [key, data]; a set's is the key.
        let key = match item {
            Value::Array(pair) if pair.len() == 2 && !matches!(val, Val::Concat(_)) => &pair[0],
            other => other,
        };
        match contains(rs, chain, key, val) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => err = Some(e),
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(false),
    }
}

fn scalar_eq(right: &Value, val: &Val) -> Result<bool, String> {
    Ok(match (val, right) {
        (Val::Str(s), Value::String(r)) => str_eq(s, r),
        // Protocol names against numbers.
        (Val::Str(s), Value::Number(n)) => match (proto_number(s), n.as_u64()) {
            (Some(a), Some(b)) => a == b,
            _ => match (icmp_number(s), n.as_u64()) {
                (Some(a), Some(b)) => a.contains(&b),
                _ => return Err(format!("{s} compared with {n}")),
            },
        },
        (Val::Int(a), Value::Number(n)) => Some(*a) == n.as_u64(),
        (Val::Int(a), Value::String(r)) => match r.parse::<u64>() {
            Ok(b) => *a == b,
            Err(_) => return Err(format!("{a} compared with {r}")),
        },
        (Val::Addr(a), Value::String(r)) => match r.parse::<IpAddr>() {
            Ok(b) => *a == b,
            Err(_) => return Err(format!("address compared with {r}")),
        },
        (Val::Bool(a), Value::Bool(b)) => a == b,
        (v, r) => return Err(format!("{v:?} compared with {r}")),
    })
}

/// Interface-name comparison with nft's trailing `*` wildcard; other strings compare equal, with
/// nft's two names for ICMPv6 as one.
fn str_eq(s: &str, pattern: &str) -> bool {
    let icmpv6 = |x: &str| x == "ipv6-icmp" || x == "icmpv6";
    if icmpv6(s) && icmpv6(pattern) {
        return true;
    }
    if let Some(stem) = pattern.strip_suffix('*') {
        if !stem.ends_with('\\') {
            return s.starts_with(stem);
        }
    }
    s == pattern.replace("\\*", "*")
}

fn proto_number(name: &str) -> Option<u64> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmpv6" => 58,
        _ => return None,
    })
}

/// Echo request's type number in ICMP and ICMPv6.
fn icmp_number(name: &str) -> Option<[u64; 2]> {
    (name == "echo-request").then_some([8, 128])
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u64) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = len.min(32) as u32;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = len.min(128) as u32;
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

/// A verdict map: `KEY vmap { … }` or `KEY vmap @map`.
fn eval_vmap(
    rs: &Ruleset,
    chain: &Chain,
    body: &Value,
    p: &Packet,
) -> Result<Option<Effect>, String> {
    let key = match field(body.get("key").unwrap_or(&Value::Null), p) {
        Field::Val(v) => v,
        Field::Absent => return Ok(None),
        Field::Unknown(why) => return Err(why),
    };
    let data = body.get("data").unwrap_or(&Value::Null);
    let elems: Vec<Value> = if let Some(Value::Array(items)) = data.get("set") {
        items.clone()
    } else if let Some(name) = data.get("@").and_then(Value::as_str) {
        rs.set(&chain.family, &chain.table, name)
            .cloned()
            .ok_or_else(|| format!("map @{name} not listed"))?
    } else {
        return Err(format!("verdict map `{}`", render(body)));
    };
    for item in &elems {
        let Value::Array(pair) = item else { continue };
        let [k, verdict] = pair.as_slice() else {
            continue;
        };
        if contains(rs, chain, k, &key)? {
            let Some((vk, vb)) = verdict.as_object().and_then(|o| o.iter().next()) else {
                return Err("verdict map entry".into());
            };
            let target = || {
                vb.get("target")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            return Ok(Some(match vk.as_str() {
                "accept" => Effect::Accept,
                "drop" => Effect::Drop,
                "reject" => Effect::Reject,
                "return" => Effect::Return,
                "continue" => Effect::Next,
                "jump" => Effect::Jump(target()),
                "goto" => Effect::Goto(target()),
                other => return Err(format!("verdict {other} in a map")),
            }));
        }
    }
    Ok(None)
}

/// A rule as iptables-save shows it, split into its `-m` matches.
struct SavedRule {
    /// (match name, its options) in order.
    matches: Vec<(String, Vec<String>)>,
}

impl SavedRule {
    fn parse(line: &str) -> SavedRule {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut matches: Vec<(String, Vec<String>)> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            if tokens[i] == "-m" && i + 1 < tokens.len() {
                let name = tokens[i + 1].to_string();
                let mut opts = Vec::new();
                i += 2;
                while i < tokens.len() {
                    let t = tokens[i];
                    let is_opt = t.starts_with("--") || t == "!";
                    let is_arg = !t.starts_with('-');
                    if !(is_opt || is_arg) {
                        break;
                    }
                    // `!` before the next rule-level option (`! -s`) ends the match.
                    if t == "!" && tokens.get(i + 1).is_some_and(|n| !n.starts_with("--")) {
                        break;
                    }
                    opts.push(t.to_string());
                    i += 1;
                }
                matches.push((name, opts));
            } else {
                i += 1;
            }
        }
        SavedRule { matches }
    }

    /// The `n`-th compat match of the rule, which nft names `name`.
    fn eval_match(&self, name: &str, n: usize, p: &Packet) -> Tri {
        // iptables-nft turns some matches native; the compat ones keep their order.
        let Some((mname, opts)) = self
            .matches
            .iter()
            .filter(|(m, _)| !matches!(m.as_str(), "tcp" | "udp"))
            .nth(n)
            .or_else(|| self.matches.iter().find(|(m, _)| m == name))
        else {
            return Tri::Unknown(format!("iptables match `{name}` not in the saved rule"));
        };
        if mname != name {
            return Tri::Unknown(format!("iptables match `{name}` not in the saved rule"));
        }
        let mut result = Tri::Yes;
        let mut i = 0;
        while i < opts.len() {
            let negate = opts[i] == "!";
            if negate {
                i += 1;
            }
            let opt = opts.get(i).map(String::as_str).unwrap_or("");
            let arg = opts.get(i + 1).map(String::as_str).unwrap_or("");
            let t = match (name, opt) {
                ("conntrack", "--ctstate") | ("state", "--state") => {
                    Some(arg.split(',').any(|s| s.eq_ignore_ascii_case("NEW")))
                }
                // A new connection has no NAT, expectation or reply seen yet.
                ("conntrack", "--ctstatus") => Some(false),
                ("conntrack", "--ctdir") => Some(arg.eq_ignore_ascii_case("ORIGINAL")),
                ("comment", "--comment") => Some(true),
                ("icmp", "--icmp-type") | ("icmp6", "--icmpv6-type") => {
                    Some(p.proto == Proto::Icmp && matches!(arg, "echo-request" | "8" | "128"))
                }
                ("addrtype", "--dst-type") => Some(arg.split(',').any(|t| {
                    t.eq_ignore_ascii_case(match p.daddr_type {
                        AddrType::Local => "LOCAL",
                        AddrType::Unicast => "UNICAST",
                        AddrType::Broadcast => "BROADCAST",
                        AddrType::Multicast => "MULTICAST",
                    })
                })),
                ("pkttype", "--pkt-type") => Some(arg.eq_ignore_ascii_case(match p.daddr_type {
                    AddrType::Broadcast => "broadcast",
                    AddrType::Multicast => "multicast",
                    _ => "unicast",
                })),
                ("multiport", "--dports" | "--destination-ports") => {
                    Some(arg.split(',').any(|r| match r.split_once(':') {
                        Some((lo, hi)) => match (lo.parse::<u16>(), hi.parse::<u16>()) {
                            (Ok(lo), Ok(hi)) => lo <= p.dport && p.dport <= hi,
                            _ => false,
                        },
                        None => r.parse::<u16>() == Ok(p.dport),
                    }))
                }
                // rpfilter passes for the model's packets; `--invert` matches when it fails.
                ("rpfilter", "--invert") => {
                    i += 1;
                    result = Tri::No;
                    continue;
                }
                ("rpfilter", "--loose" | "--validmark" | "--accept-local") => {
                    i += 1;
                    continue;
                }
                _ => None,
            };
            let Some(t) = t else {
                return Tri::Unknown(format!("iptables match `-m {name} {}`", opts.join(" ")));
            };
            if t == negate {
                return Tri::No;
            }
            i += 2;
        }
        result
    }
}

/// A rule's expressions rendered close to nft's own syntax.
pub fn render_rule(expr: &[Value]) -> String {
    expr.iter()
        .filter(|e| e.get("counter").is_none())
        .map(render)
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_match(m: &Value) -> String {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let left = render(m.get("left").unwrap_or(&Value::Null));
    let right = render(m.get("right").unwrap_or(&Value::Null));
    match op {
        "==" | "in" => format!("{left} {right}"),
        other => format!("{left} {other} {right}"),
    }
}

fn render(e: &Value) -> String {
    match e {
        Value::String(s) => {
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            {
                s.clone()
            } else {
                format!("\"{s}\"")
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "exists" } else { "missing" }.into(),
        Value::Null => String::new(),
        Value::Array(items) => format!(
            "{{ {} }}",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => {
            let Some((k, b)) = o.iter().next() else {
                return String::new();
            };
            let s = |key: &str| b.get(key).and_then(Value::as_str).unwrap_or("");
            match k.as_str() {
                "match" => render_match(b),
                "meta" => format!("meta {}", s("key")),
                "ct" => format!("ct {}", s("key")),
                "payload" => format!("{} {}", s("protocol"), s("field")),
                "fib" => format!(
                    "fib {} {}",
                    b.get("flags")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                        .unwrap_or_default()
                        .join(" . "),
                    s("result")
                ),
                "set" => render(b),
                "@" => format!("@{}", b.as_str().unwrap_or("")),
                "prefix" => format!(
                    "{}/{}",
                    s("addr"),
                    b.get("len").and_then(Value::as_u64).unwrap_or(0)
                ),
                "range" => match b.as_array().map(Vec::as_slice) {
                    Some([lo, hi]) => format!("{}-{}", render(lo), render(hi)),
                    _ => "range".into(),
                },
                "concat" => b
                    .as_array()
                    .map(|a| a.iter().map(render).collect::<Vec<_>>().join(" . "))
                    .unwrap_or_default(),
                "jump" | "goto" => format!("{k} {}", s("target")),
                "reject" => match (s("type"), s("expr")) {
                    ("", _) => "reject".into(),
                    ("tcp reset", _) => "reject with tcp reset".into(),
                    (t, x) => format!("reject with {t} {x}"),
                },
                "vmap" => format!(
                    "{} vmap {}",
                    render(b.get("key").unwrap_or(&Value::Null)),
                    render(b.get("data").unwrap_or(&Value::Null))
                ),
                "xt" => format!("xt {} \"{}\"", s("type"), s("name")),
                "ct helper" => format!("ct helper set {}", render(b)),
                "elem" => render(b.get("val").unwrap_or(&Value::Null)),
                other if b.is_null() => other.to_string(),
                other => format!("{other} {}", serde_json::to_string(b).unwrap_or_default()),
            }
        }
    }
}
