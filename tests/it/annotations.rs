//! bind, connect, listen and accept's peer are annotations of the socket's
//! fd: `history FD` shows where a socket was connected to after it closed,
//! and `fds` shows the notes of the sockets still open.

use serde_json::Value;
use serial_test::serial;

use crate::harness::{FdbgOutput, Shape, TEST_LIMIT, Watchdog, fdbg_batch, num};
use crate::testprogs::{Expect, all, one, testprog};

/// Fd numbers asked for with `history`: the program's sockets are among the
/// lowest free numbers, whatever the environment left open.
const HISTORY_FDS: std::ops::RangeInclusive<i32> = 3..=16;

/// `fdbg run --batch [--json] -e continue -e "history N"... -e fds -e stats -- connector`.
fn run_connector(json: bool) -> FdbgOutput {
    let mut argv: Vec<String> = vec!["run".into(), "--batch".into()];
    if json {
        argv.push("--json".into());
    }
    let mut commands = vec!["continue".to_string()];
    commands.extend(HISTORY_FDS.map(|fd| format!("history {fd}")));
    commands.extend(["fds".to_string(), "stats".to_string()]);
    for command in commands {
        argv.extend(["-e".to_string(), command]);
    }
    argv.push("--".into());
    argv.push(testprog("connector").to_string_lossy().into_owned());
    let out = fdbg_batch(argv);
    out.assert_success();
    out
}

/// The `history` document of fd `fd`.
fn history_of(out: &FdbgOutput, fd: i32) -> Vec<Value> {
    assert!(HISTORY_FDS.contains(&fd), "fd {fd} not asked for\n{out}");
    let doc = out
        .all(Shape::History)
        .into_iter()
        .find(|d| num(d, "fd") == i64::from(fd))
        .unwrap_or_else(|| panic!("no history of fd {fd}\n{out}"));
    doc["events"].as_array().expect("events").clone()
}

/// The `fds` entry of fd `fd`.
fn fd_entry(out: &FdbgOutput, fd: i32) -> Option<Value> {
    out.first(Shape::Fds)["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .find(|e| num(e, "fd") == i64::from(fd))
        .cloned()
}

fn notes(out: &FdbgOutput, fd: i32) -> Vec<String> {
    let entry = fd_entry(out, fd).unwrap_or_else(|| panic!("fd {fd} is not open\n{out}"));
    entry["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes in {entry}"))
        .iter()
        .map(|n| n.as_str().expect("a note is a string").to_string())
        .collect()
}

/// The connect line of fd `fd`.
fn connect_line(lines: &[Expect], fd: i32) -> &Expect {
    all(lines, "connect")
        .into_iter()
        .find(|l| l.fd() == fd)
        .unwrap_or_else(|| panic!("no EXPECT connect fd={fd}"))
}

#[test]
#[serial]
fn history_of_a_closed_socket_shows_its_connect_and_fds_shows_notes() {
    let _watchdog = Watchdog::new("annotations", TEST_LIMIT);
    let out = run_connector(true);
    let stop = out.first(Shape::Stop);
    assert_eq!(
        (&stop["stop"], &stop["exit_code"]),
        (&"exited".into(), &0.into()),
        "{out}"
    );
    let lines = out.expect_lines();
    one(&lines, "done");

    // The UDP socket: connected, then closed. Its history still says where.
    let udp = all(&lines, "open")[0].fd();
    let udp_connect = connect_line(&lines, udp);
    assert_eq!(udp_connect.field("result"), "0");
    let history = history_of(&out, udp);
    let syscalls: Vec<&str> = history
        .iter()
        .map(|e| e["syscall"].as_str().unwrap())
        .collect();
    let at = syscalls
        .iter()
        .rposition(|&s| s == "connect")
        .unwrap_or_else(|| panic!("no connect in the history of fd {udp}\n{out}"));
    assert_eq!(syscalls[at - 1..], ["socket", "connect", "close"], "{out}");
    let connect = &history[at];
    assert_eq!(
        connect["args"],
        format!("{udp}, {{AF_INET, 127.0.0.1:8125}}, 16")
    );
    assert_eq!(connect["result"], 0);
    assert_eq!(connect["kind"], "socket");
    assert_eq!(
        connect["fds"],
        Value::Array(vec![]),
        "a connect creates nothing"
    );
    assert_eq!(connect["closed"], Value::Array(vec![]), "nor closes");
    assert_eq!(
        connect["frames"][0]["function"],
        udp_connect.field("fn"),
        "{connect}"
    );
    assert_eq!(
        format!(
            "{}:{}",
            connect["frames"][0]["file"]
                .as_str()
                .unwrap_or("?")
                .rsplit('/')
                .next()
                .unwrap(),
            connect["frames"][0]["line"]
        ),
        udp_connect.field("site"),
        "{connect}"
    );
    assert!(
        fd_entry(&out, udp).is_none(),
        "the UDP socket was closed\n{out}"
    );

    // The refused TCP connect: recorded with its errno, noted on the fd.
    let closed_port = one(&lines, "bind");
    let refused_line = all(&lines, "connect")
        .into_iter()
        .find(|l| l.field("result") == "ECONNREFUSED")
        .expect("a refused connect");
    let refused = refused_line.fd();
    let addr = closed_port.field("addr");
    assert_eq!(refused_line.field("addr"), addr);
    let history = history_of(&out, refused);
    let connect = history
        .iter()
        .rfind(|e| e["syscall"] == "connect")
        .unwrap_or_else(|| panic!("no connect on fd {refused}\n{out}"));
    assert_eq!(connect["result"], -libc::ECONNREFUSED);
    assert_eq!(
        connect["args"],
        format!("{refused}, {{AF_INET, {addr}}}, 16")
    );
    assert_eq!(
        notes(&out, refused),
        [format!("connect {addr} failed: ECONNREFUSED")]
    );
    assert_eq!(notes(&out, closed_port.fd()), ["bind 127.0.0.1:0"]);

    // The listener, its client and the accepted connection.
    let listen = one(&lines, "listen");
    assert_eq!(
        notes(&out, listen.fd()),
        ["bind 127.0.0.1:0", "listen backlog 16"],
        "{out}"
    );
    let client = all(&lines, "connect")
        .into_iter()
        .find(|l| l.field("addr") == listen.field("addr"))
        .expect("the client's connect");
    assert_eq!(client.field("result"), "0");
    assert_eq!(
        notes(&out, client.fd()),
        [format!("connect {}", listen.field("addr"))]
    );
    let accept = one(&lines, "accept");
    assert_eq!(
        notes(&out, accept.fd()),
        [format!("accepted from {}", accept.field("peer"))]
    );
    let history = history_of(&out, accept.fd());
    let accept4 = history.last().expect("the accept4 event");
    assert_eq!(accept4["syscall"], "accept4");
    // The peer is in the fd's note, not in the argument text (one interned
    // string per distinct peer would grow with the number of accepts).
    assert_eq!(
        accept4["args"],
        format!("{}, {{...}}, [16], SOCK_CLOEXEC", listen.fd())
    );

    // Annotations are events of their syscall, not fd creations.
    let stats = out.first(Shape::Stats);
    assert_eq!(
        (
            num(&stats["events"], "connect"),
            num(&stats["events"], "bind"),
            num(&stats["events"], "listen")
        ),
        (3, 2, 1),
        "{stats}"
    );
    assert_eq!(
        num(&stats["by_kind"], "socket"),
        6,
        "5 socket() and 1 accept4\n{stats}"
    );
}

#[test]
#[serial]
fn fds_text_shows_notes_after_the_target() {
    let _watchdog = Watchdog::new("annotations_text", TEST_LIMIT);
    let out = run_connector(false);
    let lines = out.expect_lines();
    let listen = one(&lines, "listen").fd();
    let row = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&listen.to_string()) && l.contains("socket"))
        .unwrap_or_else(|| panic!("no fds row for fd {listen}\n{out}"));
    assert!(
        row.contains("(bind 127.0.0.1:0; listen backlog 16)"),
        "{row}\n{out}"
    );
    assert!(
        out.stdout.contains("connect(")
            && out.stdout.contains("{AF_INET, 127.0.0.1:8125}, 16) = 0"),
        "history shows the connect\n{out}"
    );
}
