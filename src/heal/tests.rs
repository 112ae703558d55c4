use super::*;

fn tables(list: &[(&str, &str)]) -> BTreeSet<Table> {
    list.iter()
        .map(|(f, n)| (f.to_string(), n.to_string()))
        .collect()
}

/// The chains listed: firewalld's `filter_INPUT`, and `ip` chains with their jumps.
fn jumps(list: &[(&str, &str, &[&str])]) -> BTreeMap<Chain, BTreeSet<String>> {
    let mut all: BTreeMap<Chain, BTreeSet<String>> = list
        .iter()
        .map(|(t, c, targets)| {
            (
                ("ip".into(), t.to_string(), c.to_string()),
                targets.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    all.insert(firewalld_chain(), BTreeSet::new());
    all
}

fn firewalld_chain() -> Chain {
    ("inet".into(), "firewalld".into(), FIREWALLD_CHAIN.into())
}

const NAT: RunningNetwork = RunningNetwork {
    nat: true,
    ipv4: true,
    ipv6: false,
};

/// firewalld 1.3.3 on nftables, libvirt 9 on iptables, one NAT network: everything in place.
fn libvirt9() -> Facts {
    Facts {
        firewalld: Some((State::Running, Backend::Nftables)),
        tables: tables(&[("inet", "firewalld"), ("ip", "filter"), ("ip", "nat")]),
        jumps: jumps(&[
            ("filter", "INPUT", &["LIBVIRT_INP"]),
            (
                "filter",
                "FORWARD",
                &["LIBVIRT_FWX", "LIBVIRT_FWI", "LIBVIRT_FWO"],
            ),
            ("nat", "POSTROUTING", &["LIBVIRT_PRT"]),
        ]),
        libvirt: Some(LibvirtBackend::Iptables),
        networks: vec![NAT],
        localnet: false,
    }
}

/// firewalld on nftables, libvirt 12 on nftables, one NAT network.
fn libvirt12() -> Facts {
    Facts {
        firewalld: Some((State::Running, Backend::Nftables)),
        tables: tables(&[("inet", "firewalld"), ("ip", "libvirt_network")]),
        jumps: jumps(&[]),
        libvirt: Some(LibvirtBackend::Nftables),
        networks: vec![NAT],
        localnet: false,
    }
}

fn listed(f: &Facts) -> String {
    verdict(f).list()
}

#[test]
fn everything_in_place_is_no_wipe() {
    for f in [libvirt9(), libvirt12()] {
        assert_eq!(verdict(&f), Verdict::default(), "{f:?}");
    }
}

#[test]
fn nft_flush_ruleset_takes_everything() {
    let mut f = libvirt9();
    f.tables.clear();
    f.jumps.clear();
    f.localnet = true;
    let v = verdict(&f);
    assert!(v.wiped());
    assert_eq!(
        v.list(),
        "firewalld's rules (table inet firewalld, chain filter_INPUT), libvirt's jump to LIBVIRT_INP in ip filter INPUT, \
         libvirt's jump to LIBVIRT_FWX in ip filter FORWARD, libvirt's jump to LIBVIRT_PRT in ip \
         nat POSTROUTING, virtzone's localnet guard (table inet virtzone)"
    );
    let mut f = libvirt12();
    f.tables.clear();
    f.jumps.clear();
    assert_eq!(
        listed(&f),
        "firewalld's rules (table inet firewalld, chain filter_INPUT), libvirt's table ip \
         libvirt_network"
    );
    // firewalld 2.5.2 puts its table back, empty, right after a flush: its chain tells.
    let mut f = libvirt12();
    f.jumps.clear();
    assert_eq!(verdict(&f).missing, [Missing::FirewalldTable]);
}

#[test]
fn iptables_f_empties_the_filter_chains_only() {
    let mut f = libvirt9();
    // The chains stay, empty; the nat table is untouched.
    f.jumps = jumps(&[
        ("filter", "INPUT", &[]),
        ("filter", "FORWARD", &[]),
        ("nat", "POSTROUTING", &["LIBVIRT_PRT"]),
    ]);
    assert_eq!(
        listed(&f),
        "libvirt's jump to LIBVIRT_INP in ip filter INPUT, libvirt's jump to LIBVIRT_FWX in ip \
         filter FORWARD"
    );
}

#[test]
fn libvirts_table_alone() {
    let mut f = libvirt12();
    f.tables
        .remove(&("ip".to_string(), "libvirt_network".to_string()));
    assert_eq!(listed(&f), "libvirt's table ip libvirt_network");
    // An IPv6 network needs the ip6 table too.
    f.networks[0].ipv6 = true;
    f.tables
        .insert(("ip".to_string(), "libvirt_network".to_string()));
    assert_eq!(listed(&f), "libvirt's table ip6 libvirt_network");
}

#[test]
fn firewalld_iptables_backend_needs_its_jumps() {
    let mut f = libvirt9();
    f.firewalld = Some((State::Running, Backend::Iptables));
    f.jumps = jumps(&[
        (
            "filter",
            "INPUT",
            &["LIBVIRT_INP", "INPUT_direct", "INPUT_ZONES"],
        ),
        ("filter", "FORWARD", &["LIBVIRT_FWX"]),
        ("nat", "POSTROUTING", &["LIBVIRT_PRT"]),
    ]);
    assert_eq!(verdict(&f), Verdict::default());
    f.jumps.clear();
    assert!(listed(&f).starts_with("firewalld's jumps in ip filter INPUT, "));
}

#[test]
fn no_false_positives() {
    // firewalld starting, failed, or stopped: nothing of its is expected.
    for fw in [
        Some((State::Init, Backend::Nftables)),
        Some((State::Failed, Backend::Nftables)),
        None,
    ] {
        let mut f = libvirt12();
        f.firewalld = fw.clone();
        f.jumps.clear();
        f.tables
            .remove(&("inet".to_string(), "firewalld".to_string()));
        assert_eq!(verdict(&f), Verdict::default(), "{fw:?}");
    }
    // No running network with rules: nothing of libvirt's.
    let mut f = libvirt9();
    f.networks.clear();
    f.jumps = jumps(&[]);
    assert_eq!(verdict(&f), Verdict::default());
    // libvirt's backend unknown (never seen, not configured): nothing expected.
    let mut f = libvirt12();
    f.libvirt = None;
    f.tables
        .remove(&("ip".to_string(), "libvirt_network".to_string()));
    assert_eq!(verdict(&f), Verdict::default());
    // A routed network has no masquerade.
    let mut f = libvirt9();
    f.networks[0].nat = false;
    f.jumps
        .remove(&("ip".into(), "nat".into(), "POSTROUTING".into()));
    assert_eq!(verdict(&f), Verdict::default());
}

#[test]
fn the_guard_alone_needs_no_reload() {
    let mut f = libvirt9();
    f.localnet = true;
    let v = verdict(&f);
    assert_eq!(v.missing, [Missing::Guard]);
    assert!(!v.wiped());
}

#[test]
fn libvirts_backend_is_remembered_across_a_wipe() {
    let f = libvirt9();
    let seen = libvirt_backend(None, &f.tables, &f.jumps, None);
    assert_eq!(seen, Some(LibvirtBackend::Iptables));
    assert_eq!(
        libvirt_backend(None, &BTreeSet::new(), &BTreeMap::new(), seen),
        seen
    );
    let f = libvirt12();
    assert_eq!(
        libvirt_backend(None, &f.tables, &f.jumps, seen),
        Some(LibvirtBackend::Nftables)
    );
    // network.conf wins.
    assert_eq!(
        libvirt_backend(Some("nftables"), &BTreeSet::new(), &BTreeMap::new(), seen),
        Some(LibvirtBackend::Nftables)
    );
}

#[test]
fn nft_listings_parse() {
    let t = parse_tables(
        r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "firewalld", "handle": 1}},
        {"table": {"family": "ip", "name": "filter", "handle": 2}}]}"#,
    )
    .unwrap();
    assert_eq!(t, tables(&[("inet", "firewalld"), ("ip", "filter")]));
    assert!(parse_tables("not json").is_err());
    let j = parse_jumps(
        r#"{"nftables": [{"metainfo": {}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD"}},
        {"rule": {"expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "LIBVIRT_FWX"}}]}},
        {"rule": {"expr": [{"goto": {"target": "LIBVIRT_FWI"}}]}},
        {"rule": {"expr": [{"accept": null}]}}]}"#,
    );
    assert_eq!(
        j,
        ["LIBVIRT_FWI", "LIBVIRT_FWX"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

fn wiped() -> Verdict {
    Verdict {
        missing: vec![Missing::FirewalldTable],
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn one_reload_per_wipe() {
    let t0 = Instant::now();
    let mut h = Healer::default();
    // The flush, then virtzone's own guard and forwards going back: a burst.
    h.changed(t0);
    assert_eq!(h.decide(&wiped(), true, t0), Action::CheckAt(t0 + QUIET));
    h.changed(t0 + ms(100));
    assert_eq!(
        h.decide(&wiped(), true, t0 + ms(100)),
        Action::CheckAt(t0 + ms(100) + QUIET)
    );
    // Quiet: heal.
    let t1 = t0 + ms(100) + QUIET;
    assert_eq!(h.decide(&wiped(), true, t1), Action::Reload);
    // The heal's own reload: firewalld's Reloaded, libvirt deleting and re-adding. Never another.
    h.reloaded(t1 + ms(300));
    h.changed(t1 + ms(400));
    assert_eq!(
        h.decide(&wiped(), true, t1 + ms(400)),
        Action::CheckAt(t1 + GIVE_UP)
    );
    assert_eq!(
        h.decide(&wiped(), true, t1 + ms(5000)),
        Action::CheckAt(t1 + GIVE_UP)
    );
    assert_eq!(
        h.decide(&Verdict::default(), true, t1 + ms(1500)),
        Action::Healed {
            took: ms(1500) + ms(100) + QUIET
        }
    );
    assert_eq!(
        h.decide(&Verdict::default(), true, t1 + ms(1600)),
        Action::Nothing
    );
}

#[test]
fn a_heal_that_does_not_help_is_reported_once_and_not_repeated() {
    let t0 = Instant::now();
    let mut h = Healer::default();
    assert_eq!(h.decide(&wiped(), true, t0), Action::Reload);
    assert_eq!(h.decide(&wiped(), true, t0 + GIVE_UP), Action::StillMissing);
    // Still wiped, long after: no loop.
    h.changed(t0 + ms(60_000));
    assert_eq!(h.decide(&wiped(), true, t0 + ms(61_000)), Action::Nothing);
    // Seen in place, then wiped again: a new wipe heals again.
    assert_eq!(
        h.decide(&Verdict::default(), true, t0 + ms(62_000)),
        Action::Nothing
    );
    assert_eq!(h.decide(&wiped(), true, t0 + ms(63_000)), Action::Reload);
}

#[test]
fn heals_are_rate_limited() {
    let t0 = Instant::now();
    let mut h = Healer::default();
    assert_eq!(h.decide(&wiped(), true, t0), Action::Reload);
    assert!(matches!(
        h.decide(&Verdict::default(), true, t0 + ms(2000)),
        Action::Healed { .. }
    ));
    // A second wipe soon after: healed, but not before MIN_INTERVAL since the last heal.
    let t1 = t0 + ms(3000);
    assert_eq!(
        h.decide(&wiped(), true, t1),
        Action::CheckAt(t0 + MIN_INTERVAL)
    );
    assert_eq!(h.decide(&wiped(), true, t0 + MIN_INTERVAL), Action::Reload);
}

#[test]
fn a_reload_by_someone_else_is_left_to_libvirt() {
    let t0 = Instant::now();
    let mut h = Healer::default();
    // `firewall-cmd --reload`: firewalld's Reloaded, then libvirt's rules missing while it rebuilds.
    h.reloaded(t0);
    h.changed(t0 + ms(50));
    assert_eq!(
        h.decide(&wiped(), true, t0 + ms(50)),
        Action::CheckAt(t0 + AFTER_RELOAD)
    );
    // Rebuilt before the pause ends: nothing was done.
    assert_eq!(
        h.decide(&Verdict::default(), true, t0 + ms(900)),
        Action::Nothing
    );
}

#[test]
fn firewalld_not_running_is_said_once() {
    let t0 = Instant::now();
    let mut h = Healer::default();
    assert_eq!(h.decide(&wiped(), false, t0), Action::CannotReload);
    assert_eq!(h.decide(&wiped(), false, t0 + ms(10)), Action::Nothing);
}

#[test]
fn the_heal_gives_firewalld_a_table_to_delete() {
    let table = Step::NftAddTable {
        family: "inet".into(),
        name: "firewalld".into(),
    };
    assert_eq!(plan(&wiped()).steps, [table, Step::Reload]);
    let libvirt_only = Verdict {
        missing: vec![Missing::LibvirtTable("ip")],
    };
    assert_eq!(plan(&libvirt_only).steps, [Step::Reload]);
}

#[test]
fn running_networks_are_active_with_a_bridge_and_rules() {
    let json = r#"{"version": 1, "networks": {
        "nat": {"bridge": "virbr1", "forward": "nat", "subnets": ["192.0.2.0/24"], "active": true},
        "routed6": {"bridge": "virbr2", "forward": "route", "subnets": ["2001:db8::/64"], "active": true},
        "open": {"bridge": "virbr3", "forward": "open", "subnets": ["198.51.100.0/24"], "active": true},
        "stopped": {"bridge": "virbr4", "forward": "nat", "subnets": ["203.0.113.0/24"], "active": false},
        "before-reboot": {"bridge": "virbr5", "forward": "nat", "subnets": ["203.0.113.0/24"], "active": true}
    }}"#;
    let records: Networks = serde_json::from_str(json).unwrap();
    let bridges: Vec<String> = ["virbr1", "virbr2", "virbr3", "virbr4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        running_networks(&records, &bridges),
        [
            NAT,
            RunningNetwork {
                nat: false,
                ipv4: false,
                ipv6: true
            }
        ]
    );
}
