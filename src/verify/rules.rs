//! A small model of a netfilter ruleset, just rich enough to follow one packet through firewalld's
//! chains: interface names, layer-4 protocol, destination port and address, conntrack state, and the
//! verdicts accept, drop, reject, jump, goto and return.
//!
//! Both backends are read into this model ([`super::nft`] from `nft -j`, [`super::iptables`] from
//! `iptables-save`), so the checks are written once and do not depend on chain layouts, which differ
//! between firewalld releases: they follow the packet, and only name chains to attribute them to a
//! zone or policy ([`ChainOwner`]).
//!
//! A probe is the first packet of a new connection. Conditions the model does not understand (marks,
//! `fib`, ICMP types, source addresses, rate limits, …) are taken as *not* matching: they belong to
//! rules that apply to some traffic only (rich rules with a source, firewalld's rp-filter), never to
//! the blanket "a guest reaches this service" the checks ask about.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::IpAddr;

/// How deep jumps may nest before the ruleset is considered looping (the kernel allows 16 levels for
/// jumps in nftables; firewalld uses about 4).
const MAX_DEPTH: usize = 64;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// "IPv4" / "IPv6".
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The netfilter hooks the checks follow a packet through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// Before routing (firewalld's rp-filter lives here).
    Prerouting,
    /// Addressed to the host.
    Input,
    /// Routed through the host.
    Forward,
}

/// The first packet of a new connection, as the checks send it through the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its address family.
    pub family: Family,
    /// The interface it arrives on.
    pub iif: Option<String>,
    /// The interface it leaves by (forwarded packets only).
    pub oif: Option<String>,
    /// Layer-4 protocol, spelled as nft does: `tcp`, `udp`, `icmp`, `ipv6-icmp`.
    pub proto: &'static str,
    /// Destination port (TCP, UDP).
    pub dport: Option<u16>,
    /// Destination address, when the check needs a specific one (DHCP's broadcast, DHCPv6's
    /// multicast); `None` = an ordinary address of the host, matched by no address condition.
    pub daddr: Option<IpAddr>,
}

/// One condition of a rule. All conditions of a rule must hold for its verdict to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// Input interface name is (not) one of these; a trailing `*` is a prefix wildcard.
    Iif {
        /// Names or wildcards.
        names: Vec<String>,
        /// `!=`
        negate: bool,
    },
    /// Output interface name, likewise.
    Oif {
        /// Names or wildcards.
        names: Vec<String>,
        /// `!=`
        negate: bool,
    },
    /// Layer-4 protocol is (not) one of these (nft spelling).
    L4proto {
        /// Protocol names.
        protos: Vec<String>,
        /// `!=`
        negate: bool,
    },
    /// `PROTO dport` is (not) in these inclusive ranges; implies the protocol either way.
    Dport {
        /// `tcp`, `udp`, `sctp`, …
        proto: String,
        /// Inclusive ranges.
        ranges: Vec<(u16, u16)>,
        /// `!=`
        negate: bool,
    },
    /// The packet's address family.
    Family(Family),
    /// Destination address is (not) in these networks; implies the family either way.
    Daddr {
        /// The family the match implies (`ip` / `ip6`).
        family: Family,
        /// Networks (address, prefix length).
        nets: Vec<(IpAddr, u8)>,
        /// `!=`
        negate: bool,
    },
    /// Conntrack state is (not) one of these (lower case).
    CtState {
        /// States.
        states: Vec<String>,
        /// `!=`
        negate: bool,
    },
    /// Anything else, described for messages; never matches a probe.
    Unknown(String),
}

/// What a rule does once its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept (in this base chain; later hooks still see the packet).
    Accept,
    /// Drop silently.
    Drop,
    /// Reject, with the rendered kind (`reject with icmpx admin-prohibited`, `REJECT
    /// --reject-with icmp-port-unreachable`).
    Reject(String),
    /// Evaluate the chain, then come back.
    Jump(String),
    /// Evaluate the chain instead of the rest of this one.
    Goto(String),
    /// Back to the calling chain.
    Return,
    /// No verdict (counter, log, `ct helper set`, marks): go on with the next rule.
    Continue,
}

/// Which packet field a verdict map looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKey {
    /// `iifname`
    Iif,
    /// `oifname`
    Oif,
}

/// An nftables verdict map on interface names (`iifname vmap { "virbr0" : goto … }`), the way newer
/// firewalld releases may dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmap {
    /// The looked-up fields (a concatenation when more than one).
    pub keys: Vec<MapKey>,
    /// Key values and their verdicts.
    pub entries: Vec<(Vec<String>, Verdict)>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its conditions.
    pub conds: Vec<Cond>,
    /// Its verdict.
    pub verdict: Verdict,
    /// A verdict map consulted after the conditions hold (its verdict replaces `verdict`).
    pub vmap: Option<Vmap>,
    /// The rule as the backend's own tool would show it, for messages.
    pub text: String,
}

/// A chain: its rules in order (base chains' hooks and policies are in [`BaseChain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// A base chain: where the kernel enters the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// The hook.
    pub hook: Hook,
    /// Priority (lower runs first).
    pub prio: i32,
    /// The chain's name.
    pub name: String,
    /// `true` = policy accept.
    pub policy_accept: bool,
}

/// A ruleset of one table (nftables) or one family's `filter` table (iptables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Base chains (filter type only).
    pub base: Vec<BaseChain>,
}

/// A final verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// Accepted.
    Accept,
    /// Dropped silently.
    Drop,
    /// Rejected (kind as rendered).
    Reject(String),
}

impl Final {
    /// "accepted" / "dropped" / "rejected".
    pub fn participle(&self) -> &'static str {
        match self {
            Final::Accept => "accepted",
            Final::Drop => "dropped",
            Final::Reject(_) => "rejected",
        }
    }
}

/// A rule's position, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The chain.
    pub chain: String,
    /// 1-based index in the chain.
    pub index: usize,
    /// The rule's text.
    pub text: String,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {} (`{}`)", self.chain, self.index, self.text)
    }
}

/// Where a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Final,
    /// The rule that decided it; `None` = a base chain's policy.
    pub by: Option<Position>,
    /// Every chain the probe entered through a jump or goto, in order.
    pub entered: Vec<String>,
}

impl Decision {
    /// "rejected by filter_IN_libvirt_post rule 1 (`reject`)".
    pub fn describe(&self) -> String {
        match &self.by {
            Some(pos) => format!("{} by {pos}", self.verdict.participle()),
            None => format!("{} by the base chains' policy", self.verdict.participle()),
        }
    }

    /// The owner of the chain that decided, if it is a zone's or policy's chain.
    pub fn owner(&self) -> Option<ChainOwner> {
        self.by.as_ref().and_then(|p| ChainOwner::of(&p.chain))
    }
}

/// The zone or policy a firewalld chain belongs to, read from its name. Layouts differ between
/// releases, names do not: `filter_IN_libvirt_allow` (nftables), `IN_libvirt_allow` (iptables),
/// `filter_IN_policy_libvirt-to-host` (nftables policy), `IN_libvirt-to-host` (iptables policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOwner {
    /// Input (`IN_`) or forward (`FWD_`).
    pub hook: Hook,
    /// The zone's or policy's name.
    pub name: String,
    /// Marked as a policy (nftables spells `policy_`; iptables does not, so `false` there).
    pub policy: bool,
    /// The sub-chain (`pre`, `log`, `deny`, `allow`, `post`), `None` for the top chain.
    pub sub: Option<String>,
}

impl ChainOwner {
    /// Reads a chain name; `None` for chains that belong to no zone or policy.
    pub fn of(chain: &str) -> Option<ChainOwner> {
        let rest = chain.strip_prefix("filter_").unwrap_or(chain);
        let (hook, rest) = if let Some(r) = rest.strip_prefix("IN_") {
            (Hook::Input, r)
        } else if let Some(r) = rest.strip_prefix("FWD_") {
            (Hook::Forward, r)
        } else {
            return None;
        };
        let (policy, rest) = match rest.strip_prefix("policy_") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let mut name = rest;
        let mut sub = None;
        for s in ["pre", "log", "deny", "allow", "post"] {
            if let Some(n) = rest.strip_suffix(s).and_then(|n| n.strip_suffix('_')) {
                name = n;
                sub = Some(s.to_string());
                break;
            }
        }
        if name.is_empty() {
            return None;
        }
        Some(ChainOwner {
            hook,
            name: name.to_string(),
            policy,
            sub,
        })
    }
}

/// Why a probe could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A rule jumps to a chain that does not exist.
    #[error("{from} jumps to chain {to}, which does not exist")]
    MissingChain {
        /// The jumping rule.
        from: Position,
        /// The missing chain.
        to: String,
    },
    /// Jumps nest deeper than any sane ruleset.
    #[error("chains nest more than {MAX_DEPTH} levels deep at {0} (a loop?)")]
    TooDeep(String),
    /// No base chain for the hook.
    #[error("no base chain hooks {0:?}")]
    NoBaseChain(Hook),
}

/// How a chain's evaluation ended.
enum Flow {
    Final(Final, Position),
    /// End of chain or `return`: the caller goes on.
    Fallthrough,
}

/// Whether an interface name matches a pattern (trailing `*` = prefix).
fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn net_contains(net: &(IpAddr, u8), addr: &IpAddr) -> bool {
    let (base, len) = net;
    match (base, addr) {
        (IpAddr::V4(b), IpAddr::V4(a)) => {
            let len = u32::from((*len).min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(*b) & mask == u32::from(*a) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(a)) => {
            let len = u32::from((*len).min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(*b) & mask == u128::from(*a) & mask
        }
        _ => false,
    }
}

impl Cond {
    /// Whether the condition holds for the probe.
    pub fn holds(&self, p: &Probe) -> bool {
        match self {
            Cond::Iif { names, negate } => match &p.iif {
                Some(iif) => names.iter().any(|n| iface_matches(n, iif)) != *negate,
                None => false,
            },
            Cond::Oif { names, negate } => match &p.oif {
                Some(oif) => names.iter().any(|n| iface_matches(n, oif)) != *negate,
                None => false,
            },
            Cond::L4proto { protos, negate } => protos.iter().any(|x| x == p.proto) != *negate,
            Cond::Dport {
                proto,
                ranges,
                negate,
            } => match p.dport {
                Some(port) if proto == p.proto => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)) != *negate
                }
                _ => false,
            },
            Cond::Family(f) => *f == p.family,
            Cond::Daddr {
                family,
                nets,
                negate,
            } => match &p.daddr {
                Some(a) if *family == p.family => {
                    nets.iter().any(|n| net_contains(n, a)) != *negate
                }
                _ => false,
            },
            // A probe is the first packet of a new connection.
            Cond::CtState { states, negate } => states.iter().any(|s| s == "new") != *negate,
            Cond::Unknown(_) => false,
        }
    }

    /// Whether this is a positive match of the input interface against `name`.
    fn selects_iif(&self, name: &str) -> bool {
        matches!(self, Cond::Iif { names, negate: false } if names.iter().any(|n| iface_matches(n, name)))
    }
}

impl Rule {
    /// A rule from conditions and a verdict, with its display text.
    pub fn new(conds: Vec<Cond>, verdict: Verdict, text: String) -> Rule {
        Rule {
            conds,
            verdict,
            vmap: None,
            text,
        }
    }

    /// The verdict for the probe: `None` when a condition fails or a verdict map has no entry.
    fn verdict_for(&self, p: &Probe) -> Option<&Verdict> {
        if !self.conds.iter().all(|c| c.holds(p)) {
            return None;
        }
        let Some(vmap) = &self.vmap else {
            return Some(&self.verdict);
        };
        let values: Option<Vec<&String>> = vmap
            .keys
            .iter()
            .map(|k| match k {
                MapKey::Iif => p.iif.as_ref(),
                MapKey::Oif => p.oif.as_ref(),
            })
            .collect();
        let values = values?;
        vmap.entries
            .iter()
            .find(|(keys, _)| {
                keys.len() == values.len()
                    && keys.iter().zip(&values).all(|(k, v)| iface_matches(k, v))
            })
            .map(|(_, v)| v)
    }

    /// The chains this rule can jump or go to (also through a verdict map).
    fn targets(&self) -> Vec<&str> {
        let map = self
            .vmap
            .iter()
            .flat_map(|m| m.entries.iter().map(|(_, v)| v));
        std::iter::once(&self.verdict)
            .chain(map)
            .filter_map(|v| match v {
                Verdict::Jump(t) | Verdict::Goto(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Ruleset {
    /// Follows a probe through every base chain of `hook` (after the filter-type prerouting chains,
    /// which see every packet first). An accept ends one base chain only; a drop or reject ends it all.
    pub fn evaluate(&self, hook: Hook, probe: &Probe) -> Result<Decision, EvalError> {
        let mut chains: Vec<&BaseChain> = self
            .base
            .iter()
            .filter(|b| b.hook == Hook::Prerouting || b.hook == hook)
            .collect();
        if !chains.iter().any(|b| b.hook == hook) {
            return Err(EvalError::NoBaseChain(hook));
        }
        chains.sort_by_key(|b| (b.hook != Hook::Prerouting, b.prio));
        let mut entered = Vec::new();
        let mut last = Decision {
            verdict: Final::Accept,
            by: None,
            entered: Vec::new(),
        };
        for base in chains {
            let (verdict, by) = match self.run(&base.name, probe, 0, &mut entered)? {
                Flow::Final(v, pos) => (v, Some(pos)),
                Flow::Fallthrough if base.policy_accept => (Final::Accept, None),
                Flow::Fallthrough => (Final::Drop, None),
            };
            let end = verdict != Final::Accept;
            if base.hook == hook || end {
                last = Decision {
                    verdict,
                    by,
                    entered: Vec::new(),
                };
            }
            if end {
                break;
            }
        }
        last.entered = entered;
        Ok(last)
    }

    fn run(
        &self,
        name: &str,
        probe: &Probe,
        depth: usize,
        entered: &mut Vec<String>,
    ) -> Result<Flow, EvalError> {
        if depth > MAX_DEPTH {
            return Err(EvalError::TooDeep(name.to_string()));
        }
        // A base chain is always present (it came from the same listing); an absent jump target is
        // caught below where the jumping rule is known.
        let Some(chain) = self.chains.get(name) else {
            return Ok(Flow::Fallthrough);
        };
        for (i, rule) in chain.rules.iter().enumerate() {
            let Some(verdict) = rule.verdict_for(probe) else {
                continue;
            };
            let pos = || Position {
                chain: name.to_string(),
                index: i + 1,
                text: rule.text.clone(),
            };
            match verdict {
                Verdict::Accept => return Ok(Flow::Final(Final::Accept, pos())),
                Verdict::Drop => return Ok(Flow::Final(Final::Drop, pos())),
                Verdict::Reject(kind) => {
                    return Ok(Flow::Final(Final::Reject(kind.clone()), pos()))
                }
                Verdict::Return => return Ok(Flow::Fallthrough),
                Verdict::Continue => {}
                Verdict::Jump(target) | Verdict::Goto(target) => {
                    if !self.chains.contains_key(target) {
                        return Err(EvalError::MissingChain {
                            from: pos(),
                            to: target.clone(),
                        });
                    }
                    entered.push(target.clone());
                    let flow = self.run(target, probe, depth + 1, entered)?;
                    match (flow, verdict) {
                        (Flow::Final(v, p), _) => return Ok(Flow::Final(v, p)),
                        // After a goto, the end of the target chain returns to our caller.
                        (Flow::Fallthrough, Verdict::Goto(_)) => return Ok(Flow::Fallthrough),
                        (Flow::Fallthrough, _) => {}
                    }
                }
            }
        }
        Ok(Flow::Fallthrough)
    }

    /// Chains reachable from the base chains of `hook`, in breadth-first order.
    pub fn reachable(&self, hook: Hook) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut queue: VecDeque<&str> = self
            .base
            .iter()
            .filter(|b| b.hook == hook)
            .map(|b| b.name.as_str())
            .collect();
        while let Some(name) = queue.pop_front() {
            if !seen.insert(name) {
                continue;
            }
            let Some(chain) = self.chains.get(name) else {
                continue;
            };
            order.push(name);
            for rule in &chain.rules {
                queue.extend(rule.targets());
            }
        }
        order
    }

    /// The rule that dispatches traffic arriving on `iface` to the top chain of `zone` for `hook`: a
    /// rule reachable from the hook whose only conditions are input-interface matches selecting
    /// `iface`, and which jumps or goes (directly or through a verdict map) to that chain.
    pub fn dispatch(&self, hook: Hook, iface: &str, zone: &str) -> Option<Position> {
        let probe = Probe {
            family: Family::V4,
            iif: Some(iface.to_string()),
            oif: None,
            proto: "tcp",
            dport: None,
            daddr: None,
        };
        let is_zone_top = |target: &str| {
            ChainOwner::of(target)
                .is_some_and(|o| o.hook == hook && o.name == zone && !o.policy && o.sub.is_none())
        };
        for name in self.reachable(hook) {
            let Some(chain) = self.chains.get(name) else {
                continue;
            };
            for (i, rule) in chain.rules.iter().enumerate() {
                let only_iif = rule.conds.iter().all(|c| matches!(c, Cond::Iif { .. }));
                let selects = rule.conds.iter().any(|c| c.selects_iif(iface));
                let by_map = rule.vmap.as_ref().is_some_and(|m| m.keys == [MapKey::Iif]);
                if !only_iif || !(selects || by_map) {
                    continue;
                }
                let target = match rule.verdict_for(&probe) {
                    Some(Verdict::Jump(t) | Verdict::Goto(t)) => t,
                    _ => continue,
                };
                if is_zone_top(target) {
                    return Some(Position {
                        chain: name.to_string(),
                        index: i + 1,
                        text: rule.text.clone(),
                    });
                }
            }
        }
        None
    }

    /// The lowest port from 1 up that no rule names for `proto`: a port no zone or policy lists.
    pub fn unused_port(&self, proto: &str) -> u16 {
        let mut used: Vec<(u16, u16)> = Vec::new();
        for chain in self.chains.values() {
            for rule in &chain.rules {
                for c in &rule.conds {
                    if let Cond::Dport {
                        proto: p, ranges, ..
                    } = c
                    {
                        if p == proto {
                            used.extend(ranges);
                        }
                    }
                }
            }
        }
        (1..=u16::MAX)
            .find(|port| !used.iter().any(|(lo, hi)| (*lo..=*hi).contains(port)))
            .unwrap_or(u16::MAX)
    }
}

/// Protocol names as nft spells them, from the aliases and numbers both tools accept.
pub fn normalize_proto(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "1" => "icmp".into(),
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "58" | "icmpv6" | "ipv6-icmp" => "ipv6-icmp".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iif(n: &str) -> Cond {
        Cond::Iif {
            names: vec![n.into()],
            negate: false,
        }
    }

    fn probe(iif: &str, proto: &'static str, dport: Option<u16>) -> Probe {
        Probe {
            family: Family::V4,
            iif: Some(iif.into()),
            oif: None,
            proto,
            dport,
            daddr: None,
        }
    }

    /// filter_INPUT → goto by interface → zone chain → allow/post sub-chains.
    fn sample() -> Ruleset {
        let mut rs = Ruleset::default();
        rs.base.push(BaseChain {
            hook: Hook::Input,
            prio: 10,
            name: "INPUT".into(),
            policy_accept: true,
        });
        let r = |conds, verdict, text: &str| Rule::new(conds, verdict, text.into());
        rs.chains.insert(
            "INPUT".into(),
            Chain {
                rules: vec![
                    r(vec![], Verdict::Jump("ZONES".into()), "jump ZONES"),
                    r(vec![], Verdict::Reject("reject".into()), "reject"),
                ],
            },
        );
        rs.chains.insert(
            "ZONES".into(),
            Chain {
                rules: vec![r(
                    vec![iif("virbr*")],
                    Verdict::Goto("IN_libvirt".into()),
                    "goto",
                )],
            },
        );
        rs.chains.insert(
            "IN_libvirt".into(),
            Chain {
                rules: vec![
                    r(
                        vec![],
                        Verdict::Jump("IN_libvirt_allow".into()),
                        "jump allow",
                    ),
                    r(vec![], Verdict::Return, "return"),
                ],
            },
        );
        rs.chains.insert(
            "IN_libvirt_allow".into(),
            Chain {
                rules: vec![r(
                    vec![Cond::Dport {
                        proto: "tcp".into(),
                        ranges: vec![(20, 22)],
                        negate: false,
                    }],
                    Verdict::Accept,
                    "tcp dport 20-22 accept",
                )],
            },
        );
        rs
    }

    #[test]
    fn follows_jumps_gotos_and_returns() {
        let rs = sample();
        let d = rs
            .evaluate(Hook::Input, &probe("virbr0", "tcp", Some(22)))
            .unwrap();
        assert_eq!(d.verdict, Final::Accept);
        assert_eq!(d.by.unwrap().chain, "IN_libvirt_allow");
        assert_eq!(d.entered, ["ZONES", "IN_libvirt", "IN_libvirt_allow"]);
        // A return in the goto target ends ZONES too, so INPUT's reject decides.
        let d = rs
            .evaluate(Hook::Input, &probe("virbr0", "tcp", Some(23)))
            .unwrap();
        assert_eq!(d.verdict, Final::Reject("reject".into()));
        assert_eq!(d.by.unwrap().index, 2);
        let d = rs
            .evaluate(Hook::Input, &probe("eth0", "udp", Some(22)))
            .unwrap();
        assert_eq!(d.entered, ["ZONES"]);
    }

    #[test]
    fn finds_dispatch_and_unused_ports() {
        let rs = sample();
        let pos = rs.dispatch(Hook::Input, "virbr3", "libvirt").unwrap();
        assert_eq!((pos.chain.as_str(), pos.index), ("ZONES", 1));
        assert!(rs.dispatch(Hook::Input, "eth0", "libvirt").is_none());
        assert!(rs.dispatch(Hook::Forward, "virbr3", "libvirt").is_none());
        assert_eq!(rs.unused_port("tcp"), 1);
        assert_eq!(rs.unused_port("udp"), 1);
    }

    #[test]
    fn missing_chains_and_loops_are_errors() {
        let mut rs = sample();
        rs.chains.remove("IN_libvirt_allow");
        let e = rs.evaluate(Hook::Input, &probe("virbr0", "tcp", Some(22)));
        assert!(matches!(e, Err(EvalError::MissingChain { .. })), "{e:?}");
        let mut rs = sample();
        rs.chains.get_mut("IN_libvirt").unwrap().rules[0].verdict = Verdict::Jump("ZONES".into());
        let e = rs.evaluate(Hook::Input, &probe("virbr0", "tcp", Some(22)));
        assert!(matches!(e, Err(EvalError::TooDeep(_))), "{e:?}");
    }

    #[test]
    fn reads_chain_owners() {
        let o = ChainOwner::of("filter_IN_libvirt_allow").unwrap();
        assert_eq!(
            (o.hook, o.name.as_str(), o.policy, o.sub.as_deref()),
            (Hook::Input, "libvirt", false, Some("allow"))
        );
        let o = ChainOwner::of("filter_IN_policy_libvirt-to-host").unwrap();
        assert_eq!(
            (o.name.as_str(), o.policy, o.sub),
            ("libvirt-to-host", true, None)
        );
        let o = ChainOwner::of("FWD_libvirt-routed-out_post").unwrap();
        assert_eq!(
            (o.hook, o.name.as_str()),
            (Hook::Forward, "libvirt-routed-out")
        );
        assert_eq!(ChainOwner::of("filter_INPUT_ZONES"), None);
        assert_eq!(ChainOwner::of("INPUT"), None);
    }

    #[test]
    fn addresses_and_states() {
        let v6: IpAddr = "ff02::1:2".parse().unwrap();
        let c = Cond::Daddr {
            family: Family::V6,
            nets: vec![("ff02::".parse().unwrap(), 16)],
            negate: false,
        };
        let mut p = probe("virbr0", "udp", Some(547));
        assert!(!c.holds(&p), "no address: no match");
        p.family = Family::V6;
        p.daddr = Some(v6);
        assert!(c.holds(&p));
        let est = Cond::CtState {
            states: vec!["established".into(), "related".into()],
            negate: false,
        };
        assert!(!est.holds(&p));
        let new = Cond::CtState {
            states: vec!["new".into(), "untracked".into()],
            negate: false,
        };
        assert!(new.holds(&p));
    }
}
