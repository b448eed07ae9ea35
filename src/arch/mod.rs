//! Machine specifics behind one small interface: the audit arch the seccomp
//! filter checks, and the registers a stack walk starts from.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("fdbg supports x86_64 only for now");
