//! Issue #22: desired state in drop-in files and `virtzone apply`, against real firewalld and
//! libvirtd with real packets. The three drop-in directories are the real paths
//! (`/usr/lib/virtzone/virtzone.d`, `/run/virtzone/virtzone.d`, `/etc/virtzone/virtzone.d`), each a
//! tmpfs in a private mount namespace ([`Dropins`]): the host's /etc, /usr and /run are never
//! written (their parents are overlays with a tmpfs upper layer in that namespace only).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

use common::libvirt::LibvirtLab;
use common::{text, Backend, Release};
use serde_json::Value;

use crate::forwards::{
    connect, errors_since, lab, log_len, nat_network, proven, serve, wait, HEAL, UP_HOST,
};

const USR: &str = "/usr/lib/virtzone/virtzone.d";
const RUN: &str = "/run/virtzone/virtzone.d";
const ETC: &str = "/etc/virtzone/virtzone.d";

/// Builds the private mount namespace (inside the lab's network namespace) and keeps it alive.
const SETUP: &str = r#"set -e
t="$1"
mount -t tmpfs -o mode=0700 tmpfs "$t"
for d in /etc /usr/lib /run; do
  n="$t/$(echo "$d" | tr / _)"; mkdir -p "$n/up" "$n/work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$n/up,workdir=$n/work" "$d"
done
for d in /usr/lib/virtzone/virtzone.d /run/virtzone/virtzone.d /etc/virtzone/virtzone.d; do
  mkdir -p "$d"; mount -t tmpfs -o mode=0755 tmpfs "$d"
done
echo ready
exec sleep 100000
"#;

/// A private mount namespace where the three drop-in directories are empty tmpfs mounts; killed
/// (and with it every mount) on drop.
pub(crate) struct Dropins(Child);

impl Dropins {
    pub(crate) fn new(vlab: &LibvirtLab) -> Dropins {
        let mounts = vlab.dir().join("dropin-mounts");
        std::fs::create_dir_all(&mounts).unwrap();
        let mut child = vlab
            .command("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                SETUP,
                "sh",
            ])
            .arg(&mounts)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the mount namespace");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the private mount namespace failed");
        Dropins(child)
    }

    /// `cmd` (a lab command: `ip netns exec NS PROGRAM ARGS` with its environment) run inside the
    /// namespace instead.
    pub(crate) fn enter(&self, cmd: &Command) -> Command {
        let mut args = cmd.get_args().skip(3);
        let mut inner = Command::new("nsenter");
        inner
            .args(["-t", &self.0.id().to_string(), "-m", "-n", "--"])
            .arg(args.next().expect("a lab command"))
            .args(args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inner.env(k, v),
                None => inner.env_remove(k),
            };
        }
        inner
    }

    /// `virtzone ARGS` in the namespace.
    pub(crate) fn vz(&self, vlab: &LibvirtLab, args: &[&str]) -> Output {
        self.enter(&vlab.virtzone())
            .args(args)
            .output()
            .expect("run virtzone")
    }

    /// A shell command in the namespace.
    pub(crate) fn sh(&self, vlab: &LibvirtLab, script: &str, stdin: &str) {
        let mut child = self
            .enter(&vlab.command("sh"))
            .args(["-ec", script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{script}");
    }

    /// Writes drop-in `path`.
    pub(crate) fn write(&self, vlab: &LibvirtLab, path: &str, contents: &str) {
        self.sh(vlab, &format!("cat > '{path}'"), contents);
    }

    /// Masks `path` (a symlink to /dev/null).
    pub(crate) fn mask(&self, vlab: &LibvirtLab, path: &str) {
        self.sh(vlab, &format!("ln -sf /dev/null '{path}'"), "");
    }

    /// Removes drop-in `path`.
    pub(crate) fn remove(&self, vlab: &LibvirtLab, path: &str) {
        self.sh(vlab, &format!("rm -f '{path}'"), "");
    }
}

impl Drop for Dropins {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn forward_conf(network: &str, guest: &str, port: &str) -> String {
    format!("# a web server\n[Forward]\nNetwork={network}\nGuest={guest}\nPort={port}\n")
}

/// `virtzone ARGS` in `d`'s namespace; asserts the exit status and returns stdout.
fn expect(d: &Dropins, vlab: &LibvirtLab, args: &[&str], code: i32) -> String {
    let out = d.vz(vlab, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "virtzone {args:?}\nstdout: {}\nstderr: {}{}",
        text(&out.stdout),
        text(&out.stderr),
        vlab.diagnostics()
    );
    text(&out.stdout)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// What firewalld holds of forwards (runtime and permanent) and virtzone's record: "nothing
/// changed" compares these.
fn traces(vlab: &LibvirtLab) -> (String, String, String) {
    (
        vlab.firewall_cmd_ok(&["--zone=public", "--list-forward-ports"]),
        vlab.firewall_cmd_ok(&["--permanent", "--zone=public", "--list-forward-ports"]),
        std::fs::read_to_string(vlab.state_dir().join("forwards/forwards.json"))
            .unwrap_or_default(),
    )
}

/// The whole contract on firewalld 1.3.3 (nftables) and libvirt 9: exit statuses, --diff, --json,
/// the vendor file, its /etc override and a /dev/null mask, FILE:LINE errors with nothing applied,
/// ownership refusals and `source`, removal by removing the declaration, a packet each time.
#[test]
fn drop_ins_converge_with_the_contracts_exit_codes_and_ownership() {
    let vlab = lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&nat_network("apl1", "virbr81", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start apl1");
    let guest = vlab.plug_guest("virbr81");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let ip = lease.ip.clone();
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let up = vlab.plug_upstream("vzup81", "198.51.100.1/24", "198.51.100.2/24");
    let d = Dropins::new(&vlab);
    let errors_from = log_len(&vlab);
    let open = |port: u16| {
        proven(&vlab, "virbr81", || {
            connect(&up, UP_HOST, port).starts_with("ok guest-one")
        })
    };
    let closed = |port: u16| !connect(&up, UP_HOST, port).starts_with("ok");

    // Nothing declared: in sync.
    assert_eq!(
        expect(&d, &vlab, &["apply", "--check"], 0).trim(),
        "in sync"
    );

    // A vendor file: pending (3) with --check, and nothing touched.
    d.write(
        &vlab,
        &format!("{USR}/50-web.conf"),
        &forward_conf("apl1", &ip, "tcp/8080:80"),
    );
    let before = traces(&vlab);
    let diff = expect(&d, &vlab, &["apply", "--check", "--diff"], 3);
    assert_eq!(diff.trim(), format!("+ forward tcp/8080 → apl1 {ip}:80"));
    let report = json(&expect(&d, &vlab, &["apply", "--check", "--json"], 3));
    assert_eq!(report["changed"], true);
    assert_eq!(traces(&vlab), before);
    assert!(closed(8080));

    // Applied: 0, changed, the port opens; then in sync.
    let report = json(&expect(&d, &vlab, &["apply", "--json"], 0));
    assert_eq!(report["changed"], true, "{report}");
    assert_eq!(
        report["changes"][0],
        format!("+ forward tcp/8080 → apl1 {ip}:80")
    );
    assert_eq!(report["errors"], serde_json::json!([]));
    wait("the declared forward working", HEAL, || open(8080));
    assert_eq!(
        expect(&d, &vlab, &["apply", "--check"], 0).trim(),
        "in sync"
    );
    assert_eq!(
        json(&expect(&d, &vlab, &["apply", "--json"], 0))["changed"],
        false
    );

    // Drift: firewalld loses the forward behind virtzone's back; --check sees it, apply heals it.
    vlab.firewall_cmd_ok(&["--reload"]);
    let fwd = vlab.firewall_cmd_ok(&["--zone=public", "--list-forward-ports"]);
    if !fwd.trim().is_empty() {
        vlab.firewall_cmd_ok(&[
            "--zone=public",
            &format!("--remove-forward-port={}", fwd.trim()),
        ]);
        let diff = expect(&d, &vlab, &["apply", "--check", "--diff"], 3);
        assert!(diff.starts_with("~ firewalld lacks"), "{diff}");
        expect(&d, &vlab, &["apply"], 0);
        wait("the forward healed", HEAL, || open(8080));
    }

    // /etc overrides the vendor file of the same name: 8081 replaces 8080.
    d.write(
        &vlab,
        &format!("{ETC}/50-web.conf"),
        &forward_conf("apl1", &ip, "tcp/8081:80"),
    );
    let diff = expect(&d, &vlab, &["apply", "--diff"], 0);
    assert_eq!(
        diff.lines().collect::<Vec<_>>(),
        [
            format!("+ forward tcp/8081 → apl1 {ip}:80"),
            format!("- forward tcp/8080 → apl1 {ip}:80")
        ]
    );
    wait("the /etc forward working", HEAL, || open(8081));
    assert!(closed(8080));

    // A /dev/null symlink in /run masks a vendor file.
    d.write(
        &vlab,
        &format!("{USR}/60-extra.conf"),
        &forward_conf("apl1", &ip, "tcp/8082:80"),
    );
    d.mask(&vlab, &format!("{RUN}/60-extra.conf"));
    assert_eq!(
        expect(&d, &vlab, &["apply", "--check"], 0).trim(),
        "in sync"
    );

    // A bad file: exit 2, FILE:LINE, and nothing of any file applied (the good section before it
    // neither).
    let before = traces(&vlab);
    d.write(
        &vlab,
        &format!("{ETC}/70-bad.conf"),
        &format!(
            "{}[Forward]\nNetwork=apl1\nGest={ip}\nPort=tcp/8084:80\n",
            forward_conf("apl1", &ip, "tcp/8083:80")
        ),
    );
    let out = d.vz(&vlab, &["apply"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{ETC}/70-bad.conf:8: unknown key Gest=")),
        "{err}"
    );
    let report = json(&expect(&d, &vlab, &["apply", "--json"], 2));
    assert!(report["errors"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("{ETC}/70-bad.conf:8:")));
    // A value the CLI refuses: the CLI's sentence, on the key's line.
    d.write(
        &vlab,
        &format!("{ETC}/70-bad.conf"),
        &forward_conf("apl1", "198.51.100.9", "tcp/8083:80"),
    );
    let out = d.vz(&vlab, &["apply"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{ETC}/70-bad.conf:4: guest address 198.51.100.9 is not a guest address of network apl1")),
        "{err}"
    );
    // Two files forwarding one port differently.
    d.write(
        &vlab,
        &format!("{ETC}/70-bad.conf"),
        &forward_conf("apl1", "192.0.2.99", "tcp/8081:80"),
    );
    let err = text(&d.vz(&vlab, &["apply"]).stderr);
    assert!(
        err.contains(&format!(
            "{ETC}/70-bad.conf:2: forwards the same host port differently than {ETC}/50-web.conf:2"
        )),
        "{err}"
    );
    assert_eq!(traces(&vlab), before);
    assert!(closed(8083));
    d.remove(&vlab, &format!("{ETC}/70-bad.conf"));

    // Ownership: the declared forward and allow name their file; the CLI's say cli; removing a
    // declared one with the CLI is refused, naming the file.
    d.write(
        &vlab,
        &format!("{ETC}/80-nfs.conf"),
        "[Allow]\nNetwork=apl1\nPort=2049/tcp\n",
    );
    let diff = expect(&d, &vlab, &["apply", "--diff"], 0);
    assert_eq!(diff.trim(), "+ allow 2049/tcp → apl1");
    expect(
        &d,
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "apl1",
            "--guest",
            &ip,
            "tcp/9090:80",
        ],
        0,
    );
    let list = json(&expect(&d, &vlab, &["forward", "list", "--json"], 0));
    let rows = list.as_array().unwrap();
    let declared = rows
        .iter()
        .find(|r| r["host_port"] == "8081")
        .expect("8081 listed");
    assert_eq!(declared["source"], format!("{ETC}/50-web.conf"));
    let cli = rows
        .iter()
        .find(|r| r["host_port"] == "9090")
        .expect("9090 listed");
    assert_eq!(cli["source"], "cli");
    let id = declared["id"].to_string();
    let out = d.vz(&vlab, &["forward", "remove", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("declared in {ETC}/50-web.conf")),
        "{}",
        text(&out.stderr)
    );
    let allows = json(&expect(&d, &vlab, &["allow", "list", "--json"], 0));
    assert_eq!(allows[0]["source"], format!("{ETC}/80-nfs.conf"));
    let out = d.vz(&vlab, &["allow", "remove", "--network", "apl1", "2049/tcp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("{ETC}/80-nfs.conf")));
    wait("the forward still working", HEAL, || open(8081));
    // apply leaves the CLI's forward alone.
    assert_eq!(
        expect(&d, &vlab, &["apply", "--check"], 0).trim(),
        "in sync"
    );

    // Removing the declarations removes the objects at the next apply; the vendor file is back in
    // force once /etc's override goes.
    d.remove(&vlab, &format!("{ETC}/50-web.conf"));
    d.remove(&vlab, &format!("{ETC}/80-nfs.conf"));
    let diff = expect(&d, &vlab, &["apply", "--diff"], 0);
    let mut lines: Vec<&str> = diff.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("+ forward tcp/8080 → apl1 {ip}:80").as_str(),
            "- allow 2049/tcp → apl1",
            format!("- forward tcp/8081 → apl1 {ip}:80").as_str(),
        ]
    );
    wait("the vendor forward back", HEAL, || open(8080));
    assert!(closed(8081));
    d.remove(&vlab, &format!("{USR}/50-web.conf"));
    expect(&d, &vlab, &["apply"], 0);
    wait("the port closed", HEAL, || closed(8080));
    wait("the CLI's forward kept", HEAL, || open(9090));
    assert_eq!(errors_since(&vlab, errors_from), Vec::<String>::new());
}
