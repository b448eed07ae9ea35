//! `fdbg demo`'s session around the built-in server (`crate::demo`): a
//! client logs in while the server runs, then the first look (`leaks`,
//! `fds --kind socket`) unless the user gave commands of their own.
//!
//! The logins always happen first, before any -e/-x command: `--logins N`
//! then means "the server has served N logins" whatever the commands are,
//! and `fdbg demo --batch -e leaks` finds the N leaked sockets.

use std::sync::Arc;

use super::FrontEnd;
use super::command::Command;
use crate::demo::{self, DemoServer};
use crate::fdtable::FdKind;
use crate::tracer::{WAKE_INTERRUPT, Waker};

/// Run the server while a client logs in `logins` times; the session is
/// stopped again when this returns `None`. `Some(status)`: it ended.
/// `user_commands`: -e/-x commands follow (else the first look does).
pub(super) fn logins(
    front: &mut FrontEnd,
    server: &DemoServer,
    logins: u32,
    waker: &Arc<Waker>,
    user_commands: bool,
) -> Option<i32> {
    let then = if user_commands {
        "then your -e/-x commands run"
    } else {
        "then 'leaks' shows which code opened the fds that are still open"
    };
    front.note(&format!(
        "\nThe demo login server (pid {}) leaks one UDP socket per login. A client now logs in {logins} time{} while\n\
         fdbg runs the server ('continue'); {then}.\n",
        server.pid(),
        if logins == 1 { "" } else { "s" }
    ));
    if logins == 0 {
        return None;
    }
    let port = server.port;
    let client_waker = waker.clone();
    let client = std::thread::spawn(move || {
        let result = (1..=logins).try_for_each(|k| demo::login(port, k));
        // The logins are done (each ended with the server closing its side):
        // stop the server, as Ctrl-C would.
        client_waker.wake(WAKE_INTERRUPT);
        result
    });
    front.note("(fdbg) continue");
    let status = front.send(Command::Continue {
        duration: None,
        every: None,
    });
    // The continue ends only at the client's interrupt (or with the
    // session), so the client is done or failing by now.
    if let Ok(Err(e)) = client.join() {
        eprintln!("fdbg: the demo client failed: {e}");
    }
    status
}

/// The scripted first look after the logins.
pub(super) fn first_look(front: &mut FrontEnd) -> Option<i32> {
    front.note("\n(fdbg) leaks");
    if let Some(code) = front.send(Command::Leaks {
        since: None,
        min: 1,
        older: None,
        closed: false,
        folded: false,
    }) {
        return Some(code);
    }
    front.note("\n(fdbg) fds --kind socket");
    front.send(Command::Fds {
        kind: Some(FdKind::Socket),
    })
}
