//! Integration tests: real processes (the C programs in `testprogs/`), real ptrace.

mod testprogs;
mod testprogs_smoke;
mod harness;
mod run_reports;
mod attach;
mod memcached;
