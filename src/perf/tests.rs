//! The syscall sampler against the real kernel: a thread of this test
//! process, watched from its creation on, makes a known sequence of fd
//! syscalls among many others, and the samples must be exactly those, in
//! order, with the results the thread saw. Skipped, saying why, where
//! perf_event_open is refused.

use std::fs;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use super::*;

const FD_SYSCALLS: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_pipe2,
    libc::SYS_socket,
    libc::SYS_dup,
];

/// What one sample must be: (tid, tracepoint index, syscall number, the
/// result for sys_exit or the first argument for sys_enter).
type Want = (i32, usize, i64, i64);

const EXIT: usize = 0;
const ENTER: usize = 1;

fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

fn errno_or(ret: i64) -> i64 {
    if ret < 0 {
        -(io::Error::last_os_error().raw_os_error().unwrap() as i64)
    } else {
        ret
    }
}

/// Syscalls outside every filter: the sampler must not see them.
fn noise() {
    for _ in 0..300 {
        // SAFETY: getppid and getuid take nothing and cannot fail.
        unsafe {
            libc::syscall(libc::SYS_getppid);
            libc::getuid();
        }
    }
}

/// close(fd) as both tracepoints see it.
fn close(fd: i32, want: &mut Vec<Want>) {
    let tid = gettid();
    want.push((tid, ENTER, libc::SYS_close, fd as i64));
    // SAFETY: fd is one this thread owns, or not open (EBADF).
    let ret = errno_or(unsafe { libc::close(fd) } as i64);
    want.push((tid, EXIT, libc::SYS_close, ret));
}

fn open_dev_null(want: &mut Vec<Want>) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    want.push((gettid(), EXIT, libc::SYS_openat, errno_or(fd as i64)));
    fd
}

/// Run the thread on `cpu` only, from now on (the kernel moves it before
/// sched_setaffinity returns).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// A thread that reports its tid and waits for the go before `work`;
/// dropped without a go, it ends without working.
struct Worker<T> {
    tid: i32,
    go: mpsc::Sender<()>,
    handle: thread::JoinHandle<Option<T>>,
}

fn worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Worker<T> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let handle = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        go_rx.recv().ok()?;
        Some(work())
    });
    Worker {
        tid: tid_rx.recv().unwrap(),
        go,
        handle,
    }
}

/// The sampler, or None with the reason printed where perf is refused.
/// A sample kept whole, its stack copied out of the ring.
#[derive(Debug)]
struct Kept {
    tracepoint: usize,
    cpu: u32,
    pid: i32,
    tid: i32,
    time: u64,
    syscall: SyscallRecord,
    regs: Option<UserRegs>,
    stack: Vec<u8>,
}

fn keep(s: &Sample<'_>) -> Option<Kept> {
    Some(Kept {
        tracepoint: s.tracepoint,
        cpu: s.cpu,
        pid: s.pid,
        tid: s.tid,
        time: s.time,
        syscall: s.syscall,
        regs: s.regs,
        stack: s.stack.to_vec(),
    })
}

fn sampler_or_skip(
    config: &SamplerConfig,
    tracepoints: &[TracepointSpec],
) -> Option<SyscallSampler<Kept>> {
    let opened = raw_samples_permitted()
        .and_then(|()| tracefs())
        .and_then(|root| SyscallSampler::open(&root, config, tracepoints));
    match opened {
        Ok(sampler) => Some(sampler),
        Err(
            e @ (PerfError::Refused { .. } | PerfError::RawRefused { .. } | PerfError::NoTracefs),
        ) => {
            println!("skipped: {e}");
            None
        }
        Err(e) => panic!("cannot open the sampler: {e}"),
    }
}

fn spec(name: &str, numbers: &[i64], stack_bytes: u32) -> TracepointSpec {
    let numbers: Vec<u64> = numbers.iter().map(|&n| n as u64).collect();
    TracepointSpec {
        group: "raw_syscalls".into(),
        name: name.into(),
        filter: syscall_filter(&numbers),
        stack_bytes,
    }
}

/// Executable mappings of this process: (start, end, path).
fn executable_mappings() -> Vec<(u64, u64, String)> {
    fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let path = fields.nth(3).unwrap_or("").to_string();
            perms.contains('x').then(|| {
                (
                    u64::from_str_radix(start, 16).unwrap(),
                    u64::from_str_radix(end, 16).unwrap(),
                    path,
                )
            })
        })
        .collect()
}

fn cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

#[test]
fn samples_are_exactly_the_fd_syscalls_of_a_thread_and_its_new_threads_in_order() {
    let cpus = cpus();
    let (first_cpu, second_cpu) = (cpus[0], *cpus.last().unwrap());
    let w = worker(move || {
        let mut want = Vec::new();
        pin(first_cpu);
        noise();
        let fd = open_dev_null(&mut want);
        let mut buf = [0u8; 16];
        // SAFETY: read into a buffer of its length (read is not sampled).
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        noise();
        close(fd, &mut want);
        let mut pipe = [0i32; 2];
        // SAFETY: pipe2 writes two ints into `pipe`.
        let ret = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
        want.push((gettid(), EXIT, libc::SYS_pipe2, errno_or(ret as i64)));
        pin(second_cpu);
        noise();
        // SAFETY: socket takes no pointer.
        let sock =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        want.push((gettid(), EXIT, libc::SYS_socket, errno_or(sock as i64)));
        // SAFETY: dup takes no pointer.
        let copy = unsafe { libc::dup(sock) };
        want.push((gettid(), EXIT, libc::SYS_dup, errno_or(copy as i64)));
        close(1_000_000, &mut want);
        // A thread created now inherits the events, on the other CPU.
        let inner = thread::spawn(move || {
            pin(first_cpu);
            let mut want = Vec::new();
            noise();
            let fd = open_dev_null(&mut want);
            close(fd, &mut want);
            want
        });
        want.extend(inner.join().unwrap());
        for fd in [pipe[0], pipe[1], sock, copy] {
            close(fd, &mut want);
        }
        want
    });
    let config = SamplerConfig {
        tids: vec![w.tid],
        inherit_processes: false,
        data_pages_log2: 4,
        wakeup_bytes: None,
    };
    let tracepoints = [
        spec("sys_exit", FD_SYSCALLS, 8192),
        spec("sys_enter", &[libc::SYS_close], 0),
    ];
    let Some(mut sampler) = sampler_or_skip(&config, &tracepoints) else {
        return;
    };
    w.go.send(()).unwrap();
    let want = w.handle.join().unwrap().unwrap();
    let samples = sampler.drain_all(&mut keep);

    let got: Vec<Want> = samples
        .iter()
        .map(|s| {
            let value = match s.syscall {
                SyscallRecord::Exit { ret, .. } => ret,
                SyscallRecord::Enter { args, .. } => args[0] as i64,
            };
            (s.tid, s.tracepoint, s.syscall.nr(), value)
        })
        .collect();
    assert_eq!(got, want);
    let tids: std::collections::BTreeSet<i32> = want.iter().map(|w| w.0).collect();
    assert_eq!(tids.len(), 2, "the watched thread and the one it created");
    assert!(samples.iter().all(|s| s.pid == std::process::id() as i32));
    assert!(
        samples.windows(2).all(|w| w[0].time < w[1].time),
        "times increase"
    );
    let rings: std::collections::BTreeSet<u32> = samples.iter().map(|s| s.cpu).collect();
    assert_eq!(rings.len(), cpus.len().min(2), "samples from each CPU used");

    let executable = executable_mappings();
    let exe = fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_str().unwrap();
    let in_exe = |addr: u64| {
        executable
            .iter()
            .any(|(start, end, path)| path == exe && (*start..*end).contains(&addr))
    };
    let mut deepest_return = 0;
    for s in &samples {
        let regs = s.regs.expect("user registers");
        assert!(
            executable
                .iter()
                .any(|(a, b, _)| (*a..*b).contains(&regs.ip)),
            "ip {:#x} in an executable mapping",
            regs.ip
        );
        match s.syscall {
            SyscallRecord::Exit { ret, .. } => {
                assert_eq!(regs.ax as i64, ret, "ax holds the result");
                assert!(!s.stack.is_empty() && s.stack.len() <= 8192);
                // The libc wrapper's return address into this test's code
                // is near the top of the copy.
                let at = s
                    .stack
                    .chunks_exact(8)
                    .position(|w| in_exe(u64::from_ne_bytes(w.try_into().unwrap())))
                    .expect("a return address into the test binary");
                assert!(at * 8 < 1024, "return address at +{}", at * 8);
                deepest_return = deepest_return.max(at * 8);
            }
            SyscallRecord::Enter { args, .. } => {
                assert_eq!(regs.di, args[0], "di holds the first argument");
                assert!(s.stack.is_empty());
            }
        }
    }
    let stats = sampler.stats();
    assert_eq!(
        (
            stats.lost,
            stats.throttles,
            stats.late,
            stats.malformed,
            stats.other
        ),
        (0, 0, 0, 0, 0),
        "{stats:?}"
    );
    let coverage = sampler.coverage();
    for (index, c) in coverage.iter().enumerate() {
        let wanted = want.iter().filter(|w| w.1 == index).count() as u64;
        assert_eq!(
            (c.kernel, c.sampled),
            (wanted, wanted),
            "tracepoint {index}"
        );
    }
    println!(
        "{} samples, {} bytes ({} per sample), return address at most +{deepest_return}",
        stats.samples,
        stats.bytes,
        stats.bytes / stats.samples
    );
}

#[test]
fn a_full_ring_loses_samples_and_says_how_many() {
    let (phase_tx, phase_rx) = mpsc::channel::<()>();
    let (next_tx, next_rx) = mpsc::channel::<()>();
    let closes = |n| {
        for _ in 0..n {
            // SAFETY: -1 is never open: EBADF.
            unsafe { libc::close(-1) };
        }
    };
    // One CPU: the loss of a ring is reported with the next record on that
    // ring, not on another CPU's.
    let cpu = cpus()[0];
    let w = worker(move || {
        pin(cpu);
        closes(60);
        phase_tx.send(()).unwrap();
        next_rx.recv().unwrap();
        closes(1);
    });
    let config = SamplerConfig {
        tids: vec![w.tid],
        inherit_processes: false,
        data_pages_log2: 0,
        wakeup_bytes: None,
    };
    let Some(mut sampler) = sampler_or_skip(&config, &[spec("sys_exit", &[libc::SYS_close], 0)])
    else {
        return;
    };
    w.go.send(()).unwrap();
    phase_rx.recv().unwrap();
    let first = sampler.drain_all(&mut keep);
    let coverage = sampler.coverage()[0];
    assert_eq!(coverage.kernel, 60);
    assert!(
        first.len() < 60,
        "a one-page ring holds {} samples",
        first.len()
    );
    // The kernel reports the loss with the next record it can write.
    assert_eq!(sampler.stats().lost, 0);
    next_tx.send(()).unwrap();
    w.handle.join().unwrap().unwrap();
    let second = sampler.drain_all(&mut keep);
    let stats = sampler.stats();
    assert_eq!(second.len(), 1);
    assert_eq!(stats.throttles, 0, "{stats:?}");
    assert_eq!(
        first.len() as u64 + 1 + stats.lost,
        sampler.coverage()[0].kernel,
        "{stats:?}"
    );
    assert!(stats.lost > 0);
}

fn close_loop(calls: usize) -> std::time::Duration {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: -1 is never open: EBADF.
        unsafe { libc::close(-1) };
    }
    start.elapsed()
}

/// Figures, not a check: `cargo test --release --lib perf::tests::throughput
/// -- --ignored --nocapture`. A thread makes 200,000 sampled syscalls while
/// this one drains; the baseline is the same loop unwatched.
#[test]
#[ignore]
fn throughput() {
    const CALLS: usize = 200_000;
    let baseline = thread::spawn(|| close_loop(CALLS)).join().unwrap();
    println!("{CALLS} closes unwatched: {baseline:?}");
    for stack_bytes in [0, 8192] {
        let w = worker(|| close_loop(CALLS));
        let config = SamplerConfig {
            tids: vec![w.tid],
            inherit_processes: false,
            data_pages_log2: 8,
            wakeup_bytes: None,
        };
        let tracepoint = spec("sys_exit", &[libc::SYS_close], stack_bytes);
        let Some(mut sampler) = sampler_or_skip(&config, &[tracepoint]) else {
            return;
        };
        w.go.send(()).unwrap();
        let mut decoding = std::time::Duration::ZERO;
        let mut samples = 0;
        while !w.handle.is_finished() {
            let mut fds: Vec<nix::poll::PollFd> = sampler
                .poll_fds()
                .into_iter()
                .map(|fd| nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, 100u16);
            drop(fds);
            let start = Instant::now();
            samples += sampler.drain(&mut keep).len();
            decoding += start.elapsed();
        }
        let worker_time = w.handle.join().unwrap().unwrap();
        let start = Instant::now();
        samples += sampler.drain_all(&mut keep).len();
        decoding += start.elapsed();
        let stats = sampler.stats();
        println!(
            "stack {stack_bytes}: {CALLS} closes watched in {worker_time:?}; {samples} samples \
             decoded in {decoding:?} ({:.0}/s), {} bytes/sample; {stats:?}; {:?}",
            samples as f64 / decoding.as_secs_f64(),
            stats.bytes / stats.samples.max(1),
            sampler.coverage()
        );
    }
}

/// `drain` returns a round's samples at the next drain, once nothing older
/// can still be unseen on another ring; `drain_all` returns everything.
#[test]
fn drain_holds_back_the_newest_round_until_the_next_drain() {
    let (phase_tx, phase_rx) = mpsc::channel::<()>();
    let (next_tx, next_rx) = mpsc::channel::<()>();
    let w = worker(move || {
        close_loop(3);
        phase_tx.send(()).unwrap();
        next_rx.recv().unwrap();
        close_loop(2);
    });
    let config = SamplerConfig {
        tids: vec![w.tid],
        inherit_processes: false,
        data_pages_log2: 2,
        wakeup_bytes: None,
    };
    let Some(mut sampler) = sampler_or_skip(&config, &[spec("sys_exit", &[libc::SYS_close], 0)])
    else {
        return;
    };
    w.go.send(()).unwrap();
    phase_rx.recv().unwrap();
    assert_eq!(
        sampler.drain(&mut keep).len(),
        0,
        "the first round is held back"
    );
    let first = sampler.drain(&mut keep);
    assert_eq!(first.len(), 3);
    next_tx.send(()).unwrap();
    w.handle.join().unwrap().unwrap();
    let second = sampler.drain_all(&mut keep);
    assert_eq!(second.len(), 2);
    assert!(first.last().unwrap().time < second[0].time);
    assert_eq!(sampler.stats().late, 0);
}

/// Evaluates a filter of `syscall_filter`'s grammar (`id == N`, `id < N`,
/// `id >= N`, `&&`, `||`, parentheses) for one syscall number, counting the
/// comparisons made, with the kernel's short-circuit order.
fn evaluate(filter: &str, id: u64) -> (bool, usize) {
    struct Parser<'a> {
        tokens: Vec<&'a str>,
        at: usize,
        id: u64,
        compared: usize,
    }
    impl Parser<'_> {
        fn or(&mut self, live: bool) -> bool {
            let mut value = self.and(live);
            while self.tokens.get(self.at) == Some(&"||") {
                self.at += 1;
                value |= self.and(live && !value);
            }
            value
        }
        fn and(&mut self, live: bool) -> bool {
            let mut value = self.term(live);
            while self.tokens.get(self.at) == Some(&"&&") {
                self.at += 1;
                value &= self.term(live && value);
            }
            value
        }
        fn term(&mut self, live: bool) -> bool {
            if self.tokens[self.at] == "(" {
                self.at += 1;
                let value = self.or(live);
                assert_eq!(self.tokens[self.at], ")");
                self.at += 1;
                return value;
            }
            let (field, op, number) = (
                self.tokens[self.at],
                self.tokens[self.at + 1],
                self.tokens[self.at + 2],
            );
            self.at += 3;
            assert_eq!(field, "id");
            let number: i64 = number.parse().expect("a number");
            if live {
                self.compared += 1;
            }
            let id = self.id as i64;
            match op {
                "==" => id == number,
                "<" => id < number,
                ">=" => id >= number,
                other => panic!("operator {other}"),
            }
        }
    }
    let spaced = filter.replace('(', " ( ").replace(')', " ) ");
    let mut parser = Parser {
        tokens: spaced.split_whitespace().collect(),
        at: 0,
        id,
        compared: 0,
    };
    let value = parser.or(true);
    assert_eq!(parser.at, parser.tokens.len(), "all of {filter:?} parsed");
    (value, parser.compared)
}

#[test]
fn syscall_filter_passes_exactly_its_numbers_in_few_comparisons() {
    let fd_syscalls: Vec<u64> = [
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_creat,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_pipe,
        libc::SYS_pipe2,
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_fcntl,
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_signalfd4,
        libc::SYS_timerfd_create,
        libc::SYS_memfd_create,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_recvmsg,
        libc::SYS_recvmmsg,
        libc::SYS_io_uring_setup,
        libc::SYS_perf_event_open,
    ]
    .iter()
    .map(|&nr| nr as u64)
    .collect();
    for numbers in [vec![], vec![3], vec![3, 436], fd_syscalls.clone()] {
        let filter = syscall_filter(&numbers);
        let mut worst = 0;
        for id in 0..600 {
            let (passes, compared) = evaluate(&filter, id);
            assert_eq!(passes, numbers.contains(&id), "{id} in {filter}");
            worst = worst.max(compared);
        }
        // A tree: about 2·log2(n) comparisons, and a leaf of at most 4.
        let depth = (numbers.len().max(1) as f64).log2().ceil() as usize;
        assert!(
            worst <= 2 * depth + 4,
            "{worst} comparisons for {} numbers: {filter}",
            numbers.len()
        );
    }
}
