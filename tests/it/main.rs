//! Integration tests: real processes (the C programs in `testprogs/`), real ptrace.

mod annotations;
mod attach;
mod debugger;
mod demo;
mod harness;
mod login;
mod memcached;
mod readme;
mod repl;
mod run_reports;
mod sockets;
mod symbols;
mod testprogs;
mod testprogs_smoke;
