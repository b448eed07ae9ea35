//! `fdbg demo`: a leaky login server, built into fdbg, reproducing the
//! incident fdbg exists for (a game server that ran out of fds, one
//! never-closed socket per login). On every login the server sets up
//! a statsd client; no statsd host is configured, so the setup fails, and
//! its early return forgets to close the UDP socket it just made. fdbg
//! attaches to the server, a client logs in a few times, and `leaks` points
//! at `statsd_init`.
//!
//! The server runs as a child process (`fdbg __demo-server`), so the demo
//! needs nothing but fdbg itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::IntoRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context;

use crate::repl::command::Command as ReplCommand;
use crate::repl::{FrontEnd, say};
use crate::tracer::{WAKE_INTERRUPT, Waker};

/// The demo server child; killed (by its PID) when dropped.
pub struct DemoServer {
    child: Child,
    pub port: u16,
}

impl DemoServer {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the demo server and wait until it listens.
pub fn start_server() -> anyhow::Result<DemoServer> {
    let exe = std::env::current_exe().context("cannot find fdbg's own executable")?;
    let mut child = Command::new(exe)
        .arg("__demo-server")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the demo server")?;
    let stdout = child.stdout.take().context("demo server has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("demo server did not start")?;
    let port = line
        .trim()
        .strip_prefix("listening on port ")
        .and_then(|p| p.parse().ok())
        .context("demo server did not say its port")?;
    Ok(DemoServer { child, port })
}

/// The scripted first look: continue while the client logs in, then show
/// the leak. Returns `Some(status)` if the session ended on the way.
pub fn script(
    front: &mut FrontEnd,
    server: &DemoServer,
    logins: u32,
    waker: &Arc<Waker>,
) -> Option<i32> {
    let _ = say(&format!(
        "\nThe demo login server (pid {}) leaks one UDP socket per login. A client now logs in {logins} times while\n\
         fdbg runs the server ('continue'); then 'leaks' shows which code opened the fds that are still open.\n",
        server.pid()
    ));
    let port = server.port;
    let client_waker = waker.clone();
    let client = std::thread::spawn(move || {
        let result = (1..=logins).try_for_each(|k| login(port, k));
        // The logins are done (each ended with the server closing its side):
        // stop the server, as Ctrl-C would.
        client_waker.wake(WAKE_INTERRUPT);
        result
    });
    let _ = say("(fdbg) continue");
    if let Some(code) = front.run(ReplCommand::Continue { duration: None }, false) {
        return Some(code);
    }
    if let Ok(Err(e)) = client.join() {
        eprintln!("fdbg: the demo client failed: {e}");
    }
    let _ = say("\n(fdbg) leaks");
    if let Some(code) = front.run(
        ReplCommand::Leaks {
            since: None,
            min: 1,
        },
        false,
    ) {
        return Some(code);
    }
    let _ = say("\n(fdbg) fds --kind socket");
    front.run(
        ReplCommand::Fds {
            kind: Some(crate::fdtable::FdKind::Socket),
        },
        false,
    )
}

/// One login: connect, send the name, read the answer until the server
/// closes (which it does after our logout, the shutdown of our side).
fn login(port: u16, k: u32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    writeln!(stream, "LOGIN player{k}")?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(())
}

/// `fdbg __demo-server`: the leaky login server itself.
pub fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    println!("listening on port {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = handle_client(stream);
    }
    Ok(())
}

fn handle_client(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut stream = stream;
    if let Some(name) = line.trim().strip_prefix("LOGIN ") {
        on_login(name);
        writeln!(stream, "OK {name}")?;
    }
    // Wait for the logout (the client's end of stream), then close.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    Ok(())
}

#[inline(never)]
fn on_login(name: &str) {
    if let Err(e) = statsd_init() {
        // Metrics are optional: log and go on, as the real server did.
        eprintln!("statsd: {e} (login of {name} goes on)");
    }
}

/// A statsd client: a UDP socket to the configured host.
struct Statsd {
    _socket: socket2::Socket,
}

#[inline(never)]
fn statsd_init() -> Result<Statsd, String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    let Ok(host) = std::env::var("STATSD_HOST") else {
        // The bug: this early return forgets the socket without closing it.
        let _ = socket.into_raw_fd();
        return Err("no statsd host configured".into());
    };
    let addr: std::net::SocketAddr = host
        .parse()
        .map_err(|_| format!("bad statsd host {host}"))?;
    socket.connect(&addr.into()).map_err(|e| e.to_string())?;
    Ok(Statsd { _socket: socket })
}
