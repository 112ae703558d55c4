//! The `virtzone` command.

use std::process::ExitCode;

use clap::Parser;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use virtzone::cli::{Cli, Command};
use virtzone::commands;

/// Logs through tracing: to journald when systemd connected stderr to the journal (`JOURNAL_STREAM`),
/// to stderr otherwise. `VIRTZONE_LOG` filters (default: info for the daemon, warn for commands).
fn init_logging(daemon: bool) {
    let filter = EnvFilter::try_from_env("VIRTZONE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if daemon { "info" } else { "warn" }));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            // syslog's meaning of each level: a routine reconcile is informational (6), not a
            // "significant condition" (notice, 5, tracing-journald's default for INFO).
            let journald = journald.with_priority_mappings(PriorityMappings {
                error: Priority::Error,
                warn: Priority::Warning,
                info: Priority::Informational,
                debug: Priority::Debug,
                trace: Priority::Debug,
            });
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("virtzone: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(commands::run(cli.command));
    // The answer is in: whatever a timed-out task left running on a blocking thread (a stuck nft,
    // a read that never ends) must not keep the process — and libvirt, waiting for its hook — any
    // longer. Dropping the runtime would wait for those threads without limit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("virtzone: {}", failure.message());
            failure.exit_code()
        }
    }
}
