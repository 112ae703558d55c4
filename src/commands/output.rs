//! What every subcommand shares for its output: the exit-status failure, stdout that tolerates a
//! closed pipe, JSON printing. A leaf: the subcommands and the dispatcher in `mod.rs` use it, it uses
//! none of them.

use std::process::ExitCode;

/// `println!` for command output: a closed standard output (`virtzone status | head`) ends the
/// process quietly, as it does for any Unix filter, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// How a command failed, which decides the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or usage: exit 2, nothing was changed.
    Usage(String),
    /// Refused or failed: exit 1.
    Refused(String),
}

impl Failure {
    /// The exit status: 2 for bad input, 1 for a refusal or failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Refused(_) => ExitCode::from(1),
        }
    }

    /// The one-sentence message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Refused(m) => m,
        }
    }
}

impl From<crate::install::InstallError> for Failure {
    fn from(e: crate::install::InstallError) -> Self {
        match e {
            crate::install::InstallError::Firewalld(e) => e.into(),
            crate::install::InstallError::State(e) => e.into(),
            other => Failure::Refused(other.to_string()),
        }
    }
}

impl From<crate::bind::BindError> for Failure {
    fn from(e: crate::bind::BindError) -> Self {
        match e {
            crate::bind::BindError::Firewalld(e) => e.into(),
            crate::bind::BindError::State(e) => e.into(),
            other => Failure::Refused(other.to_string()),
        }
    }
}

impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        if e.is_bad_input() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Refused(e.to_string())
        }
    }
}

impl From<crate::forward::ForwardError> for Failure {
    fn from(e: crate::forward::ForwardError) -> Self {
        match e {
            crate::forward::ForwardError::Usage(m) => Failure::Usage(m),
            crate::forward::ForwardError::Refused(r) => Failure::Refused(r.message),
            crate::forward::ForwardError::Failed(m) => Failure::Refused(m),
            e @ (crate::forward::ForwardError::Firewalld(_)
            | crate::forward::ForwardError::Change(_)) => Failure::Refused(e.to_string()),
            crate::forward::ForwardError::State(e) => e.into(),
        }
    }
}

impl From<crate::firewalld::Error> for Failure {
    fn from(e: crate::firewalld::Error) -> Self {
        Failure::Refused(format!("cannot get firewalld's state: {e}"))
    }
}

/// Writes to standard output; see [`out!`].
pub(crate) fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("virtzone: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints `value` as pretty JSON on stdout.
pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Refused(format!("cannot encode JSON: {e}")))?;
    out!("{text}");
    Ok(())
}
