//! What the forward benchmarks share: the guest's TCP server, one resident client in the upstream
//! namespace (one line in, one line out, so a probe costs a connect, not a process start), and
//! small helpers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The guest's server: answers every connection on port 80 with `guest`.
pub const SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80))
s.listen(256)
while True:
    c, a = s.accept()
    try:
        c.sendall(b'guest\n')
    except OSError:
        pass
    c.close()
"#;

const CLIENT: &str = r#"
import socket, sys
for line in sys.stdin:
    host, port = line.split()
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((host, int(port)))
        print('ok', s.recv(100).decode().strip(), flush=True)
    except OSError as e:
        print('no', e, flush=True)
    finally:
        s.close()
"#;

/// The resident client, killed on drop.
pub struct Client {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Client {
    /// Starts the client with `python3`, a command that runs `/usr/bin/python3` in the upstream
    /// namespace.
    pub fn spawn(mut python3: Command) -> Client {
        let mut child = python3
            .args(["-c", CLIENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client");
        Client {
            input: child.stdin.take().expect("stdin"),
            output: BufReader::new(child.stdout.take().expect("stdout")),
            child,
        }
    }

    /// One connection to `host:port`; whether the guest answered (a timeout waits 0.5 s).
    pub fn probe(&mut self, host: &str, port: u16) -> bool {
        writeln!(self.input, "{host} {port}").expect("client input");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("client output");
        line.starts_with("ok guest")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn must(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes the guest answer its ports 10000-10999 with the one server on 80, so forwards can have
/// distinct guest ports, as real ones do. `iptables` runs iptables in the guest's namespace.
pub fn serve_guest_ports(mut iptables: Command) {
    must(iptables.args([
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        "10000:10999",
        "-j",
        "REDIRECT",
        "--to-ports",
        "80",
    ]));
}

/// `d` in whole milliseconds.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}
