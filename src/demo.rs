//! `fdbg demo`'s server: a leaky login server reproducing the incident fdbg
//! exists for (one never-closed socket per login). On every login it sets up
//! a statsd client; no statsd host is configured, so the setup fails, and its
//! early return forgets to close the UDP socket it just made.
//!
//! The server runs as a child process (`fdbg __demo-server`), so the demo
//! needs nothing but fdbg itself. This module is the server and its wire
//! protocol only; the scripted session around it (client, `continue`,
//! `leaks`) is the front end's (`repl::demo_script`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::IntoRawFd;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The pid of the fdbg that started the server, in the server's
/// environment: the server checks that it is still its parent.
const PARENT_ENV: &str = "FDBG_DEMO_PARENT";

/// The demo server child; killed (by its PID) when dropped. It also dies
/// with the thread that started it (see [`serve`]).
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

/// Start the demo server and wait until it listens. Call it from a thread
/// that lives as long as the server should: the server dies with it.
pub fn start_server() -> anyhow::Result<DemoServer> {
    let exe = std::env::current_exe().context("cannot find fdbg's own executable")?;
    let mut child = Command::new(exe)
        .arg("__demo-server")
        .env(PARENT_ENV, std::process::id().to_string())
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

/// The client's side of one login: connect, send the name, read the answer
/// until the server closes (which it does after our logout, the shutdown
/// of our side).
pub fn login(port: u16, k: u32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    writeln!(stream, "LOGIN player{k}")?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(())
}

/// `fdbg __demo-server`: the leaky login server itself.
pub fn serve() -> anyhow::Result<()> {
    die_with_parent()?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    println!("listening on port {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = handle_client(stream);
    }
    Ok(())
}

/// fdbg blocks SIGHUP/SIGINT/SIGTERM/SIGCHLD in every thread, and a child
/// inherits the mask through exec: unblock them all, so that SIGTERM ends
/// the server. Then have the kernel kill the server when fdbg's thread
/// that started it ends, however it ends (SIGKILL included); if fdbg ended
/// before that was set up, end now.
fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("cannot unblock the demo server's signals")?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .context("cannot tie the demo server to fdbg")?;
    if let Ok(parent) = std::env::var(PARENT_ENV)
        && parent.parse::<i32>() != Ok(nix::unistd::getppid().as_raw())
    {
        anyhow::bail!("fdbg (pid {parent}), which started this demo server, is gone");
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
