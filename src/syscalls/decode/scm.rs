//! Fds passed over a unix socket: the SCM_RIGHTS control messages that
//! recvmsg and recvmmsg leave in the tracee's buffers.
//!
//! Every length here comes from the tracee, which may be hostile or racing
//! (another thread can rewrite the buffer before it is read), so reads are
//! capped and a malformed control message ends the walk.

use super::TraceeMemory;

/// Size of the 64-bit `struct msghdr`.
pub const MSGHDR_SIZE: usize = 56;
/// Size of `struct mmsghdr`: a msghdr, the u32 `msg_len`, padding.
pub const MMSGHDR_SIZE: u64 = 64;
/// Size of the 64-bit `struct cmsghdr` (len u64, level i32, type i32).
const CMSGHDR_SIZE: usize = 16;
/// The largest control buffer read; the kernel caps SCM_RIGHTS at 253 fds
/// per message, so a real buffer of fds is far smaller.
const CONTROL_MAX: usize = 64 * 1024;

const MSG_CONTROL_OFFSET: usize = 32;
const MSG_CONTROLLEN_OFFSET: usize = 40;
const MSG_LEN_OFFSET: u64 = 56;

/// What one received message carried that matters here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Fds of the SCM_RIGHTS messages, in order.
    pub fds: Vec<i32>,
    /// The fds of each SCM_RIGHTS message, to show them as received.
    pub groups: Vec<Vec<i32>>,
}

/// The fds installed by a completed recvmsg whose `struct msghdr` is at
/// `addr`. `None` when the header cannot be read.
pub fn from_msghdr(mem: &dyn TraceeMemory, addr: u64) -> Option<Received> {
    let hdr = mem.read_bytes(addr, MSGHDR_SIZE)?;
    if hdr.len() < MSGHDR_SIZE {
        return None;
    }
    let control = u64_at(&hdr, MSG_CONTROL_OFFSET)?;
    // after the call, msg_controllen is the length the kernel filled
    let control_len = u64_at(&hdr, MSG_CONTROLLEN_OFFSET)?;
    if control == 0 || control_len < CMSGHDR_SIZE as u64 {
        return Some(Received::default());
    }
    let len = control_len.min(CONTROL_MAX as u64) as usize;
    let buf = mem.read_bytes(control, len)?;
    Some(parse_control(&buf))
}

/// The `msg_len` (bytes received) of the mmsghdr at `addr`.
pub fn mmsg_len(mem: &dyn TraceeMemory, addr: u64) -> Option<u32> {
    let bytes = mem.read_bytes(addr.checked_add(MSG_LEN_OFFSET)?, 4)?;
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Walk the control messages of `buf`, collecting SOL_SOCKET/SCM_RIGHTS fds.
/// A cmsg_len shorter than its header or past the end of `buf` stops the walk.
pub fn parse_control(buf: &[u8]) -> Received {
    let mut received = Received::default();
    let mut off = 0usize;
    while off + CMSGHDR_SIZE <= buf.len() {
        let Some(cmsg_len) = u64_at(buf, off) else {
            break;
        };
        let fits = usize::try_from(cmsg_len)
            .ok()
            .filter(|&l| l >= CMSGHDR_SIZE)
            .and_then(|l| off.checked_add(l))
            .filter(|&end| end <= buf.len());
        let Some(end) = fits else {
            break;
        };
        let level = i32_at(buf, off + 8);
        let ty = i32_at(buf, off + 12);
        if level == Some(libc::SOL_SOCKET) && ty == Some(libc::SCM_RIGHTS) {
            let fds: Vec<i32> = buf[off + CMSGHDR_SIZE..end]
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok().map(i32::from_ne_bytes))
                .collect();
            received.fds.extend(&fds);
            received.groups.push(fds);
        }
        // each control message is padded to 8 bytes
        match end.checked_add(7) {
            Some(next) => off = next & !7,
            None => break,
        }
    }
    received
}

fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    let bytes = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

fn i32_at(buf: &[u8], off: usize) -> Option<i32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(i32::from_ne_bytes(bytes.try_into().ok()?))
}
