//! Stacks that are one site: the caller (who can name stacks) says that
//! two stacks created their fds at the same place, and every grouping of
//! the model (`leaks`, `diff`, the closers of a site) counts them as one.
//!
//! Exists for JIT code, where one function runs as different machine code
//! over time (interpreted, then baseline, then optimized) and so gives
//! different return addresses for the same call. The model holds stack
//! ids, never names: which stacks are the same is decided above it.

use rustc_hash::FxHashMap as HashMap;

use super::SiteTotals;
use crate::stacks::StackId;

/// Stacks joined to another: each joined stack names its site's first
/// stack (the representative), which names none.
#[derive(Clone, Debug, Default)]
pub(super) struct SiteGroups {
    representative: HashMap<StackId, StackId>,
    members: HashMap<StackId, Vec<StackId>>,
}

impl SiteGroups {
    /// The stack that names the site of `stack`.
    pub(super) fn site_of(&self, stack: Option<StackId>) -> Option<StackId> {
        stack.map(|s| self.representative.get(&s).copied().unwrap_or(s))
    }

    /// The other stacks of the site `representative` names.
    pub(super) fn members(&self, representative: Option<StackId>) -> &[StackId] {
        representative
            .and_then(|r| self.members.get(&r))
            .map_or(&[], Vec::as_slice)
    }

    /// From now on `stack` is of the site of `as_stack`. A stack that is
    /// already in a site of several, or names one, stays where it is.
    pub(super) fn join(&mut self, stack: StackId, as_stack: StackId) {
        let site = self.site_of(Some(as_stack)).unwrap_or(as_stack);
        if site == stack
            || self.representative.contains_key(&stack)
            || self.members.contains_key(&stack)
        {
            return;
        }
        self.representative.insert(stack, site);
        self.members.entry(site).or_default().push(stack);
    }
}

impl SiteTotals {
    /// The totals of two stacks of one site.
    pub(super) fn merged(self, other: SiteTotals) -> SiteTotals {
        if self.created == 0 {
            return other;
        }
        if other.created == 0 {
            return self;
        }
        SiteTotals {
            created: self.created + other.created,
            closed: self.closed + other.closed,
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }
}
