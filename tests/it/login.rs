//! The leaky login server of testprogs/, driven the same way by every test
//! that needs it: started on an ephemeral port with its EXPECT lines read
//! (kept open: the server dies of SIGPIPE if nobody reads them), attached,
//! logged into from the client.

use std::process::Command;
use std::thread::{self, JoinHandle};

use crate::harness::Interactive;
use crate::testprogs::{
    ChildGuard, Expect, Finished, OutputStream, all, expect_lines, run, testprog,
};

/// A login_server on an ephemeral port; its stdout read as EXPECT lines.
pub struct Server {
    pub guard: ChildGuard,
    pub output: OutputStream,
    pub port: String,
    /// How many of `output.seen` came before fdbg attached.
    seen_before_attach: usize,
}

impl Server {
    pub fn start() -> Server {
        Server::start_program("login_server")
    }

    /// The login server with a thread per session (`--threads`).
    pub fn start_threaded() -> Server {
        Server::start_with("login_server", &["--threads"])
    }

    /// A build of the login server by name (`login_server_o2`).
    pub fn start_program(name: &str) -> Server {
        Server::start_with(name, &[])
    }

    fn start_with(name: &str, flags: &[&str]) -> Server {
        let mut guard = ChildGuard::spawn(Command::new(testprog(name)).args(flags).arg("0"));
        let mut output = guard.output();
        let port = output.wait_for("listen").num("port").to_string();
        let seen_before_attach = output.seen.len();
        Server {
            guard,
            output,
            port,
            seen_before_attach,
        }
    }

    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// `fdbg attach PID`, once the banner says the server is stopped.
    pub fn attach(&self) -> Interactive {
        let mut fdbg = Interactive::start(["attach", &self.pid().to_string()]);
        fdbg.wait_attached();
        fdbg
    }

    /// `login_client PORT n` on a thread: the server may be stopped under
    /// fdbg, so the client can only finish once fdbg lets it run.
    pub fn logins_in_background(&self, n: usize) -> JoinHandle<Finished> {
        let port = self.port.clone();
        thread::spawn(move || {
            run(Command::new(testprog("login_client")).args([&port, &n.to_string()]))
        })
    }

    /// `login_client PORT n` to its end (the server must be running).
    pub fn logins(&self, n: usize) {
        finished_logins(self.logins_in_background(n), n);
    }

    /// The server's EXPECT lines printed since fdbg attached.
    pub fn lines_since_attach(&self) -> Vec<Expect> {
        expect_lines(&self.output.seen[self.seen_before_attach..].join("\n"))
    }
}

/// Joins a client thread; all its `n` logins must have completed.
pub fn finished_logins(client: JoinHandle<Finished>, n: usize) {
    let client = client.join().expect("client thread");
    client.assert_success();
    assert_eq!(all(&client.lines, "login").len(), n, "{client}");
}
