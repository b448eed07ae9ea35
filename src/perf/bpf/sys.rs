//! The bpf(2) calls fdbg makes: maps (create, update, lookup), program
//! load (with the verifier's log on refusal), and attaching a program to a
//! raw tracepoint. Each object is an fd: closing it (or fdbg's end) removes
//! it from the kernel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MAP_CREATE: u32 = 0;
const MAP_LOOKUP_ELEM: u32 = 1;
const MAP_UPDATE_ELEM: u32 = 2;
const MAP_DELETE_ELEM: u32 = 3;
const PROG_LOAD: u32 = 5;
const RAW_TRACEPOINT_OPEN: u32 = 17;

pub const MAP_TYPE_HASH: u32 = 1;
pub const MAP_TYPE_ARRAY: u32 = 2;
pub const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const MAP_TYPE_RINGBUF: u32 = 27;

pub const PROG_TYPE_TRACEPOINT: u32 = 5;
pub const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// bpf(cmd, attr): `attr` is the prefix of `union bpf_attr` the command
/// reads; the kernel treats the rest as zero.
fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a repr(C) prefix of union bpf_attr for `cmd`, of the
    // size passed; pointers in it are valid for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

/// A BPF map.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    pub fn create(
        map_type: u32,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<Map> {
        let mut attr = MapCreate {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_name: name16(name),
            ..Default::default()
        };
        let fd = bpf(MAP_CREATE, &mut attr)?;
        Ok(Map {
            fd: owned(fd),
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn owned_fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "map key size");
        assert_eq!(value.len(), self.value_size, "map value size");
        let mut attr = MapElem {
            map_fd: self.fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        bpf(MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "map key size");
        let mut attr = MapElem {
            map_fd: self.fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        bpf(MAP_DELETE_ELEM, &mut attr).map(drop)
    }

    /// The value at `key` into `value` (for a per-CPU map, one value per
    /// possible CPU, each rounded up to 8 bytes).
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "map key size");
        let mut attr = MapElem {
            map_fd: self.fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        bpf(MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }
}

/// A loaded program; the verifier's log when it refused it.
pub fn load_program(prog_type: u32, name: &str, code: &[u8]) -> Result<OwnedFd, LoadError> {
    const LOG_SIZE: usize = 1 << 20;
    let license = c"GPL";
    let attempt = |log: &mut Vec<u8>| {
        let mut attr = ProgLoad {
            prog_type,
            insn_cnt: (code.len() / 8) as u32,
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name16(name),
            ..Default::default()
        };
        bpf(PROG_LOAD, &mut attr)
    };
    match attempt(&mut Vec::new()) {
        Ok(fd) => Ok(owned(fd)),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Again, for the verifier's reasons.
            let mut log = vec![0u8; LOG_SIZE];
            match attempt(&mut log) {
                Ok(fd) => Ok(owned(fd)),
                Err(again) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err(LoadError {
                        error: again,
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                    })
                }
            }
        }
        Err(error) => Err(LoadError {
            error,
            log: String::new(),
        }),
    }
}

/// The kernel refused a program.
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    /// The verifier's log (its last lines say why).
    pub log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        let tail: Vec<&str> = self.log.lines().rev().take(3).collect();
        if !tail.is_empty() {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            write!(f, " (verifier: {})", tail.join(" / "))?;
        }
        Ok(())
    }
}

/// Run `prog` at every hit of raw tracepoint `name` until the returned fd
/// is closed.
pub fn attach_raw_tracepoint(name: &std::ffi::CStr, prog: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointOpen {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        pad: 0,
    };
    bpf(RAW_TRACEPOINT_OPEN, &mut attr).map(owned)
}

/// The number of possible CPUs: how many values a per-CPU map holds.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// "0-3,5" → 6 (the highest CPU + 1).
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut top = None;
    for part in list.split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        top = Some(top.map_or(last, |t: usize| t.max(last)));
    }
    top.map(|t| t + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("0-1"), Some(2));
        assert_eq!(super::parse_cpu_list("0"), Some(1));
        assert_eq!(super::parse_cpu_list("0-3,8"), Some(9));
        assert_eq!(super::parse_cpu_list(""), None);
    }
}
