//! One process's open fds by number, in ascending order.
//!
//! Every fd event looks an fd up, and most insert or remove one: numbers
//! below `DENSE` (where a process's fds are, the kernel giving out the
//! lowest free one) live in a vector indexed by the number, so that an
//! open or a close is an index and no search or shifting of neighbours (a
//! BTreeMap's nodes move their ~100-byte entries on every removal); the
//! rare numbers above (dup2 onto a high fd, a process with tens of
//! thousands open) in a BTreeMap. The vector grows to the highest number
//! used below `DENSE`: at most `DENSE` entries.

use std::collections::BTreeMap;

use super::OpenFd;

/// Fd numbers below this are kept by index.
const DENSE: i32 = 1 << 14;

#[derive(Clone, Debug, Default)]
pub(crate) struct FdTable {
    dense: Vec<Option<OpenFd>>,
    /// Numbers from `DENSE` up (and any negative one).
    sparse: BTreeMap<i32, OpenFd>,
    len: usize,
}

impl FdTable {
    fn index(fd: i32) -> Option<usize> {
        (0..DENSE).contains(&fd).then_some(fd as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, fd: &i32) -> Option<&OpenFd> {
        match Self::index(*fd) {
            Some(i) => self.dense.get(i)?.as_ref(),
            None => self.sparse.get(fd),
        }
    }

    pub(crate) fn get_mut(&mut self, fd: &i32) -> Option<&mut OpenFd> {
        match Self::index(*fd) {
            Some(i) => self.dense.get_mut(i)?.as_mut(),
            None => self.sparse.get_mut(fd),
        }
    }

    pub(crate) fn contains_key(&self, fd: &i32) -> bool {
        self.get(fd).is_some()
    }

    /// Put `open` at `fd`; the fd that was there, if any.
    pub(crate) fn insert(&mut self, fd: i32, open: OpenFd) -> Option<OpenFd> {
        let old = match Self::index(fd) {
            Some(i) => {
                if self.dense.len() <= i {
                    self.dense.resize_with(i + 1, || None);
                }
                self.dense[i].replace(open)
            }
            None => self.sparse.insert(fd, open),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, fd: &i32) -> Option<OpenFd> {
        let old = match Self::index(*fd) {
            Some(i) => self.dense.get_mut(i)?.take(),
            None => self.sparse.remove(fd),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// The open fds, by number.
    pub(crate) fn values(&self) -> impl Iterator<Item = &OpenFd> {
        let negative = self.sparse.range(..0).map(|(_, open)| open);
        let high = self.sparse.range(0..).map(|(_, open)| open);
        negative.chain(self.dense.iter().flatten()).chain(high)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut OpenFd> {
        self.dense
            .iter_mut()
            .flatten()
            .chain(self.sparse.values_mut())
    }

    /// The numbers of the open fds from `first` up, ascending.
    pub(crate) fn fds_from(&self, first: i32) -> impl Iterator<Item = i32> + '_ {
        self.values()
            .map(|open| open.fd)
            .filter(move |&fd| fd >= first)
    }

    /// Keep only the fds `keep` says yes to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&i32, &mut OpenFd) -> bool) {
        for (i, slot) in self.dense.iter_mut().enumerate() {
            if let Some(open) = slot
                && !keep(&(i as i32), open)
            {
                *slot = None;
                self.len -= 1;
            }
        }
        let before = self.sparse.len();
        self.sparse.retain(|fd, open| keep(fd, open));
        self.len -= before - self.sparse.len();
    }
}

impl FromIterator<(i32, OpenFd)> for FdTable {
    fn from_iter<I: IntoIterator<Item = (i32, OpenFd)>>(iter: I) -> Self {
        let mut table = FdTable::default();
        for (fd, open) in iter {
            table.insert(fd, open);
        }
        table
    }
}

impl IntoIterator for FdTable {
    type Item = (i32, OpenFd);
    type IntoIter = Box<dyn Iterator<Item = (i32, OpenFd)>>;

    fn into_iter(self) -> Self::IntoIter {
        let (negative, high): (Vec<_>, Vec<_>) =
            self.sparse.into_iter().partition(|&(fd, _)| fd < 0);
        let dense = self.dense.into_iter().flatten().map(|open| (open.fd, open));
        Box::new(negative.into_iter().chain(dense).chain(high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::{FdKind, Origin};

    fn open(fd: i32) -> OpenFd {
        OpenFd {
            fd,
            kind: FdKind::File,
            target: None,
            cloexec: fd % 2 == 0,
            origin: Origin::BeforeAttach,
            stack: None,
            syscall: "",
            tid: 0,
            created_at: 0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn fds_by_index_and_beyond_read_as_one_ascending_table() {
        let fds = [DENSE + 5, 7, 0, DENSE - 1, 3, DENSE, 1_000_000];
        let mut table: FdTable = fds.iter().map(|&fd| (fd, open(fd))).collect();
        assert_eq!(table.len(), fds.len());
        let mut sorted = fds.to_vec();
        sorted.sort_unstable();
        let listed: Vec<i32> = table.values().map(|o| o.fd).collect();
        assert_eq!(listed, sorted);
        assert_eq!(
            table.fds_from(DENSE - 1).collect::<Vec<_>>(),
            [DENSE - 1, DENSE, DENSE + 5, 1_000_000]
        );
        // A second insert replaces and does not count twice.
        assert_eq!(table.insert(7, open(7)).map(|o| o.fd), Some(7));
        assert_eq!(table.len(), fds.len());
        assert_eq!(table.remove(&DENSE).map(|o| o.fd), Some(DENSE));
        assert_eq!(table.remove(&DENSE), None);
        assert_eq!(
            table.remove(&(DENSE - 2)),
            None,
            "never there, inside the vector"
        );
        assert_eq!(table.remove(&(DENSE * 4)), None, "never there, beyond it");
        assert!(table.get(&3).is_some() && table.get(&4).is_none());
        assert_eq!(table.len(), fds.len() - 1);
        // Odd fds only.
        table.retain(|fd, open| {
            assert_eq!(*fd, open.fd);
            !open.cloexec
        });
        let kept: Vec<i32> = table.clone().into_iter().map(|(fd, _)| fd).collect();
        assert_eq!(kept, [3, 7, DENSE - 1, DENSE + 5]);
        assert_eq!(table.len(), 4);
    }
}
