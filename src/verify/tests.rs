//! The evaluator and the checks on rulesets captured from every firewalld release of the lab, both
//! backends (`cargo test --test tests packets::capture_rulesets -- --ignored` writes them): bridge `vzbr0`
//! in zone `libvirt`, then in `libvirt-routed`, virtzone's zones and policies installed.

use std::net::IpAddr;

use super::check::{check, ends, probe, unused_port, BridgeFacts, HostFacts};
use super::eval::{evaluate, AddrType, Packet, Proto, Ruleset, Verdict};

macro_rules! capture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../tests/data/eval/", $name, ".json")),
        )
    };
}

/// (name, nft JSON) of every capture.
const CAPTURES: &[(&str, &str)] = &[
    capture!("0.9.3-nftables-libvirt"),
    capture!("0.9.3-nftables-libvirt-routed"),
    capture!("0.9.3-iptables-libvirt"),
    capture!("0.9.3-iptables-libvirt-routed"),
    capture!("1.3.3-nftables-libvirt"),
    capture!("1.3.3-nftables-libvirt-routed"),
    capture!("1.3.3-iptables-libvirt"),
    capture!("1.3.3-iptables-libvirt-routed"),
    capture!("2.3.1-nftables-libvirt"),
    capture!("2.3.1-nftables-libvirt-routed"),
    capture!("2.3.1-iptables-libvirt"),
    capture!("2.3.1-iptables-libvirt-routed"),
    capture!("2.5.2-nftables-libvirt"),
    capture!("2.5.2-nftables-libvirt-routed"),
    capture!("2.5.2-iptables-libvirt"),
    capture!("2.5.2-iptables-libvirt-routed"),
];

fn saved(name: &str, tool: &str) -> Option<String> {
    let path = format!(
        "{}/tests/data/eval/{name}.{tool}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).ok()
}

fn load(name: &str, json: &str) -> Ruleset {
    let mut rs = Ruleset::from_json(json).unwrap();
    if let Some(t) = saved(name, "iptables-save") {
        rs.attach_saved("ip", &t);
    }
    if let Some(t) = saved(name, "ip6tables-save") {
        rs.attach_saved("ip6", &t);
    }
    rs
}

fn zone_of(name: &str) -> &'static str {
    if name.ends_with("routed") {
        "libvirt-routed"
    } else {
        "libvirt"
    }
}

fn bridge(zone: &str) -> BridgeFacts {
    BridgeFacts {
        name: "vzbr0".into(),
        zone: Some(zone.into()),
        recorded: None,
        libvirt: false,
        addrs: Vec::new(),
    }
}

#[test]
fn healthy_captures_verify_without_problems_or_unknowns() {
    for (name, json) in CAPTURES {
        let rs = load(name, json);
        let r = check(&rs, &HostFacts::default(), &[bridge(zone_of(name))]);
        assert!(r.problems.is_empty(), "{name}: {:#?}", r.problems);
        assert!(r.unknown.is_empty(), "{name}: {:#?}", r.unknown);
        assert!(
            r.confirmed.iter().any(
                |c| c.contains("guests reach on the host: dhcp (udp/67, IPv4)")
                    && c.contains("dns (udp/53, IPv6)")
            ),
            "{name}: {:#?}",
            r.confirmed
        );
    }
}

/// Expected verdicts, one row per probe, on every capture.
#[test]
fn probe_table() {
    let e = ends(&[]);
    let unused = |rs: &Ruleset| unused_port(rs);
    type Row = (
        &'static str,
        fn(&Ruleset, &super::check::Ends, u16) -> Packet,
        Verdict,
    );
    let rows: &[Row] = &[
        (
            "ssh v4",
            |_, e, _| probe::to_host("vzbr0", e, Proto::Tcp, 22),
            Verdict::Accept,
        ),
        (
            "dns udp",
            |_, e, _| probe::to_host("vzbr0", e, Proto::Udp, 53),
            Verdict::Accept,
        ),
        (
            "ping",
            |_, e, _| probe::to_host("vzbr0", e, Proto::Icmp, 0),
            Verdict::Accept,
        ),
        (
            "dhcp",
            |_, _, _| probe::dhcp("vzbr0", false),
            Verdict::Accept,
        ),
        (
            "unlisted tcp",
            |_, e, u| probe::to_host("vzbr0", e, Proto::Tcp, u),
            Verdict::Reject,
        ),
        (
            "unlisted udp",
            |_, e, u| probe::to_host("vzbr0", e, Proto::Udp, u),
            Verdict::Reject,
        ),
        (
            "forward out",
            |_, e, _| probe::forward("vzbr0", "eth9", e, e.upstream, Proto::Tcp, 80),
            Verdict::Accept,
        ),
        (
            "bridged",
            |_, e, _| probe::bridged("vzbr0", e, 80, false),
            Verdict::Accept,
        ),
    ];
    for (name, json) in CAPTURES {
        let rs = load(name, json);
        let u = unused(&rs);
        for fam in [&e[0], &e[1]] {
            for (what, make, want) in rows {
                let p = make(&rs, fam, u);
                if *what == "dhcp" && fam.host.is_ipv6() {
                    continue;
                }
                let t = evaluate(&rs, &p);
                assert_eq!(
                    &t.verdict,
                    want,
                    "{name} {what} {p}: {}\n{:#?}",
                    t.describe(),
                    t.steps
                );
                // Bridged packets cross only bridge tables: there may be none at all.
                assert!(t.by.is_some() || t.steps.is_empty(), "{name} {what}");
            }
        }
        // With br_netfilter the IP hooks see guest-to-guest traffic too; the zones let it through.
        for fam in [&e[0], &e[1]] {
            let t = evaluate(&rs, &probe::bridged("vzbr0", fam, 80, true));
            assert_eq!(
                t.verdict,
                Verdict::Accept,
                "{name} br_netfilter: {}",
                t.describe()
            );
            assert!(t.steps.iter().any(|s| s.hook == "forward"), "{name}");
        }
        // In by the uplink: a routed network accepts, a NAT network's zone (from 1.0) rejects.
        let t = evaluate(
            &rs,
            &probe::inbound("vzbr0", "eth9", e[0].upstream, e[0].guest, Proto::Tcp, 80),
        );
        let want = if zone_of(name) == "libvirt-routed" || name.starts_with("0.9.3") {
            Verdict::Accept
        } else {
            Verdict::Reject
        };
        assert_eq!(t.verdict, want, "{name} inbound: {}", t.describe());
    }
}

/// The deciding rule is named with table, chain, handle and text.
#[test]
fn deciding_rule_is_named() {
    let (name, json) = CAPTURES[8]; // 2.3.1 nftables, zone libvirt
    let rs = load(name, json);
    let e = ends(&[]);
    let t = evaluate(
        &rs,
        &probe::to_host("vzbr0", &e[0], Proto::Tcp, unused_port(&rs)),
    );
    let by = t.by.unwrap();
    assert_eq!(
        (by.family.as_str(), by.table.as_str()),
        ("inet", "firewalld")
    );
    assert_eq!(by.chain, "filter_IN_libvirt_post");
    assert!(by.handle.is_some());
    assert_eq!(by.text, "reject with icmpx port-unreachable");
    // iptables: the saved line is the text.
    let (name, json) = CAPTURES[10];
    let rs = load(name, json);
    let t = evaluate(
        &rs,
        &probe::to_host("vzbr0", &e[0], Proto::Tcp, unused_port(&rs)),
    );
    assert_eq!(t.verdict, Verdict::Reject);
    assert_eq!(
        t.by.unwrap().text,
        "-A IN_libvirt_post -j REJECT --reject-with icmp-port-unreachable"
    );
}

/// A minimal ruleset for hand-made cases.
fn rs_of(rules: &str) -> Ruleset {
    Ruleset::from_json(&format!(
        r#"{{"nftables":[{{"table":{{"family":"inet","name":"t","handle":1}}}},
        {{"chain":{{"family":"inet","table":"t","name":"in","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}}}},
        {{"chain":{{"family":"inet","table":"t","name":"sub","handle":2}}}},
        {rules}]}}"#
    ))
    .unwrap()
}

fn rule(chain: &str, handle: u64, expr: &str) -> String {
    format!(
        r#"{{"rule":{{"family":"inet","table":"t","chain":"{chain}","handle":{handle},"expr":{expr}}}}}"#
    )
}

fn ssh() -> Packet {
    probe::to_host("br0", &ends(&[])[0], Proto::Tcp, 22)
}

#[test]
fn unknown_expression_is_unknown_never_a_guess() {
    let rs = rs_of(&rule(
        "in",
        5,
        r#"[{"match":{"left":{"meta":{"key":"skuid"}},"op":"==","right":0}},{"drop":null}]"#,
    ));
    let t = evaluate(&rs, &ssh());
    assert!(
        matches!(t.verdict, Verdict::Unknown(ref w) if w.contains("meta skuid")),
        "{t:?}"
    );
    // The same expression in a rule that decides nothing does not matter.
    let rs = rs_of(&rule(
        "in",
        5,
        r#"[{"match":{"left":{"meta":{"key":"skuid"}},"op":"==","right":0}},{"counter":null}]"#,
    ));
    assert_eq!(evaluate(&rs, &ssh()).verdict, Verdict::Accept);
    // A flowtable offload changes nothing for a new connection.
    let rs = rs_of(&rule(
        "in",
        5,
        r#"[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":{"set":["tcp","udp"]}}},{"flow":{"op":"add","flowtable":"@fastpath"}}]"#,
    ));
    assert_eq!(evaluate(&rs, &ssh()).verdict, Verdict::Accept);
    // A definite non-match before it decides: the rule cannot apply.
    let rs = rs_of(&rule(
        "in",
        5,
        r#"[{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"other"}},{"match":{"left":{"meta":{"key":"skuid"}},"op":"==","right":0}},{"drop":null}]"#,
    ));
    assert_eq!(evaluate(&rs, &ssh()).verdict, Verdict::Accept);
}

#[test]
fn vmap_jump_return_goto_sets_and_prefixes() {
    let rules = [
        rule(
            "in",
            1,
            r#"[{"vmap":{"key":{"meta":{"key":"iifname"}},"data":{"set":[["br*",{"jump":{"target":"sub"}}]]}}}]"#,
        ),
        rule("in", 2, r#"[{"reject":null}]"#),
        rule(
            "sub",
            3,
            r#"[{"match":{"left":{"payload":{"protocol":"ip","field":"saddr"}},"op":"==","right":{"prefix":{"addr":"192.0.2.0","len":24}}}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"op":"==","right":{"set":[22,{"range":[8000,8100]}]}}},{"accept":null}]"#,
        ),
        rule("sub", 4, r#"[{"return":null}]"#),
    ];
    let rs = rs_of(&rules.join(","));
    let t = evaluate(&rs, &ssh());
    assert_eq!(t.verdict, Verdict::Accept, "{t:?}");
    assert_eq!(t.by.as_ref().unwrap().handle, Some(3));
    assert_eq!(t.steps[0].via, ["sub"]);
    let mut p = ssh();
    p.dport = 23;
    let t = evaluate(&rs, &p);
    assert_eq!(t.verdict, Verdict::Reject);
    assert_eq!(t.by.unwrap().handle, Some(2));
    p.dport = 8080;
    assert_eq!(evaluate(&rs, &p).verdict, Verdict::Accept);
    p.iif = "eth0".into();
    assert_eq!(evaluate(&rs, &p).verdict, Verdict::Reject);
}

#[test]
fn every_base_chain_must_accept_in_priority_order() {
    let json = r#"{"nftables":[
      {"table":{"family":"ip","name":"foreign","handle":1}},
      {"chain":{"family":"ip","table":"foreign","name":"fwd","handle":1,"type":"filter","hook":"forward","prio":5,"policy":"drop"}},
      {"table":{"family":"inet","name":"fw","handle":2}},
      {"chain":{"family":"inet","table":"fw","name":"fwd","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"accept"}},
      {"rule":{"family":"inet","table":"fw","chain":"fwd","handle":7,"expr":[{"accept":null}]}}
    ]}"#;
    let rs = Ruleset::from_json(json).unwrap();
    let e = ends(&[]);
    let t = evaluate(
        &rs,
        &probe::forward("br0", "eth0", &e[0], e[0].upstream, Proto::Tcp, 80),
    );
    assert_eq!(t.verdict, Verdict::Drop);
    assert_eq!(t.steps.len(), 2);
    assert_eq!(t.steps[0].table, "fw");
    assert_eq!(t.by.unwrap().handle, None); // the policy
                                            // IPv6 packets do not cross an ip table.
    let t = evaluate(
        &rs,
        &probe::forward("br0", "eth0", &e[1], e[1].upstream, Proto::Tcp, 80),
    );
    assert_eq!(t.verdict, Verdict::Accept);
}

#[test]
fn faults_on_captured_rulesets_are_problems() {
    for (name, json) in CAPTURES {
        let zone = zone_of(name);
        // The bridge in another zone than virtzone keeps it in.
        let rs = load(name, json);
        let mut b = bridge("public");
        b.recorded = Some(zone.into());
        let r = check(&rs, &HostFacts::default(), &[b]);
        assert!(!r.problems.is_empty(), "{name}: wrong zone");
        // A foreign table dropping forwarded traffic.
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        let items = v["nftables"].as_array_mut().unwrap();
        items.push(serde_json::json!({"table":{"family":"ip","name":"docker","handle":99}}));
        items.push(serde_json::json!({"chain":{"family":"ip","table":"docker","name":"FORWARD","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"drop"}}));
        let mut rs = Ruleset::from_json(&v.to_string()).unwrap();
        if let Some(t) = saved(name, "iptables-save") {
            rs.attach_saved("ip", &t);
        }
        if let Some(t) = saved(name, "ip6tables-save") {
            rs.attach_saved("ip6", &t);
        }
        let r = check(&rs, &HostFacts::default(), &[bridge(zone)]);
        assert!(
            r.problems.iter().any(|p| p.contains("guest → upstream")
                && p.contains("dropped by the policy drop of ip docker chain FORWARD")),
            "{name}: {:#?}",
            r.problems
        );
    }
}

#[test]
fn iptables_saved_lines_give_compat_matches_meaning() {
    let mut p = ssh();
    p.daddr_type = AddrType::Local;
    let json = r#"{"nftables":[
      {"table":{"family":"ip","name":"filter","handle":1}},
      {"chain":{"family":"ip","table":"filter","name":"INPUT","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},
      {"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":2,"expr":[{"xt":{"type":"match","name":"conntrack"}},{"accept":null}]}},
      {"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":3,"expr":[{"xt":{"type":"match","name":"conntrack"}},{"drop":null}]}},
      {"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":4,"expr":[{"xt":{"type":"target","name":"REJECT"}}]}}
    ]}"#;
    let mut rs = Ruleset::from_json(json).unwrap();
    // Without the saved lines, the compat match is unknown.
    assert!(matches!(evaluate(&rs, &p).verdict, Verdict::Unknown(_)));
    rs.attach_saved(
        "ip",
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -m conntrack --ctstate INVALID -j DROP\n-A INPUT -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n",
    );
    let t = evaluate(&rs, &p);
    assert_eq!(t.verdict, Verdict::Reject);
    assert_eq!(t.by.unwrap().handle, Some(4));
    let _: IpAddr = p.saddr;
}

/// A match outside the model whose outcome cannot change the verdict (libvirt nwfilter's physdev
/// jump into a chain that only returns) is tried both ways: the verdict is known. One that can
/// change it stays unknown.
#[test]
fn a_match_outside_the_model_that_cannot_change_the_verdict_is_tried_both_ways() {
    let physdev = r#"[{"xt":{"type":"match","name":"physdev"}},{"jump":{"target":"sub"}}]"#;
    let rs = rs_of(
        &[
            rule("in", 2, physdev),
            rule("in", 3, r#"[{"reject":null}]"#),
            rule("sub", 4, r#"[{"return":null}]"#),
        ]
        .join(","),
    );
    let t = evaluate(&rs, &ssh());
    assert_eq!(t.verdict, Verdict::Reject, "{t:?}");
    assert_eq!(t.by.as_ref().unwrap().handle, Some(3));
    assert_eq!(t.regardless_of.len(), 1, "{t:?}");
    assert!(t.describe().contains("whether or not"), "{}", t.describe());
    // When the chain it jumps to decides, the verdict depends on the match: unknown.
    let rs = rs_of(
        &[
            rule("in", 2, physdev),
            rule("in", 3, r#"[{"reject":null}]"#),
            rule("sub", 4, r#"[{"accept":null}]"#),
        ]
        .join(","),
    );
    assert!(matches!(evaluate(&rs, &ssh()).verdict, Verdict::Unknown(_)));
}
