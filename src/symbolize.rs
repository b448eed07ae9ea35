//! Turning a stack's raw addresses into frames that name their module.
//!
//! Lazy: a stack is only turned into frames when something shows it.
//! Addresses are placed in the object mapped at them, from /proc/PID/maps;
//! the process's mappings are remembered at its exit, so stacks of a
//! process that is gone still name their modules. Without more, a frame is
//! `module+0xoffset` (the offset into the object's file).

use std::collections::HashMap;

use serde::Serialize;

use crate::fdtable::Pid;
use crate::modules::{CodeMapping, read_code_mappings};
use crate::stacks::Stack;

/// One frame of a shown stack (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The code address in the process, hex.
    pub address: String,
    /// The object's path as the process maps it.
    pub module: Option<String>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: bool,
    /// Offset into the module's file, for `module+0xoffset`.
    #[serde(skip)]
    pub offset: Option<u64>,
}

#[derive(Default)]
pub struct Symbolizer {
    maps: HashMap<Pid, Vec<CodeMapping>>,
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer::default()
    }

    /// Read the mappings of `pid` now (at its exit, while they exist).
    pub fn remember(&mut self, pid: Pid) {
        let maps = read_code_mappings(pid);
        if !maps.is_empty() {
            self.maps.insert(pid, maps);
        }
    }

    /// Forget mappings after an exec: the process has a new address space.
    pub fn forget(&mut self, pid: Pid) {
        self.maps.remove(&pid);
    }

    fn mapping(&mut self, pid: Pid, address: u64) -> Option<&CodeMapping> {
        let covered = |maps: &Vec<CodeMapping>| maps.iter().any(|m| m.avma.contains(&address));
        if !self.maps.get(&pid).is_some_and(covered) {
            self.remember(pid);
        }
        self.maps
            .get(&pid)?
            .iter()
            .find(|m| m.avma.contains(&address))
    }

    /// The frames of `stack`, innermost first.
    pub fn frames(&mut self, pid: Pid, stack: &Stack) -> Vec<Frame> {
        stack
            .addresses
            .iter()
            .map(|&address| {
                let mapping = self.mapping(pid, address);
                Frame {
                    address: format!("{address:#x}"),
                    module: mapping.map(|m| m.path.clone()),
                    function: None,
                    file: None,
                    line: None,
                    inlined: false,
                    offset: mapping.map(|m| address - m.avma.start + m.file_offset),
                }
            })
            .collect()
    }
}
