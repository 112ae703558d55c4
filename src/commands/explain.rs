//! `virtzone explain`: one synthetic packet through the live ruleset, every table and base chain it
//! crosses, with the rule that decided each, for a person. The same evaluator and the same probes
//! as `status --verify`.

use std::net::IpAddr;
use std::process::{Command, ExitCode};

use super::output::{print_json, Failure};
use crate::names::BridgeName;
use crate::verify::check::{ends, probe, OTHER_IFACE};
use crate::verify::eval::{evaluate, AddrType, Proto, Trace, Verdict};

/// Which packet to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// A guest to the host (at this address of the host's, else its IPv4 address on the bridge).
    ToHost(Option<IpAddr>),
    /// A guest to `to` (or the world), forwarded.
    Forward(Option<IpAddr>),
    /// `from` to a guest, a new connection into the network.
    From(IpAddr),
}

/// Parses `tcp/22`, `udp/53`, `icmp` (an echo request).
pub fn parse_service(s: &str) -> Result<(Proto, u16), String> {
    let lower = s.to_ascii_lowercase();
    if lower == "icmp" || lower == "icmpv6" || lower == "ping" {
        return Ok((Proto::Icmp, 0));
    }
    let (proto, port) = lower
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not PROTO/PORT (tcp/22, udp/53) or icmp"))?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(format!("protocol {other:?} is not tcp, udp or icmp")),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?;
    Ok((proto, port))
}

/// What a destination the admin gave is: multicast and the limited broadcast are told by the
/// address itself; anything else given with --to-host is one of the host's.
fn addr_type(a: IpAddr) -> AddrType {
    match a {
        IpAddr::V4(v4) if v4.is_broadcast() => AddrType::Broadcast,
        a if a.is_multicast() => AddrType::Multicast,
        _ => AddrType::Local,
    }
}

/// The interface the route to `addr` leaves by (`ip -j route get ADDR`).
fn route_dev(addr: IpAddr) -> Option<String> {
    let out = crate::external::output_within(
        Command::new("ip").args(["-j", "route", "get", &addr.to_string()]),
        None,
        crate::external::COMMAND_TIMEOUT,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["dev"].as_str().map(String::from)
}

/// Runs `explain`.
pub async fn run(
    bridge: &BridgeName,
    direction: Direction,
    service: &str,
    json: bool,
) -> Result<ExitCode, Failure> {
    let (proto, port) = parse_service(service).map_err(Failure::Usage)?;
    let br = bridge.as_str().to_string();
    if !std::path::Path::new("/sys/class/net").join(&br).exists() {
        return Err(Failure::Usage(format!(
            "there is no interface {br} in this network namespace"
        )));
    }
    let trace = tokio::task::spawn_blocking(move || -> Result<Trace, Failure> {
        let rs = crate::verify::read_ruleset().map_err(|e| Failure::Refused(e.to_string()))?;
        let host = crate::verify::host_facts();
        let addrs = crate::verify::addresses(&br);
        let all = ends(&addrs);
        let v6 = match &direction {
            Direction::ToHost(Some(a)) | Direction::Forward(Some(a)) | Direction::From(a) => {
                a.is_ipv6()
            }
            _ => false,
        };
        let e = all[usize::from(v6)];
        // The host routes only what leaves the bridge's own subnets; a destination (or source) on
        // the bridge's link, or any address when the host has none on the bridge (a host bridge
        // carrying guests to the LAN), is bridged between ports: only br_netfilter shows it to
        // the IP tables.
        let own = addrs.iter().any(|(a, _)| a.is_ipv6() == v6);
        let on_link = |a: IpAddr| !own || route_dev(a).as_deref() == Some(br.as_str());
        let brnf = crate::verify::br_netfilter(v6);
        let packet = match direction {
            Direction::ToHost(at) => {
                let mut p = probe::to_host(&br, &e, proto, port);
                if let Some(at) = at {
                    p.daddr = at;
                    p.daddr_type = addr_type(at);
                }
                p
            }
            Direction::Forward(to) => {
                let to = to.unwrap_or(e.upstream);
                if on_link(to) {
                    probe::across(&br, e.guest, to, proto, port, brnf)
                } else {
                    let out = route_dev(to)
                        .filter(|d| *d != br)
                        .or(host.uplink.clone())
                        .unwrap_or_else(|| OTHER_IFACE.to_string());
                    probe::forward(&br, &out, &e, to, proto, port)
                }
            }
            Direction::From(from) => {
                if on_link(from) {
                    probe::across(&br, from, e.guest, proto, port, brnf)
                } else {
                    let inp = route_dev(from)
                        .filter(|d| *d != br)
                        .or(host.uplink.clone())
                        .unwrap_or_else(|| OTHER_IFACE.to_string());
                    probe::inbound(&br, &inp, from, e.guest, proto, port)
                }
            }
        };
        Ok(evaluate(&rs, &packet))
    })
    .await
    .map_err(|e| Failure::Refused(format!("evaluator task failed: {e}")))??;

    if json {
        print_json(&trace)?;
    } else {
        out!("packet: {}", trace.packet);
        if trace.packet.bridged {
            let v6 = trace.packet.saddr.is_ipv6();
            let key = if v6 { "ip6tables" } else { "iptables" };
            out!(
                "  bridged between ports of {}, not routed by the host: {}",
                trace.packet.iif,
                if trace.packet.br_netfilter {
                    format!(
                        "br_netfilter is on (net.bridge.bridge-nf-call-{key} = 1), so the IP \
                         tables' forward hook sees it, in and out of {}: the bridge's zone decides \
                         (its intra-zone forwarding)",
                        trace.packet.iif
                    )
                } else {
                    format!(
                        "br_netfilter is off (net.bridge.bridge-nf-call-{key} = 0), so only \
                         bridge and netdev tables see it; no zone applies"
                    )
                }
            );
        }
        if trace.steps.is_empty() {
            out!("  no base chain of any table sees it");
        }
        for s in &trace.steps {
            let by = s.by.as_ref().map_or(String::new(), |b| format!(" by {b}"));
            out!(
                "  {:<11} {} {} chain {} (priority {}): {}{by}",
                s.hook,
                s.family,
                s.table,
                s.chain,
                s.prio,
                s.verdict.word()
            );
            if !s.via.is_empty() {
                out!("              via {}", s.via.join(" → "));
            }
        }
        out!("verdict: {}", trace.describe());
    }
    Ok(match trace.verdict {
        Verdict::Accept => ExitCode::SUCCESS,
        Verdict::Drop | Verdict::Reject => ExitCode::from(1),
        Verdict::Unknown(_) => ExitCode::from(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_or_say_why() {
        assert_eq!(parse_service("tcp/22"), Ok((Proto::Tcp, 22)));
        assert_eq!(parse_service("UDP/53"), Ok((Proto::Udp, 53)));
        assert_eq!(parse_service("icmp"), Ok((Proto::Icmp, 0)));
        for bad in ["tcp", "sctp/1", "tcp/0", "tcp/70000", "tcp/x", ""] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }
}
