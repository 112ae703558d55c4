//! The `filter` table of `iptables-save` / `ip6tables-save` output into the [`Ruleset`] model.
//! firewalld's iptables backend keeps its chains there (the nftables chain names without `filter_`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::rules::{normalize_proto, BaseChain, Chain, Cond, Family, Hook, Rule, Ruleset, Verdict};

/// Targets that do not end a packet's way through the chain.
const NON_TERMINATING: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "CT",
    "MARK",
    "CONNMARK",
    "TRACE",
    "AUDIT",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TCPMSS",
    "CHECKSUM",
    "CONNSECMARK",
    "SECMARK",
    "IDLETIMER",
    "LED",
];

/// Splits a rule line into words, honouring iptables-save's double quotes (`--comment "a b"`).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `22`, `1024:65535`, `:1023`, `53,67:68` (multiport).
fn port_ranges(text: &str) -> Option<Vec<(u16, u16)>> {
    text.split(',')
        .map(|part| match part.split_once(':') {
            Some((lo, hi)) => {
                let lo = if lo.is_empty() { 0 } else { lo.parse().ok()? };
                let hi = if hi.is_empty() {
                    u16::MAX
                } else {
                    hi.parse().ok()?
                };
                Some((lo, hi))
            }
            None => part.parse().ok().map(|p| (p, p)),
        })
        .collect()
}

/// `192.0.2.0/24`, `2001:db8::1/128` or a bare address (iptables-save writes prefix lengths, never
/// dotted masks).
fn net(text: &str) -> Option<(IpAddr, u8)> {
    match text.split_once('/') {
        Some((a, len)) => Some((a.parse().ok()?, len.parse().ok()?)),
        None => {
            let a: IpAddr = text.parse().ok()?;
            Some((a, if a.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// Reads the `filter` table of `iptables-save` (or `ip6tables-save`, `family` telling which) output.
/// Other tables in the output are skipped.
pub fn parse(text: &str, family: Family) -> Result<Ruleset, String> {
    let mut rs = Ruleset::default();
    let mut table: Option<String> = None;
    let mut user_chains = BTreeSet::new();
    let mut rule_lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            table = Some(t.to_string());
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        if table.as_deref() != Some("filter") {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts
                .next()
                .ok_or_else(|| format!("line {}: chain declaration without a name", n + 1))?;
            let policy = parts.next().unwrap_or("-");
            rs.chains
                .insert(name.to_string(), Chain { rules: Vec::new() });
            let hook = match name {
                "INPUT" => Some(Hook::Input),
                "FORWARD" => Some(Hook::Forward),
                _ => None,
            };
            match hook {
                Some(hook) => rs.base.push(BaseChain {
                    hook,
                    prio: 0,
                    name: name.to_string(),
                    policy_accept: policy != "DROP",
                }),
                None if policy == "-" => {
                    user_chains.insert(name.to_string());
                }
                None => {}
            }
            continue;
        }
        if line.starts_with("-A ") {
            rule_lines.push((n + 1, line));
            continue;
        }
        return Err(format!("line {}: unexpected {line:?}", n + 1));
    }
    // Rules come after all declarations in iptables-save's output, but a chain name is only known
    // to be a chain once every declaration has been read.
    for (n, line) in rule_lines {
        let w = words(line);
        let chain = w
            .get(1)
            .ok_or_else(|| format!("line {n}: -A without a chain"))?
            .clone();
        let rule = parse_rule(&w[2..], &user_chains, family);
        rs.chains
            .entry(chain)
            .or_insert_with(|| Chain { rules: Vec::new() })
            .rules
            .push(rule);
    }
    Ok(rs)
}

/// One rule's words after `-A CHAIN`.
fn parse_rule(w: &[String], user_chains: &BTreeSet<String>, family: Family) -> Rule {
    let text = w
        .iter()
        .map(|s| {
            if s.is_empty() || s.contains(char::is_whitespace) {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut conds = Vec::new();
    let mut verdict = Verdict::Continue;
    let mut proto = String::new();
    let mut negate = false;
    let mut i = 0;
    let arg = |i: usize| w.get(i + 1).cloned().unwrap_or_default();
    while i < w.len() {
        let opt = w[i].as_str();
        match opt {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                // iptables' wildcard is a trailing `+`; the model uses nft's `*`.
                let name = arg(i);
                let name = match name.strip_suffix('+') {
                    Some(p) => format!("{p}*"),
                    None => name,
                };
                conds.push(if matches!(opt, "-i" | "--in-interface") {
                    Cond::Iif {
                        names: vec![name],
                        negate,
                    }
                } else {
                    Cond::Oif {
                        names: vec![name],
                        negate,
                    }
                });
                i += 2;
            }
            "-p" | "--protocol" => {
                proto = normalize_proto(&arg(i));
                if proto != "all" {
                    conds.push(Cond::L4proto {
                        protos: vec![proto.clone()],
                        negate,
                    });
                }
                i += 2;
            }
            // Loading a match module restricts nothing by itself; its options follow.
            "-m" | "--match" => i += 2,
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                match port_ranges(&arg(i)) {
                    Some(ranges) => conds.push(Cond::Dport {
                        proto: proto.clone(),
                        ranges,
                        negate,
                    }),
                    None => conds.push(Cond::Unknown(format!("{opt} {}", arg(i)))),
                }
                i += 2;
            }
            "--ctstate" | "--state" => {
                let states = arg(i).split(',').map(|s| s.to_ascii_lowercase()).collect();
                conds.push(Cond::CtState { states, negate });
                i += 2;
            }
            "-d" | "--destination" => {
                match net(&arg(i)) {
                    Some(n) => conds.push(Cond::Daddr {
                        family,
                        nets: vec![n],
                        negate,
                    }),
                    None => conds.push(Cond::Unknown(format!("-d {}", arg(i)))),
                }
                i += 2;
            }
            // A comment restricts nothing.
            "--comment" => i += 2,
            "-j" | "--jump" | "-g" | "--goto" => {
                let target = arg(i);
                let options = &w[(i + 2).min(w.len())..];
                verdict = match target.as_str() {
                    "ACCEPT" => Verdict::Accept,
                    "DROP" => Verdict::Drop,
                    "RETURN" => Verdict::Return,
                    "REJECT" => {
                        let with = options
                            .iter()
                            .position(|o| o == "--reject-with")
                            .and_then(|p| options.get(p + 1));
                        Verdict::Reject(match with {
                            Some(kind) => format!("REJECT --reject-with {kind}"),
                            None => "REJECT".into(),
                        })
                    }
                    t if user_chains.contains(t) => {
                        if opt.starts_with("-g") || opt == "--goto" {
                            Verdict::Goto(t.to_string())
                        } else {
                            Verdict::Jump(t.to_string())
                        }
                    }
                    t if NON_TERMINATING.contains(&t) => Verdict::Continue,
                    // Other extension targets (NFQUEUE, TPROXY, …) end the packet's way somewhere
                    // the model cannot follow: such a rule does not count.
                    t => {
                        conds.push(Cond::Unknown(format!("-j {t}")));
                        Verdict::Continue
                    }
                };
                break;
            }
            _ => {
                // A match option the model does not follow (`-s`, `--icmp-type`, `--match-set`, …):
                // it and its values make the rule one that applies to some packets only.
                let mut j = i + 1;
                while j < w.len() && !w[j].starts_with('-') && w[j] != "!" {
                    j += 1;
                }
                conds.push(Cond::Unknown(w[i..j].join(" ")));
                i = j;
            }
        }
        negate = false;
    }
    Rule::new(conds, verdict, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rules::{Final, Probe};

    const SAMPLE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables)
*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:INPUT_ZONES - [0:0]
:IN_libvirt - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT
-A INPUT -j INPUT_ZONES
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A INPUT_ZONES -i virbr+ -g IN_libvirt
-A IN_libvirt -s 192.0.2.9/32 -p tcp -m tcp --dport 8080 -j ACCEPT
-A IN_libvirt -p udp -m multiport --dports 53,67:68 -m comment --comment "a b" -j ACCEPT
-A IN_libvirt -p udp -m udp --dport 69 -j CT --helper tftp
-A IN_libvirt -d 255.255.255.255/32 -p udp -j ACCEPT
-A IN_libvirt -j REJECT --reject-with icmp-port-unreachable
COMMIT
"#;

    fn probe(proto: &'static str, port: u16) -> Probe {
        Probe {
            family: Family::V4,
            iif: Some("virbr1".into()),
            oif: None,
            proto,
            dport: Some(port),
            daddr: None,
        }
    }

    #[test]
    fn reads_the_filter_table() {
        let rs = parse(SAMPLE, Family::V4).unwrap();
        assert_eq!(rs.base.len(), 2);
        assert!(!rs.base[1].policy_accept, "FORWARD DROP");
        assert!(!rs.chains.contains_key("PREROUTING"), "raw is skipped");
        let r = &rs.chains["IN_libvirt"].rules[1];
        assert_eq!(
            r.text,
            "-p udp -m multiport --dports 53,67:68 -m comment --comment \"a b\" -j ACCEPT"
        );
        let d = rs.evaluate(Hook::Input, &probe("udp", 68)).unwrap();
        assert_eq!(d.verdict, Final::Accept);
        assert_eq!(d.by.as_ref().unwrap().index, 2);
        // The source-restricted rule does not count for every guest.
        let d = rs.evaluate(Hook::Input, &probe("tcp", 8080)).unwrap();
        assert_eq!(
            d.verdict,
            Final::Reject("REJECT --reject-with icmp-port-unreachable".into())
        );
        // CT --helper goes on to the next rule.
        let d = rs.evaluate(Hook::Input, &probe("udp", 69)).unwrap();
        assert_eq!(d.by.unwrap().index, 5);
        let mut bcast = probe("udp", 67);
        bcast.daddr = Some("255.255.255.255".parse().unwrap());
        assert_eq!(
            rs.evaluate(Hook::Input, &bcast).unwrap().verdict,
            Final::Accept
        );
        let pos = rs.dispatch(Hook::Input, "virbr1", "libvirt").unwrap();
        assert_eq!(pos.text, "-i virbr+ -g IN_libvirt");
        assert_eq!(rs.unused_port("udp"), 1);
        assert_eq!(rs.unused_port("tcp"), 1);
    }

    #[test]
    fn splits_quoted_words() {
        assert_eq!(
            words(r#"-A X -m comment --comment "say \"hi\"" -j ACCEPT"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "say \"hi\"",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(words(r#"--comment """#), ["--comment", ""]);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse("*filter\nnonsense\nCOMMIT\n", Family::V4).is_err());
    }
}
