//! Which groups samplers start, and when. The lag budget is enforced here, before generation:
//! a group is started only if the learner will still accept it when it is done.
//!
//! Group `g` is planned for batch `(g - first) / groups_per_batch`, which the learner trains at
//! version `base_version + batch · versions_per_batch`. A sampler that sees version `v` may start
//! it only if that version is at most `v + max_staleness`; at `max_staleness = 0` this makes
//! every group of a batch start from the version that trains on it (synchronous, on-policy).
//! With several samplers and `deterministic`, group `g` always goes to sampler
//! `(g - first) mod samplers`, so the same seed gives the same trajectories whatever the timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use envs::{Cursor, EnvGroup, GroupSource};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy)]
pub struct WorkPlan {
    pub groups_per_batch: u64,
    /// Optimiser steps (so adapter versions) per batch.
    pub versions_per_batch: u64,
    pub max_staleness: u64,
    pub samplers: usize,
    /// Fixed assignment of groups to samplers (for reproducible runs).
    pub deterministic: bool,
}

/// Where a resumed run picks up the training stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The source's position before the first group not yet consumed.
    pub cursor: Cursor,
    /// Groups after that one which were consumed already (asynchronous runs consume out of
    /// order); they are not played again.
    pub consumed_after: BTreeSet<u64>,
    /// The learner's version when this position was saved.
    pub version: u64,
}

struct State {
    source: GroupSource,
    /// Drawn from the source but not handed out yet.
    drawn: BTreeMap<u64, EnvGroup>,
    /// The source's position before each drawn group, until the learner has consumed it.
    cursors: BTreeMap<u64, Cursor>,
    skip: BTreeSet<u64>,
    /// Next id for each sampler in deterministic mode.
    next_for: Vec<u64>,
    exhausted: bool,
}

pub struct Dispenser {
    plan: WorkPlan,
    first: u64,
    base_version: u64,
    state: Mutex<State>,
}

impl Dispenser {
    /// Hand out groups from `source`, from its current cursor, or from `resume`.
    pub fn new(mut source: GroupSource, plan: WorkPlan, resume: Option<StreamPosition>) -> Dispenser {
        let (skip, base_version) = match resume {
            Some(p) => {
                source.set_cursor(p.cursor);
                (p.consumed_after, p.version)
            }
            None => (BTreeSet::new(), 0),
        };
        let first = source.cursor().groups;
        let samplers = plan.samplers.max(1);
        let plan = WorkPlan { samplers, groups_per_batch: plan.groups_per_batch.max(1), ..plan };
        let next_for = (0..samplers as u64).map(|i| first + i).collect();
        let state = State { source, drawn: BTreeMap::new(), cursors: BTreeMap::new(), skip, next_for, exhausted: false };
        Dispenser { plan, first, base_version, state: Mutex::new(state) }
    }

    pub fn plan(&self) -> WorkPlan {
        self.plan
    }

    /// The version the learner will be at when it trains group `id` (if nothing is dropped).
    pub fn planned_version(&self, id: u64) -> u64 {
        let batch = id.saturating_sub(self.first) / self.plan.groups_per_batch;
        self.base_version + batch * self.plan.versions_per_batch
    }

    /// The next group for `sampler`, if the lag budget lets one start at `version`.
    pub fn take(&self, sampler: usize, version: u64) -> Option<EnvGroup> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = version + self.plan.max_staleness;
        if self.plan.deterministic {
            let slot = sampler % self.plan.samplers;
            loop {
                let id = st.next_for[slot];
                if self.planned_version(id) > limit {
                    return None;
                }
                st.next_for[slot] += self.plan.samplers as u64;
                if st.skip.contains(&id) {
                    continue;
                }
                Self::draw_through(&mut st, id);
                if let Some(group) = st.drawn.remove(&id) {
                    return Some(group);
                }
                if st.exhausted {
                    return None;
                }
            }
        }
        loop {
            if st.drawn.is_empty() && !Self::draw_one(&mut st) {
                return None;
            }
            let (&id, _) = st.drawn.iter().next()?;
            if self.planned_version(id) > limit {
                return None;
            }
            let group = st.drawn.remove(&id)?;
            if !st.skip.contains(&id) {
                return Some(group);
            }
        }
    }

    /// Draw groups until `id` has been drawn (or the source runs dry).
    fn draw_through(st: &mut State, id: u64) {
        while st.source.cursor().groups <= id && !st.exhausted {
            Self::draw_one(st);
        }
    }

    fn draw_one(st: &mut State) -> bool {
        let before = st.source.cursor();
        match st.source.next_group() {
            Some(group) => {
                st.cursors.insert(group.id, before);
                st.drawn.insert(group.id, group);
                true
            }
            None => {
                st.exhausted = true;
                false
            }
        }
    }

    /// The stream position to save in a checkpoint: groups below `low` and those in
    /// `consumed_after` are consumed, at learner version `version`. Forgets what it no longer needs.
    pub fn position(&self, low: u64, consumed_after: &BTreeSet<u64>, version: u64) -> StreamPosition {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = match st.cursors.get(&low) {
            Some(c) => *c,
            // Not drawn yet: everything drawn so far is consumed, so the source's own position.
            None => st.source.cursor(),
        };
        st.cursors = st.cursors.split_off(&low);
        StreamPosition { cursor, consumed_after: consumed_after.iter().copied().filter(|&g| g > low).collect(), version }
    }
}
