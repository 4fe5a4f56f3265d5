//! A training run's samplers, seen from the learner: threads of this process (the default), or
//! `noregret sampler` processes on any machine, reached through a Redis server. The training
//! loop sees only a transport (groups in), a version slot (adapters out) and this.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Result;

use crate::experiment::Experiment;
use rollout::broker::feeder::{self, Feeder};
use rollout::broker::learner::{GroupsIn, LearnerLink};
use rollout::broker::BrokerConfig;
use rollout::{Control, Dispenser, Engine, Snapshot, Totals, Transport, VersionSlot};

pub enum Samplers {
    Local(Engine),
    Remote(Remote),
}

impl Samplers {
    /// Make `snapshot` the version samplers take next. Remote samplers find the work it lets
    /// start in the stream before they hear of it.
    pub fn publish(&self, versions: &VersionSlot, snapshot: Snapshot) -> Result<()> {
        if let Samplers::Remote(r) = self {
            if let Some(f) = &r.feeder {
                f.feed(snapshot.version)?;
            }
            r.link.publish(&snapshot)?;
        }
        versions.publish(snapshot);
        Ok(())
    }

    /// Why the samplers (or, remotely, the feeder) stopped the run, if they did.
    pub fn failure(&self) -> Option<String> {
        match self {
            Samplers::Local(engine) => engine.failure(),
            Samplers::Remote(r) => r.control.failure(),
        }
    }

    /// The samplers' counters; remotely, the sums the sampler processes reported.
    pub fn totals(&self) -> Totals {
        match self {
            Samplers::Local(engine) => engine.totals(),
            Samplers::Remote(r) => r.counters().0,
        }
    }

    /// Groups the server's stream cap dropped (remote only).
    pub fn trimmed(&self) -> Option<u64> {
        match self {
            Samplers::Local(_) => None,
            Samplers::Remote(r) => Some(r.counters().1),
        }
    }

    /// The run is complete: remote samplers may exit.
    pub fn finish(&self) -> Result<()> {
        if let Samplers::Remote(r) = self {
            r.link.finish()?;
        }
        Ok(())
    }

    pub fn stop(self) {
        match self {
            Samplers::Local(engine) => engine.stop(),
            Samplers::Remote(mut r) => r.stop(),
        }
    }
}

/// The learner's side of remote sampling.
pub struct Remote {
    config: BrokerConfig,
    link: Arc<LearnerLink>,
    groups: Arc<GroupsIn>,
    feeder: Option<Arc<Feeder>>,
    thread: Option<JoinHandle<()>>,
    control: Arc<Control>,
    /// The last counters read (kept when a read fails; the failure is reported elsewhere).
    last: Mutex<(Totals, u64)>,
}

impl Remote {
    /// Register the run on the server and open the groups stream; a resumed run's
    /// unacknowledged groups are delivered again first.
    pub fn connect(exp: &Experiment, url: &str, run: &Path, fingerprint: &str, resume: bool) -> Result<Remote> {
        let config = crate::remote::broker_config(exp, url)?;
        let contract = crate::remote::contract(exp);
        let link = Arc::new(LearnerLink::register(&config, &run.display().to_string(), fingerprint, &contract, resume)?);
        let groups = Arc::new(GroupsIn::open(&config, &link)?);
        eprintln!(
            "samplers: `noregret sampler --connect {url} CONFIG` on any machine (run {}, learner incarnation {})",
            run.display(),
            link.registration().incarnation
        );
        let control = Arc::new(Control::new());
        Ok(Remote { config, link, groups, feeder: None, thread: None, control, last: Mutex::new((Totals::default(), 0)) })
    }

    pub fn transport(&self) -> Arc<dyn Transport> {
        self.groups.clone()
    }

    /// Groups on the server already (from before a resume), which need not be sampled again.
    pub fn waiting_ids(&self) -> Result<Vec<u64>> {
        Ok(self.groups.waiting_ids()?)
    }

    /// Publish the learner's current version and start feeding the dispenser's work.
    pub fn start(mut self, dispenser: Arc<Dispenser>, versions: Arc<VersionSlot>) -> Result<Samplers> {
        let feeder = Arc::new(Feeder::new(&self.config, &self.link, dispenser)?);
        let first = versions.latest();
        feeder.feed(first.version)?;
        self.link.publish(&first)?;
        self.thread = Some(feeder::spawn(feeder.clone(), self.link.clone(), versions, self.control.clone()));
        self.feeder = Some(feeder);
        Ok(Samplers::Remote(self))
    }

    fn counters(&self) -> (Totals, u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match self.link.totals() {
            Ok(now) => *last = now,
            Err(e) => tracing::warn!("cannot read the samplers' counters: {e}"),
        }
        *last
    }

    fn stop(&mut self) {
        self.control.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.groups.close();
    }
}
