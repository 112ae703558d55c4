//! What `doctor --fix` changes on the host itself, as [`Plan`]s of [`Step`]s for the one executor
//! (issue #19): pure functions of what was read, so that a fix is tested without root and applied
//! with rollback. firewalld's fixes (install, bind) go through their own planners.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::change::{Plan, Step};

/// Where `--fix` keeps br_netfilter off across reboots.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-virtzone-bridge.conf";

/// Docker's chain for the admin's own rules, which Docker never flushes while it runs.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// The state file (in virtzone's state directory) of the accepts `doctor --fix` put in
/// `DOCKER-USER`: desired state, re-applied by the daemon whenever Docker recreates the chain.
pub const DOCKER_ACCEPTS_FILE: &str = "docker-accepts.json";

/// The br_netfilter keys (dotted names the check found on) off now, and in [`SYSCTL_FILE`] for the
/// next boot, merged into what the file says already (`existing`, `None`: no file).
pub fn bridge_netfilter(keys: &[String], existing: Option<&str>) -> Plan {
    let mut steps: Vec<Step> = keys
        .iter()
        .map(|key| Step::Sysctl {
            key: key.replace('.', "/"),
            value: "0".into(),
            // The check proposes only keys it found on.
            previous: "1".into(),
        })
        .collect();
    let conf = super::merge_sysctl_conf(existing, keys);
    if existing != Some(conf.as_str()) {
        steps.push(Step::WriteFile {
            path: PathBuf::from(SYSCTL_FILE),
            content: Some(conf),
            previous: existing.map(str::to_string),
            mode: 0o644,
        });
    }
    Plan {
        steps,
        warnings: Vec::new(),
    }
}

/// One path `doctor --fix` opened in `DOCKER-USER`: new connections from a bridge to the uplink,
/// and their replies back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DockerPath {
    /// The libvirt network's bridge.
    pub bridge: String,
    /// The interface of the default route.
    pub uplink: String,
}

impl std::fmt::Display for DockerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.bridge, self.uplink)
    }
}

impl DockerPath {
    /// The two rules (arguments after the chain) of this path.
    pub fn rules(&self) -> [Vec<String>; 2] {
        super::docker_user_rules(&self.bridge, &self.uplink)
    }
}

/// The record of [`DOCKER_ACCEPTS_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerAccepts {
    /// The paths the admin accepted the fix for, sorted, each once.
    #[serde(default)]
    pub paths: Vec<DockerPath>,
}

impl DockerAccepts {
    /// Adds `paths` (once each).
    pub fn add(&mut self, paths: &[DockerPath]) {
        self.paths.extend(paths.iter().cloned());
        self.paths.sort();
        self.paths.dedup();
    }
}

/// What `DOCKER-USER` holds, as far as the accepts are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerUserFacts {
    /// Whether the chain exists (Docker runs, or ran since boot).
    pub chain: bool,
    /// The accepts' rules found in it (`iptables -C`).
    pub present: Vec<Vec<String>>,
}

/// The accepts of `paths` missing from `DOCKER-USER`, inserted at its top (before Docker's
/// `RETURN`); nothing while the chain does not exist (Docker is not there: nothing drops).
pub fn docker_accepts(paths: &[DockerPath], facts: &DockerUserFacts) -> Plan {
    docker_steps(paths, facts, true)
}

/// The accepts of `paths` still in `DOCKER-USER`, deleted.
pub fn docker_unaccepts(paths: &[DockerPath], facts: &DockerUserFacts) -> Plan {
    docker_steps(paths, facts, false)
}

fn docker_steps(paths: &[DockerPath], facts: &DockerUserFacts, insert: bool) -> Plan {
    let mut steps = Vec::new();
    if facts.chain {
        for path in paths {
            for rule in path.rules() {
                if facts.present.contains(&rule) != insert && !steps_hold(&steps, &rule) {
                    steps.push(Step::IptablesRule {
                        chain: DOCKER_USER.into(),
                        rule,
                        insert,
                    });
                }
            }
        }
    }
    Plan {
        steps,
        warnings: Vec::new(),
    }
}

/// Whether `steps` already change `rule` (a path named twice).
fn steps_hold(steps: &[Step], rule: &[String]) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, Step::IptablesRule { rule: r, .. } if r == rule))
}

/// Reads [`DockerUserFacts`] for `paths` with `iptables -S` and `-C` (reads only; with the
/// external commands' deadline). `None` when iptables cannot tell (missing, hung, failing).
pub fn read_docker_user(paths: &[DockerPath]) -> Option<DockerUserFacts> {
    let run = |args: &[&str]| {
        crate::external::output_within(
            std::process::Command::new("iptables")
                .args(["-w", "5"])
                .args(args),
            None,
            crate::external::COMMAND_TIMEOUT,
        )
        .ok()
    };
    let listing = run(&["-S", DOCKER_USER])?;
    if !listing.status.success() {
        // Exit 1 with "No chain/target/match by that name": no chain. Anything else: unknown.
        let missing = listing.status.code() == Some(1)
            && String::from_utf8_lossy(&listing.stderr).contains("No chain");
        return missing.then(DockerUserFacts::default);
    }
    let mut present = Vec::new();
    for path in paths {
        for rule in path.rules() {
            let mut args = vec!["-C", DOCKER_USER];
            args.extend(rule.iter().map(String::as_str));
            let out = run(&args)?;
            match out.status.code() {
                Some(0) => present.push(rule),
                // 1: no such rule (the chain exists, so that is all it can mean).
                Some(1) => {}
                _ => return None,
            }
        }
    }
    Some(DockerUserFacts {
        chain: true,
        present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(bridge: &str, uplink: &str) -> DockerPath {
        DockerPath {
            bridge: bridge.into(),
            uplink: uplink.into(),
        }
    }

    fn rule(words: &str) -> Vec<String> {
        words.split(' ').map(String::from).collect()
    }

    const OUT: &str = "-i virbr0 -o eth0 -j ACCEPT";
    const BACK: &str = "-i eth0 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

    fn step(words: &str, insert: bool) -> Step {
        Step::IptablesRule {
            chain: "DOCKER-USER".into(),
            rule: rule(words),
            insert,
        }
    }

    #[test]
    fn br_netfilter_goes_off_now_and_in_the_sysctl_file() {
        let keys = vec!["net.bridge.bridge-nf-call-iptables".to_string()];
        let plan = bridge_netfilter(&keys, None);
        assert_eq!(
            plan.steps,
            [
                Step::Sysctl {
                    key: "net/bridge/bridge-nf-call-iptables".into(),
                    value: "0".into(),
                    previous: "1".into(),
                },
                Step::WriteFile {
                    path: SYSCTL_FILE.into(),
                    content: Some(crate::doctor::merge_sysctl_conf(None, &keys)),
                    previous: None,
                    mode: 0o644,
                },
            ]
        );
        // The file's inverse is its removal: virtzone created it.
        assert_eq!(
            plan.steps[1].inverse().unwrap().to_string(),
            format!("remove {SYSCTL_FILE}")
        );
        // A file that says it already is not written again; one that says more keeps it, and its
        // old content is the inverse.
        let done = crate::doctor::merge_sysctl_conf(None, &keys);
        assert_eq!(bridge_netfilter(&keys, Some(&done)).steps.len(), 1);
        let other = "net.ipv4.ip_forward = 1\n";
        let plan = bridge_netfilter(&keys, Some(other));
        let Step::WriteFile {
            content, previous, ..
        } = &plan.steps[1]
        else {
            panic!("{plan:?}");
        };
        assert!(
            content.as_deref().unwrap().starts_with(other),
            "{content:?}"
        );
        assert_eq!(previous.as_deref(), Some(other));
    }

    #[test]
    fn docker_accepts_insert_only_what_is_missing() {
        let paths = [path("virbr0", "eth0")];
        let none = DockerUserFacts {
            chain: true,
            present: vec![],
        };
        assert_eq!(
            docker_accepts(&paths, &none).steps,
            [step(OUT, true), step(BACK, true)]
        );
        let half = DockerUserFacts {
            chain: true,
            present: vec![rule(OUT)],
        };
        assert_eq!(docker_accepts(&paths, &half).steps, [step(BACK, true)]);
        let all = DockerUserFacts {
            chain: true,
            present: vec![rule(OUT), rule(BACK)],
        };
        assert!(docker_accepts(&paths, &all).is_empty());
        // No chain (Docker gone): nothing to put back, and nothing to remove.
        assert!(docker_accepts(&paths, &DockerUserFacts::default()).is_empty());
        assert!(docker_unaccepts(&paths, &DockerUserFacts::default()).is_empty());
        // A path named twice is inserted once.
        let twice = [path("virbr0", "eth0"), path("virbr0", "eth0")];
        assert_eq!(docker_accepts(&twice, &none).steps.len(), 2);
    }

    #[test]
    fn docker_unaccepts_delete_only_what_is_there() {
        let paths = [path("virbr0", "eth0")];
        let half = DockerUserFacts {
            chain: true,
            present: vec![rule(BACK)],
        };
        assert_eq!(docker_unaccepts(&paths, &half).steps, [step(BACK, false)]);
        // Each deletion's inverse puts the rule back.
        assert_eq!(step(BACK, false).inverse(), Some(step(BACK, true)));
    }

    #[test]
    fn the_record_keeps_each_path_once() {
        let mut record = DockerAccepts::default();
        record.add(&[path("virbr1", "eth0"), path("virbr0", "eth0")]);
        record.add(&[path("virbr0", "eth0")]);
        assert_eq!(
            record.paths,
            [path("virbr0", "eth0"), path("virbr1", "eth0")]
        );
    }
}
