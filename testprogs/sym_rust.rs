//! sym_rust: a Rust debuggee (built with `rustc -g`) that leaks a file and a
//! socket from functions in a module, printing the same EXPECT lines as the
//! C programs (testprogs/expect.h), with the site of the call that opens.
//!
//! usage: sym_rust [--wait]

use std::fs::File;
use std::io::BufRead;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

macro_rules! expect_leak {
    ($fd:expr, $syscall:expr, $line:expr, $function:expr) => {
        println!(
            "EXPECT leak fd={} syscall={} site=sym_rust.rs:{} fn={} pid={}",
            $fd,
            $syscall,
            $line,
            $function,
            std::process::id()
        )
    };
}

mod config {
    use super::*;

    #[inline(never)]
    pub fn open_config() -> i32 {
        let (file, line) = (File::open("/dev/null").expect("open /dev/null"), line!());
        let fd = file.as_raw_fd();
        expect_leak!(fd, "openat", line, "open_config");
        std::mem::forget(file);
        fd
    }
}

mod metrics {
    use super::*;

    #[inline(never)]
    pub fn connect_statsd() -> i32 {
        let (socket, line) = (UdpSocket::bind("127.0.0.1:0").expect("udp socket"), line!());
        let fd = socket.as_raw_fd();
        expect_leak!(fd, "socket", line, "connect_statsd");
        std::mem::forget(socket);
        fd
    }
}

fn main() {
    if std::env::args().any(|a| a == "--wait") {
        println!("EXPECT ready pid={}", std::process::id());
        let _ = std::io::stdin().lock().lines().next();
    } else {
        println!("EXPECT start pid={}", std::process::id());
    }
    config::open_config();
    metrics::connect_statsd();
    println!("EXPECT done leaks=2");
}
