//! Generates virtzone's man pages and shell completions from the clap definition of the command line
//! (`virtzone::cli::Cli`), so that they can never disagree with `virtzone --help`.
//!
//! ```text
//! cargo run --example gen-docs -- OUT_DIR
//! ```
//! writes
//! - `OUT_DIR/man/virtzone.8` and one page per subcommand, `OUT_DIR/man/virtzone-SUBCOMMAND.8`
//!   (section 8: it is an administrator's tool and a daemon);
//! - `OUT_DIR/completions/virtzone.bash`, `OUT_DIR/completions/_virtzone` (zsh) and
//!   `OUT_DIR/completions/virtzone.fish`.
//!
//! `make gen` runs it; `make install` installs the result. `tests/install_tree.rs` includes this file
//! as a module and calls [`generate`] directly, so the test needs no nested cargo invocation.
//!
//! The output is reproducible: no date goes into the pages, so two runs on one source tree give the
//! same bytes (packagers compare builds).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

/// Exit statuses, shared by every page: the contract in the README.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success (for check: guest networking will work)."),
    (
        "1",
        "Refused or failed: guest networking would break, a binding is missing (status \
         --verify), or firewalld said no. The message on standard error says why and what to do.",
    ),
    ("2", "Bad input or usage; nothing was changed."),
];

/// The environment every subcommand honours.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "The system bus to use (firewalld and the virtzone daemon answer there). Default: \
         unix:path=/run/dbus/system_bus_socket.",
    ),
    (
        "VIRTZONE_STATE_DIR",
        "virtzone's state directory (the bindings it keeps), unless --state-dir is given. \
         Default: /var/lib/virtzone.",
    ),
    (
        "VIRTZONE_LOG",
        "Log filter in tracing's env-filter syntax (default: info for serve, warn otherwise).",
    ),
];

/// Files every page lists.
const FILES: &[(&str, &str)] = &[
    (
        "/usr/lib/firewalld/zones/libvirt.xml, libvirt-routed.xml",
        "The zones as a package ships them (firewalld's stock tier).",
    ),
    (
        "/usr/lib/firewalld/policies/libvirt-routed-in.xml, libvirt-routed-out.xml, \
         libvirt-to-host.xml",
        "The policies of the routed zone, as a package ships them.",
    ),
    (
        "/etc/firewalld/zones, /etc/firewalld/policies",
        "The administrator's copies (what firewall-cmd --permanent writes); they override the \
         stock tier and are never touched by a package.",
    ),
    (
        "/var/lib/virtzone/bindings.json",
        "The bridge bindings virtzone keeps (attach, the libvirt hook) and the daemon re-applies.",
    ),
    (
        "/etc/libvirt/hooks/network.d/50-virtzone",
        "The libvirt network hook that runs virtzone hook network.",
    ),
    (
        "/usr/share/dbus-1/system.d/org.virtzone.VirtZone1.conf",
        "The daemon's bus policy: only root may own the name and change bindings.",
    ),
];

/// Extra words for some subcommands' pages (after DESCRIPTION's generated text).
fn notes(subcommand: &str) -> &'static [&'static str] {
    match subcommand {
        "check" => &[
            "libvirt's network hook runs the same check before a network starts and refuses the \
             start on exit status 1.",
        ],
        "install" => &[
            "Live installs go into firewalld's permanent configuration (/etc/firewalld) over \
             D-Bus; --root writes the stock tier of a DESTDIR-style tree, as a distribution \
             package ships it. An administrator's own zones of the same names are kept.",
        ],
        "serve" => &[
            "Normally started by systemd as virtzone.service (D-Bus name org.virtzone.VirtZone1, \
             interface documented in /usr/share/doc/virtzone/dbus-api.md). It re-applies every \
             binding recorded in the state directory after each firewalld reload and restart.",
        ],
        "hook" => &[
            "Installed as /etc/libvirt/hooks/network.d/50-virtzone; restart libvirtd (or \
             virtnetworkd) after installing the first hook.",
        ],
        _ => &[],
    }
}

/// Escapes text for a roff text line: backslashes, hyphens (so that `man` does not turn `--root`
/// into typographic dashes), and a leading `.` or `'`, which roff would read as a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A `.SH` section of tagged paragraphs (`.TP`), one per `(tag, text)`.
fn tagged_section(out: &mut String, heading: &str, items: &[(&str, &str)]) {
    out.push_str(&format!(".SH \"{heading}\"\n"));
    for (tag, text) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_text(tag),
            roff_text(text)
        ));
    }
}

/// Renders one page: clap_mangen's sections, then the sections clap knows nothing about.
fn page(cmd: &clap::Command, subcommand: Option<&str>) -> io::Result<Vec<u8>> {
    // No date and no manual name: clap_mangen drops empty `.TH` arguments, which would shift the
    // ones after them; man then shows its own heading for section 8.
    // The source names the package for every page (subcommands have no version of their own).
    let man = Man::new(cmd.clone())
        .section("8")
        .source(format!("virtzone {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    let mut extra = String::new();
    for note in subcommand.map(notes).unwrap_or_default() {
        extra.push_str(&format!(".PP\n{}\n", roff_text(note)));
    }
    out.extend_from_slice(extra.as_bytes());
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut tail = String::new();
    tagged_section(&mut tail, "EXIT STATUS", EXIT_STATUS);
    tagged_section(&mut tail, "ENVIRONMENT", ENVIRONMENT);
    if subcommand.is_none() {
        tagged_section(&mut tail, "FILES", FILES);
    }
    tail.push_str(".SH \"SEE ALSO\"\n");
    let mut see_also = Vec::new();
    if subcommand.is_some() {
        see_also.push("\\fBvirtzone\\fR(8)".to_string());
    }
    for other in ["firewall-cmd(1)", "firewalld(1)", "virsh(1)"] {
        let (name, section) = other.split_once('(').unwrap_or((other, ""));
        see_also.push(format!("\\fB{}\\fR({section}", roff_text(name)));
    }
    tail.push_str(&see_also.join(", "));
    tail.push_str(
        "\n.PP\nThe user guide, troubleshooting, D\\-Bus API and JSON references in \
         /usr/share/doc/virtzone.\n",
    );
    out.extend_from_slice(tail.as_bytes());
    // Subcommands carry no version of their own (clap_mangen would panic on them).
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// Writes the man pages and completions into `out_dir` (see the module docs); returns the files.
pub fn generate(out_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out_dir.join("man");
    fs::create_dir_all(&man_dir)?;
    // Building the command once gives every subcommand its display name (`virtzone-status`) and its
    // bin name (`virtzone status`), which the pages use in NAME, SYNOPSIS and cross references.
    let mut cmd = virtzone::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let path = man_dir.join("virtzone.8");
    fs::write(&path, page(&cmd, None)?)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name());
        let path = man_dir.join(format!("{name}.8"));
        fs::write(&path, page(sub, Some(sub.get_name()))?)?;
        written.push(path);
    }

    let comp_dir = out_dir.join("completions");
    fs::create_dir_all(&comp_dir)?;
    for (shell, file) in [
        (Shell::Bash, "virtzone.bash"),
        (Shell::Zsh, "_virtzone"),
        (Shell::Fish, "virtzone.fish"),
    ] {
        let mut cmd = virtzone::cli::Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "virtzone", &mut buf);
        let path = comp_dir.join(file);
        fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(written)
}

#[allow(dead_code)] // Unused where a test includes this file as a module.
fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out_dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUT_DIR");
        return std::process::ExitCode::from(2);
    };
    match generate(Path::new(&out_dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "gen-docs: cannot write into {}: {e}",
                Path::new(&out_dir).display()
            );
            std::process::ExitCode::from(1)
        }
    }
}
