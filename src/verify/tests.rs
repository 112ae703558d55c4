//! The checks against rulesets captured from real firewalld 1.3.3 and 2.3.1 on both backends
//! (`tests/data/verify/README.md` tells how they were made): virbr7 bound to `libvirt`, virbr8 to
//! `libvirt-routed`, the zones and policies of virtzone installed.

use super::check::{check, BridgeFacts, View};
use super::rules::{Family, Hook, Ruleset};
use super::{iptables, nft, Report};

const NFT_133: &str = include_str!("../../tests/data/verify/1.3.3-nftables.json");
const NFT_231: &str = include_str!("../../tests/data/verify/2.3.1-nftables.json");
const IPT4_133: &str = include_str!("../../tests/data/verify/1.3.3-iptables.iptables-save");
const IPT6_133: &str = include_str!("../../tests/data/verify/1.3.3-iptables.ip6tables-save");
const IPT4_231: &str = include_str!("../../tests/data/verify/2.3.1-iptables.iptables-save");
const IPT6_231: &str = include_str!("../../tests/data/verify/2.3.1-iptables.ip6tables-save");
/// firewalld 1.3.3 loaded a zone `libvirt` whose catch-all rich rule it could not parse
/// (`family="ipv4"` with an ICMPv6 reject type): it logged a warning and dropped the rule.
const NFT_133_DROPPED: &str =
    include_str!("../../tests/data/verify/1.3.3-nftables-dropped-rule.json");
const IPT4_133_DROPPED: &str =
    include_str!("../../tests/data/verify/1.3.3-iptables-dropped-rule.iptables-save");
const IPT6_133_DROPPED: &str =
    include_str!("../../tests/data/verify/1.3.3-iptables-dropped-rule.ip6tables-save");

fn nft_view(json: &str) -> Vec<View> {
    vec![View {
        label: None,
        families: vec![Family::V4, Family::V6],
        ruleset: nft::parse(json).unwrap(),
    }]
}

fn ipt_views(v4: &str, v6: &str) -> Vec<View> {
    vec![
        View {
            label: Some("iptables".into()),
            families: vec![Family::V4],
            ruleset: iptables::parse(v4, Family::V4).unwrap(),
        },
        View {
            label: Some("ip6tables".into()),
            families: vec![Family::V6],
            ruleset: iptables::parse(v6, Family::V6).unwrap(),
        },
    ]
}

/// All four captured layouts: (name, views).
fn all_layouts() -> Vec<(&'static str, Vec<View>)> {
    vec![
        ("1.3.3 nftables", nft_view(NFT_133)),
        ("2.3.1 nftables", nft_view(NFT_231)),
        ("1.3.3 iptables", ipt_views(IPT4_133, IPT6_133)),
        ("2.3.1 iptables", ipt_views(IPT4_231, IPT6_231)),
    ]
}

fn bridge(name: &str, zone: Option<&str>) -> BridgeFacts {
    BridgeFacts {
        name: name.into(),
        zone: zone.map(str::to_string),
        recorded: None,
        libvirt: name.starts_with("virbr"),
    }
}

fn bound() -> Vec<BridgeFacts> {
    vec![
        bridge("virbr7", Some("libvirt")),
        bridge("virbr8", Some("libvirt-routed")),
    ]
}

fn show(r: &Report) -> String {
    format!(
        "confirmed:\n  {}\nproblems:\n  {}",
        r.confirmed.join("\n  "),
        r.problems.join("\n  ")
    )
}

/// Removes the rules whose text contains `needle` from every chain.
fn without(views: &mut [View], needle: &str) {
    for v in views {
        for chain in v.ruleset.chains.values_mut() {
            chain.rules.retain(|r| !r.text.contains(needle));
        }
    }
}

#[test]
fn captured_rulesets_verify_clean() {
    for (name, views) in all_layouts() {
        let r = check(&views, &bound());
        assert!(r.problems.is_empty(), "{name}:\n{}", show(&r));
        let text = show(&r);
        for want in [
            "virbr7 (zone libvirt",
            "traffic to the host is dispatched to the zone by",
            "forwarded traffic is dispatched to the zone by",
            "guests reach dhcp",
            "anything else guests send to the host is rejected by",
            ", after the allowed services",
            "virbr8 (zone libvirt-routed",
            "traffic routed to the guests is accepted by",
        ] {
            assert!(text.contains(want), "{name}: no {want:?} in\n{text}");
        }
    }
}

#[test]
fn names_the_rules_of_each_layout() {
    let r = check(&nft_view(NFT_133), &bound());
    let text = show(&r);
    assert!(
        text.contains(
            "virbr7 (zone libvirt): traffic to the host is dispatched to the zone by \
             filter_INPUT_ZONES rule 2 (`iifname \"virbr7\" goto filter_IN_libvirt`)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "rejected by filter_IN_libvirt_post rule 1 (`reject`), after the allowed services"
        ),
        "{text}"
    );
    let r = check(&nft_view(NFT_231), &bound());
    let text = show(&r);
    assert!(
        text.contains(
            "by filter_INPUT_POLICIES rule 2 (`iifname \"virbr7\" jump filter_IN_libvirt`)"
        ),
        "{text}"
    );
    assert!(
        text.contains("accepted by filter_FORWARD_POLICIES rule 7 (`iifname \"virbr7\" accept`)"),
        "{text}"
    );
    let r = check(&ipt_views(IPT4_133, IPT6_133), &bound());
    let text = show(&r);
    assert!(
        text.contains(
            "virbr7 (zone libvirt, ip6tables): traffic to the host is dispatched to the zone by \
             INPUT_ZONES rule 2 (`-i virbr7 -g IN_libvirt`)"
        ),
        "{text}"
    );
    assert!(
        text.contains("virbr8 (zone libvirt-routed, iptables): anything else guests send to the host is rejected by IN_libvirt-to-host rule 6 (`-j REJECT --reject-with icmp-port-unreachable`)"),
        "{text}"
    );
}

#[test]
fn a_dropped_catch_all_is_reported() {
    for (name, views) in [
        ("nftables", nft_view(NFT_133_DROPPED)),
        ("iptables", ipt_views(IPT4_133_DROPPED, IPT6_133_DROPPED)),
    ] {
        let r = check(&views, &[bridge("virbr7", Some("libvirt"))]);
        let problems = r.problems.join("\n");
        assert!(
            problems.contains("zone libvirt has no catch-all reject: tcp/1 and udp/1")
                && problems.contains("are accepted by"),
            "{name}:\n{}",
            show(&r)
        );
        // The services are still fine, and no "after the allowed services" is claimed.
        assert!(!show(&r).contains("after the allowed services"), "{name}");
    }
    let r = check(
        &nft_view(NFT_133_DROPPED),
        &[bridge("virbr7", Some("libvirt"))],
    );
    assert_eq!(
        r.problems,
        ["virbr7 (zone libvirt): zone libvirt has no catch-all reject: tcp/1 and udp/1 over IPv4 \
          and IPv6, which zone libvirt does not list, are accepted by filter_IN_libvirt rule 8 \
          (`accept`); the zone needs `<rule \
          priority=\"32767\"><reject/></rule>` (firewalld before 2.3.0 drops a rich rule it cannot \
          load with only a warning in its log)"]
    );
}

#[test]
fn a_missing_service_is_blamed_on_the_catch_all() {
    for (name, mut views) in all_layouts() {
        // ssh's accept gone from the zone and the policy (firewall-cmd --remove-service=ssh).
        without(&mut views, "dport 22 ");
        let r = check(&views, &bound());
        let problems = r.problems.join("\n");
        assert!(
            problems.contains("virbr7 (zone libvirt")
                && problems.contains("guests cannot reach ssh (tcp/22"),
            "{name}:\n{}",
            show(&r)
        );
        assert!(
            problems.contains("that is the catch-all of zone libvirt, so zone libvirt lacks them"),
            "{name}:\n{problems}"
        );
        assert!(
            problems.contains("that is the catch-all of policy libvirt-to-host"),
            "{name}:\n{problems}"
        );
    }
}

#[test]
fn a_catch_all_before_the_services_is_reported() {
    let mut views = nft_view(NFT_133);
    // Move the zone's catch-all from _post to _pre, as a rich rule with priority -32767 would.
    let rs: &mut Ruleset = &mut views[0].ruleset;
    let reject = rs.chains["filter_IN_libvirt_post"].rules[0].clone();
    rs.chains
        .get_mut("filter_IN_libvirt_post")
        .unwrap()
        .rules
        .clear();
    rs.chains
        .get_mut("filter_IN_libvirt_pre")
        .unwrap()
        .rules
        .push(reject);
    let r = check(&views, &bound());
    let problems = r.problems.join("\n");
    assert!(
        problems.contains(
            "guests cannot reach dhcp (udp/67, IPv4), dhcpv6 (udp/547, IPv6), dns (udp/53, IPv4 \
             and IPv6), dns (tcp/53, IPv4 and IPv6), ssh (tcp/22, IPv4 and IPv6), tftp (udp/69, \
             IPv4 and IPv6), icmp (IPv4) and ipv6-icmp (IPv6) on the host: rejected by \
             filter_IN_libvirt_pre rule 1 (`reject`); that catch-all sits before the allowed \
             services of zone libvirt"
        ),
        "{}",
        show(&r)
    );
}

#[test]
fn missing_dispatch_says_where_traffic_goes() {
    for (name, mut views) in all_layouts() {
        // The bridge's dispatch rules gone, firewalld still reporting the binding.
        without(&mut views, "virbr7");
        let r = check(&views, &bound());
        let problems = r.problems.join("\n");
        assert!(
            problems.contains(
                "firewalld reports the bridge in zone libvirt, but no rule selecting iifname virbr7 \
                 sends its traffic to the host to the zone's chains; instead it goes to the chains \
                 of public and is rejected by"
            ),
            "{name}:\n{problems}"
        );
        assert!(
            problems.contains("sends its forwarded traffic to the zone's chains"),
            "{name}:\n{problems}"
        );
    }
}

#[test]
fn unbound_bridges() {
    let views = nft_view(NFT_133);
    let mut facts = vec![bridge("virbr9", None), bridge("br0", None)];
    let r = check(&views, &facts);
    assert_eq!(r.problems.len(), 1, "{}", show(&r));
    assert!(
        r.problems[0].starts_with(
            "virbr9: a libvirt bridge in no zone, so firewalld handles it as its default zone: for \
             its guests' traffic to the host it goes to the chains of public and is rejected by \
             filter_IN_public rule 9 (`reject with icmpx admin-prohibited`)"
        ),
        "{}",
        r.problems[0]
    );
    assert_eq!(
        r.confirmed,
        ["br0: in no zone and not a libvirt bridge; not checked"]
    );
    facts[1].recorded = Some("libvirt".into());
    let r = check(&views, &facts);
    assert!(
        r.problems[1]
            .starts_with("br0: virtzone keeps it in zone libvirt, but firewalld has it in no zone"),
        "{}",
        show(&r)
    );
}

#[test]
fn other_zones_get_their_dispatch_checked_only() {
    // virbr7's zone is libvirt, but suppose firewalld said "trusted": its traffic goes elsewhere.
    let r = check(&nft_view(NFT_133), &[bridge("virbr7", Some("trusted"))]);
    assert_eq!(r.problems.len(), 2, "{}", show(&r));
    assert!(
        show(&r).contains("instead it goes to the chains of libvirt"),
        "{}",
        show(&r)
    );
}

#[test]
fn both_families_are_followed_on_nftables() {
    let rs = nft::parse(NFT_231).unwrap();
    let p = super::rules::Probe {
        family: Family::V6,
        iif: Some("virbr7".into()),
        oif: None,
        proto: "ipv6-icmp",
        dport: None,
        daddr: None,
    };
    let d = rs.evaluate(Hook::Input, &p).unwrap();
    assert_eq!(
        d.by.unwrap().text,
        "meta l4proto ipv6-icmp accept",
        "accepted by the zone, not by a family-specific rule"
    );
}

fn status(state: &str) -> crate::status::Status {
    crate::status::Status {
        firewalld: crate::status::FirewalldStatus {
            running: true,
            system_bus: true,
            version: Some("1.3.3".into()),
            state: Some(state.into()),
            backend: Some(crate::firewalld::Backend::Nftables),
            capabilities: None,
        },
        zones: Vec::new(),
        policies: Vec::new(),
        bridges: Vec::new(),
    }
}

#[test]
fn assembles_facts_about_firewalld_itself() {
    use super::{assemble, Live};
    use crate::firewalld::Backend;
    let r = assemble(
        &status("FAILED"),
        Backend::Nftables,
        Live::Missing("table gone".into()),
        &[],
    );
    assert_eq!(r.problems.len(), 2, "{}", show(&r));
    assert!(r.problems[0].starts_with("firewalld is in state FAILED"));
    assert_eq!(r.problems[1], "table gone");
    let r = assemble(
        &status("RUNNING"),
        Backend::Iptables,
        Live::Views(
            ipt_views(IPT4_133, IPT6_133)[..1].to_vec(),
            vec!["IPv6 not checked: no table".into()],
        ),
        &bound(),
    );
    assert!(r.problems.is_empty(), "{}", show(&r));
    assert_eq!(
        r.confirmed[..2],
        [
            "read firewalld's iptables ruleset (filter tables of iptables-save and ip6tables-save)",
            "IPv6 not checked: no table"
        ]
    );
}

#[test]
fn recognises_libvirt_bridges() {
    use super::{bridge_names, is_libvirt_bridge};
    let running = ["br-lab".to_string()].into_iter().collect();
    assert!(is_libvirt_bridge("virbr0", &running));
    assert!(is_libvirt_bridge("br-lab", &running));
    assert!(!is_libvirt_bridge("virbr", &running));
    assert!(!is_libvirt_bridge("virbr-x", &running));
    assert!(!is_libvirt_bridge("docker0", &running));
    let xml = "<networkstatus><class_id bitmap='0-2'/><network><name>lab</name>\
               <bridge name='br-lab' stp='on' delay='0'/></network></networkstatus>";
    assert_eq!(bridge_names(xml), ["br-lab"]);
}
