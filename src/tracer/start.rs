//! Starting a session: attaching to a running process (seize every
//! thread, stop them all, read the fds already open) or launching a program
//! under the seccomp filter; and the one-line errors when that fails.

use std::ffi::CString;

use nix::sys::signal::Signal;
use thiserror::Error;

use super::{EventsChoice, Mode, Notice, Thread, ThreadState, TraceOptions, Tracer, Waker};
use crate::fdtable::Pid;
use crate::procfs;
use crate::ptrace::{self, Resume, Stop, Tid, TraceError, seccomp, spawn};
use crate::syscalls;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot attach to {pid}: no such process")]
    NoSuchProcess { pid: Pid },
    #[error("cannot attach to {tid}: it is a thread of process {pid}; attach to {pid}")]
    NotAProcess { tid: Pid, pid: Pid },
    #[error("cannot attach to {pid}: already traced by process {tracer} ({name}?)")]
    AlreadyTraced { pid: Pid, tracer: Pid, name: String },
    #[error("cannot attach to {pid}: permission denied ({why})")]
    Permission { pid: Pid, why: String },
    #[error("cannot attach to {pid}: it is fdbg itself")]
    Itself { pid: Pid },
    #[error("cannot attach to {pid}: {source}")]
    Attach {
        pid: Pid,
        #[source]
        source: TraceError,
    },
    #[error("cannot use perf events (--events perf or sigtrap): {0}")]
    Perf(String),
    #[error("cannot set up tracing: {0}")]
    Setup(String),
    #[error("cannot run {program:?}: {why}")]
    Run { program: String, why: String },
}

impl Tracer {
    /// Attach to every thread of `pid` and stop them all; the fds open now
    /// are recorded as open before attach.
    pub fn attach(
        pid: Pid,
        opts: &TraceOptions,
        waker: std::sync::Arc<Waker>,
    ) -> Result<Tracer, StartError> {
        if pid == std::process::id() as Pid {
            return Err(StartError::Itself { pid });
        }
        let status = procfs::status(pid).ok_or(StartError::NoSuchProcess { pid })?;
        if status.tgid != pid {
            return Err(StartError::NotAProcess {
                tid: pid,
                pid: status.tgid,
            });
        }
        if status.tracer_pid != 0 {
            return Err(already_traced(pid, status.tracer_pid));
        }
        if procfs::threads(pid)
            .unwrap_or_default()
            .iter()
            .all(|&t| matches!(procfs::thread_state(pid, t), Some('Z' | 'X') | None))
        {
            return Err(StartError::NoSuchProcess { pid });
        }
        let mut tracer = Tracer::new(Mode::Attach, pid, opts, waker)?;
        // Fork events always: a child not followed is let go at its first
        // stop, after fdbg has undone what it inherited of the session.
        let options = ptrace::options(true, false, false);
        tracer.seize_process(pid, options, &status)?;
        if tracer.threads.is_empty() {
            return Err(StartError::NoSuchProcess { pid });
        }
        // With --follow-forks, the children that exist already are traced
        // too (a server's workers), each with its own table; one that cannot
        // be traced is said, not fatal.
        let mut children = Vec::new();
        if opts.follow_forks {
            let mut parents = vec![pid];
            while let Some(parent) = parents.pop() {
                for child in procfs::children(parent) {
                    let Some(child_status) = procfs::status(child) else {
                        continue;
                    };
                    match tracer.seize_process(child, options, &child_status) {
                        Ok(()) => {
                            children.push(child);
                            parents.push(child);
                        }
                        Err(e) => tracer.notices.push(Notice::ChildNotTraced(e)),
                    }
                }
            }
        }
        tracer.stop_all();
        if tracer.ends.main_end.is_some() {
            return Err(StartError::NoSuchProcess { pid });
        }
        for pid in std::iter::once(pid).chain(children) {
            if tracer.threads.values().any(|t| t.pid == pid) {
                let fds = procfs::list_fds(pid, None).unwrap_or_default();
                tracer.model.add_process(pid, fds);
            }
        }
        // Observing where the kernel allows it (stops come only when a
        // breakpoint needs them: `set_need`), else a SIGTRAP per fd event,
        // else PTRACE_SYSCALL; each fallback says why.
        let observe = match opts.events {
            EventsChoice::Auto | EventsChoice::Perf => tracer.open_observer().err(),
            EventsChoice::Sigtrap | EventsChoice::Ptrace => None,
        };
        let sigtrap = match (opts.events, &observe) {
            (EventsChoice::Ptrace, _) => None,
            (EventsChoice::Sigtrap, _) | (_, Some(_)) => Some(tracer.arm_perf_at_attach(matches!(
                opts.events,
                EventsChoice::Sigtrap | EventsChoice::Perf
            ))),
            _ => None,
        };
        match (sigtrap, observe) {
            (Some(Err(why)), _) if opts.events != EventsChoice::Auto => {
                return Err(StartError::Perf(why.to_string()));
            }
            (Some(Err(why)), _) => tracer.notices.push(Notice::FellBack(why)),
            (Some(Ok(())), Some(why)) if opts.events == EventsChoice::Perf => {
                tracer.disarm_perf();
                return Err(StartError::Perf(why.to_string()));
            }
            (Some(Ok(())), Some(why)) => tracer.notices.push(Notice::NotObserving(why)),
            _ => {}
        }
        Ok(tracer)
    }

    /// Seize every thread of `pid`; repeat until a listing shows no new
    /// thread (threads created meanwhile by seized threads are
    /// auto-attached). On an error, the threads seized so far are let go
    /// when the tracer drops (for the main process) or stay traced as part
    /// of the session (a child whose other threads could not be seized is
    /// unlikely: they share their credentials).
    pub(super) fn seize_process(
        &mut self,
        pid: Pid,
        options: libc::c_int,
        status: &procfs::TaskStatus,
    ) -> Result<(), StartError> {
        loop {
            let tids = procfs::threads(pid).map_err(|_| StartError::NoSuchProcess { pid })?;
            // A zombie thread (a leader that called pthread_exit while
            // others run on) cannot be seized and runs no more code.
            let new: Vec<Tid> = tids
                .into_iter()
                .filter(|t| !self.threads.contains_key(t))
                .filter(|&t| !matches!(procfs::thread_state(pid, t), Some('Z' | 'X')))
                .collect();
            if new.is_empty() {
                return Ok(());
            }
            for tid in new {
                match ptrace::seize(tid, options) {
                    Ok(()) => {
                        self.threads
                            .insert(tid, Thread::new(pid, ThreadState::Running));
                    }
                    Err(TraceError::Gone) => continue,
                    Err(TraceError::Os { source, .. })
                        if source.raw_os_error() == Some(libc::EPERM) =>
                    {
                        match procfs::status(tid) {
                            // Created by a thread seized a moment ago, so
                            // already ours: its first stop and its
                            // creator's clone event are on their way.
                            Some(s) if s.tracer_pid == nix::unistd::gettid().as_raw() => {
                                let mut thread = Thread::new(pid, ThreadState::Running);
                                thread.announced = false;
                                self.threads.insert(tid, thread);
                            }
                            // Exiting or gone: it runs no more code.
                            None => continue,
                            Some(s) if matches!(s.state, 'Z' | 'X') => continue,
                            Some(s) if s.tracer_pid != 0 => {
                                return Err(already_traced(pid, s.tracer_pid));
                            }
                            Some(_) => return Err(permission_error(pid, status)),
                        }
                    }
                    Err(source) => return Err(StartError::Attach { pid, source }),
                }
            }
        }
    }

    /// Start `program` with a seccomp filter so that only fd syscalls stop,
    /// traced from its first instruction; it is stopped at its start.
    pub fn launch(
        argv: &[String],
        opts: &TraceOptions,
        waker: std::sync::Arc<Waker>,
    ) -> Result<Tracer, StartError> {
        let program = argv.first().cloned().unwrap_or_default();
        let run_error = |why: String| StartError::Run {
            program: program.clone(),
            why,
        };
        let path = resolve_program(&program).map_err(run_error)?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| run_error("the path has a NUL byte".into()))?;
        let c_args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| run_error("an argument has a NUL byte".into()))?;
        // The seccomp filter by default: the overhead bench, on one CPU, runs
        // in 0.096 s with it against 0.124 s with perf events, which cost
        // about 50 ms to set up and take down (registering the tracepoint)
        // for about the same time per fd event (one stop instead of two).
        // perf events when asked for: one stop per fd event, and the
        // program can be detached.
        let use_perf = matches!(opts.events, EventsChoice::Perf | EventsChoice::Sigtrap);
        if use_perf
            && let Err(why) = super::perf_source::syscall_tracepoint()
                .and_then(|(id, filter)| crate::perf::probe(id, &filter))
        {
            return Err(StartError::Perf(why.to_string()));
        }
        let filter = if use_perf {
            Vec::new()
        } else {
            seccomp::filter(syscalls::traced_syscalls(), syscalls::traced_by_command())
        };
        let spawned = spawn::spawn_stopped(&c_path, &c_args, &filter, opts.own_process_group)
            .map_err(|e| run_error(e.to_string()))?;
        let child = spawned.pid;
        let mut tracer = match Tracer::new(Mode::Run, child, opts, waker) {
            Ok(tracer) => tracer,
            Err(e) => {
                spawn::kill_and_reap(child);
                return Err(e);
            }
        };
        let options = ptrace::options(true, !use_perf, true);
        if let Err(e) = ptrace::seize(child, options) {
            spawn::kill_and_reap(child);
            return Err(run_error(format!("cannot trace the new process: {e}")));
        }
        tracer
            .threads
            .insert(child, Thread::new(child, ThreadState::Running));
        // Let it run to its exec, which stops it (PTRACE_EVENT_EXEC).
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGCONT);
        loop {
            let Ok(Some((tid, stop))) = ptrace::wait_for(child, false) else {
                return Err(run_error("the new process vanished".into()));
            };
            tracer.costs.stops += 1;
            tracer.costs.by_pid.entry(child).or_default().0 += 1;
            match stop {
                Stop::Event {
                    event: ptrace::EVENT_EXEC,
                    ..
                } => break,
                Stop::Exited(_) | Stop::Killed(_) => {
                    let why = spawn::exec_error(&spawned)
                        .unwrap_or_else(|| "it exited before exec".into());
                    return Err(run_error(why));
                }
                // SIGCONT and the stops on the way: let them go, signals included.
                Stop::Signal(sig) if sig != libc::SIGSTOP => {
                    let _ = ptrace::resume(tid, Resume::Cont, sig);
                }
                _ => {
                    let _ = ptrace::resume(tid, Resume::Cont, 0);
                }
            }
        }
        if let Some(t) = tracer.threads.get_mut(&child) {
            t.state = ThreadState::Stopped;
        }
        let fds = procfs::list_fds(child, None).unwrap_or_default();
        tracer.model.add_process(child, fds);
        if use_perf
            && let Err(why) = tracer.arm_perf(false, true, super::perf_source::Traps::FdEvents)
        {
            // Without its filter, the program is traced at every syscall.
            tracer.source.mechanism = super::Mechanism::PtraceSyscall;
            tracer.notices.push(Notice::FellBack(why));
        }
        Ok(tracer)
    }
}

/// `pid` is traced by thread `tracer_tid`: name its process.
fn already_traced(pid: Pid, tracer_tid: Pid) -> StartError {
    let tracer = procfs::status(tracer_tid)
        .map(|s| s.tgid)
        .unwrap_or(tracer_tid);
    let name = procfs::status(tracer)
        .map(|s| crate::escape::escape(&s.name).into_owned())
        .unwrap_or_else(|| "?".into());
    StartError::AlreadyTraced { pid, tracer, name }
}

fn permission_error(pid: Pid, status: &procfs::TaskStatus) -> StartError {
    // SAFETY-free: getuid cannot fail.
    let me = nix::unistd::getuid().as_raw();
    let why = if status.uid != me && me != 0 {
        format!(
            "it belongs to uid {}; run fdbg as that user or with CAP_SYS_PTRACE",
            status.uid
        )
    } else if me == 0 {
        "the kernel refuses even root here: init, a kernel thread, or a process a \
         security module protects"
            .into()
    } else {
        let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok();
        match scope.as_deref().map(str::trim) {
            Some(s) if s != "0" => format!(
                "need CAP_SYS_PTRACE or the same user; /proc/sys/kernel/yama/ptrace_scope is {s}"
            ),
            _ => "need CAP_SYS_PTRACE or the same user; see /proc/sys/kernel/yama/ptrace_scope"
                .into(),
        }
    };
    StartError::Permission { pid, why }
}

/// Find `program` as execvp would, to say "no such program" before forking.
fn resolve_program(program: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() {
        return Err("an empty program name".into());
    }
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        if !p.exists() {
            return Err("no such file".into());
        }
        if !executable(&p) {
            return Err("not an executable file".into());
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| "no such program in PATH".into())
}
