//! External commands (nft, iptables, ip, …) with a deadline: a hung tool must cost its caller a
//! bounded time, as a hung firewalld does (the hook's budget, the daemon's checks).

use std::io::{self, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What an external command may take unless its caller says otherwise: nft and iptables answer in
/// milliseconds; seconds mean the kernel or the tool is stuck.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(5);

/// Runs `cmd` with `stdin` as its standard input, collecting its output, and kills it once
/// `timeout` has passed (then the error is `TimedOut`, naming the program).
pub fn output_within(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Feeding and draining on threads of their own: a command that fills its pipe while its input
    // is still being written would otherwise never end.
    let feeder = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = p.read_to_end(&mut buf);
                buf
            })
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{program} did not finish within {} s", timeout.as_secs()),
            ));
        }
        std::thread::sleep(POLL);
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    // The pipes close when the command ends (nft, ip and iptables leave no children holding them).
    let take = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: take(out),
        stderr: take(err),
    })
}

/// `output_within(cmd, stdin, COMMAND_TIMEOUT)`, its standard output when it succeeds; otherwise
/// one sentence naming the command and saying what went wrong.
pub fn checked(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = output_within(cmd, stdin, COMMAND_TIMEOUT).map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{shown} printed invalid UTF-8: {e}"))
}

/// `nft -j ARGS` (a listing), its JSON.
pub fn nft_json(args: &[&str]) -> Result<String, String> {
    checked(Command::new("nft").arg("-j").args(args), None)
}

/// `nft -j -f -` with `payload` (one transaction).
pub fn nft_apply(payload: &str) -> Result<(), String> {
    checked(
        Command::new("nft").args(["-j", "-f", "-"]),
        Some(payload.as_bytes()),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_command_is_killed_at_the_deadline() {
        let t = Instant::now();
        let e = output_within(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("sleep"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn output_and_input_pass_through() {
        let out = output_within(
            &mut Command::new("cat"),
            Some(b"hello"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }
}
