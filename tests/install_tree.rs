//! `make install` and the packaging: the installed tree is complete and valid (systemd-analyze,
//! firewall-offline-cmd, man, the shells), `PREFIX` and `DESTDIR` are honoured, the package files
//! list exactly what `make install` installs, and the package scripts reload a real firewalld (in a
//! lab) without ever losing an admin's zone edits.
//!
//! The tests run `make install-files`, which only copies: the binary is cargo's
//! (`CARGO_BIN_EXE_virtzone`) and the man pages and completions come from examples/gen-docs.rs,
//! compiled into this test as a module, so no nested cargo runs while cargo runs the tests.

use crate::common;

#[path = "../examples/gen-docs.rs"]
mod gen_docs;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{text, Lab, LabConfig, Release};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// man's output without its overstrike bold and underline (`X\bX`, `_\bX`), as a terminal shows it.
fn plain(rendered: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in rendered.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// Generated man pages and completions, once per test (cheap: a few milliseconds).
fn gen_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("gen");
    gen_docs::generate(&dir).expect("generate man pages and completions");
    dir
}

/// `make -C <repo> TARGET VARS…`, isolated from the make/cargo jobserver variables cargo may pass.
fn make(target: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("make");
    cmd.arg("-s").arg("-C").arg(repo()).arg(target);
    for (k, v) in vars {
        cmd.arg(format!("{k}={v}"));
    }
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS"] {
        cmd.env_remove(var);
    }
    run(&mut cmd, &format!("make {target}"))
}

/// `make install-files` of the test binary into `root`, with `extra` variables.
fn install_into(root: &Path, gen: &Path, extra: &[(&str, &str)]) -> String {
    let mut vars = vec![
        ("DESTDIR", root.to_str().unwrap()),
        ("VIRTZONE_BIN", env!("CARGO_BIN_EXE_virtzone")),
        ("GEN_DIR", gen.to_str().unwrap()),
    ];
    vars.extend_from_slice(extra);
    ok(&make("install-files", &vars), "make install-files")
}

/// `make install-cockpit` (the Cockpit page, package virtzone-cockpit) into `root`, as the packages'
/// builds call it.
fn install_cockpit_into(root: &Path) {
    ok(
        &make(
            "install-cockpit",
            &[("DESTDIR", root.to_str().unwrap()), ("PREFIX", "/usr")],
        ),
        "make install-cockpit",
    );
}

/// The unit dir the Makefile picks for PREFIX=/usr on this host.
fn default_unit_dir() -> String {
    let out = Command::new("pkg-config")
        .args(["--variable=systemdsystemunitdir", "systemd"])
        .output();
    match out {
        Ok(o) if o.status.success() && !text(&o.stdout).trim().is_empty() => {
            text(&o.stdout).trim().to_string()
        }
        _ => "/usr/lib/systemd/system".to_string(),
    }
}

/// Every regular file under `root`, relative, with its mode.
fn files(root: &Path) -> Vec<(String, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(root, &entry.path(), out);
            } else {
                let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
                out.push((
                    format!("/{}", rel.display()),
                    meta.permissions().mode() & 0o7777,
                ));
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// The subcommands that get a man page (clap's own `help` does not).
fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    virtzone::cli::Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| n != "help")
        .collect()
}

/// What `make install-files PREFIX=/usr` must produce: path → mode.
fn expected_tree(unit_dir: &str) -> Vec<(String, u32)> {
    let mut want = vec![
        ("/usr/bin/virtzone".to_string(), 0o755),
        (
            "/etc/libvirt/hooks/network.d/50-virtzone".to_string(),
            0o755,
        ),
        ("/etc/libvirt/hooks/qemu.d/50-virtzone".to_string(), 0o755),
        (format!("{unit_dir}/virtzone.service"), 0o644),
    ];
    for f in [
        "/usr/lib/firewalld/zones/libvirt.xml",
        "/usr/lib/firewalld/zones/libvirt-routed.xml",
        "/usr/lib/firewalld/policies/libvirt-routed-in.xml",
        "/usr/lib/firewalld/policies/libvirt-routed-out.xml",
        "/usr/lib/firewalld/policies/libvirt-to-host.xml",
        "/usr/share/dbus-1/system.d/org.virtzone.VirtZone1.conf",
        "/usr/share/dbus-1/system-services/org.virtzone.VirtZone1.service",
        "/usr/share/dbus-1/interfaces/org.virtzone.VirtZone1.xml",
        "/usr/share/man/man8/virtzone.8",
        "/usr/share/bash-completion/completions/virtzone",
        "/usr/share/fish/vendor_completions.d/virtzone.fish",
        "/usr/share/doc/virtzone/README.md",
    ] {
        want.push((f.to_string(), 0o644));
    }
    let zsh = if Path::new("/etc/debian_version").exists() {
        "/usr/share/zsh/vendor-completions/_virtzone"
    } else {
        "/usr/share/zsh/site-functions/_virtzone"
    };
    want.push((zsh.to_string(), 0o644));
    for sub in subcommands() {
        want.push((format!("/usr/share/man/man8/virtzone-{sub}.8"), 0o644));
    }
    for doc in fs::read_dir(repo().join("docs")).unwrap() {
        let name = doc.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            want.push((format!("/usr/share/doc/virtzone/{name}"), 0o644));
        }
    }
    want.sort();
    want
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let out = run(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", from.display()))
            .arg(to),
        "cp -a",
    );
    ok(&out, "cp -a");
}

/// `systemd-analyze verify` of the installed unit inside a scratch copy of `root` that also holds
/// this host's systemd units (the unit's dependencies resolve there, its ExecStart and its
/// `man:` documentation are looked up in the tree).
fn systemd_verify(root: &Path, unit_dir: &str, scratch: &Path) -> Output {
    copy_tree(root, scratch);
    let units = scratch.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    ok(
        &run(
            Command::new("cp")
                .arg("-an")
                .arg("/usr/lib/systemd/system/.")
                .arg(&units),
            "cp host units",
        ),
        "cp host units",
    );
    run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", scratch.display()))
            .arg(format!("{unit_dir}/virtzone.service"))
            .env("MANPATH", scratch.join("usr/share/man"))
            .env("SYSTEMD_LOG_COLOR", "0"),
        "systemd-analyze verify",
    )
}

/// `firewall-offline-cmd --check-config` of a release on a system and a default config dir.
fn check_config(release: Release, system: &Path, default: &Path) -> Output {
    let mut cmd = Command::new("/usr/bin/python3");
    match common::release_root(release) {
        None => {
            cmd.arg("/usr/bin/firewall-offline-cmd");
        }
        Some(root) => {
            cmd.arg(root.join("usr/bin/firewall-offline-cmd"))
                .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"));
        }
    }
    cmd.env("LC_ALL", "C.UTF-8")
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .arg("--system-config")
        .arg(system)
        .arg("--default-config")
        .arg(default)
        .arg("--check-config");
    run(&mut cmd, "firewall-offline-cmd")
}

#[test]
fn make_install_gives_a_complete_valid_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = gen_dir(tmp.path());
    let root = tmp.path().join("root");
    let unit_dir = default_unit_dir();
    install_into(&root, &gen, &[("PREFIX", "/usr")]);

    // Every file in place with its mode, and nothing else.
    assert_eq!(files(&root), expected_tree(&unit_dir));

    // The shipped files unchanged (PREFIX=/usr: nothing to substitute), and the zones exactly what
    // the binary embeds: `virtzone install --root` finds every one already there as its own.
    for (src, dst) in [
        (
            "systemd/virtzone.service",
            format!("{unit_dir}/virtzone.service"),
        ),
        (
            "libvirt/hooks/network.d/50-virtzone",
            "/etc/libvirt/hooks/network.d/50-virtzone".to_string(),
        ),
        (
            "libvirt/hooks/qemu.d/50-virtzone",
            "/etc/libvirt/hooks/qemu.d/50-virtzone".to_string(),
        ),
        (
            "dbus/org.virtzone.VirtZone1.conf",
            "/usr/share/dbus-1/system.d/org.virtzone.VirtZone1.conf".to_string(),
        ),
    ] {
        assert_eq!(
            fs::read(repo().join(src)).unwrap(),
            fs::read(root.join(&dst[1..])).unwrap(),
            "{dst}"
        );
    }
    let out = ok(
        &run(
            Command::new(env!("CARGO_BIN_EXE_virtzone"))
                .args(["install", "--root"])
                .arg(&root),
            "virtzone install --root",
        ),
        "virtzone install --root",
    );
    assert!(!out.contains(": added"), "{out}");
    assert_eq!(out.matches(": already present").count(), 5, "{out}");

    // The D-Bus activation file starts the unit through its alias.
    let activation = fs::read_to_string(
        root.join("usr/share/dbus-1/system-services/org.virtzone.VirtZone1.service"),
    )
    .unwrap();
    let unit = fs::read_to_string(root.join(&format!("{unit_dir}/virtzone.service")[1..])).unwrap();
    assert!(activation.contains("SystemdService=dbus-org.virtzone.VirtZone1.service"));
    assert!(unit.contains("Alias=dbus-org.virtzone.VirtZone1.service"));
    assert!(
        unit.contains("BusName=org.virtzone.VirtZone1")
            && activation.contains("Name=org.virtzone.VirtZone1")
    );

    // systemd accepts the unit in the installed tree, and the check has teeth: without the binary
    // it fails.
    let verified = systemd_verify(&root, &unit_dir, &tmp.path().join("verify"));
    assert!(
        verified.status.success() && text(&verified.stderr).trim().is_empty(),
        "systemd-analyze verify: {}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
    let broken = tmp.path().join("broken");
    copy_tree(&root, &broken);
    fs::remove_file(broken.join("usr/bin/virtzone")).unwrap();
    let failed = systemd_verify(&broken, &unit_dir, &tmp.path().join("verify-broken"));
    assert!(
        !failed.status.success() && text(&failed.stderr).contains("/usr/bin/virtzone"),
        "{}",
        text(&failed.stderr)
    );

    // firewalld (1.3.3 and 2.3.1) loads the installed zones beside its stock configuration. The lab
    // provides that stock configuration without libvirt's own zone files.
    for release in [Release::Debian12, Release::Debian13] {
        let lab = Lab::start(LabConfig {
            firewalld: false,
            ..LabConfig::new(release, common::Backend::Nftables)
        });
        let tree = tmp.path().join(format!("fw-{release:?}"));
        copy_tree(&lab.default_config_dir, &tree.join("usr/lib/firewalld"));
        copy_tree(
            &root.join("usr/lib/firewalld"),
            &tree.join("usr/lib/firewalld"),
        );
        fs::create_dir_all(tree.join("etc/firewalld")).unwrap();
        fs::write(
            tree.join("etc/firewalld/firewalld.conf"),
            "DefaultZone=public\n",
        )
        .unwrap();
        let checked = check_config(
            release,
            &tree.join("etc/firewalld"),
            &tree.join("usr/lib/firewalld"),
        );
        assert!(
            checked.status.success() && !text(&checked.stderr).contains("ERROR"),
            "{release:?} check-config: {}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );
        // Teeth: a broken zone in the same tree fails the check.
        fs::write(
            tree.join("usr/lib/firewalld/zones/libvirt.xml"),
            "<zone><rule priority='x'></zone>",
        )
        .unwrap();
        let broken = check_config(
            release,
            &tree.join("etc/firewalld"),
            &tree.join("usr/lib/firewalld"),
        );
        assert!(
            !broken.status.success(),
            "{release:?}: broken zone accepted"
        );
    }

    // Every man page renders without a single groff warning and has the sections an admin looks for.
    let man8 = root.join("usr/share/man/man8");
    let mut pages = 0;
    for page in fs::read_dir(&man8).unwrap() {
        let page = page.unwrap().path();
        pages += 1;
        let out = run(
            Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(&page)
                .env("LC_ALL", "C.UTF-8"),
            "groff",
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            page.display(),
            text(&out.stderr)
        );
        let rendered = plain(&ok(
            &run(
                Command::new("man")
                    .arg("-l")
                    .arg(&page)
                    .env("MANWIDTH", "100")
                    .env("MAN_KEEP_FORMATTING", "0")
                    .env("LC_ALL", "C.UTF-8"),
                "man -l",
            ),
            "man -l",
        ));
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO"] {
            assert!(
                rendered.contains(section),
                "{}: no {section}\n{rendered}",
                page.display()
            );
        }
    }
    assert_eq!(pages, subcommands().len() + 1);
    let main_page = plain(&ok(
        &run(
            Command::new("man")
                .arg("-l")
                .arg(man8.join("virtzone.8"))
                .env("MANWIDTH", "100")
                .env("LC_ALL", "C.UTF-8"),
            "man -l",
        ),
        "man -l",
    ));
    for sub in subcommands() {
        assert!(
            main_page.contains(&format!("virtzone-{sub}(8)")),
            "{sub}\n{main_page}"
        );
    }
    assert!(main_page.contains("VIRTZONE_STATE_DIR") && main_page.contains("/var/lib/virtzone"));

    // The completions parse in their shells, and bash's completes the subcommands.
    let comp = |p: &str| root.join(p);
    for (shell, file) in [
        (
            "bash",
            comp("usr/share/bash-completion/completions/virtzone"),
        ),
        ("zsh", comp(&expected_zsh()[1..])),
        (
            "fish",
            comp("usr/share/fish/vendor_completions.d/virtzone.fish"),
        ),
    ] {
        let out = run(Command::new(shell).arg("-n").arg(&file), shell);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{shell} -n {}: {} (is {shell} installed?)",
            file.display(),
            text(&out.stderr)
        );
    }
    let script = format!(
        ". {}; COMP_WORDS=(virtzone st); COMP_CWORD=1; COMP_LINE='virtzone st'; COMP_POINT=11; \
         _virtzone virtzone st virtzone; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        comp("usr/share/bash-completion/completions/virtzone").display()
    );
    let out = ok(
        &run(Command::new("bash").arg("-c").arg(&script), "bash"),
        "bash completion",
    );
    assert_eq!(out.trim(), "status", "{out}");
    let out = ok(
        &run(
            Command::new("fish").arg("-c").arg(format!(
                "source {}; complete -C 'virtzone at'",
                comp("usr/share/fish/vendor_completions.d/virtzone.fish").display()
            )),
            "fish",
        ),
        "fish completion",
    );
    assert!(out.starts_with("attach"), "{out}");
}

fn expected_zsh() -> &'static str {
    if Path::new("/etc/debian_version").exists() {
        "/usr/share/zsh/vendor-completions/_virtzone"
    } else {
        "/usr/share/zsh/site-functions/_virtzone"
    }
}

#[test]
fn prefix_is_substituted_foreign_files_are_kept_and_uninstall_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = gen_dir(tmp.path());
    let root = tmp.path().join("root");
    // Another package's zone of the same name (libvirt's own) is in place already.
    let foreign =
        "<?xml version=\"1.0\"?>\n<zone target=\"ACCEPT\"><short>libvirt</short></zone>\n";
    fs::create_dir_all(root.join("opt/vz/lib/firewalld/zones")).unwrap();
    fs::write(root.join("opt/vz/lib/firewalld/zones/libvirt.xml"), foreign).unwrap();

    let out = install_into(&root, &gen, &[("PREFIX", "/opt/vz")]);
    assert!(
        out.contains("keeping") && out.contains("zones/libvirt.xml: it is not virtzone's"),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(root.join("opt/vz/lib/firewalld/zones/libvirt.xml")).unwrap(),
        foreign
    );
    // PREFIX moves everything but /etc, and the unit and the hook name the binary where it is.
    let unit = fs::read_to_string(root.join("opt/vz/lib/systemd/system/virtzone.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/vz/bin/virtzone serve"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/virtzone"), "{unit}");
    let hook = fs::read_to_string(root.join("etc/libvirt/hooks/network.d/50-virtzone")).unwrap();
    assert!(
        hook.contains("exec /opt/vz/bin/virtzone hook network"),
        "{hook}"
    );
    let qemu_hook = fs::read_to_string(root.join("etc/libvirt/hooks/qemu.d/50-virtzone")).unwrap();
    assert!(
        qemu_hook.contains("exec /opt/vz/bin/virtzone hook qemu")
            && qemu_hook.contains("[ -x /opt/vz/bin/virtzone ] || exit 0"),
        "{qemu_hook}"
    );
    assert!(root.join("opt/vz/bin/virtzone").is_file());
    assert!(root
        .join("opt/vz/share/man/man8/virtzone-serve.8")
        .is_file());
    assert!(root
        .join("opt/vz/share/dbus-1/system.d/org.virtzone.VirtZone1.conf")
        .is_file());
    assert!(root
        .join("opt/vz/lib/firewalld/policies/libvirt-to-host.xml")
        .is_file());

    // A second install keeps an admin's edit of the hook.
    fs::write(
        root.join("etc/libvirt/hooks/network.d/50-virtzone"),
        "#!/bin/sh\nexit 0\n",
    )
    .unwrap();
    let out = install_into(&root, &gen, &[("PREFIX", "/opt/vz")]);
    assert!(
        out.contains("50-virtzone: it differs from virtzone's"),
        "{out}"
    );

    // uninstall removes everything install put there, but not the foreign zone nor the edited hook.
    let out = ok(
        &make(
            "uninstall",
            &[("DESTDIR", root.to_str().unwrap()), ("PREFIX", "/opt/vz")],
        ),
        "make uninstall",
    );
    assert_eq!(
        files(&root),
        vec![
            (
                "/etc/libvirt/hooks/network.d/50-virtzone".to_string(),
                0o755
            ),
            ("/opt/vz/lib/firewalld/zones/libvirt.xml".to_string(), 0o644),
        ],
        "{out}"
    );
}

// --- packaging ---

/// `rpmspec -P` of the spec, with the stand-in systemd macros when this host has none.
fn parsed_spec() -> String {
    let mut cmd = Command::new("rpmspec");
    let has_macros = Command::new("rpm")
        .args(["--eval", "%{?_unitdir}"])
        .output()
        .map(|o| !text(&o.stdout).trim().is_empty())
        .unwrap_or(false);
    if !has_macros {
        cmd.arg("--load")
            .arg(repo().join("packaging/rpm/macros.systemd-fallback"));
    }
    cmd.arg("-P")
        .arg(repo().join("packaging/rpm/virtzone.spec"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run rpmspec: {e} (apt-get install rpm)"));
    ok(&out, "rpmspec -P")
}

/// The body of a section of a parsed spec (`%post zones`, `%files`), up to the next section.
fn spec_section(spec: &str, header: &str) -> String {
    const SECTIONS: &[&str] = &[
        "%package",
        "%description",
        "%prep",
        "%build",
        "%install",
        "%check",
        "%pre",
        "%post",
        "%preun",
        "%postun",
        "%files",
        "%changelog",
    ];
    let mut body = Vec::new();
    let mut inside = false;
    for line in spec.lines() {
        let is_header = SECTIONS
            .iter()
            .any(|s| line == *s || line.starts_with(&format!("{s} ")));
        if is_header {
            if inside {
                break;
            }
            inside = line.trim_end() == header;
            continue;
        }
        if inside {
            body.push(line);
        }
    }
    assert!(
        inside || !body.is_empty(),
        "no section {header} in the spec"
    );
    body.join("\n")
}

/// Glob match with `*` only (what the spec's %files and Debian's .install files use here).
fn glob_match(pattern: &str, path: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| m(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && m(rest, &s[1..]),
        }
    }
    m(pattern.as_bytes(), path.as_bytes())
}

/// Whether `entry` (a file, a directory, or a glob) covers `path`.
fn covers(entry: &str, path: &str) -> bool {
    glob_match(entry, path) || path.starts_with(&format!("{}/", entry.trim_end_matches('/')))
}

/// Every installed file is in exactly one package, and every package entry matches something.
fn assert_packages_cover(tree: &[(String, u32)], packages: &[(&str, Vec<String>)], what: &str) {
    for (path, _) in tree {
        let owners: Vec<&str> = packages
            .iter()
            .filter(|(_, entries)| entries.iter().any(|e| covers(e, path)))
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(owners.len(), 1, "{what}: {path} is in {owners:?}");
    }
    for (name, entries) in packages {
        for entry in entries {
            assert!(
                tree.iter().any(|(p, _)| covers(entry, p)),
                "{what}: {name} lists {entry}, which make install does not install"
            );
        }
    }
}

#[test]
fn rpm_spec_parses_and_packages_exactly_what_make_installs() {
    let spec = parsed_spec();
    // rpm's own defaults for what the spec passes to make.
    let tmp = tempfile::tempdir().unwrap();
    let gen = gen_dir(tmp.path());
    let root = tmp.path().join("root");
    install_into(
        &root,
        &gen,
        &[
            ("PREFIX", "/usr"),
            ("SYSCONFDIR", "/etc"),
            ("SYSTEMDUNITDIR", "/usr/lib/systemd/system"),
            ("MANDIR", "/usr/share/man"),
            ("DOCDIR", "/usr/share/doc/virtzone"),
            ("ZSHCOMPDIR", "/usr/share/zsh/site-functions"),
        ],
    );
    install_cockpit_into(&root);
    let mut tree = files(&root);
    // The spec's %install adds the preset that enables the service.
    tree.push((
        "/usr/lib/systemd/system-preset/50-virtzone.preset".to_string(),
        0o644,
    ));
    let entries = |section: &str| -> Vec<String> {
        spec_section(&spec, section)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| !l.starts_with("%dir "))
            .map(|l| {
                l.trim_start_matches("%config(noreplace) ")
                    .trim_start_matches("%doc ")
                    .to_string()
            })
            .collect()
    };
    assert_packages_cover(
        &tree,
        &[
            ("virtzone", entries("%files")),
            ("virtzone-zones", entries("%files zones")),
            ("virtzone-cockpit", entries("%files cockpit")),
        ],
        "virtzone.spec",
    );
    assert!(spec_section(&spec, "%install").contains("make install-cockpit "));
    let preset = fs::read_to_string(repo().join("packaging/rpm/50-virtzone.preset")).unwrap();
    assert!(preset.lines().any(|l| l == "enable virtzone.service"));
    // The service is enabled (through the preset), stopped before removal, restarted on upgrade.
    assert!(spec_section(&spec, "%post").contains("preset virtzone.service"));
    assert!(spec_section(&spec, "%preun").contains("disable --now virtzone.service"));
    assert!(spec_section(&spec, "%postun").contains("try-restart virtzone.service"));
}

#[test]
fn debian_install_files_package_exactly_what_make_installs() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = gen_dir(tmp.path());
    let root = tmp.path().join("root");
    // What debian/rules passes.
    install_into(
        &root,
        &gen,
        &[
            ("PREFIX", "/usr"),
            ("SYSCONFDIR", "/etc"),
            ("SYSTEMDUNITDIR", "/lib/systemd/system"),
            ("ZSHCOMPDIR", "/usr/share/zsh/vendor-completions"),
        ],
    );
    install_cockpit_into(&root);
    let rules = fs::read_to_string(repo().join("packaging/debian/rules")).unwrap();
    assert!(
        rules.contains("SYSTEMDUNITDIR=/lib/systemd/system"),
        "{rules}"
    );
    assert!(rules.contains("$(MAKE) install-cockpit "), "{rules}");
    let read = |pkg: &str| -> Vec<String> {
        fs::read_to_string(repo().join(format!("packaging/debian/{pkg}.install")))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("/{}", l.trim()))
            .collect()
    };
    assert_packages_cover(
        &files(&root),
        &[
            ("virtzone", read("virtzone")),
            ("virtzone-zones", read("virtzone-zones")),
            ("virtzone-cockpit", read("virtzone-cockpit")),
        ],
        "debian/*.install",
    );
    let control = fs::read_to_string(repo().join("packaging/debian/control")).unwrap();
    assert!(
        control.contains("Package: virtzone\n")
            && control.contains("Package: virtzone-zones\n")
            && control.contains("Package: virtzone-cockpit\n")
    );
}

/// One flavour of package scripts for the zones package: how to run its after-install and
/// after-removal scripts.
struct Scripts {
    name: &'static str,
    /// (program, args) for after install and after removal.
    post_install: (String, Vec<String>),
    post_remove: (String, Vec<String>),
}

fn debian_scripts() -> Scripts {
    let dir = repo().join("packaging/debian");
    let script = |name: &str| dir.join(name).to_string_lossy().into_owned();
    Scripts {
        name: "debian",
        post_install: (
            "/bin/sh".into(),
            vec![script("virtzone-zones.postinst"), "configure".into()],
        ),
        post_remove: (
            "/bin/sh".into(),
            vec![script("virtzone-zones.postrm"), "remove".into()],
        ),
    }
}

fn rpm_scripts() -> Scripts {
    let spec = parsed_spec();
    // RPM runs scriptlets with `sh -c`-like semantics and the package count as $1.
    let scriptlet = |section: &str, count: &str| {
        (
            "/bin/sh".to_string(),
            vec![
                "-c".to_string(),
                spec_section(&spec, section),
                "scriptlet".to_string(),
                count.to_string(),
            ],
        )
    };
    Scripts {
        name: "rpm",
        post_install: scriptlet("%post zones", "1"),
        post_remove: scriptlet("%postun zones", "0"),
    }
}

fn zones_and_policies_live(lab: &Lab) -> (String, String) {
    let zones = ok(&lab.firewall_cmd(&["--get-zones"]), "--get-zones");
    let policies = ok(&lab.firewall_cmd(&["--get-policies"]), "--get-policies");
    (zones, policies)
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

/// "dpkg unpack" / "rpm install": the package files into the lab's stock tier.
fn unpack(lab: &Lab) {
    for (name, xml) in virtzone::zone::SHIPPED_ZONES {
        fs::write(
            lab.default_config_dir.join(format!("zones/{name}.xml")),
            xml,
        )
        .unwrap();
    }
    fs::create_dir_all(lab.default_config_dir.join("policies")).unwrap();
    for (name, xml) in virtzone::zone::SHIPPED_POLICIES {
        fs::write(
            lab.default_config_dir.join(format!("policies/{name}.xml")),
            xml,
        )
        .unwrap();
    }
}

fn unpacked_files_removed(lab: &Lab) {
    for (name, _) in virtzone::zone::SHIPPED_ZONES {
        fs::remove_file(lab.default_config_dir.join(format!("zones/{name}.xml"))).unwrap();
    }
    for (name, _) in virtzone::zone::SHIPPED_POLICIES {
        fs::remove_file(lab.default_config_dir.join(format!("policies/{name}.xml"))).unwrap();
    }
}

/// Runs a package script in the lab, with the lab's firewalld config over `/etc/firewalld` (a bind
/// mount in the private mount namespace `ip netns exec` makes), so the script reads the lab's files.
fn run_script(lab: &Lab, (program, args): &(String, Vec<String>)) -> Output {
    lab.command("/bin/sh")
        .arg("-c")
        .arg(r#"mount --bind "$0" /etc/firewalld && exec "$@""#)
        .arg(&lab.config_dir)
        .arg(program)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap()
}

#[test]
fn zone_package_scripts_reload_firewalld_and_keep_admin_edits() {
    for scripts in [debian_scripts(), rpm_scripts()] {
        let name = scripts.name;
        let mut lab = Lab::start(LabConfig::default());

        // After install: the unpacked files are not live until the script reloads firewalld.
        unpack(&lab);
        let (zones, _) = zones_and_policies_live(&lab);
        assert!(!has_word(&zones, "libvirt"), "{name}: {zones}");
        let out = run_script(&lab, &scripts.post_install);
        ok(&out, &format!("{name} post-install"));
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
        let (zones, policies) = zones_and_policies_live(&lab);
        for zone in ["libvirt", "libvirt-routed"] {
            assert!(has_word(&zones, zone), "{name}: {zone} not live: {zones}");
        }
        for policy in ["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"] {
            assert!(has_word(&policies, policy), "{name}: {policies}");
        }

        // An admin lets guests reach http on the host: firewalld copies the zone to /etc.
        ok(
            &lab.firewall_cmd(&["--permanent", "--zone=libvirt", "--add-service=http"]),
            "add http",
        );
        assert!(lab.config_dir.join("zones/libvirt.xml").is_file());

        // Removal while a bridge sits in libvirt-routed (which has no /etc copy): no reload, a
        // clear message, and the zone stays live until the admin reloads.
        ok(
            &lab.firewall_cmd(&["--zone=libvirt-routed", "--change-interface=virbr7"]),
            "bind virbr7",
        );
        unpacked_files_removed(&lab);
        let out = run_script(&lab, &scripts.post_remove);
        ok(&out, &format!("{name} post-remove"));
        let err = text(&out.stderr);
        assert!(
            err.contains("not reloading firewalld") && err.contains("virbr7"),
            "{name}: {err}"
        );
        let (zones, _) = zones_and_policies_live(&lab);
        assert!(has_word(&zones, "libvirt-routed"), "{name}: {zones}");

        // The admin moves the bridge away; removal now reloads: the package's zones and policies
        // go, the admin's zone stays with the admin's edit.
        ok(
            &lab.firewall_cmd(&["--zone=libvirt-routed", "--remove-interface=virbr7"]),
            "unbind virbr7",
        );
        let out = run_script(&lab, &scripts.post_remove);
        ok(&out, &format!("{name} post-remove"));
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
        let (zones, policies) = zones_and_policies_live(&lab);
        assert!(!has_word(&zones, "libvirt-routed"), "{name}: {zones}");
        assert!(!policies.contains("libvirt-"), "{name}: {policies}");
        assert!(has_word(&zones, "libvirt"), "{name}: {zones}");
        let services = ok(
            &lab.firewall_cmd(&["--zone=libvirt", "--list-services"]),
            "list services",
        );
        assert!(
            has_word(&services, "http") && has_word(&services, "dhcp"),
            "{name}: {services}"
        );
        assert!(lab.config_dir.join("zones/libvirt.xml").is_file());

        // Without a running firewalld both scripts do nothing, successfully.
        lab.stop_firewalld();
        for script in [&scripts.post_install, &scripts.post_remove] {
            let out = run_script(&lab, script);
            ok(&out, name);
            assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
        }
    }
}

/// Removing the zone package while an /etc policy names one of its zones: the script keeps that zone
/// (as an /etc copy) so firewalld still starts, and says so; a real restart comes back RUNNING with the
/// admin's policy intact.
#[test]
fn zone_package_removal_keeps_zones_that_policies_name() {
    for scripts in [debian_scripts(), rpm_scripts()] {
        let name = scripts.name;
        let mut lab = Lab::start(LabConfig::default());
        unpack(&lab);
        ok(&run_script(&lab, &scripts.post_install), "post-install");
        for args in [
            &["--permanent", "--new-policy=guests-out"][..],
            &[
                "--permanent",
                "--policy=guests-out",
                "--add-ingress-zone=libvirt",
            ],
            &[
                "--permanent",
                "--policy=guests-out",
                "--add-egress-zone=ANY",
            ],
        ] {
            ok(&lab.firewall_cmd(args), "admin policy");
        }
        unpacked_files_removed(&lab);
        let out = run_script(&lab, &scripts.post_remove);
        ok(&out, &format!("{name} post-remove"));
        let err = text(&out.stderr);
        assert!(
            err.contains("kept zone(s) libvirt (named by policy guests-out)"),
            "{name}: {err}"
        );
        assert!(lab.config_dir.join("zones/libvirt.xml").is_file(), "{name}");
        assert!(
            !lab.config_dir.join("zones/libvirt-routed.xml").exists(),
            "{name}"
        );
        lab.stop_firewalld();
        lab.start_firewalld();
        assert_eq!(lab.state(), "RUNNING", "{name}");
        let (zones, policies) = zones_and_policies_live(&lab);
        assert!(
            has_word(&zones, "libvirt") && !has_word(&zones, "libvirt-routed"),
            "{name}: {zones}"
        );
        assert!(has_word(&policies, "guests-out"), "{name}: {policies}");

        // Without a running firewalld there is nothing to keep the zone from: the script says which
        // policy will stop firewalld from starting, and how to fix it.
        lab.stop_firewalld();
        std::fs::remove_file(lab.config_dir.join("zones/libvirt.xml")).unwrap();
        let out = run_script(&lab, &scripts.post_remove);
        ok(&out, &format!("{name} post-remove"));
        let err = text(&out.stderr);
        assert!(
            err.contains("policy guests-out in /etc/firewalld/policies names zone libvirt")
                && err.contains("--delete-policy"),
            "{name}: {err}"
        );
    }
}

#[test]
fn main_package_postinst_tells_about_the_libvirt_restart_once() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    let script = repo().join("packaging/debian/virtzone.postinst");
    let first = run_script(
        &lab,
        &(
            "/bin/sh".into(),
            vec![script.to_string_lossy().into_owned(), "configure".into()],
        ),
    );
    ok(&first, "postinst configure");
    assert!(text(&first.stderr).contains("restart libvirtd"));
    let upgrade = run_script(
        &lab,
        &(
            "/bin/sh".into(),
            vec![
                script.to_string_lossy().into_owned(),
                "configure".into(),
                "0.0.1".into(),
            ],
        ),
    );
    ok(&upgrade, "postinst configure (upgrade)");
    assert!(upgrade.stderr.is_empty(), "{}", text(&upgrade.stderr));
    // Nothing else in the packaging touches /etc/firewalld.
    let mut offenders = BTreeSet::new();
    for dir in ["packaging/debian", "packaging/rpm"] {
        for f in fs::read_dir(repo().join(dir)).unwrap() {
            let path = f.unwrap().path();
            if path.is_file() {
                let body = fs::read_to_string(&path).unwrap();
                if body.lines().any(|l| {
                    !l.trim_start().starts_with('#')
                        && l.contains("/etc/firewalld")
                        && (l.contains("rm ") || l.contains("install ") || l.contains("cp "))
                }) {
                    offenders.insert(path.display().to_string());
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?} write /etc/firewalld");
}

/// Issue #24, S7: the package's removal — and only its removal, not an upgrade — runs `virtzone
/// forward purge`: the .deb's prerm with `remove` (not `upgrade`), the rpm's %preun with `$1` 0 (not
/// 1). Run with a recording `virtzone` put over /usr/bin in a private mount namespace (an overlay,
/// so the host's /usr/bin is never changed); a failing purge does not fail the removal.
#[test]
fn package_removal_purges_forwards_and_an_upgrade_does_not() {
    let spec = parsed_spec();
    let prerm = repo().join("packaging/debian/virtzone.prerm");
    let preun = spec_section(&spec, "%preun");
    let tmp = tempfile::tempdir().unwrap();
    let (upper, work, record) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("calls"),
    );
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    let fake = upper.join("virtzone");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexit \"${{FAKE_EXIT:-0}}\"\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let run = |script: &[String], fail: bool| -> (Output, String) {
        let _ = fs::remove_file(&record);
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(format!(
                "mount -t overlay overlay -o lowerdir=/usr/bin,upperdir='{}',workdir='{}' /usr/bin && exec \"$@\"",
                upper.display(),
                work.display()
            ))
            .arg("sh")
            .args(script)
            .env("FAKE_EXIT", if fail { "1" } else { "0" })
            .output()
            .unwrap();
        (out, fs::read_to_string(&record).unwrap_or_default())
    };
    let deb = |arg: &str| vec!["/bin/sh".into(), prerm.display().to_string(), arg.into()];
    let rpm = |count: &str| {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            preun.clone(),
            "scriptlet".into(),
            count.into(),
        ]
    };
    for (name, script, purges) in [
        ("deb remove", deb("remove"), true),
        ("deb upgrade", deb("upgrade"), false),
        ("rpm erase", rpm("0"), true),
        ("rpm upgrade", rpm("1"), false),
    ] {
        let (out, calls) = run(&script, false);
        assert_eq!(
            calls,
            if purges { "forward purge\n" } else { "" },
            "{name}: {}",
            text(&out.stderr)
        );
        if purges {
            // firewalld unreachable: the purge fails, the removal goes on and says so.
            let (out, calls) = run(&script, true);
            assert_eq!(calls, "forward purge\n", "{name}");
            if name.starts_with("deb") {
                assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            }
            assert!(
                text(&out.stderr).contains("remain in firewalld's configuration"),
                "{name}: {}",
                text(&out.stderr)
            );
        }
    }
}
