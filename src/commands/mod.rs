//! One module per subcommand: read inputs, gather facts, decide, act, report.

#[macro_use]
mod output;

mod apply;
mod bind;
mod check;
mod doctor;
mod explain;
mod forward;
mod hook;
mod install;
mod status;

use std::process::ExitCode;

use crate::cli::Command;

pub use output::Failure;

/// Runs a subcommand; `Ok` carries the exit status of a command that ran to a verdict.
pub async fn run(command: Command) -> Result<ExitCode, Failure> {
    if !matches!(command, Command::Serve { .. } | Command::Hook { .. }) {
        // A person (or a playbook) waits: a firewalld that does not answer is said so within the
        // command budget. The daemon keeps its long timeout; the hook has its own budget. A bad
        // configuration file is reported by the command that needs it.
        let budget = crate::state::Config::load()
            .ok()
            .and_then(|c| c.command_timeout)
            .unwrap_or(crate::firewalld::COMMAND_CALL_TIMEOUT);
        crate::firewalld::set_call_timeout(budget);
    }
    match command {
        Command::Status { json, verify } => status::run(json, verify).await,
        Command::Check {
            network_xml,
            bridge,
            zone,
            json,
        } => check::run(network_xml.as_deref(), bridge, zone, json).await,
        Command::Explain {
            bridge,
            to_host,
            forward,
            to,
            from,
            service,
            json,
        } => {
            let (direction, what) = match (to_host, from) {
                (Some(what), _) => (explain::Direction::ToHost(to), what),
                (None, Some(from)) => (explain::Direction::From(from), service.unwrap_or_default()),
                (None, None) if forward => {
                    (explain::Direction::Forward(to), service.unwrap_or_default())
                }
                (None, None) => {
                    return Err(Failure::Usage(
                        "say which packet: --to-host, --forward or --from".into(),
                    ))
                }
            };
            explain::run(&bridge, direction, &what, json).await
        }
        Command::Install {
            root,
            no_reload,
            state_dir,
        } => install::install(root.as_deref(), !no_reload, state_dir.as_deref()).await,
        Command::Attach {
            bridge,
            zone,
            permanent,
            force,
            state_dir,
        } => {
            let req = crate::bind::Attach {
                bridge,
                zone,
                permanent,
                force,
                network: None,
                source: None,
            };
            bind::attach(&req, state_dir.as_deref()).await
        }
        Command::Detach {
            bridge,
            permanent,
            force,
            state_dir,
        } => bind::detach(&bridge, permanent, force, state_dir.as_deref()).await,
        Command::List { json, state_dir } => bind::list(json, state_dir.as_deref()).await,
        Command::Hook {
            object,
            name,
            op,
            subop,
            extra,
        } => hook::run(&object, &name, &op, &subop, extra.as_deref()).await,
        Command::Serve { state_dir } => {
            let state = crate::state::StateDir::locate(state_dir.as_deref())?;
            // Whatever the state says is re-applied after every reload: refuse a planted one up front.
            state.check()?;
            crate::daemon::serve(state)
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor {
            json,
            network,
            fix,
            yes,
            unfix,
        } => match unfix {
            Some(id) => doctor::unfix(json, &id).await,
            None => doctor::run(json, &network, fix, yes).await,
        },
        Command::Forward { action } => forward::forward(action).await,
        Command::Apply {
            check,
            diff,
            json,
            state_dir,
        } => apply::run(check, diff, json, state_dir.as_deref()).await,
        Command::Allow { action } => forward::allow(action).await,
        Command::Uninstall {
            root,
            force,
            state_dir,
        } => install::uninstall(root.as_deref(), force, state_dir.as_deref()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed write says what firewalld refused and how it was rolled back; only failed reads are
    /// "cannot get firewalld's state".
    #[test]
    fn write_failures_are_not_read_failures() {
        let exec = crate::change::ExecError {
            step: crate::change::Step::Reload,
            error: crate::firewalld::Error::NotRunning,
            undone: 0,
            rollback_failures: vec![],
        };
        let failure = Failure::from(crate::bind::BindError::from(exec));
        assert!(
            failure.message().starts_with("firewalld failed to reload"),
            "{}",
            failure.message()
        );
        let read = Failure::from(crate::firewalld::Error::NotRunning);
        assert!(read.message().starts_with("cannot get firewalld's state"));
    }
}
