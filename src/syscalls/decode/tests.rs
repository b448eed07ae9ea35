//! Table-driven tests of the decoders over a fake tracee address space.

use std::collections::BTreeSet;

use super::scm::parse_control;
use super::*;
use crate::syscalls::{syscall_name, traced_syscalls};

/// A tracee address space made of a few readable regions.
#[derive(Default)]
struct FakeMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakeMemory {
    fn with(mut self, addr: u64, bytes: impl Into<Vec<u8>>) -> Self {
        self.regions.push((addr, bytes.into()));
        self
    }

    /// The bytes from `addr` to the end of its region.
    fn tail(&self, addr: u64) -> Option<&[u8]> {
        self.regions.iter().find_map(|(start, bytes)| {
            let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
            bytes.get(off..)
        })
    }
}

impl TraceeMemory for FakeMemory {
    fn read_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.tail(addr)?.get(..len).map(<[u8]>::to_vec)
    }

    fn read_cstr(&self, addr: u64, max: usize) -> Option<Vec<u8>> {
        let tail = self.tail(addr)?;
        match tail.iter().take(max).position(|&b| b == 0) {
            Some(nul) => Some(tail[..nul].to_vec()),
            None if tail.len() >= max => Some(tail[..max].to_vec()),
            None => None,
        }
    }
}

const PATH: u64 = 0x1000;
const TMPX: u64 = 0x1100;
const DIR: u64 = 0x1200;
const EVIL: u64 = 0x1300;
const MEMFD_NAME: u64 = 0x1400;
const PAIR: u64 = 0x2000;
const OPEN_HOW: u64 = 0x3000;
const SIGSET: u64 = 0x3100;
const MSGHDR: u64 = 0x4000;
const MSGHDR_NO_FDS: u64 = 0x4100;
const CONTROL: u64 = 0x5000;
const MMSG: u64 = 0x6000;
const MMSG_CONTROL: u64 = 0x7000;
const LONG: u64 = 0x8000;
const OPAQUE: u64 = 0x9000;
const SA_IN: u64 = 0xa000;
const SA_IN6: u64 = 0xa100;
const SA_UNIX: u64 = 0xa200;
const SA_ABSTRACT: u64 = 0xa300;
const SA_NETLINK: u64 = 0xa400;
const SA_UNSPEC: u64 = 0xa500;
const SOCKLEN_16: u64 = 0xa600;
const SOCKLEN_28: u64 = 0xa700;
const UNREADABLE: u64 = 0xdead_0000;

fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

fn ints(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// A control message as the kernel lays it out, padded to 8 bytes, with
/// `cmsg_len` as given (a liar may say anything).
fn cmsg_with_len(cmsg_len: u64, level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
    let mut v = cmsg_len.to_ne_bytes().to_vec();
    v.extend(level.to_ne_bytes());
    v.extend(ty.to_ne_bytes());
    v.extend(data);
    v.resize(v.len().next_multiple_of(8), 0);
    v
}

fn rights(fds: &[i32]) -> Vec<u8> {
    let data = ints(fds);
    cmsg_with_len(
        16 + data.len() as u64,
        libc::SOL_SOCKET,
        libc::SCM_RIGHTS,
        &data,
    )
}

/// A 64-bit struct msghdr with only the control buffer set.
fn msghdr(control: u64, control_len: u64) -> Vec<u8> {
    let mut v = vec![0u8; 56];
    v[32..40].copy_from_slice(&control.to_ne_bytes());
    v[40..48].copy_from_slice(&control_len.to_ne_bytes());
    v
}

fn mmsghdr(control: u64, control_len: u64, msg_len: u32) -> Vec<u8> {
    let mut v = msghdr(control, control_len);
    v.extend(msg_len.to_ne_bytes());
    v.resize(64, 0);
    v
}

/// Two SCM_RIGHTS messages around a credentials one, then one whose
/// cmsg_len runs past the buffer.
fn control_buffer() -> Vec<u8> {
    let mut v = rights(&[7]);
    v.extend(cmsg_with_len(
        28,
        libc::SOL_SOCKET,
        libc::SCM_CREDENTIALS,
        &[0; 12],
    ));
    v.extend(rights(&[8, 9]));
    v.extend(cmsg_with_len(
        4096,
        libc::SOL_SOCKET,
        libc::SCM_RIGHTS,
        &ints(&[11]),
    ));
    v
}

/// A sockaddr of `family` followed by `rest`, as the C structs lay it out.
fn sa(family: i32, rest: &[u8]) -> Vec<u8> {
    let mut v = (family as u16).to_ne_bytes().to_vec();
    v.extend(rest);
    v
}

fn sa_in(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut rest = port.to_be_bytes().to_vec();
    rest.extend(ip);
    rest.extend([0; 8]);
    sa(libc::AF_INET, &rest)
}

fn sa_in6(ip: std::net::Ipv6Addr, port: u16, scope: u32) -> Vec<u8> {
    let mut rest = port.to_be_bytes().to_vec();
    rest.extend([0; 4]); // flowinfo
    rest.extend(ip.octets());
    rest.extend(scope.to_ne_bytes());
    sa(libc::AF_INET6, &rest)
}

fn sa_nl(pid: u32, groups: u32) -> Vec<u8> {
    let mut rest = vec![0; 2];
    rest.extend(pid.to_ne_bytes());
    rest.extend(groups.to_ne_bytes());
    sa(libc::AF_NETLINK, &rest)
}

fn memory() -> FakeMemory {
    let open_how: Vec<u8> = [
        (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0x08, // RESOLVE_BENEATH
    ]
    .iter()
    .flat_map(|v| v.to_ne_bytes())
    .collect();
    let sigset: u64 = (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGTERM - 1));
    let control = control_buffer();
    let mut mmsgs = mmsghdr(0, 0, 3);
    mmsgs.extend(mmsghdr(MMSG_CONTROL, 20, 1));
    FakeMemory::default()
        .with(PATH, cstr(b"/etc/hosts"))
        .with(TMPX, cstr(b"/tmp/x"))
        .with(DIR, cstr(b"/var/lib"))
        .with(EVIL, cstr(b"/tmp/a\nb\x1b\"\\"))
        .with(MEMFD_NAME, cstr(b"cache"))
        .with(PAIR, ints(&[5, 6]))
        .with(OPEN_HOW, open_how)
        .with(SIGSET, sigset.to_ne_bytes())
        .with(MSGHDR, msghdr(CONTROL, control.len() as u64))
        .with(MSGHDR_NO_FDS, msghdr(0, 0))
        .with(CONTROL, control)
        .with(MMSG, mmsgs)
        .with(MMSG_CONTROL, rights(&[10]))
        .with(LONG, cstr(&[b'a'; 5000]))
        .with(OPAQUE, vec![0u8; 64])
        .with(SA_IN, sa_in([127, 0, 0, 1], 8125))
        .with(SA_IN6, sa_in6(std::net::Ipv6Addr::LOCALHOST, 53, 0))
        .with(SA_UNIX, sa(libc::AF_UNIX, b"/run/x.sock\0\0\0"))
        .with(SA_ABSTRACT, sa(libc::AF_UNIX, b"\0fdbg"))
        .with(SA_NETLINK, sa_nl(0, 1))
        .with(SA_UNSPEC, sa(libc::AF_UNSPEC, &[0; 14]))
        .with(SOCKLEN_16, 16u32.to_ne_bytes())
        .with(SOCKLEN_28, 28u32.to_ne_bytes())
}

fn note(fd: i32, note: &str) -> Effect {
    Effect::Annotate {
        fd,
        note: note.to_string(),
    }
}

fn opened(fd: i32, kind: FdKind, cloexec: bool) -> Effect {
    Effect::Open {
        fd,
        kind,
        cloexec,
        target: None,
    }
}

fn opened_path(fd: i32, kind: FdKind, cloexec: bool, target: &str) -> Effect {
    Effect::Open {
        fd,
        kind,
        cloexec,
        target: Some(target.to_string()),
    }
}

/// The argument registers of a call; unused ones are 0.
fn a(values: &[i64]) -> [u64; 6] {
    let mut args = [0u64; 6];
    for (slot, &v) in args.iter_mut().zip(values) {
        *slot = v as u64;
    }
    args
}

struct Case {
    nr: libc::c_long,
    args: [u64; 6],
    result: i64,
    text: &'static str,
    kind: FdKind,
    effects: Vec<Effect>,
}

fn case(
    nr: libc::c_long,
    args: &[i64],
    result: i64,
    text: &'static str,
    kind: FdKind,
    effects: Vec<Effect>,
) -> Case {
    Case {
        nr,
        args: a(args),
        result,
        text,
        kind,
        effects,
    }
}

fn run(nr: libc::c_long, args: [u64; 6], result: i64) -> Option<Decoded> {
    let entry = SyscallEntry {
        nr: nr as u64,
        args,
    };
    decode(&entry, result, &memory())
}

/// One successful call of every traced syscall (and a few variants).
#[rustfmt::skip]
fn success_cases() -> Vec<Case> {
    use FdKind::*;
    use libc::*;
    let (p, t, d) = (PATH as i64, TMPX as i64, DIR as i64);
    let (ebadf, eintr, eio) = (-(EBADF as i64), -(EINTR as i64), -(EIO as i64));
    let mut cases = vec![
        case(SYS_socket, &[AF_INET as i64, (SOCK_DGRAM | SOCK_CLOEXEC) as i64, 0], 3,
            "AF_INET, SOCK_DGRAM|SOCK_CLOEXEC, 0", Socket, vec![opened(3, Socket, true)]),
        case(SYS_socket, &[AF_INET6 as i64, SOCK_STREAM as i64, IPPROTO_TCP as i64], 4,
            "AF_INET6, SOCK_STREAM, IPPROTO_TCP", Socket, vec![opened(4, Socket, false)]),
        case(SYS_socketpair, &[AF_UNIX as i64, (SOCK_STREAM | SOCK_CLOEXEC) as i64, 0, PAIR as i64], 0,
            "AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0, [5, 6]", Socket,
            vec![opened(5, Socket, true), opened(6, Socket, true)]),
        case(SYS_accept, &[3, 0, 0], 7, "3, NULL, NULL", Socket, vec![opened(7, Socket, false)]),
        case(SYS_accept4, &[3, OPAQUE as i64, 0, (SOCK_CLOEXEC | SOCK_NONBLOCK) as i64], 8,
            "3, 0x9000, NULL, SOCK_CLOEXEC|SOCK_NONBLOCK", Socket, vec![opened(8, Socket, true)]),
        case(SYS_accept4, &[3, SA_IN as i64, SOCKLEN_16 as i64, SOCK_CLOEXEC as i64], 9,
            "3, {...}, [16], SOCK_CLOEXEC", Socket,
            vec![opened(9, Socket, true), note(9, "accepted from 127.0.0.1:8125")]),
        case(SYS_accept, &[3, SA_IN6 as i64, SOCKLEN_28 as i64], 10,
            "3, {...}, [28]", Socket,
            vec![opened(10, Socket, false), note(10, "accepted from [::1]:53")]),
        case(SYS_bind, &[3, SA_IN as i64, 16], 0, "3, {AF_INET, 127.0.0.1:8125}, 16", Other,
            vec![note(3, "bind 127.0.0.1:8125")]),
        case(SYS_bind, &[4, SA_UNIX as i64, 15], 0, "4, {AF_UNIX, \"/run/x.sock\"}, 15", Other,
            vec![note(4, "bind /run/x.sock")]),
        case(SYS_bind, &[4, SA_ABSTRACT as i64, 7], 0, "4, {AF_UNIX, @\"fdbg\"}, 7", Other,
            vec![note(4, "bind @fdbg")]),
        case(SYS_bind, &[5, SA_NETLINK as i64, 12], 0, "5, {AF_NETLINK, netlink pid 0 groups 0x1}, 12",
            Other, vec![note(5, "bind netlink pid 0 groups 0x1")]),
        case(SYS_connect, &[3, SA_IN as i64, 16], 0, "3, {AF_INET, 127.0.0.1:8125}, 16", Other,
            vec![note(3, "connect 127.0.0.1:8125")]),
        case(SYS_connect, &[3, SA_IN6 as i64, 28], -(EINPROGRESS as i64),
            "3, {AF_INET6, [::1]:53}, 28", Other, vec![note(3, "connect [::1]:53 in progress")]),
        case(SYS_connect, &[3, SA_IN as i64, 16], -(ECONNREFUSED as i64),
            "3, {AF_INET, 127.0.0.1:8125}, 16", Other,
            vec![note(3, "connect 127.0.0.1:8125 failed: ECONNREFUSED")]),
        case(SYS_connect, &[3, SA_UNSPEC as i64, 16], 0, "3, {AF_UNSPEC}, 16", Other,
            vec![note(3, "disconnect")]),
        case(SYS_connect, &[3, UNREADABLE as i64, 16], 0, "3, 0xdead0000, 16", Other,
            vec![note(3, "connect 0xdead0000")]),
        case(SYS_listen, &[3, 128], 0, "3, 128", Other, vec![note(3, "listen backlog 128")]),
        case(SYS_openat, &[AT_FDCWD as i64, p, (O_RDONLY | O_CLOEXEC) as i64], 3,
            "AT_FDCWD, \"/etc/hosts\", O_RDONLY|O_CLOEXEC", File,
            vec![opened_path(3, File, true, "/etc/hosts")]),
        case(SYS_openat, &[AT_FDCWD as i64, d, (O_RDONLY | O_DIRECTORY | O_CLOEXEC) as i64], 4,
            "AT_FDCWD, \"/var/lib\", O_RDONLY|O_DIRECTORY|O_CLOEXEC", Dir,
            vec![opened_path(4, Dir, true, "/var/lib")]),
        case(SYS_openat, &[5, t, (O_RDWR | O_TMPFILE) as i64, 0o600], 6,
            "5, \"/tmp/x\", O_RDWR|O_TMPFILE, 0600", File,
            vec![opened_path(6, File, false, "/tmp/x")]),
        case(SYS_openat2, &[AT_FDCWD as i64, d, OPEN_HOW as i64, 24], 7,
            "AT_FDCWD, \"/var/lib\", {flags=O_RDONLY|O_DIRECTORY|O_CLOEXEC, mode=000, \
             resolve=RESOLVE_BENEATH}, 24",
            Dir, vec![opened_path(7, Dir, true, "/var/lib")]),
        case(SYS_open_by_handle_at, &[4, OPAQUE as i64, (O_RDONLY | O_CLOEXEC) as i64], 5,
            "4, 0x9000, O_RDONLY|O_CLOEXEC", File, vec![opened(5, File, true)]),
        case(SYS_pipe2, &[PAIR as i64, O_CLOEXEC as i64], 0, "[5, 6], O_CLOEXEC", Pipe,
            vec![opened(5, Pipe, true), opened(6, Pipe, true)]),
        case(SYS_dup, &[3], 4, "3", Other, vec![Effect::Dup { from: 3, to: 4, cloexec: false }]),
        case(SYS_dup3, &[3, 10, O_CLOEXEC as i64], 10, "3, 10, O_CLOEXEC", Other,
            vec![Effect::Dup { from: 3, to: 10, cloexec: true }]),
        case(SYS_fcntl, &[3, F_DUPFD_CLOEXEC as i64, 0], 11, "3, F_DUPFD_CLOEXEC, 0", Other,
            vec![Effect::Dup { from: 3, to: 11, cloexec: true }]),
        case(SYS_fcntl, &[3, F_DUPFD as i64, 10], 12, "3, F_DUPFD, 10", Other,
            vec![Effect::Dup { from: 3, to: 12, cloexec: false }]),
        case(SYS_fcntl, &[3, F_SETFD as i64, FD_CLOEXEC as i64], 0, "3, F_SETFD, FD_CLOEXEC", Other,
            vec![Effect::SetCloexec { fd: 3, cloexec: true }]),
        case(SYS_fcntl, &[3, F_SETFD as i64, 0], 0, "3, F_SETFD, 0", Other,
            vec![Effect::SetCloexec { fd: 3, cloexec: false }]),
        case(SYS_eventfd2, &[1, (EFD_CLOEXEC | EFD_NONBLOCK) as i64], 3,
            "1, EFD_CLOEXEC|EFD_NONBLOCK", Eventfd, vec![opened(3, Eventfd, true)]),
        case(SYS_epoll_create1, &[EPOLL_CLOEXEC as i64], 3, "EPOLL_CLOEXEC", Epoll,
            vec![opened(3, Epoll, true)]),
        case(SYS_timerfd_create, &[CLOCK_MONOTONIC as i64, (TFD_CLOEXEC | TFD_NONBLOCK) as i64], 3,
            "CLOCK_MONOTONIC, TFD_CLOEXEC|TFD_NONBLOCK", Timerfd, vec![opened(3, Timerfd, true)]),
        case(SYS_signalfd4, &[-1, SIGSET as i64, 8, SFD_CLOEXEC as i64], 3,
            "-1, [INT TERM], 8, SFD_CLOEXEC", Signalfd, vec![opened(3, Signalfd, true)]),
        case(SYS_inotify_init1, &[IN_CLOEXEC as i64], 3, "IN_CLOEXEC", Inotify,
            vec![opened(3, Inotify, true)]),
        case(SYS_fanotify_init, &[(FAN_CLASS_NOTIF | FAN_CLOEXEC) as i64, O_RDONLY as i64], 3,
            "FAN_CLASS_NOTIF|FAN_CLOEXEC, O_RDONLY", Fanotify, vec![opened(3, Fanotify, true)]),
        case(SYS_memfd_create, &[MEMFD_NAME as i64, (MFD_CLOEXEC | MFD_ALLOW_SEALING) as i64], 3,
            "\"cache\", MFD_CLOEXEC|MFD_ALLOW_SEALING", Memfd,
            vec![opened_path(3, Memfd, true, "memfd:cache")]),
        case(SYS_pidfd_open, &[1234, 0], 3, "1234, 0", Pidfd, vec![opened(3, Pidfd, true)]),
        case(SYS_pidfd_getfd, &[3, 5, 0], 4, "3, 5, 0", Other, vec![opened(4, Other, true)]),
        case(SYS_userfaultfd, &[(O_CLOEXEC | O_NONBLOCK) as i64], 3, "O_CLOEXEC|O_NONBLOCK", Other,
            vec![opened(3, Other, true)]),
        case(SYS_perf_event_open, &[OPAQUE as i64, 0, -1, -1, 8], 3,
            "0x9000, 0, -1, -1, PERF_FLAG_FD_CLOEXEC", Perf, vec![opened(3, Perf, true)]),
        case(SYS_io_uring_setup, &[8, OPAQUE as i64], 3, "8, 0x9000", IoUring,
            vec![opened(3, IoUring, true)]),
        case(SYS_recvmsg, &[4, MSGHDR as i64, MSG_CMSG_CLOEXEC as i64], 10,
            "4, {..., msg_control=[{cmsg_level=SOL_SOCKET, cmsg_type=SCM_RIGHTS, cmsg_data=[7]}, \
             {cmsg_level=SOL_SOCKET, cmsg_type=SCM_RIGHTS, cmsg_data=[8, 9]}]}, MSG_CMSG_CLOEXEC",
            Other, vec![opened(7, Other, true), opened(8, Other, true), opened(9, Other, true)]),
        case(SYS_recvmmsg, &[4, MMSG as i64, 2, 0, 0], 2,
            "4, [{msg_hdr={...}, msg_len=3}, {msg_hdr={..., msg_control=[{cmsg_level=SOL_SOCKET, \
             cmsg_type=SCM_RIGHTS, cmsg_data=[10]}]}, msg_len=1}], 2, 0, NULL",
            Other, vec![opened(10, Other, false)]),
        case(SYS_close, &[7], 0, "7", Other, vec![Effect::Close { fd: 7 }]),
        case(SYS_close, &[7], ebadf, "7", Other, vec![Effect::BadClose { fd: 7 }]),
        case(SYS_close, &[7], eintr, "7", Other, vec![Effect::Close { fd: 7 }]),
        case(SYS_close, &[7], eio, "7", Other, vec![Effect::Close { fd: 7 }]),
        case(SYS_close_range, &[3, u32::MAX as i64, CLOSE_RANGE_CLOEXEC as i64], 0,
            "3, ~0U, CLOSE_RANGE_CLOEXEC", Other,
            vec![Effect::CloexecRange { first: 3, last: u32::MAX }]),
        case(SYS_close_range, &[3, 10, 0], 0, "3, 10, 0", Other,
            vec![Effect::CloseRange { first: 3, last: 10 }]),
        case(SYS_close_range, &[3, -1, CLOSE_RANGE_UNSHARE as i64], 0,
            "3, ~0U, CLOSE_RANGE_UNSHARE", Other,
            vec![Effect::CloseRange { first: 3, last: u32::MAX }]),
    ];
    #[cfg(target_arch = "x86_64")]
    cases.extend([
        case(SYS_open, &[p, (O_RDONLY | O_CLOEXEC) as i64], 3, "\"/etc/hosts\", O_RDONLY|O_CLOEXEC",
            File, vec![opened_path(3, File, true, "/etc/hosts")]),
        case(SYS_open, &[t, (O_WRONLY | O_CREAT | O_TRUNC) as i64, 0o644], 5,
            "\"/tmp/x\", O_WRONLY|O_CREAT|O_TRUNC, 0644", File,
            vec![opened_path(5, File, false, "/tmp/x")]),
        case(SYS_creat, &[t, 0o644], 3, "\"/tmp/x\", 0644", File,
            vec![opened_path(3, File, false, "/tmp/x")]),
        case(SYS_pipe, &[PAIR as i64], 0, "[5, 6]", Pipe,
            vec![opened(5, Pipe, false), opened(6, Pipe, false)]),
        case(SYS_dup2, &[3, 10], 10, "3, 10", Other,
            vec![Effect::Dup { from: 3, to: 10, cloexec: false }]),
        case(SYS_dup2, &[3, 3], 3, "3, 3", Other, vec![]),
        case(SYS_eventfd, &[0], 3, "0", Eventfd, vec![opened(3, Eventfd, false)]),
        case(SYS_epoll_create, &[1], 3, "1", Epoll, vec![opened(3, Epoll, false)]),
        case(SYS_signalfd, &[-1, SIGSET as i64, 8], 3, "-1, [INT TERM], 8", Signalfd,
            vec![opened(3, Signalfd, false)]),
        case(SYS_inotify_init, &[], 3, "", Inotify, vec![opened(3, Inotify, false)]),
    ]);
    cases
}

#[test]
fn successful_calls_decode_to_their_effects() {
    for c in success_cases() {
        let got = run(c.nr, c.args, c.result).unwrap_or_else(|| panic!("{} gave None", c.text));
        let name = syscall_name(c.nr as u64).unwrap();
        assert_eq!(got.name, name);
        assert_eq!(got.args_text, c.text, "{name}");
        assert_eq!(got.result, c.result, "{name}({})", c.text);
        assert_eq!(got.kind, c.kind, "{name}({})", c.text);
        assert_eq!(got.effects, c.effects, "{name}({})", c.text);
    }
}

#[test]
fn every_traced_syscall_has_a_case() {
    let covered: BTreeSet<u64> = success_cases().iter().map(|c| c.nr as u64).collect();
    let traced: BTreeSet<u64> = traced_syscalls().iter().copied().collect();
    let missing: Vec<_> = traced
        .difference(&covered)
        .filter_map(|&nr| syscall_name(nr))
        .collect();
    assert!(missing.is_empty(), "no case for {missing:?}");
}

#[test]
fn failed_calls_create_nothing() {
    let emfile = -i64::from(libc::EMFILE);
    for c in success_cases()
        .into_iter()
        .filter(|c| c.nr != libc::SYS_close)
    {
        let name = syscall_name(c.nr as u64).unwrap();
        let got = run(c.nr, c.args, emfile);
        if c.nr == libc::SYS_recvmsg || c.nr == libc::SYS_recvmmsg {
            assert_eq!(got, None, "a failed {name} received nothing");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("failed {name} gave None"));
        // bind, connect and listen note their failure on the fd
        let (notes, effects): (Vec<_>, Vec<_>) = got
            .effects
            .iter()
            .partition(|e| matches!(e, Effect::Annotate { .. }));
        assert_eq!(effects, Vec::<&Effect>::new(), "failed {name}({})", c.text);
        for n in notes {
            let Effect::Annotate { note, .. } = n else {
                unreachable!()
            };
            assert!(
                ["bind", "connect", "listen"].contains(&name) && note.ends_with("failed: EMFILE"),
                "failed {name}({}) noted {note:?}",
                c.text
            );
        }
        assert_eq!(got.result, emfile);
        assert_eq!(got.kind, c.kind, "kind of a failed {name}");
    }
}

#[test]
fn calls_that_cannot_change_the_fd_table_give_none() {
    let cases: Vec<(&str, libc::c_long, [u64; 6], i64)> = vec![
        ("read", libc::SYS_read, a(&[3, 0, 10]), 10),
        (
            "fcntl F_GETFL",
            libc::SYS_fcntl,
            a(&[3, libc::F_GETFL as i64]),
            2,
        ),
        (
            "fcntl F_GETFD",
            libc::SYS_fcntl,
            a(&[3, libc::F_GETFD as i64]),
            1,
        ),
        (
            "signalfd4 on fd 5",
            libc::SYS_signalfd4,
            a(&[5, SIGSET as i64, 8, 0]),
            5,
        ),
        (
            "recvmsg without fds",
            libc::SYS_recvmsg,
            a(&[4, MSGHDR_NO_FDS as i64, 0]),
            10,
        ),
        (
            "recvmsg, header unreadable",
            libc::SYS_recvmsg,
            a(&[4, UNREADABLE as i64, 0]),
            10,
        ),
        (
            "recvmmsg of 0 messages",
            libc::SYS_recvmmsg,
            a(&[4, MMSG as i64, 2, 0, 0]),
            0,
        ),
        (
            "recvmmsg, first message only",
            libc::SYS_recvmmsg,
            a(&[4, MMSG as i64, 2, 0, 0]),
            1,
        ),
        #[cfg(target_arch = "x86_64")]
        (
            "signalfd on fd 5",
            libc::SYS_signalfd,
            a(&[5, SIGSET as i64, 8]),
            5,
        ),
    ];
    for (what, nr, args, result) in cases {
        assert_eq!(run(nr, args, result), None, "{what}");
    }
}

#[test]
fn failed_fcntl_setfd_changes_nothing() {
    let args = a(&[3, libc::F_SETFD as i64, libc::FD_CLOEXEC as i64]);
    let got = run(libc::SYS_fcntl, args, -i64::from(libc::EBADF)).unwrap();
    assert_eq!(got.effects, vec![]);
}

/// Paths are escaped in the argument text; the target keeps the name as it
/// is (reports escape it when they print it, JSON escapes it as JSON).
#[test]
fn paths_are_escaped_in_the_text_and_kept_in_the_target() {
    let args = a(&[libc::AT_FDCWD as i64, EVIL as i64, libc::O_RDONLY as i64]);
    let got = run(libc::SYS_openat, args, 3).unwrap();
    assert_eq!(got.args_text, r#"AT_FDCWD, "/tmp/a\nb\x1b\"\\", O_RDONLY"#);
    assert_eq!(
        got.effects,
        vec![opened_path(3, FdKind::File, false, "/tmp/a\nb\u{1b}\"\\")]
    );
}

#[test]
fn long_paths_are_capped() {
    let args = a(&[libc::AT_FDCWD as i64, LONG as i64, libc::O_RDONLY as i64]);
    let got = run(libc::SYS_openat, args, 3).unwrap();
    let expected = format!("AT_FDCWD, \"{}\"..., O_RDONLY", "a".repeat(4096));
    assert_eq!(got.args_text, expected);
    let Effect::Open { target, .. } = &got.effects[0] else {
        panic!("not an open: {:?}", got.effects);
    };
    assert_eq!(
        target.as_deref(),
        Some(format!("{}...", "a".repeat(4096)).as_str())
    );
}

#[test]
fn unreadable_memory_shows_the_address() {
    let args = a(&[
        libc::AT_FDCWD as i64,
        UNREADABLE as i64,
        libc::O_RDONLY as i64,
    ]);
    let got = run(libc::SYS_openat, args, 3).unwrap();
    assert_eq!(got.args_text, "AT_FDCWD, 0xdead0000, O_RDONLY");
    assert_eq!(got.effects, vec![opened(3, FdKind::File, false)]);

    // the pair of a pipe that cannot be read is left to the /proc check
    let got = run(libc::SYS_pipe2, a(&[UNREADABLE as i64, 0]), 0).unwrap();
    assert_eq!(got.args_text, "0xdead0000, 0");
    assert_eq!(got.effects, vec![]);
}

#[test]
fn unknown_flag_bits_are_hex() {
    let args = a(&[libc::AF_INET as i64, (libc::SOCK_STREAM | 0x4000) as i64, 0]);
    assert_eq!(args::socket_type(args[1]), "SOCK_STREAM|0x4000");
    assert_eq!(
        args::flags(0x3, args::CLOSE_RANGE_FLAGS),
        "CLOSE_RANGE_UNSHARE|0x1"
    );
    assert_eq!(args::open_flags(0o100000 | 2), "O_RDWR|O_LARGEFILE");
}

#[test]
fn upper_register_half_of_int_flags_is_ignored() {
    let garbage = 0xffff_ffff_0000_0000u64 as i64;
    let args = a(&[
        libc::AT_FDCWD as i64,
        PATH as i64,
        garbage | libc::O_CLOEXEC as i64,
    ]);
    let got = run(libc::SYS_openat, args, 3).unwrap();
    assert_eq!(
        got.args_text,
        "AT_FDCWD, \"/etc/hosts\", O_RDONLY|O_CLOEXEC"
    );
}

#[test]
fn control_walk_stops_at_a_lying_length() {
    let got = parse_control(&control_buffer());
    assert_eq!(got.fds, vec![7, 8, 9]);
    assert_eq!(got.groups, vec![vec![7], vec![8, 9]]);

    for lie in [0, 15, u64::MAX, u64::MAX - 7] {
        let mut buf = rights(&[3]);
        buf.extend(cmsg_with_len(
            lie,
            libc::SOL_SOCKET,
            libc::SCM_RIGHTS,
            &ints(&[4]),
        ));
        buf.extend(rights(&[5]));
        assert_eq!(parse_control(&buf).fds, vec![3], "cmsg_len {lie}");
    }
    assert_eq!(parse_control(&[0; 8]).fds, Vec::<i32>::new());
}

#[test]
fn sockaddrs_parse_to_readable_addresses() {
    use super::sockaddr::SockAddr;
    use std::net::Ipv6Addr;
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let fe80: Ipv6Addr = "fe80::1".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        (
            "inet",
            sa_in([0, 0, 0, 0], 8125),
            Some("0.0.0.0:8125"),
            "{AF_INET, 0.0.0.0:8125}",
        ),
        (
            "inet, 8 bytes",
            sa_in([10, 1, 2, 3], 80)[..8].to_vec(),
            Some("10.1.2.3:80"),
            "{AF_INET, 10.1.2.3:80}",
        ),
        (
            "inet, too short",
            sa_in([10, 1, 2, 3], 80)[..6].to_vec(),
            Some("family 2"),
            "{AF_INET}",
        ),
        (
            "inet6",
            sa_in6(v6, 443, 0),
            Some("[2001:db8::1]:443"),
            "{AF_INET6, [2001:db8::1]:443}",
        ),
        (
            "inet6 with scope",
            sa_in6(fe80, 22, 2),
            Some("[fe80::1%2]:22"),
            "{AF_INET6, [fe80::1%2]:22}",
        ),
        (
            "inet6, RFC 2133 24 bytes",
            sa_in6(v6, 1, 9)[..24].to_vec(),
            Some("[2001:db8::1]:1"),
            "{AF_INET6, [2001:db8::1]:1}",
        ),
        (
            "unix path",
            sa(libc::AF_UNIX, b"/tmp/s\0garbage"),
            Some("/tmp/s"),
            "{AF_UNIX, \"/tmp/s\"}",
        ),
        (
            "unix path, no NUL",
            sa(libc::AF_UNIX, b"/tmp/s"),
            Some("/tmp/s"),
            "{AF_UNIX, \"/tmp/s\"}",
        ),
        (
            "unix path, escaped",
            sa(libc::AF_UNIX, b"/tmp/\x1b[2J\0"),
            Some("/tmp/\\x1b[2J"),
            "{AF_UNIX, \"/tmp/\\x1b[2J\"}",
        ),
        (
            "unix abstract",
            sa(libc::AF_UNIX, b"\0name\0x"),
            Some("@name\\x00x"),
            "{AF_UNIX, @\"name\\x00x\"}",
        ),
        (
            "unix unnamed",
            sa(libc::AF_UNIX, b""),
            Some("unnamed"),
            "{AF_UNIX, unnamed}",
        ),
        (
            "unix, empty path",
            sa(libc::AF_UNIX, b"\0"),
            Some("@"),
            "{AF_UNIX, @\"\"}",
        ),
        (
            "netlink",
            sa_nl(4242, 0x10),
            Some("netlink pid 4242 groups 0x10"),
            "{AF_NETLINK, netlink pid 4242 groups 0x10}",
        ),
        (
            "unspec",
            sa(libc::AF_UNSPEC, &[0; 14]),
            Some("AF_UNSPEC"),
            "{AF_UNSPEC}",
        ),
        (
            "packet",
            sa(libc::AF_PACKET, &[0; 18]),
            Some("family 17"),
            "{AF_PACKET}",
        ),
        (
            "unknown family",
            sa(250, &[0; 14]),
            Some("family 250"),
            "{250}",
        ),
        ("one byte", vec![2], None, ""),
        ("empty", vec![], None, ""),
    ];
    for (what, bytes, shown, args_text) in cases {
        let parsed = SockAddr::parse(&bytes);
        assert_eq!(
            parsed.as_ref().map(ToString::to_string).as_deref(),
            shown,
            "{what}"
        );
        if let Some(parsed) = parsed {
            assert_eq!(parsed.args_text(), args_text, "{what}");
        }
    }
}

#[test]
fn accept_with_an_unreadable_peer_or_a_failure_shows_pointers() {
    let args = a(&[3, UNREADABLE as i64, SOCKLEN_16 as i64]);
    let got = run(libc::SYS_accept, args, 7).unwrap();
    assert_eq!(got.args_text, "3, 0xdead0000, 0xa600");
    assert_eq!(got.effects, vec![opened(7, FdKind::Socket, false)]);

    let args = a(&[3, SA_IN as i64, SOCKLEN_16 as i64]);
    let got = run(libc::SYS_accept, args, -i64::from(libc::EAGAIN)).unwrap();
    assert_eq!(got.args_text, "3, 0xa000, 0xa600");
    assert_eq!(got.effects, vec![]);
}

#[test]
fn failures_that_reach_no_socket_note_nothing() {
    for errno in [libc::EBADF, libc::ENOTSOCK, libc::EFAULT] {
        let got = run(
            libc::SYS_connect,
            a(&[3, SA_IN as i64, 16]),
            -i64::from(errno),
        )
        .unwrap();
        assert_eq!(got.effects, vec![], "connect failing with {errno}");
        assert_eq!(got.args_text, "3, {AF_INET, 127.0.0.1:8125}, 16");
    }
    let got = run(libc::SYS_listen, a(&[3, 5]), -i64::from(libc::EADDRINUSE)).unwrap();
    assert_eq!(
        got.effects,
        vec![note(3, "listen backlog 5 failed: EADDRINUSE")]
    );
    let got = run(
        libc::SYS_connect,
        a(&[3, SA_IN as i64, 16]),
        -i64::from(libc::EINTR),
    )
    .unwrap();
    assert_eq!(
        got.effects,
        vec![note(3, "connect 127.0.0.1:8125 in progress")]
    );
}

/// Decoded with the buffers of the event recorded before: opens and
/// closes in the steady state allocate no text and no effect list.
#[test]
fn the_buffers_kept_from_one_event_are_the_next_ones() {
    let mem = memory();
    let mut spare = Spare::default();
    let entry = |nr: libc::c_long, args: &[i64]| SyscallEntry {
        nr: nr as u64,
        args: a(args),
    };
    let open = entry(libc::SYS_openat, &[libc::AT_FDCWD as i64, PATH as i64, 0]);
    let close = entry(libc::SYS_close, &[3]);
    let first = decode_reusing(&open, 3, &mem, &mut spare).unwrap();
    let buffers = |d: &Decoded| (d.args_text.as_ptr(), d.effects.as_ptr());
    let kept = buffers(&first);
    spare.keep(first);
    let closed = decode_reusing(&close, 0, &mem, &mut spare).unwrap();
    assert_eq!(closed.args_text, "3");
    assert_eq!(closed.effects, vec![Effect::Close { fd: 3 }]);
    assert_eq!(buffers(&closed), kept);
    spare.keep(closed);
    let again = decode_reusing(&open, 3, &mem, &mut spare).unwrap();
    assert_eq!(again, decode(&open, 3, &mem).unwrap());
    assert_eq!(buffers(&again), kept);
}
