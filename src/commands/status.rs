//! `virtzone status [--json] [--verify]`.

use std::process::ExitCode;

use serde::Serialize;

use super::output::{print_json, Failure};
use crate::status::Status;
use crate::verify::Report;

/// `status --json --verify`: the status with the verification beside it.
#[derive(Serialize)]
struct Verified<'a> {
    #[serde(flatten)]
    status: &'a Status,
    verify: &'a Report,
}

pub async fn run(json: bool, verify: bool) -> Result<ExitCode, Failure> {
    let status = crate::status::gather().await?;
    let report = if verify {
        Some(
            crate::verify::verify(&status)
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?,
        )
    } else {
        None
    };
    match (&report, json) {
        (Some(report), true) => print_json(&Verified {
            status: &status,
            verify: report,
        })?,
        (None, true) => print_json(&status)?,
        (report, false) => {
            out!("{}", status.render_text().trim_end());
            if let Some(report) = report {
                out!("verify:");
                for line in &report.confirmed {
                    out!("  ok: {line}");
                }
                for line in &report.unknown {
                    out!("  unknown: {line}");
                }
                for line in &report.problems {
                    out!("  PROBLEM: {line}");
                }
            }
        }
    }
    let broken = report.is_some_and(|r| !r.problems.is_empty());
    Ok(if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
