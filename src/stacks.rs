//! Interned call stacks: a stack is stored once and named by a `StackId`.
//!
//! A stack is the list of code addresses (AVMAs) of one thread at one stop,
//! innermost first: the first entry is the instruction pointer, the rest are
//! return addresses. Events keep only the id, so a million events from a
//! hundred distinct stacks cost a hundred stacks. No I/O here.

#![forbid(unsafe_code)]

use rustc_hash::FxHashMap as HashMap;

/// Names one distinct stack in a `StackTable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// A captured stack: the addresses, innermost first, and why the walk ended
/// early if it did (`None` when it reached the outermost frame).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stack {
    pub addresses: Vec<u64>,
    pub truncated: Option<String>,
    /// Which address space of the process the addresses belong to: 0 from
    /// its start (or attach), one more after each exec. The same addresses
    /// after an exec are other code.
    pub generation: u32,
}

#[derive(Default)]
pub struct StackTable {
    stacks: Vec<Stack>,
    ids: HashMap<Stack, StackId>,
}

impl StackTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `stack`, storing it if it was not seen before.
    pub fn intern(&mut self, stack: Stack) -> StackId {
        if let Some(&id) = self.ids.get(&stack) {
            return id;
        }
        let id = StackId(self.stacks.len() as u32);
        self.stacks.push(stack.clone());
        self.ids.insert(stack, id);
        id
    }

    pub fn get(&self, id: StackId) -> &Stack {
        &self.stacks[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_stack_is_stored_once() {
        let mut table = StackTable::new();
        let a = Stack {
            addresses: vec![1, 2, 3],
            truncated: None,
            generation: 0,
        };
        let b = Stack {
            addresses: vec![1, 2, 4],
            truncated: None,
            generation: 0,
        };
        let ia = table.intern(a.clone());
        let ib = table.intern(b);
        assert_ne!(ia, ib);
        assert_eq!(table.intern(a.clone()), ia);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(ia), &a);
    }
}
