//! Every command the documentation shows runs here, in order, against a real firewalld lab.
//!
//! The convention (docs/packaging.md repeats it for writers):
//! - Commands an admin can type go into fenced blocks marked `console`: a line starting with `# `
//!   runs as root, `$ ` as an unprivileged user (nobody). A trailing `\` continues a command on the
//!   next line; a heredoc (`<<'EOF'` … `EOF`) is part of its command.
//! - The lines after a command, up to the next one, are its output as the doc shows it: each such
//!   line must appear in what the command printed (stdout and stderr; runs of spaces count as one,
//!   `…` stands for any text). A line `[exit status: N]` says the command exits with N; otherwise
//!   it must exit 0.
//! - What an admin does that a lab cannot (systemctl, apt, editing /etc, rebooting) goes into `sh`
//!   or `text` blocks, which are not run.
//! - Hidden setup that the story needs but the reader does not (a bridge libvirt would create, the
//!   daemon systemd would start) is an HTML comment `<!-- doctest` … `-->` holding `# ` commands; it
//!   runs at that point, with the same checks.
//! - `<!-- doctest-lab: KEY=VALUE … -->` starts a fresh lab for what follows (keys: `backend`
//!   nftables|iptables, `release` debian12|debian13, `version` a reported firewalld version,
//!   `firewalld` no). A document's first block gets a default lab (Debian 12, nftables).
//!
//! Each lab carries the project's bus policy; `virtzone` on PATH is the binary under test, and its
//! state directory is inside the lab. Commands run in a work directory inside the lab dir.

use crate::common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Lab, LabConfig, Release};

/// How long one documented command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct DocCommand {
    /// Where it is: file and line.
    place: String,
    /// `true` for `# ` (root), `false` for `$ ` (nobody).
    root: bool,
    script: String,
    expected_status: i32,
    /// The output lines the doc shows (trimmed, non-empty).
    output: Vec<String>,
}

#[derive(Debug)]
enum Item {
    Lab(LabConfig),
    Commands(Vec<DocCommand>),
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The documents: README.md and docs/*.md, sorted.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

fn lab_config(spec: &str, place: &str) -> LabConfig {
    let mut cfg = LabConfig::default();
    for pair in spec.split_whitespace() {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("{place}: bad doctest-lab setting {pair:?}"));
        match (key, value) {
            ("backend", "nftables") => cfg.backend = Backend::Nftables,
            ("backend", "iptables") => cfg.backend = Backend::Iptables,
            ("release", "debian12") => cfg.release = Release::Debian12,
            ("release", "debian13") => cfg.release = Release::Debian13,
            ("release", "debian11") => cfg.release = Release::Debian11,
            ("release", "sid") => cfg.release = Release::Sid,
            ("version", v) => cfg.reported_version = Some(v.to_string()),
            ("firewalld", "no") => cfg.firewalld = false,
            _ => panic!("{place}: unknown doctest-lab setting {pair:?}"),
        }
    }
    cfg
}

/// Parses the command lines of a console block or a hidden setup comment.
fn parse_commands(lines: &[(usize, &str)], file: &str, hidden: bool) -> Vec<DocCommand> {
    let mut commands: Vec<DocCommand> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (lineno, line) = lines[i];
        let place = format!("{file}:{lineno}");
        let prompt = if line.starts_with("# ") {
            Some(true)
        } else if line.starts_with("$ ") && !hidden {
            Some(false)
        } else {
            None
        };
        let Some(root) = prompt else {
            let Some(last) = commands.last_mut() else {
                panic!("{place}: output before the first command in a console block: {line:?}");
            };
            let trimmed = line.trim();
            if let Some(status) = trimmed
                .strip_prefix("[exit status: ")
                .and_then(|s| s.strip_suffix(']'))
            {
                last.expected_status = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{place}: bad exit status {status:?}"));
            } else if !trimmed.is_empty() {
                last.output.push(trimmed.to_string());
            }
            i += 1;
            continue;
        };
        let mut script = line[2..].to_string();
        i += 1;
        while script.ends_with('\\') && i < lines.len() {
            script.pop();
            script.push_str(lines[i].1.trim_start());
            i += 1;
        }
        if let Some(pos) = script.find("<<") {
            let word: String = script[pos + 2..]
                .trim_start_matches('-')
                .trim_matches(|c| c == '\'' || c == '"' || c == ' ')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(!word.is_empty(), "{place}: heredoc without a word");
            loop {
                assert!(i < lines.len(), "{place}: heredoc {word} never ends");
                script.push('\n');
                script.push_str(lines[i].1);
                i += 1;
                if lines[i - 1].1.trim() == word {
                    break;
                }
            }
        }
        commands.push(DocCommand {
            place,
            root,
            script,
            expected_status: 0,
            output: Vec::new(),
        });
    }
    commands
}

/// The runnable items of one document, in order.
fn parse(path: &Path) -> Vec<Item> {
    let file = path.strip_prefix(repo()).unwrap().display().to_string();
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(n, l)| (n + 1, l)).collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (lineno, line) = lines[i];
        let place = format!("{file}:{lineno}");
        let trimmed = line.trim_start();
        if let Some(spec) = trimmed
            .strip_prefix("<!-- doctest-lab:")
            .and_then(|s| s.trim_end().strip_suffix("-->"))
        {
            items.push(Item::Lab(lab_config(spec, &place)));
            i += 1;
        } else if trimmed.trim_end() == "<!-- doctest" {
            let start = i + 1;
            i = start;
            while i < lines.len() && lines[i].1.trim() != "-->" {
                i += 1;
            }
            assert!(i < lines.len(), "{place}: unterminated doctest comment");
            items.push(Item::Commands(parse_commands(
                &lines[start..i],
                &file,
                true,
            )));
            i += 1;
        } else if trimmed.starts_with("```") {
            let fence_lang = trimmed.trim_start_matches('`').trim();
            let start = i + 1;
            i = start;
            while i < lines.len() && !lines[i].1.trim_start().starts_with("```") {
                i += 1;
            }
            assert!(i < lines.len(), "{place}: unterminated code block");
            if fence_lang == "console" {
                let commands = parse_commands(&lines[start..i], &file, false);
                assert!(
                    !commands.is_empty(),
                    "{place}: a console block without a `# ` or `$ ` command"
                );
                items.push(Item::Commands(commands));
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    items
}

/// Whether `actual` (one output line) matches `shown` (one doc line): runs of whitespace count as
/// one space, `…` matches any text.
fn line_matches(shown: &str, actual: &str) -> bool {
    fn squeeze(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    let shown = squeeze(shown);
    let actual = squeeze(actual);
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() == 1 {
        return shown == actual;
    }
    let mut rest = actual.as_str();
    for (n, part) in parts.iter().enumerate() {
        if n == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if n == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

/// A lab for documentation commands: the project's bus policy, `virtzone` on PATH.
struct DocLab {
    lab: Lab,
    bin: PathBuf,
    work: PathBuf,
}

impl DocLab {
    fn start(cfg: LabConfig) -> DocLab {
        let lab = Lab::start(LabConfig {
            bus_policies: vec![repo().join("dbus/org.virtzone.VirtZone1.conf")],
            ..cfg
        });
        let bin = lab.dir().join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_virtzone"), bin.join("virtzone")).unwrap();
        let work = lab.dir().join("work");
        fs::create_dir_all(&work).unwrap();
        // The unprivileged user's commands run there too.
        fs::set_permissions(&work, fs::Permissions::from_mode(0o1777)).unwrap();
        DocLab { lab, bin, work }
    }

    /// Runs one command with a deadline; returns (exit status, stdout + stderr).
    fn run(&self, cmd: &DocCommand) -> (i32, String) {
        let mut command = if cmd.root {
            self.lab.command("bash")
        } else {
            let mut c = self.lab.command("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "bash",
            ]);
            c
        };
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.bin.display());
        command
            .arg("-c")
            .arg(&cmd.script)
            .current_dir(&self.work)
            .env("PATH", path)
            .env("VIRTZONE_STATE_DIR", self.lab.dir().join("state"))
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", &self.work)
            .env_remove("VIRTZONE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PYTHON") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot run: {e}", cmd.place));
        // Drain both pipes while waiting, so that a chatty command cannot block on a full pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > COMMAND_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: `{}` did not finish in {COMMAND_DEADLINE:?}",
                    cmd.place, cmd.script
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let out = out_reader.join().unwrap();
        let err = err_reader.join().unwrap();
        (status.code().unwrap_or(-1), format!("{out}{err}"))
    }
}

/// Runs one document; returns how many commands ran.
fn run_document(path: &Path) -> usize {
    let items = parse(path);
    let mut lab: Option<DocLab> = None;
    let mut ran = 0;
    for item in items {
        match item {
            Item::Lab(cfg) => {
                // The old lab goes first: its namespace and daemons are torn down.
                drop(lab.take());
                lab = Some(DocLab::start(cfg));
            }
            Item::Commands(commands) => {
                let lab = lab.get_or_insert_with(|| DocLab::start(LabConfig::default()));
                for cmd in commands {
                    let (status, output) = lab.run(&cmd);
                    assert_eq!(
                        status, cmd.expected_status,
                        "{}: `{}` exited {status}, the doc says {}; it printed:\n{output}",
                        cmd.place, cmd.script, cmd.expected_status
                    );
                    for shown in &cmd.output {
                        assert!(
                            output.lines().any(|l| line_matches(shown, l)),
                            "{}: `{}` did not print the line the doc shows:\n  {shown}\nit printed:\n{output}",
                            cmd.place,
                            cmd.script
                        );
                    }
                    ran += 1;
                }
            }
        }
    }
    ran
}

#[test]
fn line_matching_follows_the_convention() {
    assert!(line_matches("a  b", "a b"));
    assert!(line_matches(
        "firewalld: … (state RUNNING, …)",
        "firewalld: 1.3.3 (state RUNNING, backend nftables)"
    ));
    assert!(!line_matches("firewalld: 1.3.3", "firewalld: 2.3.1"));
    assert!(line_matches("…", "anything"));
    let cmds = parse_commands(
        &[
            (1, "# virtzone check \\"),
            (2, "    --bridge virbr0"),
            (3, "virtzone: …"),
            (4, "[exit status: 1]"),
            (5, "$ cat <<'EOF' >x"),
            (6, "hello"),
            (7, "EOF"),
        ],
        "t.md",
        false,
    );
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0].script, "virtzone check --bridge virbr0");
    assert_eq!(cmds[0].expected_status, 1);
    assert_eq!(cmds[0].output, vec!["virtzone: …"]);
    assert!(!cmds[1].root);
    assert_eq!(cmds[1].script, "cat <<'EOF' >x\nhello\nEOF");
}

/// One test per document would need one test function per file; instead every document runs here,
/// each in its own labs, and the failure names the file and line.
#[test]
fn every_documented_command_works() {
    let mut total = 0;
    let mut report = Vec::new();
    for doc in documents() {
        let n = run_document(&doc);
        report.push(format!("{}: {n}", doc.display()));
        total += n;
    }
    // The documents this suite was written for do show commands: an empty run means the parser
    // lost them.
    assert!(total >= 20, "only {total} commands found: {report:?}");
    for must in ["user-guide.md", "troubleshooting.md", "dbus-api.md"] {
        assert!(
            report
                .iter()
                .any(|r| r.contains(must) && !r.ends_with(": 0")),
            "no commands ran from {must}: {report:?}"
        );
    }
}
