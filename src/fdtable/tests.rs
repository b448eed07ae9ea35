//! The model fed synthetic decoded syscalls.

use super::*;
use crate::stacks::Stack;
use crate::syscalls::{Decoded, Effect};

const PID: Pid = 100;
const EBADF: i64 = -9;
const EINTR: i64 = -4;

fn decoded(name: &'static str, result: i64, kind: FdKind, effects: Vec<Effect>) -> Decoded {
    Decoded {
        name,
        args_text: format!("{name} args"),
        result,
        kind,
        effects,
    }
}

fn open_as(name: &'static str, fd: i32, kind: FdKind, cloexec: bool) -> Decoded {
    let target = (kind == FdKind::File).then(|| format!("/tmp/f{fd}"));
    decoded(
        name,
        fd.into(),
        kind,
        vec![Effect::Open {
            fd,
            kind,
            cloexec,
            target,
        }],
    )
}

fn socket(fd: i32) -> Decoded {
    open_as("socket", fd, FdKind::Socket, false)
}

fn openat(fd: i32) -> Decoded {
    open_as("openat", fd, FdKind::File, false)
}

fn close(fd: i32) -> Decoded {
    decoded("close", 0, FdKind::Other, vec![Effect::Close { fd }])
}

fn bad_close(fd: i32) -> Decoded {
    decoded("close", EBADF, FdKind::Other, vec![Effect::BadClose { fd }])
}

fn dup2(from: i32, to: i32) -> Decoded {
    let effects = vec![Effect::Dup {
        from,
        to,
        cloexec: false,
    }];
    decoded("dup2", to.into(), FdKind::Other, effects)
}

fn proc_fd(fd: i32, kind: FdKind, target: &str) -> ProcFd {
    ProcFd {
        fd,
        kind,
        target: target.to_string(),
        cloexec: false,
    }
}

fn stack(model: &mut Model, n: u64) -> Option<StackId> {
    Some(model.stacks.intern(Stack {
        addresses: vec![0x1000 + n, 0x2000],
        truncated: None,
        generation: 0,
    }))
}

/// A process with stdin, stdout and stderr open before attach.
fn model_with_std() -> Model {
    let mut model = Model::new();
    let std = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .collect();
    model.add_process(PID, std);
    model
}

fn fds(model: &Model, pid: Pid) -> Vec<i32> {
    model.open_fds(pid).iter().map(|open| open.fd).collect()
}

#[test]
fn open_then_close() {
    let mut model = model_with_std();
    let site = stack(&mut model, 1);
    let seq = model.record(PID, PID, &mut socket(3), site);
    assert_eq!(seq, 1);
    let open = model.open_fds(PID)[3].clone();
    assert_eq!(open.kind, FdKind::Socket);
    assert_eq!(open.origin, Origin::Created(1));
    assert_eq!(open.stack, site);
    let event = model.event(1).unwrap();
    assert_eq!(*event.created, [3]);
    assert_eq!(event.open_fds, 4);
    assert_eq!(&*event.args, "socket args");

    let seq = model.record(PID, PID + 1, &mut close(3), None);
    let event = model.event(seq).unwrap();
    assert_eq!((event.tid, &*event.closed), (PID + 1, &[3][..]));
    assert_eq!(event.open_fds, 3);
    assert_eq!(fds(&model, PID), [0, 1, 2]);
    assert_eq!(model.last_seq(), 2);
    assert_eq!(model.event(0), None);
    assert_eq!(model.event(3), None);
}

#[test]
fn close_outcomes() {
    struct Case {
        name: &'static str,
        call: Decoded,
        open_after: &'static [i32],
        closed: &'static [i32],
        bad_close: Option<i32>,
        bad_closes: u64,
    }
    let cases = [
        Case {
            name: "failed open creates nothing",
            call: decoded("openat", -2, FdKind::File, vec![]),
            open_after: &[0, 1, 2, 3],
            closed: &[],
            bad_close: None,
            bad_closes: 0,
        },
        Case {
            name: "close of a never-opened fd is a bad close",
            call: bad_close(7),
            open_after: &[0, 1, 2, 3],
            closed: &[],
            bad_close: Some(7),
            bad_closes: 1,
        },
        Case {
            name: "close interrupted by a signal still closed",
            call: decoded("close", EINTR, FdKind::Other, vec![Effect::Close { fd: 3 }]),
            open_after: &[0, 1, 2],
            closed: &[3],
            bad_close: None,
            bad_closes: 0,
        },
    ];
    for case in cases {
        let mut model = model_with_std();
        model.record(PID, PID, &mut openat(3), None);
        let seq = model.record(PID, PID, &mut case.call.clone(), None);
        let event = model.event(seq).unwrap();
        assert_eq!(fds(&model, PID), case.open_after, "{}", case.name);
        assert_eq!(&*event.closed, case.closed, "{}", case.name);
        assert!(event.created.is_empty(), "{}", case.name);
        assert_eq!(event.bad_close, case.bad_close, "{}", case.name);
        assert_eq!(event.result, case.call.result, "{}", case.name);
        assert_eq!(
            model.counters().bad_closes,
            case.bad_closes,
            "{}",
            case.name
        );
        let process = &model.process(PID).unwrap().counters;
        assert_eq!(process.bad_closes, case.bad_closes, "{}", case.name);
        // Every call is an event, failed or not.
        assert_eq!(model.counters().events_by_syscall.values().sum::<u64>(), 2);
    }
}

#[test]
fn double_close_is_a_bad_close_in_history() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    model.record(PID, PID, &mut close(3), None);
    model.record(PID, PID, &mut bad_close(3), None);
    let history: Vec<Seq> = model.history(PID, 3).events.iter().map(|e| e.seq).collect();
    assert_eq!(history, [1, 2, 3]);
    assert_eq!(model.counters().bad_closes, 1);
}

#[test]
fn dup2_onto_an_open_fd_closes_then_creates() {
    let mut model = model_with_std();
    let site = stack(&mut model, 7);
    model.record(PID, PID, &mut socket(3), None);
    model.record(PID, PID, &mut openat(4), None);
    let seq = model.record(PID, PID, &mut dup2(3, 4), site);
    let event = model.event(seq).unwrap();
    assert_eq!(*event.closed, [4]);
    assert_eq!(*event.created, [4]);
    assert_eq!(event.kind, FdKind::Socket, "a dup takes its source's kind");
    assert_eq!(event.open_fds, 5);
    let dup = model.open_fd(PID, 4).unwrap();
    assert_eq!(
        (dup.kind, dup.origin, dup.stack),
        (FdKind::Socket, Origin::Created(seq), site)
    );
    assert_eq!(model.counters().events_by_kind[&FdKind::Socket], 2);
    assert_eq!(model.counters().dropped, 0);
}

#[test]
fn dup_of_an_unknown_fd_is_other() {
    let mut model = Model::new();
    model.record(PID, PID, &mut dup2(8, 9), None);
    let dup = model.open_fd(PID, 9).unwrap();
    assert_eq!((dup.kind, dup.target.as_deref()), (FdKind::Other, None));
}

#[test]
fn dup2_onto_itself_changes_nothing() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    let before = model.open_fds(PID).into_iter().cloned().collect::<Vec<_>>();
    let seq = model.record(PID, PID, &mut dup2(3, 3), None);
    let event = model.event(seq).unwrap();
    assert!(event.created.is_empty() && event.closed.is_empty());
    let after = model.open_fds(PID).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(before, after);
}

#[test]
fn open_onto_a_believed_open_fd_drops_the_stale_one() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    let seq = model.record(PID, PID, &mut openat(3), None);
    assert_eq!(model.open_fd(PID, 3).unwrap().origin, Origin::Created(seq));
    assert!(model.event(seq).unwrap().closed.is_empty());
    // The stale holder may still see its close come (another thread's,
    // seen late); a report, with every event in, drops it.
    assert_eq!(model.counters().dropped, 0);
    let listed: Vec<ProcFd> = (0..4)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/null"))
        .collect();
    model.reconcile(PID, &listed);
    assert_eq!(model.counters().dropped, 1);
    assert_eq!(model.open_fd(PID, 3).unwrap().origin, Origin::Created(seq));
}

/// Events seen only after their syscall returned (perf SIGTRAPs): thread
/// A closes 5 and thread B's socket() gets 5, but B's stop is waited for
/// first. A's close, seen next, closes A's fd, not B's.
#[test]
fn a_close_seen_after_the_reuse_of_its_number_closes_the_displaced_fd() {
    let mut model = model_with_std();
    let (pid, a, b) = (PID, PID, PID + 1);
    model.record(pid, a, &mut openat(5), None);
    let new = model.record(pid, b, &mut socket(5), None);
    model.record(pid, a, &mut close(5), None);
    let open = model.open_fd(pid, 5).expect("B's socket stays open");
    assert_eq!(open.origin, Origin::Created(new));
    let listed: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .chain([proc_fd(5, FdKind::Socket, "socket:[9]")])
        .collect();
    model.reconcile(pid, &listed);
    assert_eq!(model.counters().dropped, 0);
    assert_eq!(model.counters().adopted, 0);

    // B closes its socket before A's close is seen: each close takes its own.
    let mut model = model_with_std();
    model.record(pid, a, &mut openat(5), None);
    model.record(pid, b, &mut socket(5), None);
    model.record(pid, b, &mut close(5), None);
    model.record(pid, a, &mut close(5), None);
    assert_eq!(fds(&model, pid), vec![0, 1, 2]);
    let listed: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .collect();
    model.reconcile(pid, &listed);
    assert_eq!(model.counters().dropped, 0);
    assert_eq!(
        model.diff(pid, &Snapshot::default()).closed_from_before,
        Vec::<i32>::new()
    );
}

#[test]
fn close_range_closes_what_is_open_in_range() {
    let mut model = model_with_std();
    for fd in 3..8 {
        model.record(PID, PID, &mut openat(fd), None);
    }
    let call = decoded(
        "close_range",
        0,
        FdKind::Other,
        vec![Effect::CloseRange { first: 4, last: 6 }],
    );
    let seq = model.record(PID, PID, &mut call.clone(), None);
    assert_eq!(*model.event(seq).unwrap().closed, [4, 5, 6]);
    assert_eq!(fds(&model, PID), [0, 1, 2, 3, 7]);

    let to_the_end = Effect::CloseRange {
        first: 3,
        last: u32::MAX,
    };
    let call = decoded("close_range", 0, FdKind::Other, vec![to_the_end]);
    model.record(PID, PID, &mut call.clone(), None);
    assert_eq!(fds(&model, PID), [0, 1, 2]);
}

#[test]
fn close_on_exec_sweep() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut openat(3), None);
    model.record(PID, PID, &mut openat(4), None);
    model.record(
        PID,
        PID,
        &mut open_as("socket", 5, FdKind::Socket, true),
        None,
    );
    model.record(
        PID,
        PID,
        &mut open_as("openat", 6, FdKind::File, true),
        None,
    );
    // fcntl(6, F_SETFD, 0): cleared, so 6 survives exec.
    let clear = decoded(
        "fcntl",
        0,
        FdKind::Other,
        vec![Effect::SetCloexec {
            fd: 6,
            cloexec: false,
        }],
    );
    model.record(PID, PID, &mut clear.clone(), None);
    // close_range(4, 4, CLOSE_RANGE_CLOEXEC): 4 is marked.
    let mark = decoded(
        "close_range",
        0,
        FdKind::Other,
        vec![Effect::CloexecRange { first: 4, last: 4 }],
    );
    model.record(PID, PID, &mut mark.clone(), None);
    assert!(model.open_fd(PID, 4).unwrap().cloexec);

    let seq = model.exec(PID, PID);
    let event = model.event(seq).unwrap();
    assert_eq!(event.syscall, "execve");
    assert_eq!(event.kind, FdKind::Other);
    assert_eq!(event.stack, None);
    assert_eq!(*event.closed, [4, 5]);
    assert_eq!(event.open_fds, 5);
    assert_eq!(fds(&model, PID), [0, 1, 2, 3, 6]);
    assert_eq!(model.counters().events_by_syscall["execve"], 1);
}

#[test]
fn fork_copies_then_tables_are_independent() {
    let mut model = model_with_std();
    let site = stack(&mut model, 1);
    model.record(PID, PID, &mut socket(3), site);
    let mark = model.snapshot();
    let child = PID + 50;
    model.fork(PID, child);
    assert_eq!(model.open_fds(child), model.open_fds(PID));
    assert_eq!(model.process(child).unwrap().parent, Some(PID));

    model.record(child, child, &mut close(3), None);
    model.record(PID, PID, &mut openat(4), None);
    assert_eq!(fds(&model, PID), [0, 1, 2, 3, 4]);
    assert_eq!(fds(&model, child), [0, 1, 2]);
    // The child's close was of an fd that existed before its own tracking.
    assert_eq!(model.diff(child, &mark).closed_from_before, [3]);

    model.fork(999, 1000);
    assert!(model.is_tracked(1000));
    assert_eq!(model.open_count(1000), 0);
}

#[test]
fn exited_keeps_fds_open_and_stops_reconcile() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    model.exited(PID, ProcessEnd::Exited(0));
    assert!(!model.is_tracked(PID));
    assert_eq!(model.process(PID).unwrap().end, Some(ProcessEnd::Exited(0)));
    assert_eq!(fds(&model, PID), [0, 1, 2, 3]);
    assert_eq!(model.leaks(PID, 0, 1).len(), 1);
    assert_eq!(model.reconcile(PID, &[]), Reconciled::default());
    assert_eq!(model.open_count(PID), 4);
}

#[test]
fn reconcile_adopts_drops_and_refines() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    model.record(PID, PID, &mut dup2(9, 4), None); // source unknown: Other
    let actual = [
        proc_fd(0, FdKind::File, "/dev/pts/0"),
        proc_fd(1, FdKind::File, "/dev/pts/0"),
        // 2 is gone
        proc_fd(3, FdKind::Socket, "socket:[77]"),
        proc_fd(4, FdKind::Pipe, "pipe:[5]"),
        proc_fd(8, FdKind::IoUring, "anon_inode:[io_uring]"),
    ];
    let changes = model.reconcile(PID, &actual);
    assert_eq!(changes.adopted, [8]);
    assert_eq!(changes.dropped, [2]);
    assert_eq!(fds(&model, PID), [0, 1, 3, 4, 8]);
    let adopted = model.open_fd(PID, 8).unwrap();
    assert_eq!(adopted.origin, Origin::Untracked(2));
    assert_eq!(adopted.kind, FdKind::IoUring);
    let socket = model.open_fd(PID, 3).unwrap();
    assert_eq!(socket.target.as_deref(), Some("socket:[77]"));
    let dup = model.open_fd(PID, 4).unwrap();
    assert_eq!(
        (dup.kind, dup.target.as_deref()),
        (FdKind::Pipe, Some("pipe:[5]"))
    );
    let counters = model.counters();
    assert_eq!((counters.adopted, counters.dropped), (1, 1));
    assert_eq!(model.process(PID).unwrap().counters.adopted, 1);

    // Nothing changed: nothing counted.
    assert_eq!(model.reconcile(PID, &actual), Reconciled::default());
    assert_eq!(model.counters().adopted, 1);
    // The adopted fd is a leak since attach, under "untracked".
    let leaks = model.leaks(PID, 0, 1);
    let untracked: Vec<_> = leaks.iter().filter(|s| s.syscall == "untracked").collect();
    assert_eq!(untracked.len(), 1);
    assert_eq!(untracked[0].fds, [8]);

    model.set_target(PID, 3, FdKind::Socket, "udp 0.0.0.0:0".to_string());
    let socket = model.open_fd(PID, 3).unwrap();
    assert_eq!(socket.target.as_deref(), Some("udp 0.0.0.0:0"));
}

#[test]
fn leaks_grouping_order_min_and_since() {
    let mut model = model_with_std();
    let a = stack(&mut model, 1);
    let b = stack(&mut model, 2);
    model.record(PID, PID, &mut socket(3), a); // 1
    model.record(PID, PID, &mut openat(4), b); // 2
    model.record(PID, PID, &mut socket(5), a); // 3
    model.record(PID, PID, &mut openat(6), b); // 4
    model.record(PID, PID, &mut socket(7), b); // 5: same stack, other syscall
    model.record(PID, PID, &mut openat(8), b); // 6
    model.record(PID, PID, &mut close(4), None); // 7

    let leaks = model.leaks(PID, 0, 1);
    let shape: Vec<_> = leaks
        .iter()
        .map(|s| (s.syscall, s.stack, s.fds.clone(), s.first_seq, s.last_seq))
        .collect();
    assert_eq!(
        shape,
        [
            ("socket", a, vec![3, 5], 1, 3),
            ("openat", b, vec![6, 8], 4, 6),
            ("socket", b, vec![7], 5, 5),
        ]
    );
    assert_eq!(leaks[0].count, 2);
    assert_eq!(leaks[0].kind, FdKind::Socket);
    assert_eq!(leaks[1].kind, FdKind::File);

    let big: Vec<_> = model.leaks(PID, 0, 2).iter().map(|s| s.count).collect();
    assert_eq!(big, [2, 2]);
    let since_3: Vec<_> = model
        .leaks(PID, 3, 1)
        .iter()
        .map(|s| (s.syscall, s.fds.clone()))
        .collect();
    assert_eq!(since_3, [("openat", vec![6, 8]), ("socket", vec![7])]);
    assert!(model.leaks(PID, 7, 1).is_empty());
    assert!(model.leaks(PID + 1, 0, 1).is_empty());
}

/// `sites` groups any fds (the `sockets` report's invisible ones) as
/// `leaks` does, fds from before tracing under the name it is given.
#[test]
fn sites_group_any_fds_like_leaks_with_the_initial_name() {
    let mut model = model_with_std();
    let a = stack(&mut model, 1);
    model.record(PID, PID, &mut socket(3), a); // 1
    model.record(PID, PID, &mut socket(4), a); // 2
    let mut actual: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .collect();
    actual.push(proc_fd(3, FdKind::Socket, "socket:[1]"));
    actual.push(proc_fd(4, FdKind::Socket, "socket:[2]"));
    actual.push(proc_fd(9, FdKind::Socket, "socket:[3]"));
    model.reconcile(PID, &actual);

    let all = model.open_fds(PID);
    let shape = |sites: Vec<LeakSite>| -> Vec<(&'static str, Vec<i32>, Seq, Seq)> {
        sites
            .into_iter()
            .map(|s| (s.syscall, s.fds, s.first_seq, s.last_seq))
            .collect()
    };
    assert_eq!(
        shape(model.sites(PID, all.iter().copied(), INHERITED)),
        [
            ("inherited", vec![0, 1, 2], 0, 0),
            ("socket", vec![3, 4], 1, 2),
            ("untracked", vec![9], 2, 2),
        ]
    );
    let sockets: Vec<&OpenFd> = all
        .iter()
        .copied()
        .filter(|f| f.kind == FdKind::Socket)
        .collect();
    assert_eq!(
        shape(model.sites(PID, sockets, BEFORE_ATTACH)),
        [("socket", vec![3, 4], 1, 2), ("untracked", vec![9], 2, 2)]
    );
    // leaks is sites over the fds created since the moment.
    assert_eq!(
        shape(model.leaks(PID, 0, 1)),
        [("socket", vec![3, 4], 1, 2), ("untracked", vec![9], 2, 2)]
    );
}

#[test]
fn history_across_reuse_of_an_fd_number() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None); // 1
    model.record(PID, PID, &mut openat(4), None); // 2
    model.record(PID, PID, &mut close(3), None); // 3
    model.record(PID, PID, &mut openat(3), None); // 4
    model.record(PID + 1, PID + 1, &mut socket(3), None); // 5: another process
    model.record(PID, PID, &mut dup2(4, 3), None); // 6: closes and creates 3
    model.record(PID, PID, &mut close(3), None); // 7
    model.record(PID, PID, &mut bad_close(3), None); // 8
    let seqs: Vec<Seq> = model.history(PID, 3).events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 3, 4, 6, 7, 8]);
    let seqs: Vec<Seq> = model.history(PID, 4).events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2]);
}

#[test]
fn diff_counts_since_a_mark() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None); // 1
    model.record(PID, PID, &mut socket(4), None); // 2
    let mark = model.snapshot();
    model.record(PID, PID, &mut close(4), None); // 3: from before
    model.record(PID, PID, &mut close(1), None); // 4: from before attach
    model.record(PID, PID, &mut socket(4), None); // 5: reused number
    model.record(PID, PID, &mut openat(5), None); // 6
    model.record(PID, PID, &mut openat(6), None); // 7
    model.record(PID, PID, &mut close(4), None); // 8: opened after, closed
    model.record(PID, PID, &mut close(6), None); // 9: opened after, closed
    model.record(PID, PID, &mut dup2(5, 7), None); // 10: still open
    let diff = model.diff(PID, &mark);
    assert_eq!(diff.opened_and_closed, 2);
    assert_eq!(diff.closed_from_before, [1, 4]);
    assert_eq!(diff.still_open, model.leaks(PID, mark.seq, 1));
    let still: Vec<i32> = diff.still_open.iter().flat_map(|s| s.fds.clone()).collect();
    assert_eq!(still.len(), 2);

    // Since attach, everything created counts.
    let diff = model.diff(PID, &Snapshot::default());
    assert_eq!(diff.opened_and_closed, 3);
    assert_eq!(diff.closed_from_before, [1]);
}

#[test]
fn diff_sees_fds_adopted_after_the_mark() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None); // 1
    let mark = model.snapshot();
    model.record(PID, PID, &mut openat(4), None); // 2
    let mut actual: Vec<ProcFd> = (0..5).map(|fd| proc_fd(fd, FdKind::File, "/x")).collect();
    actual.push(proc_fd(9, FdKind::IoUring, "anon_inode:[io_uring]"));
    model.reconcile(PID, &actual);
    model.record(PID, PID, &mut close(9), None); // 3
    let diff = model.diff(PID, &mark);
    assert!(diff.closed_from_before.is_empty());
}

#[test]
fn counters_by_syscall_and_kind() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    model.record(PID, PID, &mut socket(4), None);
    model.record(PID, PID, &mut openat(5), None);
    model.record(
        PID,
        PID,
        &mut decoded("socket", -24, FdKind::Socket, vec![]),
        None,
    );
    model.record(PID, PID, &mut close(3), None);
    let counters = model.counters();
    let by_syscall: Vec<_> = counters
        .events_by_syscall
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_eq!(by_syscall, [("close", 1), ("openat", 1), ("socket", 3)]);
    let by_kind: Vec<_> = counters
        .events_by_kind
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_eq!(by_kind, [(FdKind::Socket, 2), (FdKind::File, 1)]);
}

#[test]
fn a_million_events_keep_a_bounded_window_and_exact_site_totals() {
    const EVENTS: usize = 1_000_000;
    const KEPT: usize = 10_000;
    let mut model = Model::keeping(KEPT);
    let stacks: Vec<_> = (0..100).map(|n| stack(&mut model, n)).collect();
    let opens: Vec<Decoded> = (3..13).map(socket).collect();
    let closes: Vec<Decoded> = (3..13).map(close).collect();
    let mut bytes_at_half = 0;
    for i in 0..EVENTS / 2 {
        let slot = i % 10;
        model.record(PID, PID, &mut opens[slot].clone(), stacks[i % 100]);
        model.record(PID, PID, &mut closes[slot].clone(), None);
        if i == EVENTS / 4 {
            bytes_at_half = model.memory().window_bytes;
        }
    }
    let memory = model.memory();
    assert_eq!(memory.events_kept, KEPT as u64);
    assert_eq!(memory.events_forgotten, (EVENTS - KEPT) as u64);
    assert_eq!(memory.stacks, 100);
    assert_eq!(memory.sites, 100);
    // Full since long before the half: it stays where it was.
    assert_eq!(memory.window_bytes, bytes_at_half);
    assert!(memory.window_bytes < (KEPT * 160) as u64, "{memory:?}");
    assert_eq!(model.last_seq(), EVENTS as Seq);
    assert_eq!(model.open_count(PID), 0);
    let totals = model.site_totals(PID);
    assert_eq!(totals.len(), 100);
    assert!(totals.iter().all(|(_, syscall, t)| *syscall == "socket"
        && t.created == (EVENTS / 200) as u64
        && t.closed == t.created));
    // The kept events read back whole; the older ones are gone.
    let last = model.event(EVENTS as Seq).expect("the latest is kept");
    assert_eq!((last.syscall, last.closed.as_slice()), ("close", &[12][..]));
    assert!(model.event((EVENTS - KEPT) as Seq).is_none());
    assert_eq!(
        model.event((EVENTS - KEPT + 1) as Seq).map(|e| e.seq),
        Some((EVENTS - KEPT + 1) as Seq)
    );
}

/// A pseudo-random stream as a process makes it (creations take the
/// lowest free number, closes of open fds, bad closes of closed ones, dup2
/// of an open fd, close_range) from a few stacks, with marks along the way.
fn churn(model: &mut Model, events: usize, marks: &mut Vec<Snapshot>) {
    let stacks: Vec<_> = (0..5).map(|n| stack(model, n)).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..events {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let site = stacks[(x >> 8) as usize % stacks.len()];
        let open: Vec<i32> = model.open_fds(PID).iter().map(|o| o.fd).collect();
        let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
        let some_open = open[(x >> 24) as usize % open.len()];
        let number = 3 + (x % 40) as i32;
        let decoded = match (x >> 16) % 10 {
            0..=2 if open.len() < 40 => socket(lowest_free),
            3 if open.len() < 40 => openat(lowest_free),
            4 => dup2(some_open, number),
            5..=7 if open.contains(&number) => close(number),
            5..=7 => bad_close(number),
            8 if some_open > 2 => close(some_open),
            _ => decoded(
                "close_range",
                0,
                FdKind::Other,
                vec![Effect::CloseRange {
                    first: number as u32,
                    last: number as u32 + 2,
                }],
            ),
        };
        model.record(PID, PID, &mut decoded.clone(), site);
        if i % 997 == 0 {
            marks.push(model.snapshot());
        }
    }
}

#[test]
fn leaks_and_diff_are_the_same_with_a_small_window_as_with_every_event() {
    let mut full = model_with_std();
    let mut small = model_with_std();
    small.keep_events(100);
    let (mut full_marks, mut small_marks) = (Vec::new(), Vec::new());
    churn(&mut full, 20_000, &mut full_marks);
    churn(&mut small, 20_000, &mut small_marks);
    assert_eq!(full.events_forgotten(), 0);
    assert_eq!(small.events_forgotten(), 19_900);
    assert_eq!(full.leaks(PID, 0, 1), small.leaks(PID, 0, 1));
    assert!(!full.leaks(PID, 0, 1).is_empty());
    assert_eq!(full_marks, small_marks);
    for mark in &small_marks {
        assert_eq!(
            full.diff(PID, mark),
            small.diff(PID, mark),
            "mark at #{}",
            mark.seq
        );
        assert_eq!(full.leaks(PID, mark.seq, 1), small.leaks(PID, mark.seq, 1));
    }
    // And both agree with a replay of every event (the full log's answer).
    for mark in full_marks.iter().step_by(5) {
        assert_eq!(
            full.diff(PID, mark),
            replayed_diff(&full, mark.seq),
            "mark at #{}",
            mark.seq
        );
    }
    assert_eq!(full.site_totals(PID), small.site_totals(PID));
    // History within the window is the same; it says what it lost.
    let recent = full.history(PID, 5);
    let kept = small.history(PID, 5);
    assert_eq!(kept.forgotten, 19_900);
    assert_eq!(
        kept.events,
        recent
            .events
            .iter()
            .filter(|e| e.seq > 19_900)
            .cloned()
            .collect::<Vec<_>>()
    );
}

/// `diff` by replaying every event from the start, as fdbg did when it
/// kept them all: the reference the snapshots must equal.
fn replayed_diff(model: &Model, since: Seq) -> Diff {
    use std::collections::{BTreeMap, VecDeque};
    let mut open: BTreeMap<i32, VecDeque<Origin>> = (0..3)
        .map(|fd| (fd, VecDeque::from([Origin::BeforeAttach])))
        .collect();
    let mut closed_from_before = Vec::new();
    let mut opened_and_closed = 0;
    for event in model.events_from(1) {
        for &fd in &event.closed {
            let holders = open.entry(fd).or_default();
            let origin = holders.pop_front().unwrap_or(Origin::BeforeAttach);
            if holders.is_empty() {
                open.remove(&fd);
            }
            if event.seq > since && !origin.is_after(since) {
                closed_from_before.push(fd);
            }
        }
        for &fd in &event.created {
            open.entry(fd)
                .or_default()
                .push_back(Origin::Created(event.seq));
        }
    }
    for event in model.events_from(since + 1) {
        for &fd in &event.created {
            let now = model.open_fd(PID, fd).map(|o| o.origin);
            if now != Some(Origin::Created(event.seq)) {
                opened_and_closed += 1;
            }
        }
    }
    closed_from_before.sort_unstable();
    closed_from_before.dedup();
    Diff {
        still_open: model.leaks(PID, since, 1),
        opened_and_closed,
        closed_from_before,
    }
}

#[test]
fn bad_closes_keep_the_latest_few_with_their_events() {
    let mut model = model_with_std();
    model.keep_events(3);
    for fd in 100..120 {
        model.record(PID, PID, &mut bad_close(fd), None);
    }
    assert_eq!(model.process(PID).unwrap().counters.bad_closes, 20);
    let kept: Vec<Option<i32>> = model
        .bad_closes(PID)
        .iter()
        .map(|b| b.event.bad_close)
        .collect();
    assert_eq!(kept, (110..120).map(Some).collect::<Vec<_>>());
}

#[test]
fn a_bad_close_names_the_close_that_freed_its_number_even_out_of_the_window() {
    let mut model = model_with_std();
    model.keep_events(2);
    let opener = stack(&mut model, 1);
    let first_closer = stack(&mut model, 2);
    let second_closer = stack(&mut model, 3);
    model.record(PID, PID, &mut openat(5), opener);
    let freed = model.record(PID, PID, &mut close(5), first_closer);
    // Many events later (none kept of the close), the number is closed again.
    for fd in 10..20 {
        model.record(PID, PID, &mut socket(fd), opener);
    }
    model.record(PID, PID, &mut bad_close(5), second_closer);
    // A number never opened has no first close.
    model.record(PID, PID, &mut bad_close(77), second_closer);
    let bad = model.bad_closes(PID);
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0].event.stack, second_closer);
    assert_eq!(
        bad[0].first_close,
        Some(LastClose {
            seq: freed,
            stack: first_closer,
            syscall: "close",
        })
    );
    assert_eq!(bad[1].first_close, None);
    assert!(model.event(freed).is_none(), "the close left the window");
}

#[test]
fn each_site_counts_who_closed_its_fds() {
    let mut model = model_with_std();
    let opener = stack(&mut model, 1);
    let happy = stack(&mut model, 2);
    let error_path = stack(&mut model, 3);
    for fd in 3..8 {
        model.record(PID, PID, &mut socket(fd), opener);
    }
    model.record(PID, PID, &mut close(3), happy);
    model.record(PID, PID, &mut close(4), happy);
    model.record(PID, PID, &mut close(5), error_path);
    // fdbg closes one; /proc lacks another.
    model.reclaimed(PID, PID, 6);
    let actual: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .collect();
    model.reconcile(PID, &actual);
    let closers = model.closers(PID, opener, "socket");
    assert_eq!(
        closers,
        vec![
            (
                Closer {
                    stack: happy,
                    syscall: "close"
                },
                2
            ),
            (
                Closer {
                    stack: None,
                    syscall: CLOSED_BY_FDBG
                },
                1
            ),
            (
                Closer {
                    stack: None,
                    syscall: CLOSED_UNSEEN
                },
                1
            ),
            (
                Closer {
                    stack: error_path,
                    syscall: "close"
                },
                1
            ),
        ]
    );
    let closed: u64 = closers.iter().map(|c| c.1).sum();
    assert_eq!(closed, model.site_totals(PID)[0].2.closed);
    // fdbg's close is an event of its own, with no stack.
    let reclaim = model
        .events_from(0)
        .find(|e| e.args.contains("closed by fdbg"))
        .expect("fdbg's close recorded");
    assert_eq!((reclaim.syscall, reclaim.stack), ("close", None));
    assert_eq!(reclaim.closed, vec![6]);
}

#[test]
fn events_are_stamped_with_the_clock_and_sites_know_their_ages() {
    let mut model = model_with_std();
    let site = stack(&mut model, 1);
    for i in 0..5u64 {
        model.set_clock(1_000 + i * 1_000_000_000);
        model.record(PID, PID, &mut socket(3 + i as i32), site);
    }
    // The clock never goes back.
    model.set_clock(5);
    assert_eq!(model.clock(), 4_000_001_000);
    assert_eq!(model.event(5).map(|e| e.time), Some(4_000_001_000));
    let leaks = model.leaks(PID, 0, 1);
    assert_eq!(leaks.len(), 1);
    assert_eq!((leaks[0].oldest, leaks[0].newest), (1_000, 4_000_001_000));
    assert_eq!(leaks[0].totals.created, 5);
}

/// Regression (threads closing and reopening fd numbers at once): thread A
/// enters close(5); the kernel frees 5 and thread B's socket() gets it, and
/// B's exit is seen before A's. A's close must close the fd A was closing,
/// not B's new one.
#[test]
fn a_close_racing_a_reuse_of_its_number_closes_the_old_fd() {
    let mut model = model_with_std();
    let (pid, a, b) = (PID, PID, PID + 1);
    model.record(pid, a, &mut openat(5), None);
    model.closing(pid, a, 5);
    let new = model.record(pid, b, &mut socket(5), None);
    model.record(pid, a, &mut close(5), None);
    let open = model.open_fd(pid, 5).expect("B's socket stays open");
    assert_eq!(open.origin, Origin::Created(new));
    assert_eq!(open.kind, FdKind::Socket);
    assert_eq!(model.counters().dropped, 0);
    assert_eq!(
        model
            .leaks(pid, 0, 1)
            .iter()
            .map(|s| s.count)
            .sum::<usize>(),
        1
    );
}

/// Regression (a churn of threads, each closing what it opened): when a
/// close races another thread's reuse of its number, `diff` must not count
/// the newcomer's later close as the close of an fd from before the mark.
#[test]
fn diff_after_a_close_racing_a_reuse_counts_no_fd_from_before() {
    let mut model = model_with_std();
    let (pid, a, b) = (PID, PID, PID + 1);
    model.record(pid, a, &mut openat(5), None);
    model.closing(pid, a, 5);
    model.record(pid, b, &mut socket(5), None);
    model.record(pid, a, &mut close(5), None);
    model.closing(pid, b, 5);
    model.record(pid, b, &mut close(5), None);
    let diff = model.diff(pid, &Snapshot::default());
    assert_eq!(diff.closed_from_before, Vec::<i32>::new());
    assert_eq!(diff.opened_and_closed, 2);

    // The same with fd 5 open before the mark: one close from before.
    let mut model = model_with_std();
    model.record(pid, a, &mut openat(5), None);
    let mark = model.snapshot();
    model.closing(pid, a, 5);
    model.record(pid, b, &mut socket(5), None);
    model.record(pid, a, &mut close(5), None);
    model.closing(pid, b, 5);
    model.record(pid, b, &mut close(5), None);
    let diff = model.diff(pid, &mark);
    assert_eq!(diff.closed_from_before, vec![5]);
    assert_eq!(diff.opened_and_closed, 1);
}

/// Regression (a report while a thread is stopped at close's entry): the
/// kernel still lists the fd, the model has already taken it out; it is
/// neither adopted as untracked nor kept when the close returns.
#[test]
fn a_close_stopped_at_its_entry_is_not_adopted_by_a_report() {
    let mut model = model_with_std();
    let (pid, a) = (PID, PID);
    model.record(pid, a, &mut socket(5), None);
    model.closing(pid, a, 5);
    let mut listed: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .collect();
    listed.push(proc_fd(5, FdKind::Socket, "socket:[77]"));
    model.reconcile(pid, &listed);
    assert_eq!(model.counters().adopted, 0);
    assert_eq!(model.counters().dropped, 0);
    model.record(pid, a, &mut close(5), None);
    assert_eq!(fds(&model, pid), vec![0, 1, 2]);
}

/// Three holders of one number before any of the first two closes is
/// seen: A's fd closed, B's made and closed, C's made. A's and B's closes,
/// seen last, close the two displaced ones; C's fd stays.
#[test]
fn closes_seen_late_take_every_displaced_holder_in_turn() {
    let mut model = model_with_std();
    let (pid, a, b, c) = (PID, PID, PID + 1, PID + 2);
    model.record(pid, a, &mut openat(5), None);
    model.record(pid, b, &mut socket(5), None);
    let newest = model.record(pid, c, &mut socket(5), None);
    model.record(pid, a, &mut close(5), None);
    model.record(pid, b, &mut close(5), None);
    assert_eq!(
        model.open_fd(pid, 5).map(|open| open.origin),
        Some(Origin::Created(newest))
    );
    let listed: Vec<ProcFd> = (0..3)
        .map(|fd| proc_fd(fd, FdKind::File, "/dev/pts/0"))
        .chain([proc_fd(5, FdKind::Socket, "socket:[9]")])
        .collect();
    model.reconcile(pid, &listed);
    assert_eq!(model.counters().dropped, 0);
    assert_eq!(model.counters().adopted, 0);
}

fn annotate(name: &'static str, result: i64, fd: i32, note: &str, args: &str) -> Decoded {
    Decoded {
        name,
        args_text: args.to_string(),
        result,
        kind: FdKind::Other,
        effects: vec![Effect::Annotate {
            fd,
            note: note.to_string(),
        }],
    }
}

fn connect(fd: i32, addr: &str) -> Decoded {
    let args = format!("{fd}, {{AF_INET, {addr}}}, 16");
    annotate("connect", 0, fd, &format!("connect {addr}"), &args)
}

fn notes(model: &Model, fd: i32) -> Vec<&str> {
    let open = model.open_fd(PID, fd).expect("fd is open");
    open.notes.iter().map(String::as_str).collect()
}

#[test]
fn annotations_note_the_open_fd_and_create_or_close_nothing() {
    let mut model = model_with_std();
    let s = stack(&mut model, 1);
    model.record(PID, PID, &mut socket(3), s); // 1
    let mark = model.snapshot();
    let bind = annotate(
        "bind",
        0,
        3,
        "bind 0.0.0.0:8125",
        "3, {AF_INET, 0.0.0.0:8125}, 16",
    );
    model.record(PID, PID, &mut bind.clone(), s); // 2
    let listen = annotate("listen", 0, 3, "listen backlog 128", "3, 128");
    let seq = model.record(PID, PID, &mut listen.clone(), s); // 3
    assert_eq!(
        notes(&model, 3),
        ["bind 0.0.0.0:8125", "listen backlog 128"]
    );

    let event = model.event(seq).unwrap();
    assert_eq!(event.annotated, Some(3));
    assert!(!event.creates_or_closes(3));
    assert_eq!(
        model.history(PID, 3).events.len(),
        3,
        "history lists the annotation"
    );
    assert!(event.created.is_empty() && event.closed.is_empty());
    assert_eq!(event.kind, FdKind::Socket, "the kind of the annotated fd");
    assert_eq!(event.open_fds, 4);
    assert_eq!(&*event.args, "3, 128");
    assert_eq!(model.event(1).unwrap().annotated, None);

    // still one fd, created once, one leak site
    assert_eq!(fds(&model, PID), [0, 1, 2, 3]);
    assert_eq!(model.leaks(PID, 0, 1).len(), 1);
    assert_eq!(model.leaks(PID, 0, 1)[0].syscall, "socket");
    let counters = model.counters();
    assert_eq!(counters.events_by_syscall["bind"], 1);
    assert_eq!(counters.events_by_syscall["listen"], 1);
    assert_eq!(
        counters.events_by_kind[&FdKind::Socket],
        1,
        "only socket() created"
    );
    let diff = model.diff(PID, &mark);
    assert_eq!(
        (diff.opened_and_closed, diff.closed_from_before.len()),
        (0, 0)
    );

    // an annotation of an fd the model does not know records, changes nothing
    let seq = model.record(PID, PID, &mut connect(9, "10.0.0.1:80"), None);
    assert_eq!(model.event(seq).unwrap().kind, FdKind::Other);
    assert!(model.open_fd(PID, 9).is_none());
}

#[test]
fn history_after_close_still_shows_where_a_socket_was_connected() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None); // 1
    model.record(PID, PID, &mut connect(3, "127.0.0.1:8125"), None); // 2
    model.record(PID, PID, &mut close(3), None); // 3
    model.record(PID, PID, &mut openat(3), None); // 4: the number is reused
    let history = model.history(PID, 3).events;
    let seqs: Vec<Seq> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(history[1].syscall, "connect");
    assert_eq!(&*history[1].args, "3, {AF_INET, 127.0.0.1:8125}, 16");
    assert!(notes(&model, 3).is_empty(), "a new fd starts without notes");
}

#[test]
fn notes_keep_the_latest_of_each_verb_follow_dups_and_stay_bounded() {
    let mut model = model_with_std();
    model.record(PID, PID, &mut socket(3), None);
    let refused = annotate(
        "connect",
        -111,
        3,
        "connect 127.0.0.1:1 failed: ECONNREFUSED",
        "3, {AF_INET, 127.0.0.1:1}, 16",
    );
    model.record(PID, PID, &mut refused.clone(), None);
    assert_eq!(
        notes(&model, 3),
        ["connect 127.0.0.1:1 failed: ECONNREFUSED"]
    );
    model.record(PID, PID, &mut connect(3, "127.0.0.1:2"), None);
    assert_eq!(notes(&model, 3), ["connect 127.0.0.1:2"]);

    model.record(PID, PID, &mut dup2(3, 7), None);
    assert_eq!(
        notes(&model, 7),
        ["connect 127.0.0.1:2"],
        "a dup is the same socket"
    );

    for verb in ["a", "b", "c", "d", "e"] {
        let d = annotate("bind", 0, 3, &format!("{verb} x"), "");
        model.record(PID, PID, &mut d.clone(), None);
    }
    assert_eq!(notes(&model, 3), ["b x", "c x", "d x", "e x"]);
    assert_eq!(
        notes(&model, 7),
        ["connect 127.0.0.1:2"],
        "dups are noted apart"
    );
}

#[test]
fn accept_notes_the_peer_on_the_new_fd() {
    let mut model = model_with_std();
    let accept = Decoded {
        name: "accept4",
        args_text: "3, {AF_INET, 127.0.0.1:53422}, [16], SOCK_CLOEXEC".to_string(),
        result: 5,
        kind: FdKind::Socket,
        effects: vec![
            Effect::Open {
                fd: 5,
                kind: FdKind::Socket,
                cloexec: true,
                target: None,
            },
            Effect::Annotate {
                fd: 5,
                note: "accepted from 127.0.0.1:53422".to_string(),
            },
        ],
    };
    let seq = model.record(PID, PID, &mut accept.clone(), None);
    assert_eq!(notes(&model, 5), ["accepted from 127.0.0.1:53422"]);
    let event = model.event(seq).unwrap();
    assert_eq!(&*event.created, [5]);
    assert_eq!(model.counters().events_by_kind[&FdKind::Socket], 1);
}

#[test]
fn stacks_of_one_site_group_as_one() {
    // The same function's interpreted and optimized code: two stacks.
    let mut model = model_with_std();
    let interpreted = stack(&mut model, 1);
    let optimized = stack(&mut model, 2);
    let closer = stack(&mut model, 3);
    model.record(PID, PID, &mut socket(3), interpreted); // 1
    model.record(PID, PID, &mut socket(4), interpreted); // 2
    model.record(PID, PID, &mut socket(5), optimized); // 3
    model.record(PID, PID, &mut socket(6), optimized); // 4
    model.record(PID, PID, &mut socket(7), optimized); // 5
    model.record(PID, PID, &mut close(4), closer); // 6
    model.record(PID, PID, &mut close(6), closer); // 7
    assert_eq!(model.leaks(PID, 0, 3).len(), 0, "two sites of 1 and 2 fds");

    model.same_site(PID, optimized.unwrap(), interpreted.unwrap());
    // Joining twice, or joining the site to itself, changes nothing.
    model.same_site(PID, optimized.unwrap(), interpreted.unwrap());
    model.same_site(PID, interpreted.unwrap(), optimized.unwrap());
    let leaks = model.leaks(PID, 0, 3);
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    let site = &leaks[0];
    assert_eq!(site.stack, interpreted, "the first stack names the site");
    assert_eq!(site.fds, [3, 5, 7]);
    assert_eq!((site.first_seq, site.last_seq), (1, 5));
    assert_eq!((site.totals.created, site.totals.closed), (5, 2));
    let closers = model.closers(PID, interpreted, "socket");
    assert_eq!(
        closers,
        [(
            Closer {
                stack: closer,
                syscall: "close"
            },
            2
        )]
    );
    // Another process's sites are its own.
    assert!(model.leaks(PID + 1, 0, 1).is_empty());
}
