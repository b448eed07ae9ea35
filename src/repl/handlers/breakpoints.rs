//! Breakpoints, catchpoints and measured functions: `break`, `catch`,
//! `info breakpoints`, `delete`, `enable`, `disable` and `balance`. Part of
//! `Session`: data only.

use crate::fdtable;
use crate::repl::breakpoints::Condition;
use crate::repl::report::*;
use crate::tracer::ProbeOwner;

use super::Session;

impl Session {
    /// `break` and `catch`: a new breakpoint or catchpoint; a function
    /// breakpoint is armed where its function is loaded, else pending.
    pub fn add_breakpoint(&mut self, condition: Condition) -> Result<Report, String> {
        let mut breakpoint = self.breakpoints.add(condition.clone()).clone();
        let id = breakpoint.id;
        if let Condition::Func { pattern } = &condition {
            let line = crate::symbolize::functions::source_line(pattern);
            let sites = match (
                self.tracer
                    .add_function_breakpoint(ProbeOwner::User(id), pattern, false),
                line,
            ) {
                // A function: perhaps in a library loaded later.
                (Ok(sites), None) if sites.is_empty() => {
                    if let Err(why) = self.tracer.add_pending_breakpoint(id, pattern) {
                        let _ = self.breakpoints.delete(Some(id));
                        return Err(format!(
                            "no function named '{}' in the program or the libraries it has loaded, and {why}",
                            crate::escape::escape(pattern)
                        ));
                    }
                    Ok(Vec::new())
                }
                (Ok(sites), Some((file, line))) if sites.is_empty() => Err(format!(
                    "no code for line {line} of a file named '{}' in the DWARF of the program or the libraries it has loaded now",
                    crate::escape::escape(file)
                )),
                (other, _) => other.map_err(String::from),
            };
            let sites = match sites {
                Ok(sites) => sites,
                Err(why) => {
                    let _ = self.breakpoints.delete(Some(id));
                    self.tracer
                        .remove_function_breakpoint(Some(ProbeOwner::User(id)));
                    return Err(why);
                }
            };
            let pid = self.tracer.target.main_pid;
            let locations: Vec<crate::symbolize::Frame> = sites
                .iter()
                .map(|site| self.location(pid, site.address))
                .collect();
            if let Some(bp) = self.breakpoints.get_mut(id) {
                bp.locations = locations.clone();
            }
            breakpoint.locations = locations;
        }
        Ok(Report::BreakpointSet(BreakpointSetReport { breakpoint }))
    }

    /// `info breakpoints`: every breakpoint, and where each function
    /// breakpoint is armed now (a pending one may have resolved in a
    /// library loaded since).
    pub(super) fn info_breakpoints(&mut self) -> Report {
        let pid = self.tracer.target.main_pid;
        let armed: Vec<(u32, u64)> = self
            .tracer
            .function_breakpoints()
            .iter()
            .filter_map(|b| match b.owner {
                ProbeOwner::User(id) => Some((id, b)),
                _ => None,
            })
            .flat_map(|(id, b)| b.armed.iter().map(move |a| (id, a.site.address)))
            .collect();
        let mut breakpoints = self.breakpoints.list().to_vec();
        for bp in &mut breakpoints {
            if matches!(bp.condition, Condition::Func { .. }) {
                bp.locations = armed
                    .iter()
                    .filter(|(id, _)| *id == bp.id)
                    .map(|&(_, address)| self.location(pid, address))
                    .collect();
            }
        }
        Report::Breakpoints(BreakpointsReport { breakpoints })
    }

    /// `delete [N]`: breakpoint N, or every one.
    pub(super) fn delete(&mut self, id: Option<u32>) -> Result<Report, String> {
        let n = self.breakpoints.delete(id)?;
        self.tracer
            .remove_function_breakpoint(id.map(ProbeOwner::User));
        Ok(Report::message(format!(
            "deleted {n} breakpoint{}",
            if n == 1 { "" } else { "s" }
        )))
    }

    /// `enable N`: a function breakpoint is armed again where its function
    /// is loaded, else pending.
    pub(super) fn enable(&mut self, id: u32) -> Result<Report, String> {
        self.breakpoints.set_enabled(id, true)?;
        let func = self
            .breakpoints
            .list()
            .iter()
            .find_map(|b| match &b.condition {
                Condition::Func { pattern } if b.id == id => Some(pattern.clone()),
                _ => None,
            });
        if let Some(pattern) = func
            && !self
                .tracer
                .function_breakpoints()
                .iter()
                .any(|f| f.owner == ProbeOwner::User(id))
        {
            let sites =
                self.tracer
                    .add_function_breakpoint(ProbeOwner::User(id), &pattern, false)?;
            if sites.is_empty() && crate::symbolize::functions::source_line(&pattern).is_none() {
                // Still in no loaded object: pending again.
                self.tracer.add_pending_breakpoint(id, &pattern)?;
            }
        }
        Ok(Report::message(format!("breakpoint {id} enabled")))
    }

    /// `disable N`: kept, but stops nothing (a function breakpoint's probes
    /// are removed).
    pub(super) fn disable(&mut self, id: u32) -> Result<Report, String> {
        self.breakpoints.set_enabled(id, false)?;
        self.tracer
            .remove_function_breakpoint(Some(ProbeOwner::User(id)));
        Ok(Report::message(format!("breakpoint {id} disabled")))
    }

    /// `balance NAME`: measure every call of NAME from now on.
    pub(super) fn start_balance(&mut self, name: &str) -> Result<Report, String> {
        if self.balances.iter().any(|b| b.function == name) {
            return Err(format!(
                "'{}' is measured already",
                crate::escape::escape(name)
            ));
        }
        let id = self.balances.len() as u32;
        let owner = ProbeOwner::Balance(id);
        let sites = self.tracer.add_function_breakpoint(owner, name, false)?;
        if sites.is_empty() {
            self.tracer.remove_function_breakpoint(Some(owner));
            return Err(format!(
                "no function named '{}' in the program or the libraries it has loaded now",
                crate::escape::escape(name)
            ));
        }
        self.balances
            .push(crate::repl::balance::Balance::new(id, name));
        Ok(Report::message(format!(
            "measuring every call of {} from now on ({} function{}; 2 stops per call)",
            crate::escape::escape(name),
            sites.len(),
            if sites.len() == 1 { "" } else { "s" }
        )))
    }

    pub(super) fn balance_report(&mut self) -> Report {
        self.check_model();
        let pid = self.tracer.target.main_pid;
        let sockets = self.sockets_of(pid);
        let mut entries = Vec::new();
        for i in 0..self.balances.len() {
            let balance = &self.balances[i];
            let open: Vec<fdtable::OpenFd> = self
                .tracer
                .model
                .open_fds(pid)
                .into_iter()
                .filter(|o| {
                    matches!(o.origin, fdtable::Origin::Created(seq) if balance.creations.contains(&seq))
                })
                .cloned()
                .collect();
            let still_open = open.len() as u64;
            let sites = self.tracer.model.sites(pid, open.iter(), "before attach");
            let (function, calls, opened, closed) = (
                balance.function.clone(),
                balance.calls,
                balance.opened,
                balance.closed,
            );
            let sites = self.site_reports(pid, &sites, &sockets);
            entries.push(BalanceEntry {
                function,
                calls,
                opened,
                closed,
                still_open,
                per_call: if calls == 0 {
                    0.0
                } else {
                    (still_open as f64 - closed as f64) / calls as f64
                },
                sites,
            });
        }
        Report::Balance(BalanceReport { balance: entries })
    }
}
