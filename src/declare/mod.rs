//! Desired state in drop-in files (issue #22): `*.conf` in `/usr/lib/virtzone/virtzone.d/`
//! (vendor), `/run/virtzone/virtzone.d/` (runtime) and `/etc/virtzone/virtzone.d/` (admin), merged
//! with systemd's drop-in rules, each `[Forward]`, `[Allow]` or `[Bind]` section one object with
//! the `FILE:LINE` it came from.
//!
//! [`merge`] and [`parse`] are pure; [`read`] does the file system part (no symlink followed, sizes
//! capped, directories checked like the state directory). Values are validated by the CLI's own
//! code ([`crate::forward::request`], [`Opening::parse`], [`crate::names`]), so a file accepts and
//! refuses exactly what the flags do. docs/user-guide.md describes the files.

mod error;
mod read;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::ForwardSpec;
use crate::forward::model::{Allow, Opening};
use crate::forward::request::{network_name, request, Request};
use crate::names::{BridgeName, ZoneName};

pub use error::{DeclError, Origin};
pub use read::{dirs, merge, read, Entry, DIRS, DIRS_ENV, MAX_FILE};

use error::err;

/// A `[Bind]` section: a bridge in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindDecl {
    /// The bridge.
    pub bridge: BridgeName,
    /// The zone (`None`: the network's zone, as `attach` chooses it).
    pub zone: Option<ZoneName>,
    /// Also in firewalld's permanent configuration.
    pub permanent: bool,
}

/// One declared object.
#[derive(Debug, Clone)]
pub enum Object {
    /// `[Forward]`.
    Forward(Request),
    /// `[Allow]`.
    Allow(Allow),
    /// `[Bind]`.
    Bind(BindDecl),
}

/// One declared object and where it was declared.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// The file and the section's line.
    pub origin: Origin,
    /// What it declares.
    pub object: Object,
    /// The section's keys: key → (value, line).
    pub keys: BTreeMap<String, (String, usize)>,
}

impl Declaration {
    /// Where an error about this object points: the line of the key whose value the sentence
    /// quotes (the CLI's sentences name the bad value), else the section header.
    pub fn origin_of(&self, message: &str) -> Origin {
        Origin {
            file: self.origin.file.clone(),
            line: line_of(&self.keys, message).unwrap_or(self.origin.line),
        }
    }
}

/// The line of the key of `keys` whose value `message` names first, if any; a `PROTO/PORT` value
/// is also found by its port alone.
fn line_of(keys: &Keys, message: &str) -> Option<usize> {
    let words: Vec<&str> = message
        .split(|c: char| c.is_whitespace() || "\"(),;".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    // The first value the sentence names is what it is about ("guest address X is not … of
    // network N" is about X).
    let at = |v: &str| {
        words.iter().position(|w| {
            *w == v
                || v.split(['/', ':'])
                    .skip(1)
                    .any(|p| !p.is_empty() && *w == p)
        })
    };
    keys.values()
        .filter(|(v, _)| !v.is_empty())
        .filter_map(|(v, n)| at(v).map(|pos| (pos, *n)))
        .min()
        .map(|(_, n)| n)
}

/// A systemd boolean.
fn boolean(file: &str, line: usize, key: &str, v: &str) -> Result<bool, DeclError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(err(file, line, format!("{key}={v} is not yes or no"))),
    }
}

/// The keys of one section as read: key → (value, line).
type Keys = BTreeMap<String, (String, usize)>;

/// The keys each section accepts.
fn known(section: &str) -> &'static [&'static str] {
    match section {
        "Forward" => &[
            "Network",
            "Guest",
            "Domain",
            "Port",
            "HostAddress",
            "FromHost",
            "RouteLocalnet",
            "Hairpin",
        ],
        "Allow" => &["Network", "Service", "Port"],
        "Bind" => &["Bridge", "Zone", "Permanent"],
        _ => &[],
    }
}

/// The declarations of file `file` (its text `text`), or its first error.
pub fn parse(file: &str, text: &str) -> Result<Vec<Declaration>, DeclError> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize, Keys)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(file, n, format!("{line:?} is not a [Section] header")));
            };
            if known(name).is_empty() {
                return Err(err(
                    file,
                    n,
                    format!(
                        "unknown section [{name}]; the sections are [Forward], [Allow] and [Bind]"
                    ),
                ));
            }
            if let Some(done) = current.take() {
                out.push(section(file, done)?);
            }
            current = Some((name.to_string(), n, Keys::new()));
            continue;
        }
        let Some((section, _, keys)) = current.as_mut() else {
            return Err(err(file, n, "a key before the first [Section]"));
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(file, n, format!("{line:?} is not KEY=VALUE")));
        };
        let (key, value) = (key.trim(), value.trim());
        if !known(section).contains(&key) {
            return Err(err(
                file,
                n,
                format!(
                    "unknown key {key}= in [{section}]; it takes {}",
                    known(section).join("=, ") + "="
                ),
            ));
        }
        if keys
            .insert(key.to_string(), (value.to_string(), n))
            .is_some()
        {
            return Err(err(
                file,
                n,
                format!("{key}= is given twice in one [{section}]"),
            ));
        }
    }
    if let Some(done) = current.take() {
        out.push(section(file, done)?);
    }
    Ok(out)
}

/// One complete section as a declaration.
fn section(
    file: &str,
    (name, line, keys): (String, usize, Keys),
) -> Result<Declaration, DeclError> {
    let get = |k: &str| keys.get(k).map(|(v, _)| v.clone());
    let at = |k: &str| keys.get(k).map_or(line, |(_, n)| *n);
    let flag = |k: &str| -> Result<bool, DeclError> {
        keys.get(k)
            .map_or(Ok(false), |(v, n)| boolean(file, *n, k, v))
    };
    let object = match name.as_str() {
        "Forward" => {
            let spec = ForwardSpec {
                network: get("Network"),
                guest: get("Guest"),
                domain: get("Domain"),
                host_address: get("HostAddress"),
                from_host: flag("FromHost")?,
                hairpin: flag("Hairpin")?,
                route_localnet: flag("RouteLocalnet")?,
            };
            let Some(port) = get("Port") else {
                return Err(err(
                    file,
                    line,
                    "[Forward] needs Port=PROTO/HOSTPORT[:GUESTPORT]",
                ));
            };
            // The sentence is the CLI's; the line is the key it is about where one is given.
            let req = request(&spec, &port)
                .map_err(|m| err(file, line_of(&keys, &m).unwrap_or(line), m))?;
            Object::Forward(req)
        }
        "Allow" => {
            let Some(network) = get("Network") else {
                return Err(err(file, line, "[Allow] needs Network=NET"));
            };
            let network = network_name(&network).map_err(|m| err(file, at("Network"), m))?;
            let (what, key) = match (get("Service"), get("Port")) {
                (Some(s), None) => (s, "Service"),
                (None, Some(p)) => (p, "Port"),
                _ => {
                    return Err(err(
                        file,
                        line,
                        "[Allow] needs one of Service=NAME and Port=PORT/PROTO",
                    ))
                }
            };
            let opening = Opening::parse(&what).map_err(|m| err(file, at(key), m))?;
            if matches!(
                (&opening, key),
                (Opening::Service(_), "Port") | (Opening::Port { .. }, "Service")
            ) {
                return Err(err(
                    file,
                    at(key),
                    format!(
                        "{key}={what} is not a {}",
                        if key == "Port" {
                            "PORT/PROTO"
                        } else {
                            "service name"
                        }
                    ),
                ));
            }
            Object::Allow(Allow { network, opening })
        }
        _ => {
            let Some(bridge) = get("Bridge") else {
                return Err(err(file, line, "[Bind] needs Bridge=BR"));
            };
            let bridge =
                BridgeName::new(&bridge).map_err(|e| err(file, at("Bridge"), e.to_string()))?;
            let zone = get("Zone")
                .map(|z| ZoneName::new(&z))
                .transpose()
                .map_err(|e| err(file, at("Zone"), e.to_string()))?;
            Object::Bind(BindDecl {
                bridge,
                zone,
                permanent: flag("Permanent")?,
            })
        }
    };
    Ok(Declaration {
        origin: Origin {
            file: file.to_string(),
            line,
        },
        object,
        keys,
    })
}

/// Refuses two declarations of the same host port (forwards), or of the same bridge (bindings),
/// that differ: which one is meant cannot be told. Identical ones are kept once.
pub fn dedupe(decls: Vec<Declaration>) -> Result<Vec<Declaration>, DeclError> {
    let mut out: Vec<Declaration> = Vec::new();
    for d in decls {
        let mut duplicate = false;
        for o in &out {
            match (&o.object, &d.object) {
                (Object::Forward(a), Object::Forward(b)) => {
                    if a == b {
                        duplicate = true;
                    } else if host_side(a).clashes_with(&host_side(b)) {
                        return Err(clash(&d, o, "forwards the same host port differently"));
                    }
                }
                (Object::Allow(a), Object::Allow(b)) => duplicate |= a == b,
                (Object::Bind(a), Object::Bind(b)) if a.bridge == b.bridge => {
                    if a == b {
                        duplicate = true;
                    } else {
                        return Err(clash(&d, o, "binds the same bridge differently"));
                    }
                }
                _ => {}
            }
        }
        if !duplicate {
            out.push(d);
        }
    }
    Ok(out)
}

fn clash(d: &Declaration, o: &Declaration, what: &str) -> DeclError {
    DeclError {
        origin: d.origin.clone(),
        message: format!("{what} than {}", o.origin),
    }
}

/// The host side a forward request claims.
pub fn host_side(r: &Request) -> crate::forward::model::HostSide {
    match r {
        Request::Guest(g) => g.rule.host_side(),
        Request::Domain(d) => d.rule.host_side(),
    }
}

/// Every declaration of `files` (path, text), in order, deduplicated; or every error found (each
/// file's first), in order.
pub fn declarations(files: &[(PathBuf, String)]) -> Result<Vec<Declaration>, Vec<DeclError>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        match parse(&path.display().to_string(), text) {
            Ok(d) => all.extend(d),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    dedupe(all).map_err(|e| vec![e])
}

#[cfg(test)]
mod tests;
