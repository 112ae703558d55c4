//! One rule for libvirt network names (issue #19, `names::NetworkName`): every boundary — the
//! command line, the hook's hookData, drop-in files, the state files — takes the names libvirt
//! users have (spaces, non-ASCII letters) and refuses, in one sentence with exit status 2 and
//! before anything is recorded, the ones unsafe in file names, nft comments and log lines. The
//! hook stands aside for a network libvirt runs whose name virtzone cannot carry. Offline: names
//! are judged before firewalld is asked, so no daemon is needed.

use std::os::unix::fs::DirBuilderExt;

use crate::common::offline::Offline;
use crate::common::text;

/// hookData of a NAT network `name` on `bridge` (`name` must need no XML escaping).
fn hook_data(name: &str, bridge: &str) -> String {
    format!(
        "<hookData><network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}'/>\
         <ip address='192.0.2.1' netmask='255.255.255.0'/></network></hookData>"
    )
}

/// The network names recorded in `networks.json`.
fn recorded(vz: &Offline) -> Vec<String> {
    let Ok(bytes) = std::fs::read(vz.store().join("networks.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("networks.json is JSON");
    v["networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Names libvirt accepts that the old rule of `forward add` and `allow add` (ASCII letters,
/// digits and `-_.+`) refused: the hook records them, and the command line accepts them.
#[test]
fn names_libvirt_users_have_pass_every_boundary() {
    let vz = Offline::new("");
    for (name, bridge) in [("My Lab", "virbr7"), ("r\u{e9}seau", "virbr8")] {
        let out = vz.hook_network(&[name, "started", "begin", "-"], &hook_data(name, bridge));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(recorded(&vz).iter().any(|n| n == name), "{name}");
        for args in [
            vec![
                "forward",
                "add",
                "--network",
                name,
                "--guest",
                "192.0.2.5",
                "tcp/8080",
            ],
            vec!["allow", "add", "--network", name, "nfs"],
        ] {
            let out = vz.command(&args).output().unwrap();
            let err = text(&out.stderr);
            assert_ne!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(!err.contains("network name"), "{args:?}: {err}");
        }
    }
}

/// Names no libvirt user has and that would be unsafe in a file name (`/`, `..`), an nft comment
/// (`"`), a log line (control and direction characters) or a command line (leading `-`).
const UNSAFE: [&str; 8] = [
    "a/b",
    "..",
    "say \"hi\"",
    "a\nb",
    "\u{202e}lab",
    "-x",
    " lab",
    "",
];

#[test]
fn unsafe_network_names_are_refused_in_one_sentence() {
    let vz = Offline::new("");
    for bad in UNSAFE {
        // `--network=VALUE`: a value starting with `-` is the name, not an option.
        let network = format!("--network={bad}");
        for args in [
            vec![
                "forward",
                "add",
                &network,
                "--guest",
                "192.0.2.5",
                "tcp/8080",
            ],
            vec!["forward", "add", "--domain", "web", &network, "tcp/8080"],
            vec!["allow", "add", &network, "nfs"],
            vec!["allow", "remove", &network, "nfs"],
            vec!["doctor", &network],
        ] {
            let out = vz.command(&args).output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.starts_with("virtzone: ") && err.contains("invalid network name"),
                "{args:?}: {err}"
            );
        }
        // A drop-in file naming it (where a line can hold it): refused with the file and line.
        if bad.is_empty() || bad.trim() != bad || bad.contains('\n') {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let dropins = dir.path().join("virtzone.d");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dropins)
            .unwrap();
        std::fs::write(
            dropins.join("a.conf"),
            format!("[Allow]\nNetwork={bad}\nService=nfs\n"),
        )
        .unwrap();
        let out = vz
            .command(&["apply", "--check"])
            .env("VIRTZONE_DROPIN_DIRS", &dropins)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains("a.conf:2"), "{bad:?}: {err}");
    }
    assert!(!vz.state().exists(), "bad input changed nothing");
}

/// A network libvirt runs under a name virtzone cannot carry: the hook stands aside (exit 0, a
/// warning, nothing recorded) instead of failing the network's start, as for a forward mode it
/// does not know.
#[test]
fn the_hook_stands_aside_for_names_it_cannot_carry() {
    let vz = Offline::new("");
    for (name, bridge) in [
        ("say \"hi\"", "virbr7"),
        ("-x", "virbr8"),
        ("\u{202e}lab", "virbr9"),
    ] {
        let data = hook_data(&name.replace('"', "&quot;"), bridge);
        for (op, subop) in [("start", "begin"), ("started", "begin"), ("stopped", "end")] {
            let out = vz.hook_network(&[name, op, subop, "-"], &data);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{name:?} {op}: {err}");
            assert!(
                err.contains("invalid network name") && err.contains("leaving network"),
                "{name:?} {op}: {err}"
            );
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
    assert!(recorded(&vz).is_empty(), "{:?}", recorded(&vz));
}
