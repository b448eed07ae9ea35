//! Integration tests: real processes (the C programs in `testprogs/`), real ptrace.

mod annotations;
mod attach;
mod churn;
mod debugger;
mod debuginfod;
mod demo;
mod functions;
mod go_runtime;
mod harness;
mod input;
mod login;
mod long_session;
mod memcached;
mod node_runtime;
mod observe;
mod perf;
mod readme;
mod reclaim;
mod repl;
mod run_reports;
mod sockets;
mod symbols;
mod testprogs;
mod testprogs_smoke;
