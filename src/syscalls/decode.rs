//! Decoders (SKELETON).
use super::{Decoded, SyscallEntry, TraceeMemory};

/// Decode a completed syscall; `None` when it cannot change the fd table
/// (not an fd syscall, or an fcntl command that does not). The caller has
/// already skipped restart codes (`is_restart`).
pub fn decode(_entry: &SyscallEntry, _result: i64, _mem: &dyn TraceeMemory) -> Option<Decoded> {
    None
}
