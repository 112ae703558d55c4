//! virtzone's iptables rules (through firewalld's direct passthrough): the accepts in
//! [`CHAIN`], the masquerades of `--hairpin` and loopback forwards, and the commands that bring a
//! chain from what `iptables -S` lists to what is wanted. Pure: listings in, steps out.

use std::collections::BTreeSet;

use super::accept::{Accept, COMMENT};
use super::model::Forward;
use crate::change::Step;

/// virtzone's own chain in iptables' `filter` table, jumped to first from `FORWARD`, holding one
/// accept per forward to a guest of a NAT network (libvirt's `LIBVIRT_FWI` rejects those packets).
pub const CHAIN: &str = "VIRTZONE_FWD";
/// virtzone's chain in iptables' `nat` table, jumped to first from `POSTROUTING`: for `--hairpin`
/// forwards, a masquerade of DNATed connections from the network's own subnet back into it, so the
/// guest's reply returns through the host (without `br_netfilter` it would go straight back over the
/// bridge, from the wrong address).
pub const HAIRPIN_CHAIN: &str = "VIRTZONE_HAIRPIN";
/// virtzone's chain in iptables' `nat` table, jumped to first from `POSTROUTING`: for forwards of
/// the host's loopback address (`--route-localnet`), a masquerade of the host's connections from
/// 127.0.0.0/8 to the guest, which could not answer 127.0.0.1 otherwise.
pub const LOCALNET_CHAIN: &str = "VIRTZONE_LOCALNET";

/// The rule of accept `a` (arguments after `-A CHAIN`), in the order `iptables -S` prints them.
pub fn accept_rule(a: &Accept) -> Vec<String> {
    let p = a.proto.as_str().to_string();
    let mut rule: Vec<String> = vec![
        "-d".into(),
        format!("{}/32", a.guest),
        "-o".into(),
        a.bridge.clone(),
        "-p".into(),
        p.clone(),
    ];
    match &a.ports[..] {
        [one] => rule.extend(["-m".into(), p, "--dport".into(), one.iptables()]),
        many => rule.extend([
            "-m".into(),
            "multiport".into(),
            "--dports".into(),
            many.iter()
                .map(|x| x.iptables())
                .collect::<Vec<_>>()
                .join(","),
        ]),
    }
    rule.extend(dnat_only("ACCEPT"));
    rule
}

/// The end of each of virtzone's iptables rules: only DNATed connections, virtzone's comment, the
/// target.
fn dnat_only(target: &str) -> impl Iterator<Item = String> + '_ {
    [
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        target,
    ]
    .into_iter()
    .map(str::to_string)
}

/// A masquerade (arguments after `-A CHAIN`) of connections from `source` that were DNATed to
/// forward `f`'s guest port, leaving by `bridge`: spelled as `iptables -S` prints it back.
pub(super) fn masquerade(source: &str, f: &Forward, bridge: &str) -> Vec<String> {
    let p = f.proto.as_str();
    [
        "-s",
        source,
        "-d",
        &format!("{}/32", f.guest),
        "-o",
        bridge,
        "-p",
        p,
        "-m",
        p,
        "--dport",
        &f.guest_port.iptables(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(dnat_only("MASQUERADE"))
    .collect()
}

/// The bridges libvirt's iptables backend rejects in `LIBVIRT_FWI` (`-A LIBVIRT_FWI … -o BRIDGE
/// … -j REJECT`), from `iptables -S`.
pub fn bridges(listing: &str) -> BTreeSet<String> {
    crate::libvirt::firewall::iptables_bridges(listing)
}

/// Splits an `iptables -S` line into arguments (double quotes group, backslash escapes).
pub fn split_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The iptables commands that make [`CHAIN`] hold exactly `wanted` and be the first jump of
/// `FORWARD` (libvirt inserts its own jumps at the top when it rebuilds, so ours must be moved back
/// in front of them: an accept behind `LIBVIRT_FWI`'s reject is worth nothing).
pub fn steps(listing: &str, wanted: &[Accept]) -> (Vec<Step>, Vec<Step>) {
    let wanted: Vec<Vec<String>> = wanted.iter().map(accept_rule).collect();
    chain_steps("filter", listing, CHAIN, "FORWARD", &wanted)
}

/// The iptables commands that make `chain` of `table` hold exactly the rules `wanted` (arguments
/// after `-A chain`) and be jumped to first from `parent`; when nothing is wanted, the chain goes.
pub fn chain_steps(
    table: &str,
    listing: &str,
    chain: &str,
    parent: &str,
    wanted_args: &[Vec<String>],
) -> (Vec<Step>, Vec<Step>) {
    let step = |args: Vec<String>| Step::Iptables {
        table: table.to_string(),
        args,
    };
    let to_args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = listing.lines().map(split_line).collect();
    let chain_exists = lines
        .iter()
        .any(|l| l.len() == 2 && l[0] == "-N" && l[1] == chain);
    let ours: Vec<&Vec<String>> = lines
        .iter()
        .filter(|l| l.len() > 2 && l[0] == "-A" && l[1] == chain)
        .collect();
    let parents: Vec<&Vec<String>> = lines
        .iter()
        .filter(|l| l.len() > 2 && l[0] == "-A" && l[1] == parent)
        .collect();
    let is_jump = |l: &Vec<String>| l[2..] == ["-j".to_string(), chain.to_string()];
    let jumps = parents.iter().filter(|l| is_jump(l)).count();
    let jump_first = parents.first().is_some_and(|l| is_jump(l));

    let (mut before, mut after) = (Vec::new(), Vec::new());
    if !wanted_args.is_empty() {
        if !chain_exists {
            before.push(step(to_args(&["-N", chain])));
        }
        for args in wanted_args {
            if !ours.iter().any(|l| l[2..] == args[..]) {
                let mut a = to_args(&["-A", chain]);
                a.extend(args.iter().cloned());
                before.push(step(a));
            }
        }
        if !jump_first || jumps != 1 {
            for _ in 0..jumps {
                before.push(step(to_args(&["-D", parent, "-j", chain])));
            }
            before.push(step(to_args(&["-I", parent, "1", "-j", chain])));
        }
    }
    for l in &ours {
        if !wanted_args.iter().any(|a| l[2..] == a[..]) {
            let mut a = to_args(&["-D", chain]);
            a.extend(l[2..].iter().cloned());
            after.push(step(a));
        }
    }
    if wanted_args.is_empty() && chain_exists {
        for _ in 0..jumps {
            after.push(step(to_args(&["-D", parent, "-j", chain])));
        }
        after.push(step(to_args(&["-X", chain])));
    }
    (before, after)
}
