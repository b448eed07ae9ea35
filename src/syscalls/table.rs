//! The syscalls that create, close or re-flag fds (and the socket calls whose
//! addresses annotate an fd), one row each: number, name, decoder, and the
//! facts the tracer acts on without decoding (`Flags`, as strace's
//! `syscallent` rows carry theirs).
//!
//! This table is the single list of what fdbg stops on: the tracer builds its
//! seccomp filter from `traced_syscalls` and `traced_by_command`, and `decode`
//! dispatches through the same rows, so a syscall cannot be traced without a
//! decoder or decoded without being traced. What must happen at a close's
//! entry, and which syscalls a `break fd` watch stops, come from the flags. Numbers come from `libc`, i.e. the
//! architecture fdbg is built for; a tracee of another ABI (32-bit compat) is
//! not covered by this table.

use std::sync::LazyLock;

use super::decode::{self as d, Decoder};

/// One fd syscall.
pub(super) struct Syscall {
    pub nr: u64,
    pub name: &'static str,
    pub decode: Decoder,
    pub flags: Flags,
}

/// What a syscall does with fds that the tracer must know before or
/// besides decoding it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// Closes the fd of its first argument (close): the kernel frees the
    /// number as the call begins.
    pub const CLOSES_FD: Flags = Flags(1);
    /// Closes (or marks close-on-exec) the fds from its first argument to
    /// its second (close_range).
    pub const CLOSES_RANGE: Flags = Flags(2);
    /// Its new fds are written to the caller's memory, not returned: pipe,
    /// socketpair, the SCM_RIGHTS of recvmsg.
    pub const FDS_IN_MEMORY: Flags = Flags(4);
    /// Changes the fd table only with the commands of `FCNTL_TRACED_CMDS`
    /// in its second argument (fcntl): not worth a stop with another.
    pub const BY_COMMAND: Flags = Flags(8);
    /// Its arguments point to memory that points further (recvmsg's
    /// header to the buffer its fds land in): a copy of the memory near
    /// an argument need not hold all that decoding reads.
    pub const POINTS_FURTHER: Flags = Flags(16);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

const fn row(nr: libc::c_long, name: &'static str, decode: Decoder) -> Syscall {
    Syscall {
        nr: nr as u64,
        name,
        decode,
        flags: Flags(0),
    }
}

impl Syscall {
    /// The row with `flags` as well.
    const fn with(self, flags: Flags) -> Syscall {
        Syscall {
            flags: Flags(self.flags.0 | flags.0),
            ..self
        }
    }
}

/// Every syscall whose completion can create, close or re-flag an fd, or
/// tells where a socket fd is bound or connected to (bind, connect, listen:
/// annotations of the fd, shown by `fds` and `history`).
static TABLE: &[Syscall] = &[
    // sockets
    row(libc::SYS_socket, "socket", d::socket),
    row(libc::SYS_socketpair, "socketpair", d::socketpair).with(Flags::FDS_IN_MEMORY),
    row(libc::SYS_accept, "accept", d::accept),
    row(libc::SYS_accept4, "accept4", d::accept4),
    // socket annotations: where a socket was bound and connected to
    row(libc::SYS_bind, "bind", d::bind),
    row(libc::SYS_connect, "connect", d::connect),
    row(libc::SYS_listen, "listen", d::listen),
    row(libc::SYS_recvmsg, "recvmsg", d::recvmsg)
        .with(Flags::FDS_IN_MEMORY)
        .with(Flags::POINTS_FURTHER),
    row(libc::SYS_recvmmsg, "recvmmsg", d::recvmmsg)
        .with(Flags::FDS_IN_MEMORY)
        .with(Flags::POINTS_FURTHER),
    // files
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_open, "open", d::open),
    row(libc::SYS_openat, "openat", d::openat),
    row(libc::SYS_openat2, "openat2", d::openat2),
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_creat, "creat", d::creat),
    row(
        libc::SYS_open_by_handle_at,
        "open_by_handle_at",
        d::open_by_handle_at,
    ),
    // pipes and duplicates
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_pipe, "pipe", d::pipe).with(Flags::FDS_IN_MEMORY),
    row(libc::SYS_pipe2, "pipe2", d::pipe2).with(Flags::FDS_IN_MEMORY),
    row(libc::SYS_dup, "dup", d::dup),
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_dup2, "dup2", d::dup2),
    row(libc::SYS_dup3, "dup3", d::dup3),
    row(libc::SYS_fcntl, "fcntl", d::fcntl).with(Flags::BY_COMMAND),
    // anonymous-inode fds
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_eventfd, "eventfd", d::eventfd),
    row(libc::SYS_eventfd2, "eventfd2", d::eventfd2),
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_epoll_create, "epoll_create", d::epoll_create),
    row(libc::SYS_epoll_create1, "epoll_create1", d::epoll_create1),
    row(
        libc::SYS_timerfd_create,
        "timerfd_create",
        d::timerfd_create,
    ),
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_signalfd, "signalfd", d::signalfd),
    row(libc::SYS_signalfd4, "signalfd4", d::signalfd4),
    #[cfg(target_arch = "x86_64")]
    row(libc::SYS_inotify_init, "inotify_init", d::inotify_init),
    row(libc::SYS_inotify_init1, "inotify_init1", d::inotify_init1),
    row(libc::SYS_fanotify_init, "fanotify_init", d::fanotify_init),
    row(libc::SYS_memfd_create, "memfd_create", d::memfd_create),
    row(libc::SYS_pidfd_open, "pidfd_open", d::pidfd_open),
    row(libc::SYS_pidfd_getfd, "pidfd_getfd", d::pidfd_getfd),
    row(libc::SYS_userfaultfd, "userfaultfd", d::userfaultfd),
    row(
        libc::SYS_perf_event_open,
        "perf_event_open",
        d::perf_event_open,
    ),
    row(
        libc::SYS_io_uring_setup,
        "io_uring_setup",
        d::io_uring_setup,
    ),
    // closing
    row(libc::SYS_close, "close", d::close).with(Flags::CLOSES_FD),
    row(libc::SYS_close_range, "close_range", d::close_range).with(Flags::CLOSES_RANGE),
];

/// Syscalls the tracer meets through other stops (fork, exec and exit
/// events); named here so every event line can say what it was.
static OTHER_NAMES: &[(libc::c_long, &str)] = &[
    (libc::SYS_execve, "execve"),
    (libc::SYS_execveat, "execveat"),
    (libc::SYS_clone, "clone"),
    (libc::SYS_clone3, "clone3"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_fork, "fork"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_vfork, "vfork"),
    (libc::SYS_exit, "exit"),
    (libc::SYS_exit_group, "exit_group"),
];

static TRACED: LazyLock<Vec<u64>> = LazyLock::new(|| TABLE.iter().map(|s| s.nr).collect());

/// Every syscall number whose completion can change the fd table.
pub fn traced_syscalls() -> &'static [u64] {
    &TRACED
}

/// fcntl commands that change the fd table; fcntl with any other command is
/// not worth a stop.
pub const FCNTL_TRACED_CMDS: &[u64] = &[
    libc::F_DUPFD as u64,
    libc::F_DUPFD_CLOEXEC as u64,
    libc::F_SETFD as u64,
];

/// The syscall that stops only for some commands, and those commands: what
/// a seccomp filter checks beyond the number.
pub fn traced_by_command() -> (u64, &'static [u64]) {
    let nr = syscalls_with(Flags::BY_COMMAND)
        .next()
        .map_or(u64::MAX, |(nr, _)| nr);
    (nr, FCNTL_TRACED_CMDS)
}

pub fn is_fd_syscall(nr: u64) -> bool {
    lookup(nr).is_some()
}

/// The flags of traced syscall `nr` (none for an untraced one).
pub fn flags(nr: u64) -> Flags {
    lookup(nr).map_or(Flags::default(), |s| s.flags)
}

/// The traced syscalls with all of `flags`, by number and name.
pub fn syscalls_with(flags: Flags) -> impl Iterator<Item = (u64, &'static str)> {
    TABLE
        .iter()
        .filter(move |s| s.flags.contains(flags))
        .map(|s| (s.nr, s.name))
}

/// The name of a traced syscall, or of one of the process-lifetime syscalls
/// (execve, clone, fork, exit...). `None` for the rest.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    lookup(nr).map(|s| s.name).or_else(|| {
        OTHER_NAMES
            .iter()
            .find(|&&(n, _)| n as u64 == nr)
            .map(|&(_, name)| name)
    })
}

/// The row of a traced syscall.
pub(super) fn lookup(nr: u64) -> Option<&'static Syscall> {
    TABLE.iter().find(|s| s.nr == nr)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every syscall the fd model promises to follow (the creating ones from
    /// socket to io_uring_setup and recvmsg's SCM_RIGHTS, the closing ones,
    /// execve for close-on-exec), and the socket calls fdbg records as
    /// annotations (bind, connect, listen), with the libc number each must
    /// have. Written out by hand so that a row dropped from the table fails.
    fn spec_syscalls() -> Vec<(&'static str, libc::c_long)> {
        let mut v = vec![
            ("socket", libc::SYS_socket),
            ("socketpair", libc::SYS_socketpair),
            ("accept", libc::SYS_accept),
            ("accept4", libc::SYS_accept4),
            ("bind", libc::SYS_bind),
            ("connect", libc::SYS_connect),
            ("listen", libc::SYS_listen),
            ("openat", libc::SYS_openat),
            ("openat2", libc::SYS_openat2),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("pipe2", libc::SYS_pipe2),
            ("dup", libc::SYS_dup),
            ("dup3", libc::SYS_dup3),
            ("fcntl", libc::SYS_fcntl),
            ("eventfd2", libc::SYS_eventfd2),
            ("epoll_create1", libc::SYS_epoll_create1),
            ("timerfd_create", libc::SYS_timerfd_create),
            ("signalfd4", libc::SYS_signalfd4),
            ("inotify_init1", libc::SYS_inotify_init1),
            ("fanotify_init", libc::SYS_fanotify_init),
            ("memfd_create", libc::SYS_memfd_create),
            ("pidfd_open", libc::SYS_pidfd_open),
            ("pidfd_getfd", libc::SYS_pidfd_getfd),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("recvmsg", libc::SYS_recvmsg),
            ("recvmmsg", libc::SYS_recvmmsg),
            ("close", libc::SYS_close),
            ("close_range", libc::SYS_close_range),
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            ("open", libc::SYS_open),
            ("creat", libc::SYS_creat),
            ("pipe", libc::SYS_pipe),
            ("dup2", libc::SYS_dup2),
            ("eventfd", libc::SYS_eventfd),
            ("epoll_create", libc::SYS_epoll_create),
            ("signalfd", libc::SYS_signalfd),
            ("inotify_init", libc::SYS_inotify_init),
        ]);
        v
    }

    #[test]
    fn table_matches_spec_and_libc_numbers() {
        let spec = spec_syscalls();
        for &(name, nr) in &spec {
            assert_eq!(syscall_name(nr as u64), Some(name), "number of {name}");
            assert!(is_fd_syscall(nr as u64), "{name} is not traced");
        }
        assert_eq!(
            TABLE.len(),
            spec.len(),
            "table has rows the list above lacks"
        );
    }

    #[test]
    fn table_has_no_duplicates() {
        let numbers: HashSet<u64> = TABLE.iter().map(|s| s.nr).collect();
        let names: HashSet<&str> = TABLE.iter().map(|s| s.name).collect();
        assert_eq!(numbers.len(), TABLE.len());
        assert_eq!(names.len(), TABLE.len());
        assert_eq!(traced_syscalls().len(), TABLE.len());
        for &(nr, name) in OTHER_NAMES {
            assert!(!is_fd_syscall(nr as u64), "{name} is both traced and not");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_are_the_kernel_abi() {
        for (name, nr) in [
            ("close", 3),
            ("socket", 41),
            ("connect", 42),
            ("bind", 49),
            ("listen", 50),
            ("openat", 257),
            ("close_range", 436),
            ("openat2", 437),
            ("pidfd_getfd", 438),
        ] {
            assert_eq!(syscall_name(nr), Some(name));
        }
        assert_eq!(syscall_name(59), Some("execve"));
        assert_eq!(syscall_name(0), None, "read is not an fd syscall");
    }

    /// The sets the tracer once listed by hand: close's entry (the model
    /// takes the fd out there, a stop completes it, a watch stops at it),
    /// close_range's entry (a watch stops at it), the syscalls whose new
    /// fds a watch cannot see in the result, and fcntl, which the seccomp
    /// filter checks by command.
    #[test]
    fn flags_give_the_sets_the_tracer_listed() {
        let numbers = |flags| {
            syscalls_with(flags)
                .map(|(nr, _)| nr)
                .collect::<HashSet<u64>>()
        };
        let set = |nrs: &[libc::c_long]| nrs.iter().map(|&n| n as u64).collect::<HashSet<u64>>();
        assert_eq!(numbers(Flags::CLOSES_FD), set(&[libc::SYS_close]));
        assert_eq!(numbers(Flags::CLOSES_RANGE), set(&[libc::SYS_close_range]));
        let mut in_memory = vec![
            libc::SYS_pipe2,
            libc::SYS_socketpair,
            libc::SYS_recvmsg,
            libc::SYS_recvmmsg,
        ];
        #[cfg(target_arch = "x86_64")]
        in_memory.push(libc::SYS_pipe);
        assert_eq!(numbers(Flags::FDS_IN_MEMORY), set(&in_memory));
        assert_eq!(
            numbers(Flags::POINTS_FURTHER),
            set(&[libc::SYS_recvmsg, libc::SYS_recvmmsg])
        );
        assert!(flags(libc::SYS_close as u64).contains(Flags::CLOSES_FD));
        assert!(!flags(libc::SYS_close_range as u64).contains(Flags::CLOSES_FD));
        assert!(!flags(libc::SYS_dup3 as u64).contains(Flags::CLOSES_FD));
        assert_eq!(flags(libc::SYS_read as u64), Flags::default());
        assert_eq!(
            traced_by_command(),
            (libc::SYS_fcntl as u64, FCNTL_TRACED_CMDS)
        );
        assert_eq!(syscalls_with(Flags::BY_COMMAND).count(), 1);
        assert_eq!(
            syscalls_with(Flags::CLOSES_RANGE).collect::<Vec<_>>(),
            [(libc::SYS_close_range as u64, "close_range")]
        );
    }

    #[test]
    fn fcntl_cmds_are_the_fd_changing_ones() {
        assert_eq!(FCNTL_TRACED_CMDS, &[0, 1030, 2]);
    }
}
