//! The Cockpit page (`cockpit/`, issue #23) in a real headless browser: Debian 12's `cockpit-ws` and
//! `cockpit-bridge` serve the page as installed by `make install-cockpit` inside a lab network
//! namespace, with real firewalld and libvirtd (9.0.0) behind it, a DHCP guest and an upstream
//! namespace; Debian's `chromium` runs headless in the same namespace and is driven over the DevTools
//! protocol through `--remote-debugging-pipe` (NUL-separated JSON on two file descriptors: no
//! websocket and no extra crate).
//!
//! cockpit-ws runs with `--no-tls --local-session=cockpit-bridge` (no PAM login: the bridge runs as
//! root with the test's environment, so `virtzone` on its `PATH` is this build's binary and it talks
//! to the lab's bus), in a private mount namespace that shows the lab as the host's fixed paths
//! ([`common::host_view_script`], as for doctor) and the installed page at
//! `/usr/share/cockpit/virtzone` through a read-only overlay. The page loads directly at
//! `/cockpit/@localhost/virtzone/index.html`.
//!
//! `without_administrative_access_the_page_says_so` runs cockpit-ws and its bridge as nobody, whose
//! bridge has no superuser (Cockpit's "Limited access").
//!
//! Needs root and `cockpit-ws cockpit-bridge chromium` besides the libvirt lab's packages
//! (scripts/test.sh installs them), and node with `cockpit/node_modules` (`make cockpit`) for the
//! build check.

use crate::common;
use crate::common::forward::{self, connect, serve, HEAL, UP_HOST};
use crate::common::vz::{vz, vz_ok};

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::libvirt::LibvirtLab;
use common::{ok, text, Backend, Lab, Release};
use serde_json::{json, Value};

/// cockpit-ws's port inside the lab's namespace (each lab has its own, so a fixed port is fine).
const PORT: u16 = 9090;
/// The files `make install-cockpit` installs (the Makefile's `COCKPIT_FILES`).
const PAGE_FILES: [&str; 4] = ["index.html", "index.js", "index.css", "manifest.json"];
/// How long the page may take to show a change: it polls every 2 s, and each poll runs a dozen
/// commands on a loaded 2-core machine.
const SHOWN: Duration = Duration::from_secs(30);
/// One DevTools call (page loads included).
const CALL: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `make install-cockpit DESTDIR=dest PREFIX=/usr`, returning the installed package directory.
fn install_page(dest: &Path) -> PathBuf {
    ok(&Command::new("make")
        .current_dir(repo())
        .args(["-s", "install-cockpit", "PREFIX=/usr"])
        .arg(format!("DESTDIR={}", dest.display()))
        .output()
        .expect("run make install-cockpit"));
    dest.join("usr/share/cockpit/virtzone")
}

/// Builds the page from cockpit/src with the locked toolchain into `out`.
fn build_page(out: &Path) {
    let esbuild = repo().join("cockpit/node_modules/.bin/esbuild");
    assert!(
        esbuild.exists(),
        "{} is missing: run `make cockpit` (npm ci with cockpit/package-lock.json) first",
        esbuild.display()
    );
    ok(&Command::new("node")
        .current_dir(repo().join("cockpit"))
        .arg("build.mjs")
        .arg("--outdir")
        .arg(out)
        .output()
        .expect("run node cockpit/build.mjs"));
}

/// What is committed in cockpit/dist, what a fresh build from cockpit/src makes and what `make
/// install-cockpit` installs are the same bytes.
#[test]
fn installed_page_is_built_from_the_sources_in_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    build_page(&fresh);
    let installed = install_page(&tmp.path().join("dest"));
    let mut built: Vec<String> = fs::read_dir(&fresh)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    built.sort();
    let mut want: Vec<String> = PAGE_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(built, want, "the build makes exactly the installed files");
    for f in PAGE_FILES {
        let fresh = fs::read(fresh.join(f)).unwrap();
        let committed = fs::read(repo().join("cockpit/dist").join(f)).unwrap();
        assert!(
            fresh == committed,
            "cockpit/dist/{f} is not what cockpit/src builds: run `make cockpit` and commit cockpit/dist"
        );
        assert!(
            fs::read(installed.join(f)).unwrap() == committed,
            "make install-cockpit installed another {f} than cockpit/dist's"
        );
    }
}

/// Starts `cockpit-ws` serving the installed page `page` inside the lab (killed when the returned
/// process drops) and waits until it listens. `libvirt` is a libvirt lab's root; `uid` runs it (and
/// so the bridge) as that user (and group of the same number) instead of root.
fn start_cockpit_ws(
    lab: &Lab,
    libvirt: Option<&Path>,
    page: &Path,
    uid: Option<u32>,
) -> common::Process {
    let dir = lab.dir().join("cockpit");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    // The page runs `virtzone` from PATH, as it would find /usr/bin/virtzone.
    std::os::unix::fs::symlink(common::virtzone_binary(), bin.join("virtzone")).unwrap();
    let mut script = common::host_view_script(lab, libvirt, &dir.join("etc"));
    let share = page.parent().unwrap();
    let setpriv = uid.map_or(String::new(), |u| {
        let home = dir.join("home");
        fs::create_dir_all(&home).unwrap();
        ok(&Command::new("chown")
            .arg(format!("{u}:{u}"))
            .arg(&home)
            .output()
            .unwrap());
        format!(
            "setpriv --reuid={u} --regid={u} --clear-groups env HOME='{}' ",
            home.display()
        )
    });
    script.push_str(&format!(
        "mount -t overlay overlay -o lowerdir='{}':/usr/share/cockpit /usr/share/cockpit\n\
         exec {setpriv}/usr/lib/cockpit/cockpit-ws --no-tls --address 127.0.0.1 --port {PORT} \
         --local-session=cockpit-bridge\n",
        share.display()
    ));
    let log = fs::File::create(dir.join("cockpit-ws.log")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = lab
        .command("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(&script)
        .env("PATH", path)
        .env("LC_ALL", "C.UTF-8")
        .env("VIRTZONE_STATE_DIR", lab.state_dir())
        .env("VIRTZONE_CONFIG", lab.dir().join("virtzone.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start cockpit-ws");
    let ws = common::Process(child);
    let start = Instant::now();
    while !lab
        .command("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)",
            &PORT.to_string(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "cockpit-ws does not listen within 20 s; its log:\n{}",
            fs::read_to_string(dir.join("cockpit-ws.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ws
}

/// Headless Chromium in the lab's namespace, driven over `--remote-debugging-pipe`.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
}

impl Browser {
    fn start(lab: &Lab) -> Browser {
        let dir = lab.dir().join("chromium");
        // A fresh profile every run: a reused one serves stale cached pages.
        fs::create_dir_all(&dir).unwrap();
        // The pipe protocol reads commands from fd 3 and writes to fd 4: the shell moves the
        // child's stdin and stdout there.
        let script = format!(
            "exec chromium --headless=new --no-sandbox --disable-gpu --no-first-run \
             --remote-debugging-pipe --user-data-dir='{profile}' --window-size=1280,900 \
             3<&0 4>&1 </dev/null >'{log}' 2>&1",
            profile = dir.join("profile").display(),
            log = dir.join("chromium.log").display(),
        );
        let mut child = lab
            .command("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let to = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// One DevTools call (in the page's session once attached); panics on an error reply.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium: cannot send {method}: {e}"));
        let deadline = Instant::now() + CALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromium: no reply to {method} within {CALL:?}: {e}"));
            if reply["id"] == id {
                assert!(
                    reply.get("error").is_none(),
                    "chromium: {method} failed: {reply}"
                );
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "page: {expr} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy and returns that value.
    fn wait(&mut self, what: &str, expr: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if start.elapsed() > SHOWN {
                let body = self.eval("document.body.innerText");
                panic!(
                    "page: {what} not shown within {SHOWN:?}; it shows:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The whole page as PNG.
    fn screenshot(&mut self) -> Vec<u8> {
        // Cockpit's page layout scrolls inside <main>: a viewport as tall as its content shows all.
        let height = self
            .eval("Math.ceil(document.querySelector('main').scrollHeight + document.querySelector('main').offsetTop)")
            .as_u64()
            .unwrap_or(900);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (what DevTools sends a screenshot as), decoded.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A JS string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Sets the form fields `(id, value)` and submits the form `form`.
fn submit(b: &mut Browser, form: &str, fields: &[(&str, &str)]) {
    let mut code = String::new();
    for (id, value) in fields {
        code.push_str(&format!(
            "document.getElementById({}).value = {};\n",
            js(id),
            js(value)
        ));
    }
    code.push_str(&format!(
        "document.getElementById({}).requestSubmit(); true",
        js(form)
    ));
    b.eval(&code);
}

/// The text of the element matched by `selector`, or "" when there is none.
fn text_of(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "(document.querySelector({}) || {{}}).innerText || ''",
        js(selector)
    ))
    .as_str()
    .unwrap_or("")
    .to_string()
}

/// What firewalld and virtzone hold: the forwards' JSON, virtzone's store and firewalld's runtime
/// and permanent zones and policies, for "nothing changed".
fn snapshot(vlab: &LibvirtLab) -> (String, String, String, String) {
    (
        vz_ok(vlab, &["forward", "list", "--json"]),
        fs::read_to_string(vlab.state_dir().join("forwards/forwards.json")).unwrap_or_default(),
        vlab.firewall_cmd_ok(&["--list-all-zones"])
            + &vlab.firewall_cmd_ok(&["--list-all-policies"]),
        vlab.firewall_cmd_ok(&["--permanent", "--list-all-zones"])
            + &vlab.firewall_cmd_ok(&["--permanent", "--list-all-policies"]),
    )
}

/// The page against the real daemons: it lists the network with its bridge and zone; a forward added
/// through its form is virtzone's and carries a real packet upstream → guest; removing it closes the
/// port; an allow is added and removed; a bad port shows virtzone's sentence and changes nothing; a lost binding shows up in doctor's
/// report and the safe fix applied from the page clears it; explain agrees with the CLI.
#[test]
fn cockpit_page_drives_virtzone_1_3_3_nftables() {
    let vlab = forward::lab(Release::Debian12, Backend::Nftables);
    let net = vlab.define(&forward::nat_network("web", "virbr41", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start web");
    let guest = vlab.plug_guest("virbr41");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let guest_ip = lease.ip.clone();
    let _server = serve(&guest, "0.0.0.0", 80, "guest-web");
    let up = vlab.plug_upstream("vzup41", "198.51.100.1/24", "198.51.100.2/24");
    assert_eq!(
        vlab.zone_of_interface("virbr41").as_deref(),
        Some("libvirt")
    );

    let page = install_page(&vlab.dir().join("cockpit-dest"));
    let _ws = start_cockpit_ws(&vlab, Some(&vlab.dir().join("libvirt")), &page, None);
    let mut b = Browser::start(&vlab);
    b.navigate(&format!(
        "http://127.0.0.1:{PORT}/cockpit/@localhost/virtzone/index.html"
    ));

    // The network, its bridge and the zone firewalld has it in.
    let row = "tr[data-network=\"web\"]";
    b.wait(
        "the network web with its zone",
        &format!("(document.querySelector('{row} .vz-zone') || {{}}).innerText === 'libvirt'"),
    );
    let cells = b.eval(&format!(
        "[...document.querySelector('{row}').cells].map(c => c.innerText.trim())"
    ));
    assert_eq!(cells[0], "web", "{cells}");
    assert_eq!(cells[1], "nat", "{cells}");
    assert_eq!(cells[2], "virbr41", "{cells}");
    assert_eq!(cells[3], "libvirt", "{cells}");
    assert!(
        cells[5].as_str().unwrap().starts_with("works"),
        "the pre-check verdict: {cells}"
    );
    assert!(
        b.eval("document.getElementById('limited-access') === null") == true,
        "as root the page has administrative access"
    );

    // A forward through the form: virtzone's, and a real packet reaches the guest.
    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));
    submit(
        &mut b,
        "forward-form",
        &[
            ("forward-proto", "tcp"),
            ("forward-host-port", "8080"),
            ("forward-network", "web"),
            ("forward-guest", &guest_ip),
            ("forward-guest-port", "80"),
            ("forward-host-address", ""),
        ],
    );
    b.wait(
        "the new forward",
        "document.querySelector('tr[data-host-port=\"8080\"]')",
    );
    assert_eq!(text_of(&mut b, "#forward-error"), "");
    let list: Value = serde_json::from_str(&vz_ok(&vlab, &["forward", "list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(
        (
            &rows[0]["network"],
            &rows[0]["guest"],
            &rows[0]["proto"],
            &rows[0]["host_port"],
            &rows[0]["guest_port"]
        ),
        (
            &json!("web"),
            &json!(guest_ip),
            &json!("tcp"),
            &json!("8080"),
            &json!("80")
        ),
        "{list}"
    );
    let id = rows[0]["id"].as_u64().unwrap();
    forward::wait("the forward carrying a packet to the guest", HEAL, || {
        forward::proven(&vlab, "virbr41", || {
            connect(&up, UP_HOST, 8080) == "ok guest-web 198.51.100.2"
        })
    });
    b.wait(
        "the forward's state",
        "(document.querySelector('tr[data-host-port=\"8080\"] [data-state]') || {}).dataset?.state === 'active'",
    );

    // An allow through its form, listed by virtzone, and removed again through the page.
    submit(
        &mut b,
        "allow-form",
        &[("allow-network", "web"), ("allow-what", "2049/tcp")],
    );
    b.wait(
        "the new allow",
        "document.querySelector('tr[data-allow=\"web 2049/tcp\"]')",
    );
    let allows: Value = serde_json::from_str(&vz_ok(&vlab, &["allow", "list", "--json"])).unwrap();
    // Added through the page is added through the CLI (not declared in a drop-in file).
    assert_eq!(
        allows,
        json!([{"network": "web", "what": "2049/tcp", "source": "cli"}])
    );
    b.eval("document.querySelector('tr[data-allow=\"web 2049/tcp\"] button').click(); true");
    b.wait(
        "the allow gone",
        "document.querySelector('tr[data-allow]') === null",
    );
    assert_eq!(vz_ok(&vlab, &["allow", "list", "--json"]).trim(), "[]");

    // A bad port: virtzone's own sentence, and nothing changed anywhere.
    let before = snapshot(&vlab);
    let cli = vz(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "web",
            "--guest",
            &guest_ip,
            "tcp/99999:80",
        ],
    );
    assert_eq!(cli.status.code(), Some(2), "{}", text(&cli.stderr));
    let sentence = text(&cli.stderr)
        .trim()
        .trim_start_matches("virtzone: ")
        .to_string();
    submit(&mut b, "forward-form", &[("forward-host-port", "99999")]);
    let shown = b.wait(
        "virtzone's sentence for a bad port",
        "document.getElementById('forward-error').innerText.trim()",
    );
    assert_eq!(shown, json!(sentence));
    assert!(b.eval("document.querySelector('tr[data-host-port=\"99999\"]') === null") == true);
    assert!(snapshot(&vlab) == before, "a bad port changed something");

    // A doctor problem: firewalld loses the bridge's binding.
    vlab.firewall_cmd_ok(&["--zone=libvirt", "--remove-interface=virbr41"]);
    let problem = "tr[data-check=\"bridge-zones\"][data-status=\"problem\"]";
    b.wait(
        "doctor's bridge-zones problem",
        &format!("document.querySelector('{problem}')"),
    );
    assert!(
        text_of(&mut b, problem).contains("virtzone attach virbr41 --zone libvirt"),
        "{}",
        text_of(&mut b, problem)
    );
    b.wait(
        "the network's bridge without its zone",
        &format!("document.querySelector('{row} .vz-zone').innerText.startsWith('none')"),
    );
    let shot = b.screenshot();
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    // `VIRTZONE_COCKPIT_SCREENSHOT=docs/cockpit.png` refreshes the picture in the user guide.
    if let Some(path) = std::env::var_os("VIRTZONE_COCKPIT_SCREENSHOT") {
        fs::write(&path, &shot).unwrap();
    }
    // The safe fix, after the confirmation dialog.
    b.eval("document.getElementById('doctor-fix').click(); true");
    b.wait(
        "the confirmation dialog",
        "!document.getElementById('fix-dialog').hidden",
    );
    assert!(
        text_of(&mut b, "#fix-dialog-commands").contains("virtzone attach virbr41 --zone libvirt")
    );
    assert_eq!(
        vlab.zone_of_interface("virbr41"),
        None,
        "nothing is applied before the confirmation"
    );
    b.eval("document.getElementById('fix-dialog-apply').click(); true");
    b.wait(
        "the fix applied",
        "document.getElementById('doctor-result').innerText.includes('Applied: virtzone attach virbr41 --zone libvirt')",
    );
    b.wait(
        "doctor's bridge-zones check ok",
        "document.querySelector('tr[data-check=\"bridge-zones\"][data-status=\"ok\"]')",
    );
    assert_eq!(
        vlab.zone_of_interface("virbr41").as_deref(),
        Some("libvirt")
    );
    b.wait(
        "the zone back in the network's row",
        &format!("document.querySelector('{row} .vz-zone').innerText === 'libvirt'"),
    );

    // explain from the page agrees with the CLI, for an accepted and a refused packet.
    let mut verdicts = Vec::new();
    for service in ["udp/67", "tcp/3306"] {
        let cli = vz(
            &vlab,
            &[
                "explain",
                "--bridge",
                "virbr41",
                "--to-host",
                service,
                "--json",
            ],
        );
        let path: Value = serde_json::from_slice(&cli.stdout)
            .unwrap_or_else(|e| panic!("explain printed no JSON ({e}): {}", text(&cli.stderr)));
        b.eval("document.getElementById('explain-result').replaceChildren(); true");
        submit(
            &mut b,
            "explain-form",
            &[
                ("explain-bridge", "virbr41"),
                ("explain-direction", "to-host"),
                ("explain-service", service),
                ("explain-address", ""),
            ],
        );
        let shown = b.wait(
            "explain's verdict",
            "(e => e && [e.dataset.verdict, e.dataset.handle])(document.getElementById('explain-verdict'))",
        );
        let handle = path["by"]["handle"]
            .as_u64()
            .map_or("null".to_string(), |h| h.to_string());
        assert_eq!(
            shown,
            json!([path["verdict"]["verdict"], handle]),
            "{service}: the CLI says {path:#}"
        );
        verdicts.push(
            path["verdict"]["verdict"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        let rule = text_of(&mut b, "#explain-rule");
        if let Some(t) = path["by"]["text"].as_str() {
            assert!(rule.contains(t), "{service}: {rule} vs {t}");
        }
    }
    // One accepted and one refused packet, or the comparison proves little.
    assert_eq!(verdicts[0], "accept");
    assert_ne!(verdicts[1], "accept");

    // Removing it through the page closes the port.
    b.eval(&format!(
        "document.querySelector('tr[data-forward=\"{id}\"] button').click(); true"
    ));
    b.wait(
        "the forward gone",
        "document.querySelector('tr[data-host-port=\"8080\"]') === null",
    );
    assert_eq!(vz_ok(&vlab, &["forward", "list", "--json"]).trim(), "[]");
    forward::wait("the port closed", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
    assert_eq!(
        text_of(&mut b, "#forward-error"),
        "",
        "a successful change clears the error"
    );
}

/// Without administrative access (Cockpit's "Limited access": the bridge runs as a user whose
/// superuser is off) the page says that it needs it, instead of failing command by command.
#[test]
fn without_administrative_access_the_page_says_so() {
    let lab = Lab::start(common::LabConfig {
        firewalld: false,
        ..common::LabConfig::default()
    });
    let page = install_page(&lab.dir().join("cockpit-dest"));
    // nobody (65534 on Debian)
    let _ws = start_cockpit_ws(&lab, None, &page, Some(65534));
    let mut b = Browser::start(&lab);
    b.navigate(&format!(
        "http://127.0.0.1:{PORT}/cockpit/@localhost/virtzone/index.html"
    ));
    b.wait("the page", "document.body?.dataset.ready === 'true'");
    // The bridge's own answer: no superuser, which is what Cockpit's "Limited access" means.
    let current = b.eval(
        "new Promise(r => { const p = cockpit.dbus(null, {bus: 'internal'}).proxy('cockpit.Superuser', '/superuser'); p.wait(() => r(p.Current)) })",
    );
    assert_eq!(current, "none");
    let shown = b.wait(
        "the limited-access notice",
        "(document.getElementById('limited-access') || {}).innerText",
    );
    assert!(
        shown.as_str().unwrap().contains("administrative access"),
        "{shown}"
    );
    // And it runs nothing that needs root: the tables stay empty rather than full of failures.
    assert_eq!(b.eval("document.querySelectorAll('tbody tr').length"), 0);
}
