//! The property of each fuzz target: the parser as virtzone calls it on outside input, and what
//! must hold of its result. A failed assertion is a finding, like a panic inside the parser.

use std::fmt::Debug;
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::bind::Bindings;
use crate::forward::accept::{Accept, COMMENT};
use crate::forward::domain::{parse_status, DomainRecord, Domains};
use crate::forward::model::{Declared, FORMAT_VERSION};
use crate::forward::network::{NetworkRecord, Networks};
use crate::forward::nft::{self, GuestInput};
use crate::install::Installed;
use crate::libvirt::{domain::is_mac, parse_domain_xml, parse_network_xml};
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::state::{parse_state, Config};
use crate::verify::check::{check, ends, probe, BridgeFacts, HostFacts};
use crate::verify::eval::{evaluate, Proto, Ruleset};
use crate::zone::{parse_policy, parse_zone, Policy, RichRule, Zone, ZoneError};

/// The name zone and policy XML is parsed under (firewalld takes it from the file name).
const NAME: &str = "fuzzed";

/// The input as text: every format here is UTF-8, and the callers refuse other bytes before parsing.
fn text(input: &[u8]) -> Option<&str> {
    std::str::from_utf8(input).ok()
}

/// A refusal of a file an admin or a guest can write is one line that shows no raw control
/// character: a newline or an escape sequence in the file must not reach the terminal or the
/// journal as such.
fn one_sentence(message: &str) {
    assert!(
        !message.is_empty() && !message.chars().any(char::is_control),
        "a refusal is not one line of visible text: {message:?}"
    );
}

/// A validated name still validates.
fn valid_bridge(b: &BridgeName) {
    assert_eq!(BridgeName::new(b.as_str()).as_ref(), Ok(b));
}

fn valid_zone(z: &ZoneName) {
    assert_eq!(ZoneName::new(z.as_str()).as_ref(), Ok(z));
}

/// What [`crate::state::StateDir::write`] writes reads back as the same value.
fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    let again: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "state written as {} does not read back: {e}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&again, value, "state changed through a write and a read");
}

/// Reads a state file the way [`crate::state::StateDir::read`] does; what reads must write and
/// read back unchanged.
fn state_file<T: Serialize + DeserializeOwned + PartialEq + Debug>(input: &[u8]) -> Option<T> {
    match parse_state::<T>(Path::new("/var/lib/virtzone/fuzzed.json"), input) {
        Err(e) => {
            one_sentence(&e.to_string());
            None
        }
        Ok(value) => {
            json_round_trip(&value);
            Some(value)
        }
    }
}

/// `hook network` and `check --network-xml`: hookData or network XML, then the network record.
pub fn network_xml(input: &[u8]) {
    let Some(xml) = text(input) else { return };
    // `status --verify` reads the bridges of libvirt's running networks with its own small reader.
    let _ = crate::verify::bridge_names(xml);
    let net = match parse_network_xml(xml, None) {
        Err(e) => return one_sentence(&e.to_string()),
        Ok(net) => net,
    };
    assert_eq!(NetworkName::new(net.name.as_str()).as_ref(), Ok(&net.name));
    net.bridge.iter().for_each(valid_bridge);
    net.zone.iter().for_each(valid_zone);
    assert!(net.bridge.is_some() || !net.forward.has_libvirt_bridge());
    // `check --bridge` replaces whatever bridge the XML names, and nothing else.
    let br = BridgeName::new("vzfuzz0").expect("a valid name");
    let replaced = parse_network_xml(xml, Some(&br)).expect("a bridge override cannot fail");
    assert_eq!(replaced.bridge.as_ref(), Some(&br));
    assert_eq!((&replaced.name, &replaced.zone), (&net.name, &net.zone));
    // The hook records the network for forwards.
    match NetworkRecord::of(&net) {
        Err(e) => one_sentence(&e),
        Ok(None) => assert!(net.bridge.is_none()),
        Ok(Some(record)) => {
            valid_bridge(&record.bridge);
            let mut networks = Networks::default();
            networks.networks.insert(net.name.clone(), record);
            json_round_trip(&networks);
        }
    }
}

/// `hook qemu`: domain XML, then the domain record.
pub fn domain_xml(input: &[u8]) {
    let Some(xml) = text(input) else { return };
    let domain = match parse_domain_xml(xml) {
        Err(e) => return one_sentence(&e.to_string()),
        Ok(d) => d,
    };
    assert!(!domain.name.is_empty() && !domain.name.chars().any(char::is_control));
    for i in &domain.interfaces {
        assert!(!i.network.is_empty());
        if let Some(mac) = &i.mac {
            assert!(is_mac(mac) && *mac == mac.to_ascii_lowercase(), "{mac:?}");
        }
    }
    // The hook records it in domains.json.
    let mut domains = Domains::default();
    domains
        .domains
        .insert(domain.name.clone(), DomainRecord::running(&domain, None));
    json_round_trip(&domains);
}

/// What parses as a zone or policy writes as XML and as a settings dict that read back the same.
fn object_round_trip<T: PartialEq + Debug>(
    input: &[u8],
    parse: fn(&str, &str) -> Result<T, ZoneError>,
    to_xml: fn(&T) -> String,
    through_settings: fn(&T) -> Result<T, ZoneError>,
) {
    let Some(xml) = text(input) else { return };
    let object = match parse(NAME, xml) {
        Err(e) => return one_sentence(&e.to_string()),
        Ok(o) => o,
    };
    let written = to_xml(&object);
    let again = parse(NAME, &written)
        .unwrap_or_else(|e| panic!("the XML virtzone wrote does not parse: {e}\n{written}"));
    assert_eq!(again, object, "changed through XML:\n{written}");
    let again = through_settings(&object)
        .unwrap_or_else(|e| panic!("the settings dict virtzone made does not read back: {e}"));
    assert_eq!(again, object, "changed through a settings dict");
}

/// Zone XML round trips through XML and settings dicts.
pub fn zone_xml(input: &[u8]) {
    object_round_trip(input, parse_zone, Zone::to_xml, |z| {
        Zone::from_settings(NAME, &z.to_settings())
    });
}

/// Policy XML round trips through XML and settings dicts.
pub fn policy_xml(input: &[u8]) {
    object_round_trip(input, parse_policy, Policy::to_xml, |p| {
        Policy::from_settings(NAME, &p.to_settings())
    });
}

/// A rich rule round trips through its text form and zone XML.
pub fn rich_rule(input: &[u8]) {
    let Some(text) = text(input) else { return };
    let rule = match RichRule::parse(text) {
        Err((_, reason)) => return one_sentence(&reason),
        Ok(r) => r,
    };
    let written = rule.to_string();
    assert_eq!(RichRule::parse(&written), Ok(rule.clone()), "{written}");
    // The same rule inside zone XML (`<rule>` elements) reads back the same.
    let mut zone = Zone::new(NAME);
    zone.rules.push(rule.clone());
    if zone.validate().is_ok() {
        let xml = zone.to_xml();
        let again = parse_zone(NAME, &xml)
            .unwrap_or_else(|e| panic!("a zone holding the rule does not parse: {e}\n{xml}"));
        assert_eq!(again.rules, [rule], "{xml}");
    }
}

/// Everything the evaluator does with a ruleset: `status --verify`'s checks for a NAT and a routed
/// bridge with addresses, and `explain`'s trace of one packet.
fn evaluate_all(rs: &Ruleset) {
    let addrs: Vec<(IpAddr, u8)> = vec![
        ([192, 0, 2, 1].into(), 24),
        ("2001:db8::1".parse().expect("an address"), 64),
    ];
    let bridge = |name: &str, zone: &str| BridgeFacts {
        name: name.into(),
        zone: Some(zone.into()),
        recorded: Some(zone.into()),
        libvirt: true,
        addrs: addrs.clone(),
    };
    let bridges = [
        bridge("vzbr0", "libvirt"),
        bridge("vzbr1", "libvirt-routed"),
    ];
    let host = HostFacts {
        uplink: Some("eth0".into()),
        br_netfilter: true,
    };
    let report = check(rs, &host, &bridges);
    serde_json::to_string(&report).expect("the report serialises");
    for e in ends(&addrs) {
        let trace = evaluate(rs, &probe::to_host("vzbr0", &e, Proto::Tcp, 22));
        assert!(!trace.describe().is_empty());
        serde_json::to_string(&trace).expect("the trace serialises");
    }
}

/// `nft -j list ruleset`, followed by the evaluator.
pub fn nft_ruleset(input: &[u8]) {
    let Some(json) = text(input) else { return };
    if let Ok(rs) = Ruleset::from_json(json) {
        evaluate_all(&rs);
    }
}

/// A ruleset of iptables-nft rules whose compat matches need the saved lines.
fn compat_ruleset() -> &'static Ruleset {
    static RS: OnceLock<Ruleset> = OnceLock::new();
    RS.get_or_init(|| Ruleset::from_json(super::seeds::COMPAT_RULESET).expect("the capture parses"))
}

/// `iptables-save` lines attached to a ruleset with compat matches, followed by the evaluator.
pub fn iptables_save(input: &[u8]) {
    let Some(saved) = text(input) else { return };
    let mut rs = compat_ruleset().clone();
    rs.attach_saved("ip", saved);
    rs.attach_saved("ip6", saved);
    evaluate_all(&rs);
}

/// A listing of libvirt's chain holding only virtzone's accepts for `accepts`, as nft prints it.
fn listing_of(accepts: &[Accept]) -> String {
    let rules: Vec<_> = accepts
        .iter()
        .enumerate()
        .map(|(handle, a)| {
            json!({"rule": {"family": nft::family_of(a.guest), "table": nft::TABLE,
                "chain": nft::CHAIN, "handle": handle, "comment": COMMENT,
                "expr": nft::accept_expr(a)}})
        })
        .collect();
    json!({ "nftables": rules }).to_string()
}

/// libvirt's `guest_input` chain: what is in place is not re-planned, what is written reads back.
pub fn guest_input(input: &[u8]) {
    let Some(json) = text(input) else { return };
    let Ok(chain) = GuestInput::parse(json, nft::FAMILY) else {
        return;
    };
    let _ = (chain.bridges(), chain.rebuilt_since(&GuestInput::default()));
    // Accepts of ours in front of every reject are in place: the planner inserts none again.
    let in_front: Vec<Accept> = chain
        .rules
        .iter()
        .take_while(|r| r.ours.is_some() || !r.rejects)
        .filter_map(|r| r.ours.clone().flatten())
        .collect();
    let (insert, _) = nft::steps(&chain, nft::FAMILY, &in_front);
    assert!(insert.is_empty(), "re-inserts accepts in place: {insert:?}");
    // What the planner writes, it reads back as the same accepts.
    for a in &in_front {
        let family = nft::family_of(a.guest);
        let back = GuestInput::parse(&listing_of(std::slice::from_ref(a)), family)
            .expect("its own listing parses");
        assert_eq!(back.rules.len(), 1);
        assert_eq!(back.rules[0].ours, Some(Some(a.clone())));
    }
}

/// dnsmasq's lease status file.
pub fn lease_status(input: &[u8]) {
    let Some(status) = text(input) else { return };
    match parse_status(status) {
        Err(e) => one_sentence(&e),
        Ok(leases) => {
            for l in leases {
                assert_eq!(l.mac, l.mac.trim().to_ascii_lowercase());
            }
        }
    }
}

/// `bindings.json`.
pub fn bindings_json(input: &[u8]) {
    if let Some(b) = state_file::<Bindings>(input) {
        for (bridge, binding) in &b.bindings {
            valid_bridge(bridge);
            valid_zone(&binding.zone);
        }
    }
}

/// `installed.json`.
pub fn installed_json(input: &[u8]) {
    state_file::<Installed>(input);
}

/// `domains.json`.
pub fn domains_json(input: &[u8]) {
    state_file::<Domains>(input);
}

/// `forwards.json`, also as upgraded to the current format.
pub fn forwards_json(input: &[u8]) {
    if let Some(d) = state_file::<Declared>(input) {
        // Read as the current format unless newer (`forward::store::declared_in`).
        if d.version <= FORMAT_VERSION {
            json_round_trip(&Declared {
                version: FORMAT_VERSION,
                ..d
            });
        }
    }
}

/// `networks.json`.
pub fn networks_json(input: &[u8]) {
    if let Some(n) = state_file::<Networks>(input) {
        for record in n.networks.values() {
            valid_bridge(&record.bridge);
        }
    }
}

/// `virtzone.conf`.
pub fn config(input: &[u8]) {
    let Some(conf) = text(input) else { return };
    match Config::parse(conf) {
        Err(e) => one_sentence(&e),
        Ok(c) => {
            for dir in [&c.state_directory, &c.lease_directory]
                .into_iter()
                .flatten()
            {
                assert!(dir.is_absolute(), "{dir:?}");
            }
            if let Some(t) = c.hook_timeout {
                assert!((1..=300).contains(&t.as_secs()), "{t:?}");
            }
        }
    }
}

/// A drop-in file of `virtzone apply` (`declare`): a declaration or an error points at a line of
/// the file, an error is one sentence, and validated names stay valid.
pub fn dropin(input: &[u8]) {
    let Some(conf) = text(input) else { return };
    let lines = conf.lines().count();
    match crate::declare::parse("50-fuzz.conf", conf) {
        Err(e) => {
            one_sentence(&e.to_string());
            assert!(e.origin.line <= lines.max(1), "{e:?} in {lines} lines");
        }
        Ok(decls) => {
            for d in &decls {
                assert!((1..=lines).contains(&d.origin.line), "{:?}", d.origin);
                if let crate::declare::Object::Bind(b) = &d.object {
                    valid_bridge(&b.bridge);
                }
            }
            if let Err(e) = crate::declare::dedupe(decls) {
                one_sentence(&e.to_string());
            }
        }
    }
}
