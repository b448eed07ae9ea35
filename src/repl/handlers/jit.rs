//! JIT code in reports: the sites of stacks that differ only inside the
//! JIT tier made one, and the hint for a process whose JIT frames no perf
//! map names. Part of `Session`: data only.

use std::collections::{HashMap, HashSet};

use super::Session;
use crate::fdtable::Pid;
use crate::repl::report::Report;
use crate::stacks::StackId;
use crate::symbolize::UnnamedJit;

/// Which sites' stacks were looked at, and the site each JIT key names.
#[derive(Default)]
pub(super) struct JitSites {
    /// Stacks symbolized for their key already, per process.
    checked: HashSet<(Pid, StackId)>,
    /// The first stack of each key (`symbolize::jit_site_key`), per process.
    first_of_key: HashMap<(Pid, String), StackId>,
}

impl Session {
    /// Tells the model which of `pid`'s stacks are one site: stacks with
    /// JIT frames whose frames outside the runtimes name the same
    /// functions (a function's interpreted and optimized code). Each
    /// stack is symbolized for it once.
    pub(super) fn group_jit_sites(&mut self, pid: Pid) {
        let stacks: Vec<StackId> = self
            .tracer
            .model
            .site_totals(pid)
            .into_iter()
            .filter_map(|(stack, _, _)| stack)
            .filter(|&stack| self.jit.checked.insert((pid, stack)))
            .collect();
        for stack in stacks {
            let (frames, _) = self.frames(pid, Some(stack));
            let Some(key) = crate::symbolize::jit_site_key(&frames) else {
                continue;
            };
            let first = *self.jit.first_of_key.entry((pid, key)).or_insert(stack);
            if first != stack {
                self.tracer.model.same_site(pid, stack, first);
            }
        }
    }

    /// A one-line hint for each process found, during this command, to
    /// have JIT frames without names: how its runtime writes a perf map.
    pub(super) fn jit_hints(&mut self) -> Vec<Report> {
        self.tracer
            .addresses
            .symbolizer
            .take_unnamed_jit()
            .into_iter()
            .map(|(pid, gap)| {
                let program = crate::procfs::status(pid)
                    .map(|s| s.name)
                    .unwrap_or_default();
                Report::message(unnamed_jit_hint(pid, gap, &program))
            })
            .collect()
    }
}

/// The hint for process `pid` (its `comm` is `program`), whose stacks run
/// code that its perf map does not name, for the reason `gap`.
fn unnamed_jit_hint(pid: Pid, gap: UnnamedJit, program: &str) -> String {
    if gap == UnnamedJit::InterpreterFrames {
        return format!(
            "hint: process {pid} runs interpreted JavaScript that its perf map does not name: \
             start node with `--interpreted-frames-native-stack` too"
        );
    }
    let node = "start Node.js with `node --perf-basic-prof --interpreted-frames-native-stack`";
    let jvm = format!("run `jcmd {pid} Compiler.perfmap` for a JVM");
    let python = "start Python 3.12+ with `python -X perf`";
    let how = if program == "node" || program.starts_with("node-") {
        node.to_string()
    } else if program == "java" {
        jvm
    } else if program.starts_with("python") {
        python.to_string()
    } else {
        format!("{node}, {jvm}, or {python}")
    };
    format!("hint: process {pid} has JIT frames without names (no /tmp/perf-{pid}.map): {how}")
}

#[cfg(test)]
mod tests {
    use super::{UnnamedJit, unnamed_jit_hint};

    #[test]
    fn the_hint_names_the_runtimes_flag() {
        let hint = |program| unnamed_jit_hint(42, UnnamedJit::NoPerfMap, program);
        assert_eq!(
            hint("node"),
            "hint: process 42 has JIT frames without names (no /tmp/perf-42.map): \
             start Node.js with `node --perf-basic-prof --interpreted-frames-native-stack`"
        );
        assert!(hint("java").ends_with("run `jcmd 42 Compiler.perfmap` for a JVM"));
        assert!(hint("python3.12").ends_with("`python -X perf`"));
        let unknown = hint("server");
        assert!(unknown.contains("--perf-basic-prof") && unknown.contains("jcmd 42"));
        assert!(!unknown.contains('\n'));
        let interpreted = unnamed_jit_hint(42, UnnamedJit::InterpreterFrames, "node");
        assert!(interpreted.ends_with("`--interpreted-frames-native-stack` too"));
    }
}
