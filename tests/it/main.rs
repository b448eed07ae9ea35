//! Integration tests: real processes (the C programs in `testprogs/`), real ptrace.

mod symbols;
mod testprogs;
mod testprogs_smoke;
