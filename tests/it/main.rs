//! Integration tests: real processes (the C programs in `testprogs/`), real ptrace.

mod sockets;
mod testprogs;
mod testprogs_smoke;
