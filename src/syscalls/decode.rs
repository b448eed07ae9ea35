//! One decoder per fd syscall: from the entry arguments, the return value and
//! the tracee's memory to the effects on the fd table and the argument text.
//!
//! Decoders only read: they never write the tracee's memory, and whatever they
//! read is untrusted (escaped for display, lengths capped). A failed syscall
//! creates nothing; the only failure with an effect is close (EBADF: a bad
//! close, counted and shown with its stack).

mod args;
mod scm;
mod sockaddr;
#[cfg(test)]
mod tests;

use std::cell::Cell;

use super::table;
use super::{Decoded, Effect, SyscallEntry, TraceeMemory};
use crate::vocab::FdKind;

use args::{flags, pointer};
use sockaddr::SockAddr;

/// Decode a completed syscall; `None` when it cannot change the fd table:
/// not an fd syscall, an fcntl command other than F_DUPFD, F_DUPFD_CLOEXEC
/// and F_SETFD, a signalfd on an existing fd, a recvmsg or recvmmsg that
/// received no fds. The caller has already skipped restart codes
/// (`is_restart`).
///
/// `Decoded.kind` is the kind the syscall creates whether or not this call
/// succeeded, so a failed socket() still counts as a socket event.
pub fn decode(entry: &SyscallEntry, result: i64, mem: &dyn TraceeMemory) -> Option<Decoded> {
    decode_reusing(entry, result, mem, &mut Spare::default())
}

/// `decode`, the commonest syscalls' text and effects written into
/// `spare`'s buffers (what is left of them stays there): a caller that
/// hands each recorded event's buffers back allocates nothing for them.
pub fn decode_reusing(
    entry: &SyscallEntry,
    result: i64,
    mem: &dyn TraceeMemory,
    spare: &mut Spare,
) -> Option<Decoded> {
    let syscall = table::lookup(entry.nr)?;
    let call = Call {
        args: entry.args,
        result,
        mem,
        text: Cell::new(std::mem::take(&mut spare.text)),
        effects: Cell::new(std::mem::take(&mut spare.effects)),
    };
    let outcome = (syscall.decode)(&call);
    spare.text = call.text.take();
    spare.effects = call.effects.take();
    let outcome = outcome?;
    Some(Decoded {
        name: syscall.name,
        args_text: outcome.args_text,
        result,
        kind: outcome.kind,
        effects: outcome.effects,
    })
}

/// Buffers for `decode_reusing`: a recorded event's text and effects,
/// emptied.
#[derive(Default)]
pub struct Spare {
    text: String,
    effects: Vec<Effect>,
}

impl Spare {
    /// Keep `decoded`'s buffers for the next decode (not one grown
    /// unusually large).
    pub fn keep(&mut self, decoded: Decoded) {
        let Decoded {
            mut args_text,
            mut effects,
            ..
        } = decoded;
        if args_text.capacity() <= 4096 {
            args_text.clear();
            self.text = args_text;
        }
        if effects.capacity() <= 16 {
            effects.clear();
            self.effects = effects;
        }
    }
}

/// A completed syscall as a decoder sees it.
pub(super) struct Call<'a> {
    args: [u64; 6],
    result: i64,
    mem: &'a dyn TraceeMemory,
    /// Empty buffers to build the outcome in (`text`, `effects`).
    text: Cell<String>,
    effects: Cell<Vec<Effect>>,
}

/// What a decoder found; `decode` adds the name and result.
pub(super) struct Outcome {
    args_text: String,
    kind: FdKind,
    effects: Vec<Effect>,
}

pub(super) type Decoder = fn(&Call) -> Option<Outcome>;

impl Call<'_> {
    /// An empty buffer for the call's text.
    fn text(&self) -> String {
        self.text.take()
    }

    /// The buffer for the call's text, starting with `start`.
    fn text_with(&self, start: std::fmt::Arguments) -> String {
        let mut text = self.text();
        let _ = std::fmt::Write::write_fmt(&mut text, start);
        text
    }

    /// An empty list for the call's effects.
    fn effects(&self) -> Vec<Effect> {
        self.effects.take()
    }

    fn ok(&self) -> bool {
        self.result >= 0
    }

    /// Argument `i` as the C `int` it is.
    fn int(&self, i: usize) -> i32 {
        self.args[i] as i32
    }

    /// Argument `i` as a C `unsigned int`.
    fn uint(&self, i: usize) -> u32 {
        self.args[i] as u32
    }

    /// Argument `i`, a C `int` of flags or mode bits, without whatever the
    /// upper half of the register holds.
    fn bits(&self, i: usize) -> u64 {
        self.uint(i).into()
    }

    /// A call whose return value, on success, is one new fd.
    fn creates(
        &self,
        text: String,
        kind: FdKind,
        cloexec: bool,
        target: Option<String>,
    ) -> Outcome {
        let effects = if self.ok() {
            let mut effects = self.effects();
            effects.push(Effect::Open {
                fd: self.result as i32,
                kind,
                cloexec,
                target,
            });
            effects
        } else {
            Vec::new()
        };
        Outcome {
            args_text: text,
            kind,
            effects,
        }
    }

    /// A call that, on success, has the given effects and creates no fd of
    /// its own kind.
    fn changes(&self, text: String, effects: impl FnOnce() -> Vec<Effect>) -> Outcome {
        Outcome {
            args_text: text,
            kind: FdKind::Other,
            effects: if self.ok() { effects() } else { Vec::new() },
        }
    }

    /// The two fds a successful pipe or socketpair stored at argument `i`.
    fn fd_pair(&self, i: usize) -> Option<[i32; 2]> {
        if !self.ok() {
            return None;
        }
        let bytes = self.mem.read_bytes(self.args[i], 8)?;
        let fd = |at: usize| Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        Some([fd(0)?, fd(4)?])
    }

    /// A call that creates the two fds stored at argument `pair_arg`.
    fn creates_pair(
        &self,
        text: impl FnOnce(String) -> String,
        pair_arg: usize,
        kind: FdKind,
        cloexec: bool,
    ) -> Outcome {
        let pair = self.fd_pair(pair_arg);
        let shown = match pair {
            Some(fds) => args::fd_list(&fds),
            None => pointer(self.args[pair_arg]),
        };
        let effects = pair
            .into_iter()
            .flatten()
            .map(|fd| Effect::Open {
                fd,
                kind,
                cloexec,
                target: None,
            })
            .collect();
        Outcome {
            args_text: text(shown),
            kind,
            effects,
        }
    }
}

fn has(value: u64, flag: impl Into<i64>) -> bool {
    value & flag.into() as u64 != 0
}

// ---- sockets ----

/// socket's and socketpair's first three arguments, `AF_INET, SOCK_DGRAM, 0`,
/// and whether the new fds are close-on-exec.
fn socket_head(c: &Call) -> (String, bool) {
    let (domain, ty) = (c.int(0), c.bits(1));
    let text = format!(
        "{}, {}, {}",
        args::constant(domain.into(), args::AF_NAMES),
        args::socket_type(ty),
        args::protocol(domain, c.int(2))
    );
    (text, has(ty, libc::SOCK_CLOEXEC))
}

pub(super) fn socket(c: &Call) -> Option<Outcome> {
    let (text, cloexec) = socket_head(c);
    Some(c.creates(text, FdKind::Socket, cloexec, None))
}

pub(super) fn socketpair(c: &Call) -> Option<Outcome> {
    let (head, cloexec) = socket_head(c);
    let text = |pair| format!("{head}, {pair}");
    Some(c.creates_pair(text, 3, FdKind::Socket, cloexec))
}

/// accept's address arguments after the call: `{...}, [16]` when the
/// kernel wrote a peer (which goes into the new fd's note, not the
/// argument text: every distinct peer in the text would be one more
/// interned string per event), or the pointers when it wrote none (NULL, a
/// failed call) or cannot be read.
/// accept's and accept4's text after the listening fd (`{...}, [16]`,
/// written at the end of `text`), and the peer.
fn accepted_peer(c: &Call, text: &mut String) -> Option<SockAddr> {
    use std::fmt::Write as _;
    let (addr, len_addr) = (c.args[1], c.args[2]);
    let len = sockaddr::read_len(c.mem, len_addr);
    let peer = match len {
        Some(len) if c.ok() => sockaddr::read(c.mem, addr, len.into()),
        _ => None,
    };
    let _ = match (&peer, len) {
        (Some(_), Some(len)) => write!(text, "{{...}}, [{len}]"),
        _ => write!(text, "{}, {}", pointer(addr), pointer(len_addr)),
    };
    peer
}

/// The Open of an accepted fd, followed by its peer as a note.
fn accepted(c: &Call, text: String, cloexec: bool, peer: Option<SockAddr>) -> Outcome {
    let mut outcome = c.creates(text, FdKind::Socket, cloexec, None);
    if let (Some(peer), true) = (peer, c.ok()) {
        outcome.effects.push(Effect::Annotate {
            fd: c.result as i32,
            note: format!("accepted from {peer}"),
        });
    }
    outcome
}

pub(super) fn accept(c: &Call) -> Option<Outcome> {
    let mut text = c.text_with(format_args!("{}, ", c.int(0)));
    let peer = accepted_peer(c, &mut text);
    Some(accepted(c, text, false, peer))
}

pub(super) fn accept4(c: &Call) -> Option<Outcome> {
    let fl = c.bits(3);
    let mut text = c.text_with(format_args!("{}, ", c.int(0)));
    let peer = accepted_peer(c, &mut text);
    text.push_str(", ");
    args::push_flags(&mut text, fl, args::SOCK_FLAGS);
    Some(accepted(c, text, has(fl, libc::SOCK_CLOEXEC), peer))
}

/// The name of an errno value: `ECONNREFUSED`, or `errno 4242`.
fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("errno {errno}")
    } else {
        format!("{e:?}")
    }
}

/// Failures that never reached a socket: nothing to note on the fd.
fn reached_no_socket(result: i64) -> bool {
    [libc::EBADF, libc::ENOTSOCK, libc::EFAULT]
        .iter()
        .any(|&e| result == -i64::from(e))
}

/// bind, connect and listen: the call as text, and a note on its fd, also
/// when it failed (`... failed: ECONNREFUSED`).
fn annotates(c: &Call, text: String, note: String) -> Outcome {
    let fd = c.int(0);
    let note = match c.result {
        r if r >= 0 => Some(note),
        r if reached_no_socket(r) || fd < 0 => None,
        r => Some(format!("{note} failed: {}", errno_name(-r as i32))),
    };
    Outcome {
        args_text: text,
        kind: FdKind::Other,
        effects: note
            .map(|note| Effect::Annotate { fd, note })
            .into_iter()
            .collect(),
    }
}

/// The address argument of bind and connect: parsed, and as text.
fn address_arg(c: &Call) -> (Option<SockAddr>, String) {
    let (addr, len) = (c.args[1], c.uint(2));
    let parsed = sockaddr::read(c.mem, addr, len.into());
    let text = parsed
        .as_ref()
        .map_or_else(|| pointer(addr), SockAddr::args_text);
    (parsed, text)
}

pub(super) fn bind(c: &Call) -> Option<Outcome> {
    let (parsed, addr_text) = address_arg(c);
    let text = format!("{}, {addr_text}, {}", c.int(0), c.uint(2));
    let addr = parsed.map_or_else(|| pointer(c.args[1]), |a| a.to_string());
    Some(annotates(c, text, format!("bind {addr}")))
}

pub(super) fn connect(c: &Call) -> Option<Outcome> {
    let (parsed, addr_text) = address_arg(c);
    let text = format!("{}, {addr_text}, {}", c.int(0), c.uint(2));
    if parsed == Some(SockAddr::Unspec) {
        return Some(annotates(c, text, "disconnect".to_string()));
    }
    let addr = parsed.map_or_else(|| pointer(c.args[1]), |a| a.to_string());
    // A non-blocking connect, or a blocking one a signal interrupted, goes
    // on in the background: it is connecting, not failed.
    let pending = [libc::EINPROGRESS, libc::EINTR]
        .iter()
        .any(|&e| c.result == -i64::from(e));
    if pending {
        let note = format!("connect {addr} in progress");
        return Some(Outcome {
            args_text: text,
            kind: FdKind::Other,
            effects: vec![Effect::Annotate { fd: c.int(0), note }],
        });
    }
    Some(annotates(c, text, format!("connect {addr}")))
}

pub(super) fn listen(c: &Call) -> Option<Outcome> {
    let (fd, backlog) = (c.int(0), c.int(1));
    Some(annotates(
        c,
        format!("{fd}, {backlog}"),
        format!("listen backlog {backlog}"),
    ))
}

/// The SCM_RIGHTS fds of one message, as `msg_control=[...]`.
fn control_text(received: &scm::Received) -> String {
    let cmsgs: Vec<String> = received
        .groups
        .iter()
        .map(|fds| {
            format!(
                "{{cmsg_level=SOL_SOCKET, cmsg_type=SCM_RIGHTS, cmsg_data={}}}",
                args::fd_list(fds)
            )
        })
        .collect();
    format!("msg_control=[{}]", cmsgs.join(", "))
}

/// Received fds are new fds of a kind only /proc can tell.
fn received_opens(fds: &[i32], msg_flags: u64) -> Vec<Effect> {
    let cloexec = has(msg_flags, libc::MSG_CMSG_CLOEXEC);
    fds.iter()
        .map(|&fd| Effect::Open {
            fd,
            kind: FdKind::Other,
            cloexec,
            target: None,
        })
        .collect()
}

pub(super) fn recvmsg(c: &Call) -> Option<Outcome> {
    if !c.ok() {
        return None;
    }
    let received = scm::from_msghdr(c.mem, c.args[1])?;
    if received.fds.is_empty() {
        return None;
    }
    let msg_flags = c.uint(2).into();
    let text = format!(
        "{}, {{..., {}}}, {}",
        c.int(0),
        control_text(&received),
        flags(msg_flags, args::MSG_FLAGS)
    );
    Some(Outcome {
        args_text: text,
        kind: FdKind::Other,
        effects: received_opens(&received.fds, msg_flags),
    })
}

/// Most messages of one recvmmsg shown in the argument text.
const MMSG_SHOWN: u64 = 16;

pub(super) fn recvmmsg(c: &Call) -> Option<Outcome> {
    if !c.ok() {
        return None;
    }
    // the kernel never returns more than vlen, nor more than UIO_MAXIOV
    let count = (c.result as u64).min(c.uint(2).into()).min(1024);
    let mut fds = Vec::new();
    let mut shown = Vec::new();
    for i in 0..count {
        let Some(addr) = c.args[1].checked_add(i * scm::MMSGHDR_SIZE) else {
            break;
        };
        let received = scm::from_msghdr(c.mem, addr).unwrap_or_default();
        if i < MMSG_SHOWN {
            let control = if received.groups.is_empty() {
                String::new()
            } else {
                format!(", {}", control_text(&received))
            };
            let len = scm::mmsg_len(c.mem, addr).map_or("?".to_string(), |l| l.to_string());
            shown.push(format!("{{msg_hdr={{...{control}}}, msg_len={len}}}"));
        }
        fds.extend(received.fds);
    }
    if fds.is_empty() {
        return None;
    }
    if count > MMSG_SHOWN {
        shown.push("...".to_string());
    }
    let msg_flags = c.uint(3).into();
    let text = format!(
        "{}, [{}], {}, {}, {}",
        c.int(0),
        shown.join(", "),
        c.uint(2),
        flags(msg_flags, args::MSG_FLAGS),
        pointer(c.args[4])
    );
    Some(Outcome {
        args_text: text,
        kind: FdKind::Other,
        effects: received_opens(&fds, msg_flags),
    })
}

// ---- files ----

/// Kind of an fd opened with `flags`: O_DIRECTORY opens a directory, unless
/// it is part of O_TMPFILE (which creates an unnamed regular file).
fn open_kind(flags: u64) -> FdKind {
    let tmpfile = libc::O_TMPFILE as u64;
    if flags & tmpfile != tmpfile && has(flags, libc::O_DIRECTORY) {
        FdKind::Dir
    } else {
        FdKind::File
    }
}

/// The mode argument matters only when the call may create a file.
fn push_mode_suffix(out: &mut String, flags: u64, mode: u64) {
    let tmpfile = libc::O_TMPFILE as u64;
    if has(flags, libc::O_CREAT) || flags & tmpfile == tmpfile {
        out.push_str(", ");
        args::push_mode(out, mode);
    }
}

/// An open of the path at `path_addr` with `flags`; `prefix` is the text of
/// the arguments before the path, `suffix` of those after.
fn opens_path(c: &Call, prefix: &str, path_addr: u64, suffix: &str, fl: u64) -> Outcome {
    let (path, target) = args::string_arg(c.mem, path_addr);
    let text = format!("{prefix}{path}{suffix}");
    c.creates(text, open_kind(fl), has(fl, libc::O_CLOEXEC), target)
}

/// open and openat, the commonest fd syscalls: their text in one buffer.
fn opens_with_flags(c: &Call, dirfd: Option<i32>, path_addr: u64, fl: u64, mode: u64) -> Outcome {
    let mut text = c.text();
    if let Some(dirfd) = dirfd {
        text.push_str(&args::dirfd(dirfd));
        text.push_str(", ");
    }
    let target = args::push_string_arg(&mut text, c.mem, path_addr);
    text.push_str(", ");
    args::push_open_flags(&mut text, fl);
    push_mode_suffix(&mut text, fl, mode);
    c.creates(text, open_kind(fl), has(fl, libc::O_CLOEXEC), target)
}

pub(super) fn open(c: &Call) -> Option<Outcome> {
    Some(opens_with_flags(c, None, c.args[0], c.bits(1), c.bits(2)))
}

pub(super) fn openat(c: &Call) -> Option<Outcome> {
    Some(opens_with_flags(
        c,
        Some(c.int(0)),
        c.args[1],
        c.bits(2),
        c.bits(3),
    ))
}

/// `struct open_how`: flags, mode, resolve, each a u64.
const OPEN_HOW_SIZE: usize = 24;

pub(super) fn openat2(c: &Call) -> Option<Outcome> {
    let how = c
        .mem
        .read_bytes(c.args[2], OPEN_HOW_SIZE)
        .filter(|b| b.len() >= OPEN_HOW_SIZE)
        .map(|b| {
            let field = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
            [field(0), field(1), field(2)]
        });
    let prefix = format!("{}, ", args::dirfd(c.int(0)));
    let (fl, how_text) = match how {
        Some([fl, mode, resolve]) => (
            fl,
            format!(
                "{{flags={}, mode={}, resolve={}}}",
                args::open_flags(fl),
                args::mode(mode),
                flags(resolve, args::RESOLVE_FLAGS)
            ),
        ),
        None => (0, pointer(c.args[2])),
    };
    let suffix = format!(", {how_text}, {}", c.args[3]);
    Some(opens_path(c, &prefix, c.args[1], &suffix, fl))
}

pub(super) fn creat(c: &Call) -> Option<Outcome> {
    let suffix = format!(", {}", args::mode(c.bits(1)));
    Some(opens_path(c, "", c.args[0], &suffix, 0))
}

pub(super) fn open_by_handle_at(c: &Call) -> Option<Outcome> {
    let fl = c.bits(2);
    let text = format!(
        "{}, {}, {}",
        c.int(0),
        pointer(c.args[1]),
        args::open_flags(fl)
    );
    Some(c.creates(text, FdKind::File, has(fl, libc::O_CLOEXEC), None))
}

// ---- pipes and duplicates ----

pub(super) fn pipe(c: &Call) -> Option<Outcome> {
    Some(c.creates_pair(|pair| pair, 0, FdKind::Pipe, false))
}

pub(super) fn pipe2(c: &Call) -> Option<Outcome> {
    let fl = c.bits(1);
    let text = |pair| format!("{pair}, {}", flags(fl, args::O_FLAGS));
    Some(c.creates_pair(text, 0, FdKind::Pipe, has(fl, libc::O_CLOEXEC)))
}

pub(super) fn dup(c: &Call) -> Option<Outcome> {
    let from = c.int(0);
    let to = c.result as i32;
    Some(c.changes(from.to_string(), || {
        vec![Effect::Dup {
            from,
            to,
            cloexec: false,
        }]
    }))
}

/// dup2/dup3: `from == to` succeeds (dup2) and changes nothing.
fn dup_onto(from: i32, to: i32, cloexec: bool) -> Vec<Effect> {
    if from == to {
        Vec::new()
    } else {
        vec![Effect::Dup { from, to, cloexec }]
    }
}

pub(super) fn dup2(c: &Call) -> Option<Outcome> {
    let (from, to) = (c.int(0), c.int(1));
    Some(c.changes(format!("{from}, {to}"), || dup_onto(from, to, false)))
}

pub(super) fn dup3(c: &Call) -> Option<Outcome> {
    let (from, to, fl) = (c.int(0), c.int(1), c.bits(2));
    let text = format!("{from}, {to}, {}", flags(fl, args::O_FLAGS));
    Some(c.changes(text, || dup_onto(from, to, has(fl, libc::O_CLOEXEC))))
}

pub(super) fn fcntl(c: &Call) -> Option<Outcome> {
    let (fd, cmd, arg) = (c.int(0), c.int(1), c.args[2]);
    let cmd_text = args::constant(cmd.into(), args::FCNTL_CMDS);
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let to = c.result as i32;
            let cloexec = cmd == libc::F_DUPFD_CLOEXEC;
            let text = format!("{fd}, {cmd_text}, {}", arg as i32);
            Some(c.changes(text, || {
                vec![Effect::Dup {
                    from: fd,
                    to,
                    cloexec,
                }]
            }))
        }
        libc::F_SETFD => {
            let text = format!("{fd}, {cmd_text}, {}", flags(arg, args::FD_FLAGS));
            let cloexec = has(arg, libc::FD_CLOEXEC);
            Some(c.changes(text, || vec![Effect::SetCloexec { fd, cloexec }]))
        }
        _ => None,
    }
}

// ---- anonymous-inode fds ----

pub(super) fn eventfd(c: &Call) -> Option<Outcome> {
    Some(c.creates(c.uint(0).to_string(), FdKind::Eventfd, false, None))
}

pub(super) fn eventfd2(c: &Call) -> Option<Outcome> {
    let fl = c.bits(1);
    let text = format!("{}, {}", c.uint(0), flags(fl, args::EFD_FLAGS));
    Some(c.creates(text, FdKind::Eventfd, has(fl, libc::EFD_CLOEXEC), None))
}

pub(super) fn epoll_create(c: &Call) -> Option<Outcome> {
    Some(c.creates(c.int(0).to_string(), FdKind::Epoll, false, None))
}

pub(super) fn epoll_create1(c: &Call) -> Option<Outcome> {
    let fl = c.bits(0);
    let text = flags(fl, args::EPOLL_FLAGS);
    Some(c.creates(text, FdKind::Epoll, has(fl, libc::EPOLL_CLOEXEC), None))
}

pub(super) fn timerfd_create(c: &Call) -> Option<Outcome> {
    let fl = c.bits(1);
    let text = format!(
        "{}, {}",
        args::constant(c.int(0).into(), args::CLOCK_NAMES),
        flags(fl, args::TFD_FLAGS)
    );
    Some(c.creates(text, FdKind::Timerfd, has(fl, libc::TFD_CLOEXEC), None))
}

/// signalfd creates an fd only when passed -1; otherwise it changes the mask
/// of an existing one.
fn signalfd_common(c: &Call, fl: Option<u64>) -> Option<Outcome> {
    if c.int(0) != -1 {
        return None;
    }
    let mut text = format!(
        "-1, {}, {}",
        args::sigset(c.mem, c.args[1], c.args[2]),
        c.args[2]
    );
    if let Some(fl) = fl {
        text = format!("{text}, {}", flags(fl, args::SFD_FLAGS));
    }
    let cloexec = fl.is_some_and(|fl| has(fl, libc::SFD_CLOEXEC));
    Some(c.creates(text, FdKind::Signalfd, cloexec, None))
}

pub(super) fn signalfd(c: &Call) -> Option<Outcome> {
    signalfd_common(c, None)
}

pub(super) fn signalfd4(c: &Call) -> Option<Outcome> {
    signalfd_common(c, Some(c.bits(3)))
}

pub(super) fn inotify_init(c: &Call) -> Option<Outcome> {
    Some(c.creates(String::new(), FdKind::Inotify, false, None))
}

pub(super) fn inotify_init1(c: &Call) -> Option<Outcome> {
    let fl = c.bits(0);
    let text = flags(fl, args::IN_FLAGS);
    Some(c.creates(text, FdKind::Inotify, has(fl, libc::IN_CLOEXEC), None))
}

pub(super) fn fanotify_init(c: &Call) -> Option<Outcome> {
    let fl = c.uint(0).into();
    let text = format!(
        "{}, {}",
        args::fanotify_flags(fl),
        args::open_flags(c.uint(1).into())
    );
    Some(c.creates(
        text,
        FdKind::Fanotify,
        has(fl, libc::FAN_CLOEXEC as i64),
        None,
    ))
}

pub(super) fn memfd_create(c: &Call) -> Option<Outcome> {
    let fl = c.uint(1).into();
    let (name, raw) = args::string_arg(c.mem, c.args[0]);
    let text = format!("{name}, {}", flags(fl, args::MFD_FLAGS));
    let target = raw.map(|name| format!("memfd:{name}"));
    Some(c.creates(
        text,
        FdKind::Memfd,
        has(fl, libc::MFD_CLOEXEC as i64),
        target,
    ))
}

pub(super) fn pidfd_open(c: &Call) -> Option<Outcome> {
    let text = format!(
        "{}, {}",
        c.int(0),
        flags(c.uint(1).into(), args::PIDFD_FLAGS)
    );
    Some(c.creates(text, FdKind::Pidfd, true, None))
}

pub(super) fn pidfd_getfd(c: &Call) -> Option<Outcome> {
    let text = format!("{}, {}, {}", c.int(0), c.int(1), c.uint(2));
    Some(c.creates(text, FdKind::Other, true, None))
}

pub(super) fn userfaultfd(c: &Call) -> Option<Outcome> {
    let fl = c.uint(0).into();
    let text = flags(fl, args::UFFD_FLAGS);
    Some(c.creates(text, FdKind::Other, has(fl, libc::O_CLOEXEC), None))
}

pub(super) fn perf_event_open(c: &Call) -> Option<Outcome> {
    let fl = c.args[4];
    let text = format!(
        "{}, {}, {}, {}, {}",
        pointer(c.args[0]),
        c.int(1),
        c.int(2),
        c.int(3),
        flags(fl, args::PERF_FLAGS)
    );
    let cloexec = fl & args::PERF_FLAG_FD_CLOEXEC != 0;
    Some(c.creates(text, FdKind::Perf, cloexec, None))
}

pub(super) fn io_uring_setup(c: &Call) -> Option<Outcome> {
    let text = format!("{}, {}", c.uint(0), pointer(c.args[1]));
    Some(c.creates(text, FdKind::IoUring, true, None))
}

// ---- closing ----

pub(super) fn close(c: &Call) -> Option<Outcome> {
    let fd = c.int(0);
    // Linux releases the fd before anything can fail (EINTR, EIO): only
    // EBADF means nothing was closed.
    let effect = match c.result {
        r if r == -i64::from(libc::EBADF) => Effect::BadClose { fd },
        _ => Effect::Close { fd },
    };
    let text = c.text_with(format_args!("{fd}"));
    let mut effects = c.effects();
    effects.push(effect);
    Some(Outcome {
        args_text: text,
        kind: FdKind::Other,
        effects,
    })
}

pub(super) fn close_range(c: &Call) -> Option<Outcome> {
    let (first, last, fl) = (c.uint(0), c.uint(1), c.uint(2));
    let last_text = if last == u32::MAX {
        "~0U".to_string()
    } else {
        last.to_string()
    };
    let text = format!(
        "{first}, {last_text}, {}",
        flags(fl.into(), args::CLOSE_RANGE_FLAGS)
    );
    let effect = if fl & libc::CLOSE_RANGE_CLOEXEC != 0 {
        Effect::CloexecRange { first, last }
    } else {
        Effect::CloseRange { first, last }
    };
    Some(c.changes(text, || vec![effect]))
}
