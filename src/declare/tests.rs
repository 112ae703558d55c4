//! The parser and systemd's merge rules, without root or files.

use super::*;

fn names(v: &[(&str, Entry)]) -> Vec<(String, Entry)> {
    v.iter().map(|(n, e)| (n.to_string(), e.clone())).collect()
}

#[test]
fn etc_overrides_run_overrides_vendor_a_mask_hides_and_names_sort() {
    let vendor = names(&[
        ("50-web.conf", Entry::File),
        ("10-db.conf", Entry::File),
        ("90-x.conf", Entry::File),
    ]);
    let run = names(&[("50-web.conf", Entry::File), ("90-x.conf", Entry::Mask)]);
    let etc = names(&[("50-web.conf", Entry::File), ("20-mail.conf", Entry::File)]);
    assert_eq!(
        merge(&[vendor, run, etc]),
        vec![
            (0, "10-db.conf".into()),
            (2, "20-mail.conf".into()),
            (2, "50-web.conf".into())
        ]
    );
    // A mask in /run is itself overridden by a file of that name in /etc.
    let run = names(&[("a.conf", Entry::Mask)]);
    let etc = names(&[("a.conf", Entry::File)]);
    assert_eq!(merge(&[vec![], run, etc]), vec![(2, "a.conf".into())]);
}

const GOOD: &str = "# web\n[Forward]\nNetwork=labnet\nGuest=192.0.2.100\nPort=tcp/8080:80\n\n\
[Forward]\nDomain=web1\nPort=udp/53\nHairpin=yes\n[Allow]\nNetwork=labnet\nService=nfs\n\
[Allow]\nNetwork=labnet\nPort=2049/tcp\n[Bind]\nBridge=virbr9\nZone=libvirt\nPermanent=yes\n";

#[test]
fn every_section_parses_to_what_the_flags_would_give() {
    let d = parse("/etc/virtzone/virtzone.d/a.conf", GOOD).unwrap();
    assert_eq!(d.len(), 5);
    assert_eq!(d[0].origin.to_string(), "/etc/virtzone/virtzone.d/a.conf:2");
    let Object::Forward(Request::Guest(g)) = &d[0].object else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            g.network.as_str(),
            g.guest.to_string(),
            g.rule.host_port.to_string(),
            g.rule.guest_port.to_string()
        ),
        ("labnet", "192.0.2.100".into(), "8080".into(), "80".into())
    );
    let Object::Forward(Request::Domain(w)) = &d[1].object else {
        panic!()
    };
    assert!(w.rule.hairpin && w.domain == "web1" && w.network.is_none());
    assert!(
        matches!(&d[2].object, Object::Allow(Allow { opening: Opening::Service(s), .. }) if s == "nfs")
    );
    assert!(matches!(
        &d[3].object,
        Object::Allow(Allow {
            opening: Opening::Port { .. },
            ..
        })
    ));
    let Object::Bind(b) = &d[4].object else {
        panic!()
    };
    assert!(b.permanent && b.bridge.as_str() == "virbr9");
}

fn error(text: &str) -> String {
    parse("f.conf", text).unwrap_err().to_string()
}

#[test]
fn bad_input_names_file_and_line_with_the_clis_sentence() {
    assert_eq!(
        error("[Firewall]\n"),
        "f.conf:1: unknown section [Firewall]; the sections are [Forward], [Allow] and [Bind]"
    );
    assert!(
        error("\n[Forward]\nNetwork=n\nGust=1.2.3.4\n").starts_with("f.conf:4: unknown key Gust=")
    );
    assert!(error("Network=n\n").starts_with("f.conf:1: a key before"));
    // The CLI's own sentences, on the key's line.
    assert_eq!(
        error("[Forward]\nNetwork=n\nGuest=192.0.2.300\nPort=tcp/80\n"),
        "f.conf:3: guest address \"192.0.2.300\" is not an IPv4 or IPv6 address"
    );
    let cli = crate::forward::request::request(
        &ForwardSpec {
            network: Some("n".into()),
            guest: Some("192.0.2.3".into()),
            domain: None,
            host_address: None,
            from_host: false,
            hairpin: false,
            route_localnet: false,
        },
        "tcp/99999",
    )
    .unwrap_err();
    assert_eq!(
        error("[Forward]\nNetwork=n\nGuest=192.0.2.3\nPort=tcp/99999\n"),
        format!("f.conf:4: {cli}")
    );
    assert!(error("[Forward]\nNetwork=n\nGuest=192.0.2.3\n")
        .starts_with("f.conf:1: [Forward] needs Port="));
    assert!(
        error("[Forward]\nDomain=d\nGuest=192.0.2.3\nPort=tcp/1\n").contains("exclude each other")
    );
    assert_eq!(
        error("[Forward]\nNetwork=n\nGuest=192.0.2.3\nPort=tcp/1\nHairpin=maybe\n"),
        "f.conf:5: Hairpin=maybe is not yes or no"
    );
    assert!(error("[Allow]\nNetwork=n\nService=nfs\nPort=1/tcp\n").contains("one of Service="));
    assert!(error("[Allow]\nNetwork=bad/name\nService=nfs\n").starts_with("f.conf:2:"));
    assert!(error("[Allow]\nNetwork=n\nService=2049/tcp\n")
        .starts_with("f.conf:3: Service=2049/tcp is not a service name"));
    assert!(error("[Bind]\nBridge=-x\n").starts_with("f.conf:2:"));
    assert!(error("[Forward]\nNetwork=n\nNetwork=m\n").contains("given twice"));
}

#[test]
fn two_files_forwarding_one_port_differently_is_an_error_naming_both() {
    let a = (
        "/usr/lib/virtzone/virtzone.d/a.conf".into(),
        "[Forward]\nNetwork=n\nGuest=192.0.2.3\nPort=tcp/80\n".to_string(),
    );
    let b = (
        "/etc/virtzone/virtzone.d/b.conf".into(),
        "\n[Forward]\nNetwork=n\nGuest=192.0.2.4\nPort=tcp/80\n".to_string(),
    );
    let same = ("/etc/virtzone/virtzone.d/c.conf".into(), a.1.clone());
    assert_eq!(declarations(&[a.clone(), same]).unwrap().len(), 1);
    let e = declarations(&[a, b]).unwrap_err();
    assert_eq!(e[0].to_string(), "/etc/virtzone/virtzone.d/b.conf:2: forwards the same host port differently than /usr/lib/virtzone/virtzone.d/a.conf:1");
}

/// Found by the `dropin` fuzz target: a value holding an escape sequence was quoted raw in the
/// error, so a drop-in file could write to the admin's terminal and the journal.
#[test]
fn errors_show_control_characters_escaped() {
    let e = parse("f.conf", "[Forward]\nHostAddress\u{1b}[31m=198.51.100.1\n").unwrap_err();
    let shown = e.to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(
        shown.starts_with("f.conf:2: unknown key HostAddress\\u{1b}[31m"),
        "{shown}"
    );
}
