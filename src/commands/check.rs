//! `virtzone check`: the net-start pre-check.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::output::{print_json, Failure};
use crate::libvirt::{parse_network_xml, ForwardMode, Network};
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::precheck::{self, Request, Verdict};

/// The JSON printed by `check --json`.
#[derive(Serialize)]
struct Report<'a> {
    network: &'a str,
    bridge: Option<&'a str>,
    forward: &'a str,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

/// Reads the network from `--network-xml` (a file or `-` for stdin) or builds one from `--bridge`.
pub(crate) fn read_network(
    xml_path: Option<&Path>,
    bridge: Option<&BridgeName>,
) -> Result<Network, Failure> {
    let Some(path) = xml_path else {
        let Some(bridge) = bridge else {
            return Err(Failure::Usage(
                "check needs --network-xml FILE or --bridge BRIDGE".into(),
            ));
        };
        // A bare bridge is checked as libvirt's default kind of network: NAT.
        return Ok(Network {
            // Every bridge name is also a network name.
            name: NetworkName::new(bridge.as_str()).map_err(|e| Failure::Usage(e.to_string()))?,
            bridge: Some(bridge.clone()),
            zone: None,
            forward: ForwardMode::Nat,
            ips: Vec::new(),
            forward_devs: Vec::new(),
            nat: None,
        });
    };
    let mut xml = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut xml)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut xml))
    };
    read.map_err(|e| {
        Failure::Usage(format!(
            "cannot read the network XML from {}: {e}",
            path.display()
        ))
    })?;
    parse_network_xml(&xml, bridge).map_err(|e| Failure::Usage(e.to_string()))
}

/// Prints a verdict and returns its exit status (0 ok, 1 guest networking would break).
pub(crate) fn report(
    network: &Network,
    verdict: &Verdict,
    json: bool,
) -> Result<ExitCode, Failure> {
    if json {
        print_json(&Report {
            network: network.name.as_str(),
            bridge: network.bridge.as_ref().map(|b| b.as_str()),
            forward: network.forward.as_str(),
            verdict,
        })?;
    } else if verdict.ok {
        out!("{}", verdict.message);
    } else {
        eprintln!("virtzone: {}", verdict.message);
    }
    if !json {
        for w in &verdict.warnings {
            eprintln!("virtzone: warning: {w}");
        }
    }
    Ok(if verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn run(
    xml_path: Option<&Path>,
    bridge: Option<BridgeName>,
    zone: Option<ZoneName>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let network = read_network(xml_path, bridge.as_ref())?;
    let facts = crate::change::snapshot::gather_facts().await?;
    let verdict = precheck::decide(
        &Request {
            network: &network,
            zone: zone.as_ref(),
        },
        &facts,
    );
    report(&network, &verdict, json)
}
