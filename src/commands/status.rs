//! `virtzone status [--json]`.

use std::process::ExitCode;

use super::{print_json, Failure};

pub async fn run(json: bool) -> Result<ExitCode, Failure> {
    let status = crate::status::gather().await?;
    if json {
        print_json(&status)?;
    } else {
        print!("{}", status.render_text());
    }
    Ok(ExitCode::SUCCESS)
}
