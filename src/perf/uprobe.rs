//! Uprobes defined through tracefs (`uprobe_events`): a probe at a file
//! offset of an executable or library, or at the return of the function
//! there, becomes a tracepoint with an id, opened like any other with
//! `SyscallTrap` (so the kernel sends a SIGTRAP at each hit).
//!
//! Why tracefs rather than the `uprobe` PMU: a PMU uprobe event opened with
//! `inherit` re-reads its path (a pointer into fdbg's memory) in every new
//! thread of the process, and the clone fails with EFAULT; a tracepoint has
//! nothing to re-read, so it is inherited like the syscall events. The
//! kernel places the breakpoint in the process only while an event on it is
//! enabled, and restores the code itself when the last one closes, so a
//! killed fdbg leaves no patched code behind; only the definition stays in
//! tracefs (`remove_stale` deletes those of fdbg processes that are gone).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{PerfError, tracepoint_id};

/// One probe definition, removed from tracefs when dropped (its events must
/// be closed first: the kernel refuses to remove a probe in use).
pub struct Uprobe {
    tracefs: PathBuf,
    group: String,
    name: String,
    /// The tracepoint id to open.
    pub id: u64,
}

/// The group of this fdbg process's probes.
fn own_group() -> String {
    format!("fdbg_{}", std::process::id())
}

fn write_definition(tracefs: &Path, line: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .open(tracefs.join("uprobe_events"))?;
    file.write_all(format!("{line}\n").as_bytes())
}

impl Uprobe {
    /// Define `name` at `offset` in `path` (a return probe with `ret`).
    pub fn define(
        tracefs: &Path,
        name: &str,
        path: &Path,
        offset: u64,
        ret: bool,
    ) -> Result<Uprobe, PerfError> {
        let group = own_group();
        let kind = if ret { 'r' } else { 'p' };
        let line = format!("{kind}:{group}/{name} {}:{offset:#x}", path.display());
        write_definition(tracefs, &line).map_err(PerfError::Uprobe)?;
        let id = tracepoint_id(tracefs, &group, name).inspect_err(|_| {
            let _ = write_definition(tracefs, &format!("-:{group}/{name}"));
        })?;
        Ok(Uprobe {
            tracefs: tracefs.to_path_buf(),
            group,
            name: name.to_string(),
            id,
        })
    }
}

impl Drop for Uprobe {
    fn drop(&mut self) {
        let _ = write_definition(&self.tracefs, &format!("-:{}/{}", self.group, self.name));
    }
}

/// Remove the probe definitions left by fdbg processes that are gone (a
/// SIGKILLed fdbg cannot remove its own).
pub fn remove_stale(tracefs: &Path) {
    let Ok(text) = std::fs::read_to_string(tracefs.join("uprobe_events")) else {
        return;
    };
    for line in text.lines() {
        // "p:fdbg_123/b1 /path:0x..."
        let Some(event) = line
            .split_whitespace()
            .next()
            .and_then(|e| e.split_once(':'))
        else {
            continue;
        };
        let Some((group, name)) = event.1.split_once('/') else {
            continue;
        };
        let Some(pid) = group
            .strip_prefix("fdbg_")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = write_definition(tracefs, &format!("-:{group}/{name}"));
        }
    }
}
