//! The learner's dispenser, fed to remote samplers: whatever the lag budget lets start at the
//! learner's version goes into the work stream, in group order, while the stream has room.
//! Samplers never decide what to play, so the data order and the lag budget stay the
//! learner's, exactly as in-process.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::learner::LearnerLink;
use super::wire::WorkItem;
use super::{BrokerConfig, BrokerError, Conn, Keys, Result};
use crate::control::Control;
use crate::versions::VersionSlot;
use crate::work::Dispenser;

pub struct Feeder {
    conn: Mutex<Conn>,
    keys: Keys,
    dispenser: Arc<Dispenser>,
    incarnation: u64,
    max_work: usize,
}

impl Feeder {
    pub fn new(config: &BrokerConfig, link: &LearnerLink, dispenser: Arc<Dispenser>) -> Result<Feeder> {
        let conn = Conn::open(&config.endpoint)?;
        let keys = link.keys().clone();
        Ok(Feeder { conn: Mutex::new(conn), keys, dispenser, incarnation: link.registration().incarnation, max_work: config.max_work.max(1) })
    }

    /// Release every group that may start at learner version `version`, while the work stream
    /// holds fewer than its cap. Returns how many were released.
    pub fn feed(&self, version: u64) -> Result<usize> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let queued: usize = conn.run(|c| redis::cmd("XLEN").arg(self.keys.work()).query(c))?;
        let staleness = self.dispenser.plan().max_staleness;
        let mut items = Vec::new();
        while queued + items.len() < self.max_work {
            let Some(group) = self.dispenser.take(0, version) else { break };
            let item = WorkItem {
                incarnation: self.incarnation,
                id: group.id,
                epoch: group.epoch,
                problem: (*group.problem).clone(),
                not_before: self.dispenser.planned_version(group.id).saturating_sub(staleness),
            };
            items.push(serde_json::to_string(&item).map_err(|e| BrokerError(e.to_string()))?);
        }
        if items.is_empty() {
            return Ok(0);
        }
        conn.run(|c| {
            let mut p = redis::pipe();
            p.atomic();
            for item in &items {
                p.cmd("XADD").arg(self.keys.work()).arg("*").arg("item").arg(item).ignore();
            }
            p.query::<()>(c)
        })?;
        Ok(items.len())
    }
}

/// How often the feeder looks for room in the work stream between versions.
const REFILL: Duration = Duration::from_millis(50);
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Feed in the background (refills as samplers finish work; new versions are fed by the
/// publisher itself, before they are announced) and keep the learner's heartbeat. A failure
/// stops the run through `control`.
pub fn spawn(feeder: Arc<Feeder>, link: Arc<LearnerLink>, versions: Arc<VersionSlot>, control: Arc<Control>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("redis-feeder".into())
        .spawn(move || {
            let mut beat = Instant::now();
            while !control.stopped() {
                let version = versions.version();
                if let Err(e) = feeder.feed(version) {
                    control.fail(e.0);
                    return;
                }
                if beat.elapsed() >= HEARTBEAT {
                    if let Err(e) = link.heartbeat() {
                        control.fail(e.0);
                        return;
                    }
                    beat = Instant::now();
                }
                versions.wait_newer(version, REFILL);
            }
        })
        .expect("spawning the feeder thread")
}
