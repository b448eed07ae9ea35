//! Breakpoints and catchpoints: which recorded events stop the process.
//!
//! Checked on the tracer's thread after every fd event while the process
//! runs. Conditions on fd numbers, counts and kinds look at the event only;
//! `break site` needs the event's frames, so it symbolizes the stack — once
//! per distinct stack, the answer cached by stack id.

use std::collections::HashMap;

use serde::Serialize;

use crate::fdtable::{Event, FdKind, Model};
use crate::stacks::StackId;
use crate::symbolize::{Frame, Symbolizer};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    /// fd number N is created or closed.
    Fd { fd: i32 },
    /// The open-fd count becomes greater than N.
    Count { count: u32 },
    /// An fd is created by a stack with a frame matching the pattern: a
    /// function-name substring, or FILE:LINE.
    Site { pattern: String },
    /// Every event of these kinds or syscall names.
    Catch { what: Vec<String> },
    /// A thread enters a function whose demangled name matches.
    Func { pattern: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Breakpoint {
    pub id: u32,
    pub condition: Condition,
    pub enabled: bool,
    pub hits: u64,
    /// Where a function breakpoint resolved: one frame per function.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Frame>,
}

impl Breakpoint {
    /// A function (or source line) breakpoint: hit through uprobes.
    pub fn is_function(&self) -> bool {
        matches!(self.condition, Condition::Func { .. })
    }

    pub fn is_catch(&self) -> bool {
        matches!(self.condition, Condition::Catch { .. })
    }

    pub fn describe(&self) -> String {
        match &self.condition {
            Condition::Fd { fd } => format!("break fd {fd}"),
            Condition::Count { count } => format!("break count {count}"),
            Condition::Site { pattern } => format!("break site {pattern}"),
            Condition::Catch { what } => format!("catch {}", what.join(" ")),
            Condition::Func { pattern }
                if crate::symbolize::functions::source_line(pattern).is_some() =>
            {
                format!("break {pattern}")
            }
            Condition::Func { pattern } => format!("break func {pattern}"),
        }
    }
}

#[derive(Default)]
pub struct Breakpoints {
    list: Vec<Breakpoint>,
    next_id: u32,
    /// (breakpoint id, stack) → does the site pattern match.
    site_matches: HashMap<(u32, StackId), bool>,
}

/// Check a `catch` word: a kind or a syscall name.
pub fn valid_catch(word: &str) -> bool {
    FdKind::parse(word).is_some()
        || crate::syscalls::traced_syscalls()
            .iter()
            .any(|&nr| crate::syscalls::syscall_name(nr) == Some(word))
        || word == "execve"
}

impl Breakpoints {
    pub fn add(&mut self, condition: Condition) -> &Breakpoint {
        self.next_id += 1;
        self.list.push(Breakpoint {
            id: self.next_id,
            condition,
            enabled: true,
            hits: 0,
            locations: Vec::new(),
        });
        self.list.last().expect("just pushed")
    }

    pub fn list(&self) -> &[Breakpoint] {
        &self.list
    }

    /// Delete one, or all with `None`. Errors name the missing id.
    pub fn delete(&mut self, id: Option<u32>) -> Result<usize, String> {
        match id {
            None => {
                let n = self.list.len();
                self.list.clear();
                Ok(n)
            }
            Some(id) => {
                let before = self.list.len();
                self.list.retain(|b| b.id != id);
                if self.list.len() == before {
                    return Err(format!("no breakpoint {id}; see 'info breakpoints'"));
                }
                Ok(1)
            }
        }
    }

    pub fn set_enabled(&mut self, id: u32, enabled: bool) -> Result<(), String> {
        let bp = self
            .list
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or_else(|| format!("no breakpoint {id}; see 'info breakpoints'"))?;
        bp.enabled = enabled;
        Ok(())
    }

    /// What the enabled breakpoints need of the event source: nothing
    /// (function breakpoints stop by their own probes), a stop at every fd
    /// event, (only counts) stops near the smallest count, or (only one
    /// `break fd`) the kernel's stops for that number.
    pub fn need(&self) -> crate::tracer::Need {
        use crate::tracer::Need;
        let mut counts = Vec::new();
        let mut fds = Vec::new();
        for bp in self.list.iter().filter(|b| b.enabled) {
            match bp.condition {
                Condition::Count { count } => counts.push(count),
                Condition::Fd { fd } => fds.push(fd),
                // Its own probe stops the process.
                Condition::Func { .. } => {}
                _ => return Need::Stops,
            }
        }
        match (fds.as_slice(), counts.iter().min()) {
            ([], None) => Need::Observe,
            ([], Some(&count)) => Need::StopsNear(count),
            // One number: the kernel stops what can touch it.
            (&[fd], None) => Need::WatchFd(fd),
            _ => Need::Stops,
        }
    }

    /// The breakpoint `id`, to note its locations or a hit.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Breakpoint> {
        self.list.iter_mut().find(|b| b.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.list.iter().all(|b| !b.enabled)
    }

    /// The first enabled breakpoint this event hits; its hit count goes up.
    pub fn check(
        &mut self,
        model: &Model,
        symbolizer: &mut Symbolizer,
        event: &Event,
    ) -> Option<&Breakpoint> {
        let mut hit = None;
        for i in 0..self.list.len() {
            let bp = &self.list[i];
            if !bp.enabled {
                continue;
            }
            let matched = match &bp.condition {
                Condition::Fd { fd } => event.creates_or_closes(*fd),
                Condition::Count { count } => {
                    let before = event.open_fds as i64 + event.closed.len() as i64
                        - event.created.len() as i64;
                    before <= *count as i64 && event.open_fds > *count
                }
                // A call that failed and changed nothing (accept4 = EAGAIN
                // in an event loop) is not worth a stop; a bad close is.
                Condition::Catch { what } => {
                    (event.result >= 0 || event.bad_close.is_some())
                        && what.iter().any(|w| {
                            w == event.syscall
                                || (!event.created.is_empty() && w == event.kind.as_str())
                        })
                }
                // Hit through the tracer's uprobes, not by fd events.
                Condition::Func { .. } => false,
                Condition::Site { pattern } => match event.stack {
                    Some(stack) if !event.created.is_empty() => {
                        let key = (bp.id, stack);
                        match self.site_matches.get(&key) {
                            Some(&m) => m,
                            None => {
                                let frames = symbolizer.frames(event.pid, model.stacks.get(stack));
                                let m = frames.iter().any(|f| site_matches(pattern, f));
                                self.site_matches.insert(key, m);
                                m
                            }
                        }
                    }
                    _ => false,
                },
            };
            if matched {
                hit = Some(i);
                break;
            }
        }
        let i = hit?;
        self.list[i].hits += 1;
        Some(&self.list[i])
    }
}

/// `FILE:LINE` (the file's path ends with FILE) or a function-name substring.
pub fn site_matches(pattern: &str, frame: &Frame) -> bool {
    if let Some((file, line)) = pattern.rsplit_once(':')
        && let Ok(line) = line.parse::<u32>()
    {
        return frame.line == Some(line)
            && frame
                .file
                .as_deref()
                .is_some_and(|f| f == file || f.ends_with(&format!("/{file}")));
    }
    frame
        .function
        .as_deref()
        .is_some_and(|f| f.contains(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            address: "0x1".into(),
            module: None,
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            ..Frame::default()
        }
    }

    #[test]
    fn site_patterns_match_function_substrings_and_file_lines() {
        let f = frame("statsd_init", "/src/app/statsd.c", 86);
        assert!(site_matches("statsd_init", &f));
        assert!(site_matches("statsd", &f));
        assert!(site_matches("statsd.c:86", &f));
        assert!(site_matches("app/statsd.c:86", &f));
        assert!(!site_matches("statsd.c:87", &f));
        assert!(!site_matches("tsd.c:86", &f));
        assert!(!site_matches("on_login", &f));
    }

    #[test]
    fn ids_grow_and_delete_names_missing_ones() {
        let mut bps = Breakpoints::default();
        assert_eq!(bps.add(Condition::Fd { fd: 3 }).id, 1);
        assert_eq!(bps.add(Condition::Count { count: 10 }).id, 2);
        assert!(bps.delete(Some(7)).unwrap_err().contains("no breakpoint 7"));
        assert_eq!(bps.delete(Some(1)), Ok(1));
        assert_eq!(
            bps.add(Condition::Catch {
                what: vec!["socket".into()]
            })
            .id,
            3
        );
        assert!(
            valid_catch("socket")
                && valid_catch("close")
                && valid_catch("pipe2")
                && !valid_catch("sock")
        );
    }

    /// `break` and `catch` answer with the breakpoint; its text and its
    /// JSON (a message) are what they were as preformatted text.
    #[test]
    fn a_new_breakpoint_reads_as_its_message() {
        use crate::repl::render;
        use crate::repl::report::{BreakpointSetReport, Report};
        let set = |condition: Condition, locations: Vec<Frame>| {
            Report::BreakpointSet(BreakpointSetReport {
                breakpoint: Breakpoint {
                    id: 2,
                    condition,
                    enabled: true,
                    hits: 0,
                    locations,
                },
            })
        };
        let func = |pattern: &str| Condition::Func {
            pattern: pattern.into(),
        };
        let cases = [
            (
                set(
                    Condition::Catch {
                        what: vec!["accept".into(), "socket".into()],
                    },
                    vec![],
                ),
                "Catchpoint 2: catch accept socket",
            ),
            (
                set(Condition::Fd { fd: 7 }, vec![]),
                "Breakpoint 2: break fd 7",
            ),
            (
                set(func("plugin_\x1b"), vec![]),
                "Breakpoint 2: break func plugin_\x1b (pending: no function named so is loaded now; fdbg looks again at every library the process loads)",
            ),
            (
                set(
                    func("on_login"),
                    vec![frame("on_login", "a.c", 3), frame("on_login", "b.c", 9)],
                ),
                "Breakpoint 2: break func on_login: on_login at a.c:3; on_login at b.c:9",
            ),
            (
                set(
                    func("statsd.c:86"),
                    vec![frame("statsd_init", "statsd.c", 86)],
                ),
                "Breakpoint 2: break statsd.c:86: statsd_init at statsd.c:86",
            ),
        ];
        for (report, message) in cases {
            assert_eq!(render::text(&report), render::escape(message));
            assert_eq!(
                render::json(&report),
                render::json(&Report::message(message))
            );
        }
    }
}
