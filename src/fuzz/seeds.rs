//! Seed inputs of each fuzz target: the test fixtures (`tests/data/`, the shipped zones, the demo
//! networks), documents shaped like the unit tests' strings, and state files as virtzone writes
//! them. `scripts/fuzz.sh` writes them into the targets' corpora before a libFuzzer run.

use std::path::Path;

use crate::bind::{Binding, Bindings};
use crate::forward::domain::{DomainRecord, Domains, Target};
use crate::forward::model::{Allow, Declared, DomainForward, Forward, ForwardRule, Opening};
use crate::forward::network::{NetworkRecord, Networks};
use crate::install::Installed;
use crate::libvirt::{parse_domain_xml, parse_network_xml};
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::zone::{parse_policy, parse_zone, RichRule};

/// The capture the `iptables_save` target attaches saved lines to: firewalld's iptables backend
/// with libvirt's iptables rules, so most chains hold compat matches.
pub const COMPAT_RULESET: &str = include_str!("../../tests/data/eval/1.3.3-iptables-libvirt.json");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir` (relative to the crate) whose names end in `suffix`, sorted.
fn files(dir: &str, suffix: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("fixtures {dir}: {e}"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn strs(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

pub fn network_xml() -> Vec<Vec<u8>> {
    let mut seeds = files("demo", ".xml");
    seeds.extend(strs(&[
        "<network><name>default</name><uuid>x</uuid><forward mode='nat'><nat><port start='1024' \
         end='65535'/></nat></forward><bridge name='virbr0' stp='on' delay='0'/><mac \
         address='52:54:00:0a:cd:21'/><ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range \
         start='192.0.2.2' end='192.0.2.254'/></dhcp></ip></network>",
        "<hookData><network><name>default</name><forward mode='nat'/><bridge name='virbr0' \
         stp='on'/><ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
         end='192.0.2.199'/><host mac='52:54:00:AA:00:01' name='web' ip='192.0.2.10'/></dhcp></ip>\
         <ip family='ipv6' address='2001:db8:5::1' prefix='64'/></network><networkport><uuid>u\
         </uuid></networkport></hookData>",
        "<networkstatus><class_id bitmap='0-2'/><floor sum='0'/><network><name>lan</name><forward \
         mode='open'/><bridge name='virbr3' zone='trusted'/><ip family='ipv6' address='2001:db8::1' \
         prefix='64'><dhcp><host id='0:1' ip='2001:db8::5'/></dhcp></ip></network></networkstatus>",
        "<network><name>iso</name><bridge name='virbr9'/></network>",
        "<network><name>br</name><forward mode='bridge'><interface dev='eth0'/></forward></network>",
    ]));
    seeds
}

pub fn domain_xml() -> Vec<Vec<u8>> {
    strs(&[
        "<domain type='qemu' id='3'><name>web</name><uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809\
         </uuid><memory>1</memory><devices><interface type='network'><mac \
         address='52:54:00:AA:bb:01'/><source network='default' portid='x' bridge='virbr0'/><target \
         dev='vnet0'/></interface><interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source \
         bridge='br0'/></interface><interface type='network'><source network='lan'/></interface>\
         </devices></domain>",
        "<domain><name>x</name></domain>",
        "<?xml version='1.0'?>\n<domain type='kvm'>\n  <name>db</name>\n  <devices>\n    \
         <interface type='network'>\n      <mac address='52:54:00:00:00:03'/>\n      <source \
         network='routed'/>\n    </interface>\n  </devices>\n</domain>\n",
    ])
}

/// The zone or policy fixtures: valid and invalid test files and the shipped objects, picked by
/// their root element.
fn objects(root_element: &str) -> Vec<Vec<u8>> {
    [
        "tests/data/zone/valid",
        "tests/data/zone/invalid",
        "zones",
        "zones/policies",
    ]
    .iter()
    .flat_map(|d| files(d, ".xml"))
    .filter(|f| String::from_utf8_lossy(f).contains(&format!("<{root_element}")))
    .collect()
}

pub fn zone_xml() -> Vec<Vec<u8>> {
    objects("zone")
}

pub fn policy_xml() -> Vec<Vec<u8>> {
    objects("policy")
}

pub fn rich_rule() -> Vec<Vec<u8>> {
    // Every rule of the zone and policy fixtures, in firewalld's text form.
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for xml in zone_xml().iter().chain(&policy_xml()) {
        let xml = String::from_utf8_lossy(xml);
        let rules: Vec<RichRule> = match (parse_zone("seed", &xml), parse_policy("seed", &xml)) {
            (Ok(z), _) => z.body.rules,
            (_, Ok(p)) => p.body.rules,
            _ => Vec::new(),
        };
        seeds.extend(rules.iter().map(|r| r.to_string().into_bytes()));
    }
    seeds.extend(strs(&[
        "rule priority=32767 reject",
        "rule family=ipv4 source address=192.0.2.0/24 service name=ssh log prefix=x level=info \
         limit value=1/minute accept",
        "rule family=\"ipv6\" icmp-type name=\"neighbour-advertisement\" accept",
        "rule family=ipv4 forward-port port=80 protocol=tcp to-port=8080 to-addr=192.0.2.1",
        "rule source NOT mac=52:54:00:aa:bb:cc drop",
        "rule protocol value=gre mark set=0x1/0xff",
        "rule tcp-mss-clamp value=pmtu",
        "rule service name=ssh nflog group=0x10 queue-size=5 audit limit value=2/h reject",
        r#"rule service name=ssh log prefix="a \"b\" c" accept limit value=3/s burst=5"#,
        "rule family=ipv6 destination NOT address=2001:db8::/32 port port=1000-2000 protocol=udp \
         reject type=icmp6-adm-prohibited",
        "rule family=ipv4 source ipset=blocked masquerade",
        "rule priority=-1 log prefix='y' level=warning",
    ]));
    seeds
}

pub fn nft_ruleset() -> Vec<Vec<u8>> {
    // Each table of each capture on its own: small documents mutate into many more shapes than
    // the whole listings would, and every table's chains and sets stay together.
    let mut seeds = Vec::new();
    for capture in files("tests/data/eval", ".json") {
        let v: serde_json::Value = serde_json::from_slice(&capture).expect("a capture parses");
        let items = v["nftables"].as_array().cloned().unwrap_or_default();
        let tables: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("table")).collect();
        for t in tables {
            let (family, name) = (&t["family"], &t["name"]);
            let of_table = items
                .iter()
                .filter(|i| {
                    i.as_object()
                        .and_then(|o| o.values().next())
                        .is_some_and(|x| {
                            x["family"] == *family && (x["table"] == *name || x["name"] == *name)
                        })
                })
                .cloned()
                .collect::<Vec<_>>();
            seeds.push(
                serde_json::json!({ "nftables": of_table })
                    .to_string()
                    .into_bytes(),
            );
        }
    }
    seeds
}

pub fn iptables_save() -> Vec<Vec<u8>> {
    [".iptables-save", ".ip6tables-save"]
        .iter()
        .flat_map(|s| files("tests/data/eval", &format!("1.3.3-iptables-libvirt{s}")))
        .collect()
}

pub fn guest_input() -> Vec<Vec<u8>> {
    strs(&[
        r#"{"nftables": [{"metainfo": {"version": "1.1.7", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "libvirt_network", "handle": 5}},
 {"chain": {"family": "ip", "table": "libvirt_network", "name": "guest_input", "handle": 3}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 31,
   "comment": "virtzone", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "virbr12"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.10"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
     "right": {"set": [22, {"range": [8000, 8010]}]}}},
   {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
   {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 12,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr12"}},
   {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
   {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 13,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr12"}},
   {"reject": {"type": "icmp", "expr": "port-unreachable"}}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 40,
   "comment": "virtzone", "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "virbr12"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.11"}},
   {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
   {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
   {"counter": null}, {"accept": null}]}}]}"#,
    ])
}

pub fn lease_status() -> Vec<Vec<u8>> {
    strs(&[
        r#"[{"ip-address":"192.0.2.150","mac-address":"52:54:00:00:00:01",
            "hostname":"g","client-id":"01:52:54:00:00:00:01","expiry-time":2000},
            {"ip-address":"192.0.2.151","mac-address":"52:54:00:00:00:01","expiry-time":500},
            {"ip-address":"2001:db8::5","iaid":"1","expiry-time":2000},
            {"ip-address":"198.51.100.9","mac-address":"52:54:00:00:00:03","expiry-time":2000}]"#,
        r#"[{"ip-address":"192.0.2.5","mac-address":"52:54:00:AA:00:01"}]"#,
        "[]\n",
        "",
    ])
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("state serialises")
}

pub fn bindings_json() -> Vec<Vec<u8>> {
    let mut b = Bindings::default();
    for (bridge, zone, permanent, network) in [
        ("virbr0", "libvirt", false, Some("default")),
        ("virbr1", "libvirt-routed", true, None),
    ] {
        b.bindings.insert(
            BridgeName::new(bridge).expect("a valid name"),
            Binding {
                zone: ZoneName::new(zone).expect("a valid name"),
                permanent,
                network: network.map(|n| NetworkName::new(n).expect("a valid name")),
                networkmanager: None,
                source: None,
            },
        );
    }
    vec![json(&b), json(&Bindings::default())]
}

pub fn installed_json() -> Vec<Vec<u8>> {
    let mut i = Installed::default();
    i.zones
        .extend(["libvirt".to_string(), "libvirt-routed".into()]);
    i.policies.insert("libvirt-routed-out".into());
    vec![json(&i), b"{}".to_vec()]
}

pub fn domains_json() -> Vec<Vec<u8>> {
    let mut d = Domains::default();
    for xml in domain_xml() {
        if let Ok(domain) = parse_domain_xml(&String::from_utf8_lossy(&xml)) {
            d.domains
                .insert(domain.name.clone(), DomainRecord::running(&domain, None));
        }
    }
    d.applied.insert(
        3,
        Target {
            network: default_network(),
            guest: [192, 0, 2, 10].into(),
        },
    );
    vec![json(&d)]
}

pub fn forwards_json() -> Vec<Vec<u8>> {
    let forward = Forward {
        id: 1,
        network: default_network(),
        guest: [192, 0, 2, 5].into(),
        rule: ForwardRule {
            proto: "tcp".parse().expect("a protocol"),
            host_port: "8000-8010".parse().expect("ports"),
            guest_port: "9000-9010".parse().expect("ports"),
            host_address: Some([198, 51, 100, 1].into()),
            from_host: true,
            hairpin: true,
        },
    };
    let domain_forward = DomainForward {
        id: 2,
        domain: "web".into(),
        network: Some(default_network()),
        rule: ForwardRule {
            proto: "udp".parse().expect("a protocol"),
            host_port: "53".parse().expect("ports"),
            guest_port: "53".parse().expect("ports"),
            host_address: None,
            from_host: false,
            hairpin: false,
        },
    };
    let allows = ["nfs", "2049/udp"].map(|o| Allow {
        network: default_network(),
        opening: Opening::parse(o).expect("an opening"),
    });
    let declared = Declared {
        next_id: 3,
        forwards: vec![forward],
        domain_forwards: vec![domain_forward],
        allows: allows.to_vec(),
        ..Declared::default()
    };
    let mut seeds = vec![json(&declared)];
    seeds.extend(strs(&[
        r#"{"version":1,"next_id":2,"forwards":[{"id":1,"network":"n1",
            "guest":"192.0.2.5","proto":"tcp","host_port":"80","guest_port":"80"}]}"#,
    ]));
    seeds
}

pub fn networks_json() -> Vec<Vec<u8>> {
    let mut n = Networks::default();
    for xml in network_xml() {
        if let Ok(net) = parse_network_xml(&String::from_utf8_lossy(&xml), None) {
            if let Ok(Some(record)) = NetworkRecord::of(&net) {
                n.networks.insert(net.name.clone(), record);
            }
        }
    }
    vec![json(&n)]
}

pub fn config() -> Vec<Vec<u8>> {
    strs(&[
        "# virtzone's configuration\nStateDirectory=/var/lib/virtzone\nHookTimeout=20\n\
         LeaseDirectory=/var/lib/libvirt/dnsmasq\n",
        "HookTimeout = 300\n\n  # indented comment\n",
        "",
    ])
}

pub fn dropin() -> Vec<Vec<u8>> {
    strs(&[
        "# /etc/virtzone/virtzone.d/50-web.conf\n[Forward]\nNetwork=labnet\nGuest=192.0.2.100\n\
         Port=tcp/8080:80\n\n[Allow]\nNetwork=labnet\nService=nfs\n\n[Bind]\nBridge=br0\n\
         Zone=internal\nPermanent=yes\n",
        "[Forward]\nDomain=web\nPort=udp/5353\nHostAddress=198.51.100.1\nFromHost=no\nHairpin=yes\n",
        "[Forward]\nNetwork=n\nGuest=192.0.2.5\nPort=tcp/1000-1010\n[Forward]\nNetwork=n\n\
         Guest=192.0.2.6\nPort=tcp/1000\n",
        "[Allow]\nNetwork=labnet\nPort=2049/tcp\n",
        "",
    ])
}

/// The network most seeds name.
fn default_network() -> NetworkName {
    NetworkName::new("default").expect("a valid name")
}
