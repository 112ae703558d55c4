//! The zone model (`virtzone::zone`) against firewalld itself:
//! - every stock zone and policy of firewalld 1.3.3 (and 2.3.1, when unpacked) parses and round-trips
//!   through XML and through the D-Bus settings dict;
//! - `tests/data/zone/invalid/*.xml` are refused with the message in their `.expect` sidecar, and the
//!   real `firewall-offline-cmd --check-config` of 1.3.3 and 2.3.1 gives the verdict recorded there;
//! - `tests/data/zone/valid/*.xml` parse, round-trip, and pass the real offline check;
//! - the shipped zones and policies have libvirt's semantics and pass the real offline check (and a
//!   broken copy fails it);
//! - the settings dicts match what the real daemons send and accept over D-Bus.
//!
//! The lab tests need root (network namespace, private bus) and Debian 13's firewalld unpacked by
//! `scripts/fetch-firewalld.sh`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{debian13_root, Backend, Lab, LabConfig, Release};
use virtzone::zone::shipped::{shipped_policies, shipped_zones};
use virtzone::zone::{
    parse_policy, parse_policy_file, parse_zone, parse_zone_file, shipped_policy, shipped_zone,
    ActionKind, Body, Policy, PolicyTarget, RichRule, RuleAction, Settings, Zone, ZoneError,
    ZoneTarget, POLICY_KEYS, SHIPPED_POLICIES, SHIPPED_ZONES, ZONE_KEYS,
};
use zbus::{Connection, OwnedObjectPath};

fn data(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/zone")
        .join(sub)
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Stock config trees: Debian 12's, and Debian 13's when it is unpacked.
fn stock_trees() -> Vec<PathBuf> {
    let mut trees = vec![PathBuf::from("/usr/lib/firewalld")];
    let d13 = debian13_root();
    if d13.join(".complete").is_file() {
        trees.push(d13.join("usr/lib/firewalld"));
    }
    trees
}

fn zone_round_trips(z: &Zone, ctx: &str) {
    let xml = z.to_xml();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"),
        "{ctx}: {xml}"
    );
    let again = parse_zone(&z.name, &xml).unwrap_or_else(|e| panic!("{ctx}: re-parse: {e}\n{xml}"));
    assert_eq!(&again, z, "{ctx}: XML round trip\n{xml}");
    let settings = z.to_settings();
    let back = Zone::from_settings(&z.name, &settings)
        .unwrap_or_else(|e| panic!("{ctx}: from_settings: {e}"));
    assert_eq!(&back, z, "{ctx}: settings round trip");
}

fn policy_round_trips(p: &Policy, ctx: &str) {
    let xml = p.to_xml();
    let again =
        parse_policy(&p.name, &xml).unwrap_or_else(|e| panic!("{ctx}: re-parse: {e}\n{xml}"));
    assert_eq!(&again, p, "{ctx}: XML round trip\n{xml}");
    let back = Policy::from_settings(&p.name, &p.to_settings())
        .unwrap_or_else(|e| panic!("{ctx}: from_settings: {e}"));
    assert_eq!(&back, p, "{ctx}: settings round trip");
}

#[test]
fn stock_zones_and_policies_parse_and_round_trip() {
    let mut zones = 0;
    let mut policies = 0;
    for tree in stock_trees() {
        for path in xml_files(&tree.join("zones")) {
            let z = parse_zone_file(&path).unwrap_or_else(|e| panic!("{e}"));
            zone_round_trips(&z, &path.display().to_string());
            zones += 1;
        }
        for path in xml_files(&tree.join("policies")) {
            let p = parse_policy_file(&path).unwrap_or_else(|e| panic!("{e}"));
            policy_round_trips(&p, &path.display().to_string());
            policies += 1;
        }
    }
    assert!(
        zones >= 9 && policies >= 1,
        "{zones} zones, {policies} policies"
    );
}

#[test]
fn stock_public_zone_reads_as_firewalld_shows_it() {
    let z = parse_zone_file(Path::new("/usr/lib/firewalld/zones/public.xml")).unwrap();
    assert_eq!(z.name, "public");
    assert_eq!(z.target, ZoneTarget::Default);
    assert_eq!(z.services, ["ssh", "dhcpv6-client"]);
    // firewalld 1.x's public.xml has <forward/>.
    assert!(z.forward);
    let p =
        parse_policy_file(Path::new("/usr/lib/firewalld/policies/allow-host-ipv6.xml")).unwrap();
    assert_eq!(p.priority, -15000);
    assert_eq!(p.ingress_zones, ["ANY"]);
    assert_eq!(p.egress_zones, ["HOST"]);
    assert_eq!(
        p.rules[0].to_string(),
        "rule family=\"ipv6\" icmp-type name=\"neighbour-advertisement\" accept"
    );
}

#[test]
fn valid_documents_parse_and_round_trip() {
    let files = xml_files(&data("valid"));
    assert!(files.len() >= 4);
    for path in files {
        let xml = fs::read_to_string(&path).unwrap();
        let ctx = path.display().to_string();
        if stem(&path).starts_with("zone-") {
            let z = parse_zone("vzvalid", &xml).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            zone_round_trips(&z, &ctx);
        } else {
            let p = parse_policy("vzvalid", &xml).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            policy_round_trips(&p, &ctx);
        }
    }
    // Spot checks that every part of the big document landed where it belongs.
    let z = parse_zone_file(&data("valid/zone-everything.xml")).unwrap();
    assert_eq!(z.target, ZoneTarget::Reject);
    assert_eq!(z.version, "1.0");
    assert_eq!(
        z.description,
        "Every element and attribute firewalld 1.x accepts in a zone, with a description that spans lines."
    );
    assert_eq!(z.ports[1].to_string(), "60000-60010/udp");
    assert!(z.masquerade && z.forward && z.icmp_block_inversion);
    assert_eq!(
        z.forward_ports[1].to_string(),
        "port=80:proto=tcp:toport=8080:toaddr=192.0.2.10"
    );
    assert_eq!(z.sources.len(), 3);
    assert_eq!(z.interfaces, ["vzeth0"]);
    let texts: Vec<String> = z.rules.iter().map(RichRule::to_string).collect();
    // Exactly the strings firewalld 1.3.3 lists for this file (`firewall-offline-cmd --info-zone`).
    for want in [
        r#"rule priority="32767" reject"#,
        r#"rule priority="-5" family="ipv4" source NOT address="192.0.2.0/24" destination address="203.0.113.1" service name="ssh" log prefix="ssh " level="info" limit value="3/m" audit limit value="1/h" accept limit value="10/s""#,
        r#"rule family="ipv6" destination NOT address="2001:db8::/64" port port="443" protocol="tcp" reject type="icmp6-adm-prohibited""#,
        r#"rule protocol value="esp" drop"#,
        r#"rule family="ipv4" icmp-block name="timestamp-request""#,
        r#"rule family="ipv4" icmp-type name="echo-reply" nflog group="5" prefix="nf" queue-size="10" limit value="1/s" accept"#,
        r#"rule family="ipv4" source address="10.0.0.0/8" masquerade"#,
        r#"rule family="ipv4" forward-port port="8443" protocol="tcp" to-port="443" to-addr="192.0.2.20""#,
        r#"rule source-port port="123" protocol="udp" accept"#,
        r#"rule source mac="52:54:00:AA:BB:CC" service name="dns" mark set=0x10/0xff"#,
        r#"rule priority="-100" source ipset="vzset" log"#,
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "missing {want} in {texts:#?}"
        );
    }
    let v2 = parse_zone_file(&data("valid/zone-v2-prio.xml")).unwrap();
    assert_eq!((v2.ingress_priority, v2.egress_priority), (-10, 10));
    let s = v2.to_settings();
    assert!(s.contains_key("ingress_priority") && s.contains_key("egress_priority"));
    assert!(!z.to_settings().contains_key("ingress_priority"));
}

/// One `.expect` sidecar: `key: value` lines.
struct Expect {
    name: Option<String>,
    code: String,
    message: String,
    line: Option<u32>,
    /// Whether firewalld 1.3.3 / 2.3.1 refuse the document (`firewall-offline-cmd --check-config`).
    rejected_by: BTreeMap<&'static str, bool>,
}

fn read_expect(xml_path: &Path) -> Expect {
    let path = xml_path.with_extension("expect");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut fields = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
        fields.insert(k.to_string(), v.to_string());
    }
    let get = |k: &str| {
        fields
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {k}", path.display()))
    };
    let verdict = |k: &str| match get(k).as_str() {
        "rejects" => true,
        "accepts" => false,
        other => panic!("{}: {k}: {other}", path.display()),
    };
    Expect {
        name: fields.get("name").cloned(),
        code: get("code"),
        message: get("message"),
        line: fields.get("line").map(|l| l.parse().unwrap()),
        rejected_by: BTreeMap::from([
            ("1.3.3", verdict("firewalld-1.3.3")),
            ("2.3.1", verdict("firewalld-2.3.1")),
        ]),
    }
}

fn is_zone_doc(path: &Path) -> bool {
    stem(path).starts_with("zone-")
}

fn doc_name(path: &Path, expect: &Expect) -> String {
    expect.name.clone().unwrap_or_else(|| {
        if is_zone_doc(path) {
            "vzbad"
        } else {
            "vzbadpol"
        }
        .to_string()
    })
}

#[test]
fn invalid_documents_are_refused_with_precise_messages() {
    let files = xml_files(&data("invalid"));
    assert!(files.len() >= 20, "only {} invalid documents", files.len());
    for path in files {
        let expect = read_expect(&path);
        let name = doc_name(&path, &expect);
        let xml = fs::read_to_string(&path).unwrap();
        let result: Result<(), ZoneError> = if is_zone_doc(&path) {
            parse_zone(&name, &xml).map(drop)
        } else {
            parse_policy(&name, &xml).map(drop)
        };
        let rel = format!("tests/data/zone/invalid/{}.xml", stem(&path));
        let err = match result {
            Ok(()) => panic!("{rel}: accepted, expected {}", expect.message),
            Err(e) => e.with_file(rel.clone()),
        };
        let shown = err.to_string();
        assert_eq!(err.code().as_str(), expect.code, "{rel}: {shown}");
        assert!(
            shown.contains(&expect.message),
            "{rel}: {shown:?} does not contain {:?}",
            expect.message
        );
        assert!(shown.starts_with(&rel), "{rel}: {shown}");
        if let Some(line) = expect.line {
            assert_eq!(err.line(), Some(line), "{rel}: {shown}");
            assert!(shown.starts_with(&format!("{rel}:{line}: ")), "{shown}");
        }
    }
}

#[test]
fn errors_name_file_element_and_reason() {
    let xml = "<zone>\n  <rule priority=\"40000\">\n    <reject/>\n  </rule>\n</zone>\n";
    let e = parse_zone("libvirt", xml).unwrap_err();
    assert_eq!(
        e.to_string(),
        "zone 'libvirt', line 2: <rule>: priority 40000 is outside -32768..32767"
    );
    assert_eq!(
        e.with_file("zones/libvirt.xml").to_string(),
        "zones/libvirt.xml:2: <rule>: priority 40000 is outside -32768..32767"
    );
    let e = parse_zone_file(&data("invalid/zone-port-too-big.xml")).unwrap_err();
    assert!(e
        .to_string()
        .ends_with("zone-port-too-big.xml:3: <port>: '1-70000' is invalid port range"));
}

// ---- the shipped definitions -------------------------------------------------------------------

fn set(items: &[String]) -> BTreeSet<&str> {
    items.iter().map(String::as_str).collect()
}

const LIBVIRT_SERVICES: [&str; 5] = ["dhcp", "dhcpv6", "dns", "ssh", "tftp"];
const LIBVIRT_PROTOCOLS: [&str; 2] = ["icmp", "ipv6-icmp"];

#[test]
fn shipped_definitions_have_libvirts_meaning() {
    assert_eq!(
        SHIPPED_ZONES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["libvirt", "libvirt-routed"]
    );
    assert_eq!(
        SHIPPED_POLICIES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"]
    );
    // The embedded text is the file on disk.
    for (name, xml) in SHIPPED_ZONES {
        let disk = fs::read_to_string(format!("{}/zones/{name}.xml", env!("CARGO_MANIFEST_DIR")));
        assert_eq!(disk.unwrap(), *xml);
    }

    // Zone libvirt (libvirt's src/network/libvirt.zone): target ACCEPT, the five host services, ICMP
    // for both families, and the catch-all reject at the lowest priority; no <forward/> (libvirt's
    // file has none, so firewalld 1.x loads it with forward off); nothing else.
    let z = shipped_zone("libvirt");
    assert_eq!(z.target, ZoneTarget::Accept);
    assert_eq!(set(&z.services), BTreeSet::from(LIBVIRT_SERVICES));
    assert_eq!(set(&z.protocols), BTreeSet::from(LIBVIRT_PROTOCOLS));
    assert_eq!(
        z.rules,
        [RichRule {
            priority: 32767,
            action: Some(RuleAction::new(ActionKind::Reject { reject_type: None })),
            ..RichRule::default()
        }]
    );
    assert_eq!(z.rules[0].to_string(), "rule priority=\"32767\" reject");
    assert!(!z.forward && !z.masquerade && !z.icmp_block_inversion);
    assert!(z.ports.is_empty() && z.source_ports.is_empty() && z.forward_ports.is_empty());
    assert!(z.icmp_blocks.is_empty() && z.interfaces.is_empty() && z.sources.is_empty());
    assert_eq!((z.ingress_priority, z.egress_priority), (0, 0));
    assert_eq!(z.short, "libvirt");
    assert!(z
        .description
        .contains("firewall-cmd --permanent --zone=libvirt --add-service="));

    // Zone libvirt-routed: no target, nothing in it.
    let r = shipped_zone("libvirt-routed");
    assert_eq!(
        r,
        Zone {
            body: Body {
                short: r.short.clone(),
                description: r.description.clone(),
                ..Body::default()
            },
            ..Zone::new("libvirt-routed")
        }
    );
    assert!(r
        .description
        .contains("firewall-cmd --permanent --policy=libvirt-to-host --add-service="));

    // Policies (libvirt's *.policy files): default priority -1 (libvirt sets none).
    let pin = shipped_policy("libvirt-routed-in");
    assert_eq!(pin.target, PolicyTarget::Accept);
    assert_eq!(
        (pin.ingress_zones.as_slice(), pin.egress_zones.as_slice()),
        (
            &["ANY".to_string()][..],
            &["libvirt-routed".to_string()][..]
        )
    );
    let pout = shipped_policy("libvirt-routed-out");
    assert_eq!(pout.target, PolicyTarget::Accept);
    assert_eq!(
        (pout.ingress_zones.as_slice(), pout.egress_zones.as_slice()),
        (
            &["libvirt-routed".to_string()][..],
            &["ANY".to_string()][..]
        )
    );
    let host = shipped_policy("libvirt-to-host");
    assert_eq!(host.target, PolicyTarget::Reject);
    assert_eq!(
        (host.ingress_zones.as_slice(), host.egress_zones.as_slice()),
        (
            &["libvirt-routed".to_string()][..],
            &["HOST".to_string()][..]
        )
    );
    assert_eq!(set(&host.services), set(&z.services));
    assert_eq!(set(&host.protocols), set(&z.protocols));
    assert!(host
        .description
        .contains("firewall-cmd --permanent --policy=libvirt-to-host --add-service="));
    for p in [&pin, &pout, &host] {
        assert_eq!(p.priority, -1, "{}", p.name);
        assert!(p.rules.is_empty() && p.ports.is_empty() && p.forward_ports.is_empty());
        assert!(p.source_ports.is_empty() && p.icmp_blocks.is_empty() && !p.masquerade);
        assert_eq!(p.short, p.name);
    }
    for p in [&pin, &pout] {
        assert!(p.services.is_empty() && p.protocols.is_empty());
    }

    for z in shipped_zones() {
        zone_round_trips(&z, &z.name);
    }
    for p in shipped_policies() {
        policy_round_trips(&p, &p.name);
    }
}

#[test]
fn diff_reports_admin_changes_to_the_shipped_zone() {
    let shipped = shipped_zone("libvirt");
    let mut admin = shipped.clone();
    admin.services.retain(|s| s != "tftp");
    admin.services.insert(0, "http".into());
    admin.description = "mine".into();
    assert_eq!(
        shipped.diff(&admin),
        ["extra service http", "missing service tftp"]
    );
    assert_eq!(shipped.cosmetic_diff(&admin).len(), 1);
    admin.services.reverse();
    admin.services.retain(|s| s != "http");
    admin.services.push("tftp".into());
    assert!(shipped.same_meaning(&admin));
}

// ---- the real firewalld ------------------------------------------------------------------------

const RELEASES: [(Release, &str); 2] = [(Release::Debian12, "1.3.3"), (Release::Debian13, "2.3.1")];

fn offline_lab(release: Release) -> Lab {
    Lab::start(LabConfig {
        release,
        firewalld: false,
        ..LabConfig::default()
    })
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `firewall-offline-cmd --check-config` on the shipped zones and policies, an ipset some valid
/// documents use, and `extra` files, all in the lab's system-config dir (cleared afterwards).
fn offline_check(lab: &Lab, extra: &[(String, String)]) -> Output {
    let dir = &lab.config_dir;
    for (name, xml) in SHIPPED_ZONES {
        write(dir, &format!("zones/{name}.xml"), xml);
    }
    for (name, xml) in SHIPPED_POLICIES {
        write(dir, &format!("policies/{name}.xml"), xml);
    }
    write(
        dir,
        "ipsets/vzset.xml",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ipset type=\"hash:ip\"/>\n",
    );
    for (rel, text) in extra {
        write(dir, rel, text);
    }
    let out = lab.firewall_offline_cmd(&["--check-config"]);
    for sub in ["zones", "policies", "ipsets"] {
        let _ = fs::remove_dir_all(dir.join(sub));
    }
    out
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn shipped_files_pass_firewall_offline_check_and_a_broken_one_fails() {
    for (release, version) in RELEASES {
        let lab = offline_lab(release);
        let out = offline_check(&lab, &[]);
        assert!(out.status.success(), "{version}: {}", describe(&out));

        // Prove the check looks at our files: a missing attribute is a PARSE_ERROR (28) in both.
        let (_, libvirt) = SHIPPED_ZONES[0];
        let broken = libvirt.replace("<service name=\"ssh\"/>", "<service nam=\"ssh\"/>");
        assert_ne!(broken, libvirt);
        assert!(parse_zone("libvirt", &broken).is_err());
        let out = offline_check(&lab, &[("zones/libvirt.xml".into(), broken)]);
        assert_eq!(out.status.code(), Some(28), "{version}: {}", describe(&out));
        assert!(describe(&out).contains("PARSE_ERROR"), "{}", describe(&out));

        // And a policy: REJECT is a policy target, not a zone one.
        let (_, to_host) = SHIPPED_POLICIES[2];
        let broken = to_host.replace("target=\"REJECT\"", "target=\"%%REJECT%%\"");
        assert!(parse_policy("libvirt-to-host", &broken).is_err());
        let out = offline_check(&lab, &[("policies/libvirt-to-host.xml".into(), broken)]);
        assert!(!out.status.success(), "{version}: {}", describe(&out));
    }
}

#[test]
fn documents_get_the_recorded_verdict_from_real_firewalld() {
    for (release, version) in RELEASES {
        let lab = offline_lab(release);
        for path in xml_files(&data("invalid")) {
            let expect = read_expect(&path);
            let name = doc_name(&path, &expect);
            let tier = if is_zone_doc(&path) {
                "zones"
            } else {
                "policies"
            };
            let xml = fs::read_to_string(&path).unwrap();
            let out = offline_check(&lab, &[(format!("{tier}/{name}.xml"), xml)]);
            assert_eq!(
                !out.status.success(),
                expect.rejected_by[version],
                "{} with firewalld {version}: {}",
                path.display(),
                describe(&out)
            );
        }
        for path in xml_files(&data("valid")) {
            // 2.x-only features (zone priorities, limit burst) are refused by 1.x.
            let v2_only = stem(&path).contains("-v2-");
            let tier = if is_zone_doc(&path) {
                "zones"
            } else {
                "policies"
            };
            let xml = fs::read_to_string(&path).unwrap();
            let out = offline_check(&lab, &[(format!("{tier}/vzvalid.xml"), xml)]);
            let want_ok = !(v2_only && release == Release::Debian12);
            assert_eq!(
                out.status.success(),
                want_ok,
                "{} with firewalld {version}: {}",
                path.display(),
                describe(&out)
            );
        }
    }
}

const FW: &str = "org.fedoraproject.FirewallD1";
const CONFIG_PATH: &str = "/org/fedoraproject/FirewallD1/config";
const CONFIG_IFACE: &str = "org.fedoraproject.FirewallD1.config";

/// The D-Bus type of every settings key, as firewalld's `IMPORT_EXPORT_STRUCTURE` declares it.
fn key_signature(key: &str) -> &'static str {
    match key {
        "services" | "icmp_blocks" | "interfaces" | "sources" | "rules_str" | "protocols"
        | "rich_rules" | "ingress_zones" | "egress_zones" => "as",
        "ports" | "source_ports" => "a(ss)",
        "forward_ports" => "a(ssss)",
        "masquerade" | "icmp_block_inversion" | "forward" | "UNUSED" => "b",
        "priority" | "ingress_priority" | "egress_priority" => "i",
        _ => "s",
    }
}

fn check_signatures(what: &str, settings: &Settings, keys: &[&str]) -> BTreeSet<String> {
    for (k, v) in settings {
        assert!(keys.contains(&k.as_str()), "{what}: unknown key {k}");
        assert_eq!(
            v.value_signature().to_string(),
            key_signature(k),
            "{what}: key {k}"
        );
    }
    settings.keys().cloned().collect()
}

struct Fw {
    conn: Connection,
}

impl Fw {
    async fn call<B>(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .call_method(Some(FW), path, Some(iface), method, body)
            .await
    }

    async fn object(&self, method: &str, name: &str) -> OwnedObjectPath {
        let reply = self.call(CONFIG_PATH, CONFIG_IFACE, method, &(name,)).await;
        reply
            .and_then(|m| m.body().deserialize::<OwnedObjectPath>())
            .unwrap_or_else(|e| panic!("{method}({name}): {e}"))
    }

    async fn zone_settings(&self, name: &str) -> Settings {
        let path = self.object("getZoneByName", name).await;
        let reply = self
            .call(
                path.as_str(),
                "org.fedoraproject.FirewallD1.config.zone",
                "getSettings2",
                &(),
            )
            .await;
        reply
            .and_then(|m| m.body().deserialize::<Settings>())
            .unwrap_or_else(|e| panic!("getSettings2({name}): {e}"))
    }

    async fn policy_settings(&self, name: &str) -> Settings {
        let path = self.object("getPolicyByName", name).await;
        let reply = self
            .call(
                path.as_str(),
                "org.fedoraproject.FirewallD1.config.policy",
                "getSettings",
                &(),
            )
            .await;
        reply
            .and_then(|m| m.body().deserialize::<Settings>())
            .unwrap_or_else(|e| panic!("getSettings({name}): {e}"))
    }

    async fn names(&self, method: &str) -> Vec<String> {
        let reply = self.call(CONFIG_PATH, CONFIG_IFACE, method, &()).await;
        reply
            .and_then(|m| m.body().deserialize::<Vec<String>>())
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }
}

async fn settings_contract(lab: &Lab, version: &str) {
    let conn = zbus::connection::Builder::address(lab.bus_address.as_str())
        .build()
        .await
        .unwrap_or_else(|e| panic!("connect to the lab bus: {e}"));
    let fw = Fw { conn };
    // Keys the daemon actually sent, to prove the type table was checked for each of them.
    let mut zone_keys_seen = BTreeSet::new();
    let mut policy_keys_seen = BTreeSet::new();

    // Every stock zone/policy the daemon loaded reads back as its file says.
    for name in fw.names("getZoneNames").await {
        let settings = fw.zone_settings(&name).await;
        zone_keys_seen.extend(check_signatures(
            &format!("{version} zone {name}"),
            &settings,
            ZONE_KEYS,
        ));
        let from_daemon =
            Zone::from_settings(&name, &settings).unwrap_or_else(|e| panic!("{version}: {e}"));
        let file = lab.default_config_dir.join(format!("zones/{name}.xml"));
        let from_file = parse_zone_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            from_file.same_meaning(&from_daemon),
            "{version} {name}: {:?}",
            from_file.diff(&from_daemon)
        );
        assert_eq!(
            from_file.cosmetic_diff(&from_daemon),
            Vec::<String>::new(),
            "{version} {name}"
        );
    }
    for name in fw.names("getPolicyNames").await {
        let settings = fw.policy_settings(&name).await;
        policy_keys_seen.extend(check_signatures(
            &format!("{version} policy {name}"),
            &settings,
            POLICY_KEYS,
        ));
        let from_daemon =
            Policy::from_settings(&name, &settings).unwrap_or_else(|e| panic!("{version}: {e}"));
        let file = lab.default_config_dir.join(format!("policies/{name}.xml"));
        let from_file = parse_policy_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            from_file.same_meaning(&from_daemon),
            "{version} {name}: {:?}",
            from_file.diff(&from_daemon)
        );
    }

    // The shipped zones and policies go in with to_settings() and come back unchanged, and the
    // files firewalld writes for them parse to the same.
    for z in shipped_zones() {
        let settings = z.to_settings();
        check_signatures("to_settings", &settings, ZONE_KEYS);
        fw.call(
            CONFIG_PATH,
            CONFIG_IFACE,
            "addZone2",
            &(z.name.as_str(), &settings),
        )
        .await
        .unwrap_or_else(|e| panic!("{version} addZone2({}): {e}", z.name));
        let back = Zone::from_settings(&z.name, &fw.zone_settings(&z.name).await)
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!(
            z.same_meaning(&back),
            "{version} {}: {:?}",
            z.name,
            z.diff(&back)
        );
        assert_eq!(z.cosmetic_diff(&back), Vec::<String>::new());
        let written = parse_zone_file(&lab.config_dir.join(format!("zones/{}.xml", z.name)))
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!(z.same_meaning(&written) && z.cosmetic_diff(&written).is_empty());
    }
    for p in shipped_policies() {
        let settings = p.to_settings();
        check_signatures("to_settings", &settings, POLICY_KEYS);
        fw.call(
            CONFIG_PATH,
            CONFIG_IFACE,
            "addPolicy",
            &(p.name.as_str(), &settings),
        )
        .await
        .unwrap_or_else(|e| panic!("{version} addPolicy({}): {e}", p.name));
        let back = Policy::from_settings(&p.name, &fw.policy_settings(&p.name).await)
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!(
            p.same_meaning(&back),
            "{version} {}: {:?}",
            p.name,
            p.diff(&back)
        );
        assert_eq!(p.cosmetic_diff(&back), Vec::<String>::new());
        let written = parse_policy_file(&lab.config_dir.join(format!("policies/{}.xml", p.name)))
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert!(p.same_meaning(&written));
    }

    // An admin change made over D-Bus (update2 is partial: only "services" changes) shows in diff.
    let shipped = shipped_zone("libvirt");
    let path = fw.object("getZoneByName", "libvirt").await;
    let mut services = shipped.services.clone();
    services.push("http".into());
    let mut partial = Settings::new();
    partial.insert(
        "services".into(),
        zbus::OwnedVariant::try_from(zbus::Variant::from(services)).unwrap(),
    );
    fw.call(
        path.as_str(),
        "org.fedoraproject.FirewallD1.config.zone",
        "update2",
        &(&partial,),
    )
    .await
    .unwrap_or_else(|e| panic!("{version} update2: {e}"));
    let changed = Zone::from_settings("libvirt", &fw.zone_settings("libvirt").await).unwrap();
    assert_eq!(shipped.diff(&changed), ["extra service http"]);

    // Everything the model can express goes through the daemon (the valid corpus, minus what needs
    // an ipset the lab does not define, and 2.x-only parts on 1.x).
    for (n, path) in xml_files(&data("valid")).into_iter().enumerate() {
        let xml = fs::read_to_string(&path).unwrap();
        let v2_only = stem(&path).contains("-v2-");
        if is_zone_doc(&path) {
            let mut z = parse_zone("vzvalid", &xml).unwrap();
            z.rules
                .retain(|r| r.source.as_ref().is_none_or(|s| s.ipset.is_none()));
            z.name = format!("vzvalid{n}");
            let added = fw
                .call(
                    CONFIG_PATH,
                    CONFIG_IFACE,
                    "addZone2",
                    &(z.name.as_str(), &z.to_settings()),
                )
                .await;
            if v2_only && version == "1.3.3" {
                // 1.3.3 refuses both 2.x additions; which one it names depends on key order.
                let e = added.expect_err("1.3.3 must refuse 2.x settings");
                assert!(e.to_string().contains("INVALID_"), "{e}");
                let mut only_prio = z.clone();
                only_prio.rules.clear();
                let e = fw
                    .call(
                        CONFIG_PATH,
                        CONFIG_IFACE,
                        "addZone2",
                        &(z.name.as_str(), &only_prio.to_settings()),
                    )
                    .await
                    .expect_err("1.3.3 must refuse ingress_priority");
                assert!(
                    e.to_string()
                        .contains("INVALID_OPTION: option 'ingress_priority' is not valid")
                        || e.to_string()
                            .contains("INVALID_OPTION: option 'egress_priority' is not valid"),
                    "{e}"
                );
                let mut only_burst = z.clone();
                (only_burst.ingress_priority, only_burst.egress_priority) = (0, 0);
                let e = fw
                    .call(
                        CONFIG_PATH,
                        CONFIG_IFACE,
                        "addZone2",
                        &(z.name.as_str(), &only_burst.to_settings()),
                    )
                    .await
                    .expect_err("1.3.3 must refuse a limit burst");
                assert!(
                    e.to_string()
                        .contains("INVALID_RULE: bad attribute 'burst'"),
                    "{e}"
                );
                continue;
            }
            added.unwrap_or_else(|e| panic!("{version} addZone2 {}: {e}", path.display()));
            let settings = fw.zone_settings(&z.name).await;
            zone_keys_seen.extend(check_signatures(version, &settings, ZONE_KEYS));
            let back = Zone::from_settings(&z.name, &settings).unwrap();
            assert!(
                z.same_meaning(&back),
                "{version} {}: {:?}",
                path.display(),
                z.diff(&back)
            );
        } else {
            let mut p = parse_policy("vzvalid", &xml).unwrap();
            p.name = format!("vzvalidpol{n}");
            fw.call(
                CONFIG_PATH,
                CONFIG_IFACE,
                "addPolicy",
                &(p.name.as_str(), &p.to_settings()),
            )
            .await
            .unwrap_or_else(|e| panic!("{version} addPolicy {}: {e}", path.display()));
            let settings = fw.policy_settings(&p.name).await;
            policy_keys_seen.extend(check_signatures(version, &settings, POLICY_KEYS));
            let back = Policy::from_settings(&p.name, &settings).unwrap();
            assert!(
                p.same_meaning(&back),
                "{version} {}: {:?}",
                path.display(),
                p.diff(&back)
            );
        }
    }

    // Every key firewalld knows was seen with the expected type, except the one it never sends
    // (UNUSED) and, on 1.x, the 2.0 priorities.
    let want_zone: BTreeSet<String> = ZONE_KEYS
        .iter()
        .filter(|k| **k != "UNUSED" && (version != "1.3.3" || !k.ends_with("_priority")))
        .map(|k| k.to_string())
        .collect();
    assert_eq!(zone_keys_seen, want_zone, "{version}");
    let want_policy: BTreeSet<String> = POLICY_KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(policy_keys_seen, want_policy, "{version}");
    eprintln!("firewalld {version}: zone keys seen {zone_keys_seen:?}");
    eprintln!("firewalld {version}: policy keys seen {policy_keys_seen:?}");
}

#[test]
fn settings_dicts_match_the_real_daemon() {
    for (release, version) in RELEASES {
        let lab = Lab::start(LabConfig::new(release, Backend::Nftables));
        lab.allow_firewalld_errors(
            "the contract test sends settings firewalld must refuse (unknown keys, bad rules) to learn its limits",
        );
        assert_eq!(lab.version(), version);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(settings_contract(&lab, version));
    }
}
