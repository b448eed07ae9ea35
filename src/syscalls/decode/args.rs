//! Rendering of syscall arguments the way event lines show them: symbolic
//! constants and flag sets (`SOCK_DGRAM|SOCK_CLOEXEC`), octal modes, quoted
//! and escaped strings, `NULL` and hex for pointers.
//!
//! Everything read from the tracee is untrusted: strings are escaped so no
//! control character reaches the terminal, and capped in length.

use super::TraceeMemory;

/// Longest string shown from the tracee; longer ones end in `...`.
pub const STRING_MAX: usize = 4096;

/// `(bits, name)` pairs of a flag set. Multi-bit names come before the
/// single bits they contain.
pub type FlagNames = &'static [(u64, &'static str)];

/// A flag set as `A|B|0x40`; `0` when empty.
pub fn flags(value: u64, names: FlagNames) -> String {
    let mut out = String::new();
    push_flags(&mut out, value, names);
    out
}

/// `flags`, written at the end of `out` (one buffer for a whole call's
/// text: decoding runs at every fd event).
pub fn push_flags(out: &mut String, value: u64, names: FlagNames) {
    use std::fmt::Write as _;
    let start = out.len();
    let separate = |out: &mut String| {
        if out.len() > start {
            out.push('|');
        }
    };
    let mut rest = value;
    for &(bits, name) in names {
        if bits != 0 && rest & bits == bits {
            separate(out);
            out.push_str(name);
            rest &= !bits;
        }
    }
    if value == 0 {
        out.push('0');
    } else if rest != 0 {
        separate(out);
        let _ = write!(out, "{rest:#x}");
    }
}

/// A value that is one of a set of names, or its number.
pub fn constant(value: i64, names: &[(i64, &str)]) -> String {
    names
        .iter()
        .find(|&&(v, _)| v == value)
        .map_or_else(|| value.to_string(), |&(_, name)| name.to_string())
}

/// A pointer the reader has no use for.
pub fn pointer(addr: u64) -> String {
    if addr == 0 {
        "NULL".to_string()
    } else {
        format!("{addr:#x}")
    }
}

/// A file mode in octal with a leading zero: `0644`, `000`.
pub fn mode(mode: u64) -> String {
    let mut out = String::new();
    push_mode(&mut out, mode);
    out
}

/// `mode`, written at the end of `out`.
pub fn push_mode(out: &mut String, mode: u64) {
    use std::fmt::Write as _;
    let _ = write!(out, "0{mode:02o}");
}

/// A directory fd argument of the *at syscalls.
pub fn dirfd(fd: i32) -> std::borrow::Cow<'static, str> {
    if fd == libc::AT_FDCWD {
        "AT_FDCWD".into()
    } else {
        fd.to_string().into()
    }
}

/// A list of fds: `[5, 6]`.
pub fn fd_list(fds: &[i32]) -> String {
    let items: Vec<String> = fds.iter().map(i32::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// A string argument, read once: the text for the argument list
/// (`"/etc/hosts"`, escaped, `"..."...` when capped at `STRING_MAX` bytes,
/// or the pointer when it cannot be read) and the string as it is, for a
/// target (not escaped: reports escape it when they print it; invalid
/// UTF-8 replaced; `...` after when capped).
pub fn string_arg(mem: &dyn TraceeMemory, addr: u64) -> (String, Option<String>) {
    let mut text = String::new();
    let target = push_string_arg(&mut text, mem, addr);
    (text, target)
}

/// `string_arg`, its text written at the end of `text`.
pub fn push_string_arg(text: &mut String, mem: &dyn TraceeMemory, addr: u64) -> Option<String> {
    let bytes = if addr == 0 {
        None
    } else {
        mem.read_cstr(addr, STRING_MAX + 1)
    };
    let Some(bytes) = bytes else {
        text.push_str(&pointer(addr));
        return None;
    };
    let capped = bytes.len() > STRING_MAX;
    let shown = &bytes[..bytes.len().min(STRING_MAX)];
    let dots = if capped { "..." } else { "" };
    text.reserve(shown.len() + 5);
    text.push('"');
    escape_into(text, shown);
    text.push('"');
    text.push_str(dots);
    let mut target = match capped {
        true => String::from_utf8_lossy(shown).into_owned(),
        // The bytes read become the target, without a copy when they are
        // UTF-8.
        false => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    };
    target.push_str(dots);
    Some(target)
}

/// Escape bytes for a double-quoted string: `\n`, `\t`, `\"`, `\\`, and
/// `\xNN` for every other byte outside printable ASCII.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes);
    out
}

/// `escape`, written at the end of `out`.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    let plain = |b: u8| matches!(b, 0x20..=0x7e) && b != b'"' && b != b'\\';
    let mut rest = bytes;
    while let Some(&b) = rest.first() {
        // A run of bytes shown as they are, at once.
        let run = rest.iter().position(|&b| !plain(b)).unwrap_or(rest.len());
        if run > 0 {
            out.push_str(std::str::from_utf8(&rest[..run]).unwrap_or_default());
            rest = &rest[run..];
            continue;
        }
        rest = &rest[1..];
        match b {
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

const fn flag(bits: libc::c_int, name: &'static str) -> (u64, &'static str) {
    (bits as u64, name)
}

/// The kernel's O_LARGEFILE: the C library defines it as 0 on 64-bit, but the
/// bit can still be set in the register.
#[cfg(target_arch = "x86_64")]
const O_LARGEFILE_BIT: libc::c_int = 0o100000;
#[cfg(not(target_arch = "x86_64"))]
const O_LARGEFILE_BIT: libc::c_int = libc::O_LARGEFILE;

/// O_* flags other than the access mode.
pub const O_FLAGS: FlagNames = &[
    flag(libc::O_CREAT, "O_CREAT"),
    flag(libc::O_EXCL, "O_EXCL"),
    flag(libc::O_NOCTTY, "O_NOCTTY"),
    flag(libc::O_TRUNC, "O_TRUNC"),
    flag(libc::O_APPEND, "O_APPEND"),
    flag(libc::O_NONBLOCK, "O_NONBLOCK"),
    flag(libc::O_SYNC, "O_SYNC"),
    flag(libc::O_DSYNC, "O_DSYNC"),
    flag(libc::O_ASYNC, "O_ASYNC"),
    flag(libc::O_DIRECT, "O_DIRECT"),
    flag(O_LARGEFILE_BIT, "O_LARGEFILE"),
    flag(libc::O_TMPFILE, "O_TMPFILE"),
    flag(libc::O_DIRECTORY, "O_DIRECTORY"),
    flag(libc::O_NOFOLLOW, "O_NOFOLLOW"),
    flag(libc::O_NOATIME, "O_NOATIME"),
    flag(libc::O_CLOEXEC, "O_CLOEXEC"),
    flag(libc::O_PATH, "O_PATH"),
];

/// open flags: the access mode, then the other flags: `O_RDONLY|O_CLOEXEC`.
pub fn open_flags(value: u64) -> String {
    let mut out = String::new();
    push_open_flags(&mut out, value);
    out
}

/// `open_flags`, written at the end of `out`.
pub fn push_open_flags(out: &mut String, value: u64) {
    out.push_str(match value & libc::O_ACCMODE as u64 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    let rest = value & !(libc::O_ACCMODE as u64);
    if rest != 0 {
        out.push('|');
        push_flags(out, rest, O_FLAGS);
    }
}

pub const AF_NAMES: &[(i64, &str)] = &[
    (libc::AF_UNSPEC as i64, "AF_UNSPEC"),
    (libc::AF_UNIX as i64, "AF_UNIX"),
    (libc::AF_INET as i64, "AF_INET"),
    (libc::AF_INET6 as i64, "AF_INET6"),
    (libc::AF_NETLINK as i64, "AF_NETLINK"),
    (libc::AF_PACKET as i64, "AF_PACKET"),
    (libc::AF_ALG as i64, "AF_ALG"),
    (libc::AF_BLUETOOTH as i64, "AF_BLUETOOTH"),
    (libc::AF_CAN as i64, "AF_CAN"),
    (libc::AF_VSOCK as i64, "AF_VSOCK"),
    (libc::AF_XDP as i64, "AF_XDP"),
];

const SOCK_TYPES: &[(i64, &str)] = &[
    (libc::SOCK_STREAM as i64, "SOCK_STREAM"),
    (libc::SOCK_DGRAM as i64, "SOCK_DGRAM"),
    (libc::SOCK_RAW as i64, "SOCK_RAW"),
    (libc::SOCK_RDM as i64, "SOCK_RDM"),
    (libc::SOCK_SEQPACKET as i64, "SOCK_SEQPACKET"),
    (libc::SOCK_DCCP as i64, "SOCK_DCCP"),
    (10, "SOCK_PACKET"),
];

/// Flags of socket, socketpair and accept4.
pub const SOCK_FLAGS: FlagNames = &[
    flag(libc::SOCK_CLOEXEC, "SOCK_CLOEXEC"),
    flag(libc::SOCK_NONBLOCK, "SOCK_NONBLOCK"),
];

/// A socket type with its flags: `SOCK_DGRAM|SOCK_CLOEXEC`. The type is the
/// low 4 bits (the kernel's SOCK_TYPE_MASK), the rest are flags.
pub fn socket_type(value: u64) -> String {
    let value = value & 0xffff_ffff;
    let ty = constant((value & 0xf) as i64, SOCK_TYPES);
    match value & !0xf {
        0 => ty,
        rest => format!("{ty}|{}", flags(rest, SOCK_FLAGS)),
    }
}

const IPPROTO_NAMES: &[(i64, &str)] = &[
    (libc::IPPROTO_ICMP as i64, "IPPROTO_ICMP"),
    (libc::IPPROTO_TCP as i64, "IPPROTO_TCP"),
    (libc::IPPROTO_UDP as i64, "IPPROTO_UDP"),
    (libc::IPPROTO_ICMPV6 as i64, "IPPROTO_ICMPV6"),
    (libc::IPPROTO_SCTP as i64, "IPPROTO_SCTP"),
    (libc::IPPROTO_UDPLITE as i64, "IPPROTO_UDPLITE"),
    (libc::IPPROTO_RAW as i64, "IPPROTO_RAW"),
];

/// A socket protocol: named for the IP families when not 0.
pub fn protocol(domain: i32, proto: i32) -> String {
    if proto != 0 && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        constant(proto.into(), IPPROTO_NAMES)
    } else {
        proto.to_string()
    }
}

pub const FCNTL_CMDS: &[(i64, &str)] = &[
    (libc::F_DUPFD as i64, "F_DUPFD"),
    (libc::F_GETFD as i64, "F_GETFD"),
    (libc::F_SETFD as i64, "F_SETFD"),
    (libc::F_GETFL as i64, "F_GETFL"),
    (libc::F_SETFL as i64, "F_SETFL"),
    (libc::F_DUPFD_CLOEXEC as i64, "F_DUPFD_CLOEXEC"),
];

pub const FD_FLAGS: FlagNames = &[flag(libc::FD_CLOEXEC, "FD_CLOEXEC")];

pub const EFD_FLAGS: FlagNames = &[
    flag(libc::EFD_SEMAPHORE, "EFD_SEMAPHORE"),
    flag(libc::EFD_CLOEXEC, "EFD_CLOEXEC"),
    flag(libc::EFD_NONBLOCK, "EFD_NONBLOCK"),
];

pub const EPOLL_FLAGS: FlagNames = &[flag(libc::EPOLL_CLOEXEC, "EPOLL_CLOEXEC")];

pub const TFD_FLAGS: FlagNames = &[
    flag(libc::TFD_CLOEXEC, "TFD_CLOEXEC"),
    flag(libc::TFD_NONBLOCK, "TFD_NONBLOCK"),
];

pub const CLOCK_NAMES: &[(i64, &str)] = &[
    (libc::CLOCK_REALTIME as i64, "CLOCK_REALTIME"),
    (libc::CLOCK_MONOTONIC as i64, "CLOCK_MONOTONIC"),
    (
        libc::CLOCK_PROCESS_CPUTIME_ID as i64,
        "CLOCK_PROCESS_CPUTIME_ID",
    ),
    (
        libc::CLOCK_THREAD_CPUTIME_ID as i64,
        "CLOCK_THREAD_CPUTIME_ID",
    ),
    (libc::CLOCK_MONOTONIC_RAW as i64, "CLOCK_MONOTONIC_RAW"),
    (libc::CLOCK_REALTIME_COARSE as i64, "CLOCK_REALTIME_COARSE"),
    (
        libc::CLOCK_MONOTONIC_COARSE as i64,
        "CLOCK_MONOTONIC_COARSE",
    ),
    (libc::CLOCK_BOOTTIME as i64, "CLOCK_BOOTTIME"),
    (libc::CLOCK_REALTIME_ALARM as i64, "CLOCK_REALTIME_ALARM"),
    (libc::CLOCK_BOOTTIME_ALARM as i64, "CLOCK_BOOTTIME_ALARM"),
    (libc::CLOCK_TAI as i64, "CLOCK_TAI"),
];

pub const SFD_FLAGS: FlagNames = &[
    flag(libc::SFD_CLOEXEC, "SFD_CLOEXEC"),
    flag(libc::SFD_NONBLOCK, "SFD_NONBLOCK"),
];

pub const IN_FLAGS: FlagNames = &[
    flag(libc::IN_CLOEXEC, "IN_CLOEXEC"),
    flag(libc::IN_NONBLOCK, "IN_NONBLOCK"),
];

pub const FAN_FLAGS: FlagNames = &[
    (libc::FAN_CLOEXEC as u64, "FAN_CLOEXEC"),
    (libc::FAN_NONBLOCK as u64, "FAN_NONBLOCK"),
    (libc::FAN_UNLIMITED_QUEUE as u64, "FAN_UNLIMITED_QUEUE"),
    (libc::FAN_UNLIMITED_MARKS as u64, "FAN_UNLIMITED_MARKS"),
    (libc::FAN_ENABLE_AUDIT as u64, "FAN_ENABLE_AUDIT"),
    (libc::FAN_REPORT_PIDFD as u64, "FAN_REPORT_PIDFD"),
    (libc::FAN_REPORT_TID as u64, "FAN_REPORT_TID"),
    (libc::FAN_REPORT_FID as u64, "FAN_REPORT_FID"),
    (libc::FAN_REPORT_DIR_FID as u64, "FAN_REPORT_DIR_FID"),
    (libc::FAN_REPORT_NAME as u64, "FAN_REPORT_NAME"),
    (libc::FAN_REPORT_TARGET_FID as u64, "FAN_REPORT_TARGET_FID"),
];

/// fanotify_init flags: the notification class, then the other flags.
pub fn fanotify_flags(value: u64) -> String {
    let class_bits = (libc::FAN_CLASS_CONTENT | libc::FAN_CLASS_PRE_CONTENT) as u64;
    let class = match value & class_bits {
        c if c == libc::FAN_CLASS_NOTIF as u64 => "FAN_CLASS_NOTIF".to_string(),
        c if c == libc::FAN_CLASS_CONTENT as u64 => "FAN_CLASS_CONTENT".to_string(),
        c if c == libc::FAN_CLASS_PRE_CONTENT as u64 => "FAN_CLASS_PRE_CONTENT".to_string(),
        c => format!("{c:#x}"),
    };
    let rest = value & !class_bits;
    if rest == 0 {
        class
    } else {
        format!("{class}|{}", flags(rest, FAN_FLAGS))
    }
}

pub const MFD_FLAGS: FlagNames = &[
    (libc::MFD_CLOEXEC as u64, "MFD_CLOEXEC"),
    (libc::MFD_ALLOW_SEALING as u64, "MFD_ALLOW_SEALING"),
    (libc::MFD_HUGETLB as u64, "MFD_HUGETLB"),
    (libc::MFD_NOEXEC_SEAL as u64, "MFD_NOEXEC_SEAL"),
    (libc::MFD_EXEC as u64, "MFD_EXEC"),
];

pub const PIDFD_FLAGS: FlagNames = &[
    flag(libc::O_NONBLOCK, "PIDFD_NONBLOCK"),
    flag(libc::O_EXCL, "PIDFD_THREAD"),
];

/// userfaultfd flags: O_CLOEXEC, O_NONBLOCK and UFFD_USER_MODE_ONLY (1).
pub const UFFD_FLAGS: FlagNames = &[
    flag(libc::O_CLOEXEC, "O_CLOEXEC"),
    flag(libc::O_NONBLOCK, "O_NONBLOCK"),
    (1, "UFFD_USER_MODE_ONLY"),
];

/// PERF_FLAG_FD_CLOEXEC of linux/perf_event.h (not exported by libc).
pub const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;

pub const PERF_FLAGS: FlagNames = &[
    (1, "PERF_FLAG_FD_NO_GROUP"),
    (1 << 1, "PERF_FLAG_FD_OUTPUT"),
    (1 << 2, "PERF_FLAG_PID_CGROUP"),
    (PERF_FLAG_FD_CLOEXEC, "PERF_FLAG_FD_CLOEXEC"),
];

pub const CLOSE_RANGE_FLAGS: FlagNames = &[
    (libc::CLOSE_RANGE_UNSHARE as u64, "CLOSE_RANGE_UNSHARE"),
    (libc::CLOSE_RANGE_CLOEXEC as u64, "CLOSE_RANGE_CLOEXEC"),
];

pub const RESOLVE_FLAGS: FlagNames = &[
    (0x01, "RESOLVE_NO_XDEV"),
    (0x02, "RESOLVE_NO_MAGICLINKS"),
    (0x04, "RESOLVE_NO_SYMLINKS"),
    (0x08, "RESOLVE_BENEATH"),
    (0x10, "RESOLVE_IN_ROOT"),
    (0x20, "RESOLVE_CACHED"),
];

pub const MSG_FLAGS: FlagNames = &[
    flag(libc::MSG_OOB, "MSG_OOB"),
    flag(libc::MSG_PEEK, "MSG_PEEK"),
    flag(libc::MSG_DONTROUTE, "MSG_DONTROUTE"),
    flag(libc::MSG_CTRUNC, "MSG_CTRUNC"),
    flag(libc::MSG_TRUNC, "MSG_TRUNC"),
    flag(libc::MSG_DONTWAIT, "MSG_DONTWAIT"),
    flag(libc::MSG_EOR, "MSG_EOR"),
    flag(libc::MSG_WAITALL, "MSG_WAITALL"),
    flag(libc::MSG_ERRQUEUE, "MSG_ERRQUEUE"),
    flag(libc::MSG_NOSIGNAL, "MSG_NOSIGNAL"),
    flag(libc::MSG_WAITFORONE, "MSG_WAITFORONE"),
    flag(libc::MSG_CMSG_CLOEXEC, "MSG_CMSG_CLOEXEC"),
];

/// Signal names without the SIG prefix, indexed by number - 1.
const SIGNAL_NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// A signal set read from the tracee: `[INT TERM]`, or the pointer when it
/// cannot be read.
pub fn sigset(mem: &dyn TraceeMemory, addr: u64, size: u64) -> String {
    // a kernel sigset_t is 8 bytes; signalfd rejects any other size
    if size != 8 {
        return pointer(addr);
    }
    let Some(bytes) = mem.read_bytes(addr, 8) else {
        return pointer(addr);
    };
    let mut set = [0u8; 8];
    set.copy_from_slice(&bytes);
    let set = u64::from_ne_bytes(set);
    let names: Vec<String> = (1..=64u32)
        .filter(|sig| set & (1 << (sig - 1)) != 0)
        .map(|sig| match SIGNAL_NAMES.get(sig as usize - 1) {
            Some(name) => name.to_string(),
            None => format!("RT_{}", sig - 32),
        })
        .collect();
    format!("[{}]", names.join(" "))
}
