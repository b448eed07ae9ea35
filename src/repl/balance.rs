//! `balance NAME`: every call of a function measured from its entry to its
//! own return, without stopping at the prompt. A call is matched to its
//! return by thread, innermost first (recursion and several threads in the
//! function at once are counted per call); what it did is the fd events of
//! its thread between the two. A return is caught by a breakpoint at the
//! return address of each call site seen (a uretprobe would replace the
//! return addresses on the stack by its trampoline, and the stacks of the
//! fd events inside the call would stop there).

use std::collections::{BTreeSet, HashMap};

use crate::fdtable::{Event, Pid, Seq};

/// One measured function.
pub struct Balance {
    /// Its number: its entry and return probes are `ProbeOwner::Balance`
    /// of it.
    pub id: u32,
    pub function: String,
    pub calls: u64,
    /// Fds created during calls.
    pub opened: u64,
    /// Fds closed during calls that were open before the call.
    pub closed: u64,
    /// The events that created fds during calls: still open or not is
    /// known only when reported (`forget_closed` drops the others).
    pub creations: BTreeSet<Seq>,
    /// Calls under way, by thread: the last event before each entry,
    /// innermost last.
    open_calls: HashMap<Pid, Vec<Seq>>,
    /// The return addresses (call sites) with a breakpoint already.
    pub return_sites: BTreeSet<u64>,
}

impl Balance {
    pub fn new(id: u32, function: &str) -> Balance {
        Balance {
            id,
            function: function.to_string(),
            calls: 0,
            opened: 0,
            closed: 0,
            creations: BTreeSet::new(),
            open_calls: HashMap::new(),
            return_sites: BTreeSet::new(),
        }
    }

    /// Thread `tid` entered the function; `last` is the last event so far.
    pub fn entered(&mut self, tid: Pid, last: Seq) {
        self.open_calls.entry(tid).or_default().push(last);
    }

    /// Thread `tid` returned from the function; `events` are the model's
    /// events after the matching entry's (any thread: only `tid`'s count).
    /// A return with no entry seen (a call under way when `balance` began)
    /// is not counted.
    pub fn returned(&mut self, tid: Pid, events: impl Fn(Seq) -> Vec<Event>) {
        let Some(since) = self.open_calls.get_mut(&tid).and_then(Vec::pop) else {
            return;
        };
        self.calls += 1;
        let mut created_here = BTreeSet::new();
        for event in events(since).into_iter().filter(|e| e.tid == tid) {
            for &fd in event.created.iter() {
                created_here.insert(fd);
                self.opened += 1;
                self.creations.insert(event.seq);
            }
            for &fd in event.closed.iter() {
                if !created_here.remove(&fd) {
                    self.closed += 1;
                }
            }
        }
    }
}

impl Balance {
    /// Keep only the creations whose fds are still open (`open`: the
    /// creating events of the open fds), once they outnumber them well:
    /// what a call created and closed is counted already.
    pub fn forget_closed(&mut self, open: impl FnOnce() -> BTreeSet<Seq>) {
        if self.creations.len() > 4096 {
            let open = open();
            if self.creations.len() > 2 * open.len() {
                self.creations.retain(|seq| open.contains(seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_matches_the_innermost_entry_of_its_thread() {
        let mut b = Balance::new(1, "f");
        // An outer call, and a recursive inner one after event 3.
        b.entered(7, 0);
        b.entered(7, 3);
        b.returned(7, |_| Vec::new());
        assert_eq!(b.calls, 1);
        assert_eq!(b.open_calls[&7], vec![0]);
        b.returned(7, |_| Vec::new());
        assert_eq!(b.calls, 2);
        // Another thread's return with no entry seen: not a call.
        b.returned(8, |_| Vec::new());
        assert_eq!(b.calls, 2);
    }
}
