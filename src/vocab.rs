//! The vocabulary every layer shares: what kind of thing an fd is, a
//! process id, an fd as /proc shows it, and read access to a tracee's
//! memory.
//!
//! It exists so that the layers can agree on these words without
//! importing each other: `procfs` (bottom) and `syscalls` (middle) name
//! fd kinds, `ptrace` implements `TraceeMemory` that the decoder reads
//! through, and the model and front end use all of them. It is a leaf:
//! it imports nothing of fdbg's, does no I/O, and has no unsafe code.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// A process id (thread-group id): the key of an fd table.
pub type Pid = i32;

/// What an fd refers to, as fdbg reports it (and as `--kind`, `catch` and
/// JSON name it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    Socket,
    File,
    Dir,
    Pipe,
    Eventfd,
    Epoll,
    Timerfd,
    Signalfd,
    Inotify,
    Fanotify,
    Memfd,
    Pidfd,
    IoUring,
    Perf,
    Other,
}

impl FdKind {
    /// Every kind, in the order help and error messages list them.
    pub const ALL: [FdKind; 15] = [
        FdKind::Socket,
        FdKind::File,
        FdKind::Dir,
        FdKind::Pipe,
        FdKind::Eventfd,
        FdKind::Epoll,
        FdKind::Timerfd,
        FdKind::Signalfd,
        FdKind::Inotify,
        FdKind::Fanotify,
        FdKind::Memfd,
        FdKind::Pidfd,
        FdKind::IoUring,
        FdKind::Perf,
        FdKind::Other,
    ];

    /// The name users type and JSON carries (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::Socket => "socket",
            FdKind::File => "file",
            FdKind::Dir => "dir",
            FdKind::Pipe => "pipe",
            FdKind::Eventfd => "eventfd",
            FdKind::Epoll => "epoll",
            FdKind::Timerfd => "timerfd",
            FdKind::Signalfd => "signalfd",
            FdKind::Inotify => "inotify",
            FdKind::Fanotify => "fanotify",
            FdKind::Memfd => "memfd",
            FdKind::Pidfd => "pidfd",
            FdKind::IoUring => "io_uring",
            FdKind::Perf => "perf",
            FdKind::Other => "other",
        }
    }

    /// The inverse of `as_str`.
    pub fn parse(s: &str) -> Option<FdKind> {
        FdKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// Classify a /proc/PID/fd symlink target. `is_dir` tells a directory
    /// path from a file path (the link text alone cannot).
    pub fn from_link(target: &str, is_dir: bool) -> FdKind {
        if target.starts_with("socket:[") {
            return FdKind::Socket;
        }
        if target.starts_with("pipe:[") {
            return FdKind::Pipe;
        }
        if let Some(anon) = target.strip_prefix("anon_inode:") {
            let name = anon.trim_start_matches('[').trim_end_matches(']');
            return match name {
                "eventfd" => FdKind::Eventfd,
                "eventpoll" => FdKind::Epoll,
                "timerfd" => FdKind::Timerfd,
                "signalfd" => FdKind::Signalfd,
                "inotify" => FdKind::Inotify,
                "fanotify" => FdKind::Fanotify,
                "pidfd" => FdKind::Pidfd,
                "io_uring" => FdKind::IoUring,
                "perf_event" => FdKind::Perf,
                _ => FdKind::Other,
            };
        }
        // Kernels with pidfs name pidfds like pipes and sockets.
        if target.starts_with("pidfd:[") {
            return FdKind::Pidfd;
        }
        if target.starts_with("/memfd:") {
            return FdKind::Memfd;
        }
        if target.starts_with('/') {
            return if is_dir { FdKind::Dir } else { FdKind::File };
        }
        FdKind::Other
    }
}

/// An fd as /proc/PID/fd and /proc/PID/fdinfo show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcFd {
    pub fd: i32,
    pub kind: FdKind,
    /// The symlink target: a path, `socket:[1234]`, `anon_inode:[eventfd]`...
    pub target: String,
    pub cloexec: bool,
}

/// Read access to the tracee's memory. `None` when the range is unreadable.
pub trait TraceeMemory {
    fn read_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>>;
    /// A NUL-terminated string of at most `max` bytes (without the NUL).
    fn read_cstr(&self, addr: u64, max: usize) -> Option<Vec<u8>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_match_serde() {
        for kind in FdKind::ALL {
            assert_eq!(FdKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(FdKind::parse("sock"), None);
    }

    #[test]
    fn kinds_from_proc_links() {
        let cases = [
            ("socket:[123]", false, FdKind::Socket),
            ("pipe:[9]", false, FdKind::Pipe),
            ("anon_inode:[eventfd]", false, FdKind::Eventfd),
            ("anon_inode:[eventpoll]", false, FdKind::Epoll),
            ("anon_inode:[timerfd]", false, FdKind::Timerfd),
            ("anon_inode:[signalfd]", false, FdKind::Signalfd),
            ("anon_inode:inotify", false, FdKind::Inotify),
            ("anon_inode:[fanotify]", false, FdKind::Fanotify),
            ("anon_inode:[pidfd]", false, FdKind::Pidfd),
            ("pidfd:[4242]", false, FdKind::Pidfd),
            ("anon_inode:[io_uring]", false, FdKind::IoUring),
            ("anon_inode:[perf_event]", false, FdKind::Perf),
            ("anon_inode:[userfaultfd]", false, FdKind::Other),
            ("/memfd:cache (deleted)", false, FdKind::Memfd),
            ("/etc/hosts", false, FdKind::File),
            ("/tmp/dir", true, FdKind::Dir),
            ("net:[4026531840]", false, FdKind::Other),
            ("", false, FdKind::Other),
        ];
        for (target, is_dir, kind) in cases {
            assert_eq!(FdKind::from_link(target, is_dir), kind, "{target}");
        }
    }
}
