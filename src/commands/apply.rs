//! `virtzone apply [--check] [--diff] [--json]`: the drop-in files (`crate::declare`) and the
//! CLI's state, converged (issue #22's contract; exit statuses 0, 3, 1, 2).

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::output::{print_json, Failure};
use crate::declare::{self, BindDecl, Object};
use crate::forward::declared::{apply_declared, Outcome};
use crate::state::StateDir;

/// Exit status of `--check` when changes are pending.
const PENDING: u8 = 3;

/// `apply --json` (docs/json.md).
#[derive(Serialize)]
struct Report<'a> {
    /// Whether anything changed (with --check: would change).
    changed: bool,
    /// One line per change, as --diff prints them.
    changes: &'a [String],
    /// The errors, each `FILE:LINE: sentence` for a bad file; empty on success.
    errors: &'a [String],
}

/// Reports `errors` (nothing was applied) and returns the failure's exit status.
fn failed(json: bool, failure: Failure, errors: &[String]) -> Result<ExitCode, Failure> {
    if !json {
        return Err(failure);
    }
    print_json(&Report {
        changed: false,
        changes: &[],
        errors,
    })?;
    for e in errors {
        eprintln!("virtzone: {e}");
    }
    Ok(failure.exit_code())
}

/// `virtzone apply`.
pub async fn run(
    check: bool,
    diff: bool,
    json: bool,
    state_dir: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let state = StateDir::locate(state_dir)?;
    let decls = match declare::read(&declare::dirs()).and_then(|f| declare::declarations(&f)) {
        Ok(d) => d,
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let failure = Failure::Usage(errors.join("; "));
            return failed(json, failure, &errors);
        }
    };
    // Bindings first: the zone of a bridge decides where a forward's accepts go.
    let binds: Vec<(String, BindDecl)> = decls
        .iter()
        .filter_map(|d| match &d.object {
            Object::Bind(b) => Some((d.origin.file.clone(), b.clone())),
            _ => None,
        })
        .collect();
    let bound = async {
        if binds.is_empty() && !crate::bind::any_declared(&state)? {
            return Ok(Vec::new());
        }
        let fw = super::bind::firewalld_for("bind").await?;
        Ok::<_, Failure>(crate::bind::apply_declared(&fw, &state, &binds, check).await?)
    };
    let mut bind_changes = match bound.await {
        Ok(c) => c,
        Err(failure) => {
            let errors = [failure.message().to_string()];
            return failed(json, failure, &errors);
        }
    };
    let mut outcome: Outcome = match apply_declared(&state, &decls, check).await {
        Ok(o) => o,
        Err(e) => {
            let failure = Failure::from(e);
            let errors = [failure.message().to_string()];
            return failed(json, failure, &errors);
        }
    };
    bind_changes.append(&mut outcome.changes);
    outcome.changes = bind_changes;
    if json {
        print_json(&Report {
            changed: outcome.changed(),
            changes: &outcome.changes,
            errors: &[],
        })?;
    } else if diff {
        for c in &outcome.changes {
            out!("{c}");
        }
    } else if !outcome.changed() {
        out!("in sync");
    } else if check {
        out!(
            "{} changes pending; virtzone apply --diff shows them",
            outcome.changes.len()
        );
    } else {
        out!("applied {} changes", outcome.changes.len());
    }
    Ok(if check && outcome.changed() {
        ExitCode::from(PENDING)
    } else {
        ExitCode::SUCCESS
    })
}
