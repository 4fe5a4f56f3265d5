//! A sampler process's side: find the learner, mirror its adapter versions into a local
//! [`VersionSlot`], take work from the `samplers` consumer group, and append finished groups.
//!
//! A work item stays pending on this process's consumer until its group is in the groups
//! stream; the append and the acknowledgement are one server-side script, so a crash leaves
//! either both or neither. Items in flight are renewed every third of `claim_after`; items of
//! a process that stopped renewing them (killed, frozen, cut off) are claimed by another
//! sampler once they have been idle that long, so a lost sampler costs only its episodes in
//! flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envs::{EnvFactory, EnvGroup};
use policies::Model;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::wire::{self, Registration, VersionHeader, WorkItem};
use super::{BrokerConfig, BrokerError, Conn, Keys, Result, SAMPLER_GROUP};
use crate::control::Control;
use crate::engine::{StatsReader, Totals};
use crate::sampler::WorkSource;
use crate::transport::{Delivery, Transport, TransportError};
use crate::trajectory::TrajectoryGroup;
use crate::versions::{Snapshot, VersionSlot};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait until a learner is running under the prefix. Gives up (with `Ok(None)`) when
/// `keep_waiting` says so; an unreachable server or a refused password fails at once.
pub fn wait_for_learner(config: &BrokerConfig, keep_waiting: &dyn Fn() -> bool) -> Result<Option<Registration>> {
    let mut conn = Conn::open(&config.endpoint)?;
    let keys = Keys::new(&config.prefix);
    let mut told = false;
    loop {
        let fields: HashMap<String, String> = conn.run(|c| redis::cmd("HGETALL").arg(keys.learner()).query(c))?;
        let has_version: bool = conn.run(|c| redis::cmd("HEXISTS").arg(keys.adapter()).arg("header").query(c))?;
        match Registration::from_fields(&fields) {
            Some(r) if r.state == wire::RUNNING && has_version => return Ok(Some(r)),
            _ if !told => {
                eprintln!("waiting for a learner on {} (prefix {:?})", config.endpoint.url, config.prefix);
                told = true;
            }
            _ => {}
        }
        if !keep_waiting() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What the mirror has seen: the learner's incarnation and version, and whether the run is over.
#[derive(Default)]
pub struct MirrorState {
    current: Mutex<(u64, u64)>,
    finished: AtomicBool,
}

impl MirrorState {
    /// A state that says the learner is at (`incarnation`, `version`), for driving
    /// [`RemoteWork`] without a mirror.
    pub fn at(incarnation: u64, version: u64) -> MirrorState {
        MirrorState { current: Mutex::new((incarnation, version)), finished: AtomicBool::new(false) }
    }

    /// (incarnation, version) of the newest adapter in the local slot.
    pub fn current(&self) -> (u64, u64) {
        *lock(&self.current)
    }

    /// The learner finished its run.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// Keeps a local [`VersionSlot`] at the learner's newest version.
pub struct Mirror {
    conn: Conn,
    keys: Keys,
    model: Arc<Model>,
    registration: Registration,
    slot: Arc<VersionSlot>,
    state: Arc<MirrorState>,
}

/// How long one wait for a version notification lasts (the stop flag is looked at between).
const VERSION_WAIT: Duration = Duration::from_millis(500);

impl Mirror {
    /// Fetch the learner's current version now (the slot starts with it).
    pub fn start(config: &BrokerConfig, model: Arc<Model>, registration: Registration) -> Result<Mirror> {
        let conn = Conn::open(&config.endpoint)?;
        let keys = Keys::new(&config.prefix);
        let mut conn = conn;
        let (header, snapshot) =
            fetch(&mut conn, &keys, &model)?.ok_or_else(|| BrokerError(format!("{}: the learner has published no adapter version", conn.url())))?;
        let state = MirrorState::at(header.incarnation, header.version);
        Ok(Mirror { conn, keys, model, registration, slot: Arc::new(VersionSlot::new(snapshot)), state: Arc::new(state) })
    }

    pub fn slot(&self) -> Arc<VersionSlot> {
        self.slot.clone()
    }

    pub fn state(&self) -> Arc<MirrorState> {
        self.state.clone()
    }

    /// Follow the learner until `control` stops; a failure stops it with the reason.
    pub fn spawn(mut self, control: Arc<Control>) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("redis-mirror".into())
            .spawn(move || {
                if let Err(e) = self.follow(&control) {
                    control.fail(e.0);
                }
            })
            .expect("spawning the mirror thread")
    }

    fn follow(&mut self, control: &Control) -> Result<()> {
        let mut last = "$".to_string();
        while !control.stopped() {
            let versions = self.keys.versions();
            let reply: Option<StreamReadReply> = self.conn.run(|c| {
                redis::cmd("XREAD").arg("COUNT").arg(64).arg("BLOCK").arg(VERSION_WAIT.as_millis() as u64).arg("STREAMS").arg(&versions).arg(&last).query(c)
            })?;
            if let Some(id) = reply.and_then(|r| r.keys.into_iter().flat_map(|k| k.ids).last()) {
                last = id.id;
            }
            self.check_learner()?;
            let (incarnation, version) = self.state.current();
            let header = self.header()?;
            if header.as_ref().is_some_and(|h| (h.incarnation, h.version) != (incarnation, version)) {
                if let Some((header, snapshot)) = fetch(&mut self.conn, &self.keys, &self.model)? {
                    // Known before the samplers wake for it, so they may take its work at once.
                    *lock(&self.state.current) = (header.incarnation, header.version);
                    if header.incarnation != incarnation {
                        // A resumed learner starts again from its checkpoint's version.
                        self.slot.replace(snapshot);
                    } else {
                        self.slot.publish(snapshot);
                    }
                }
            }
        }
        Ok(())
    }

    /// A learner that restarted must still be the same run's: same base model, same sampling.
    fn check_learner(&mut self) -> Result<()> {
        let fields: HashMap<String, String> = self.conn.run(|c| redis::cmd("HGETALL").arg(self.keys.learner()).query(c))?;
        let Some(now) = Registration::from_fields(&fields) else { return Ok(()) };
        if now.state == wire::FINISHED && now.incarnation == self.registration.incarnation {
            self.state.finished.store(true, Ordering::SeqCst);
        }
        if now.incarnation != self.registration.incarnation {
            if now.fingerprint != self.registration.fingerprint {
                return Err(BrokerError(format!(
                    "{}: the learner now trains another base model (fingerprint {}, this sampler's is {})",
                    self.conn.url(),
                    now.fingerprint,
                    self.registration.fingerprint
                )));
            }
            if now.contract != self.registration.contract {
                return Err(BrokerError(format!("{}: the learner restarted with other sampling settings; restart this sampler", self.conn.url())));
            }
            self.registration = now;
        }
        Ok(())
    }

    fn header(&mut self) -> Result<Option<VersionHeader>> {
        let text: Option<String> = self.conn.run(|c| redis::cmd("HGET").arg(self.keys.adapter()).arg("header").query(c))?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| BrokerError(format!("{}: an unreadable version header: {e}", self.conn.url())))).transpose()
    }

}

/// The newest version as a snapshot (header and values read together).
fn fetch(conn: &mut Conn, keys: &Keys, model: &Model) -> Result<Option<(VersionHeader, Snapshot)>> {
    let adapter = keys.adapter();
    let (text, values): (Option<String>, Option<Vec<u8>>) =
        conn.run(|c| redis::cmd("HMGET").arg(&adapter).arg("header").arg("values").query(c))?;
    let (Some(text), Some(values)) = (text, values) else { return Ok(None) };
    let header: VersionHeader =
        serde_json::from_str(&text).map_err(|e| BrokerError(format!("{}: an unreadable version header: {e}", conn.url())))?;
    let adapter = match &header.lora {
        Some(layout) => Some(
            wire::adapter_from(model, layout, &values)
                .map_err(|e| BrokerError(format!("{}: version {}: {e}", conn.url(), header.version)))?,
        ),
        None => None,
    };
    let mut snapshot = Snapshot::new(header.version, adapter);
    snapshot.published = wire::instant_of(header.published_unix_ns);
    Ok(Some((header, snapshot)))
}

/// A work item this process holds: its stream entry and what it says.
struct Held {
    entry: String,
    item: WorkItem,
}

#[derive(Default)]
struct WorkState {
    /// Read, but not startable yet (its version has not arrived).
    waiting: Option<Held>,
    /// Handed to a sampler thread, by group id, until its group is appended.
    in_flight: HashMap<u64, Held>,
    /// The last read that found nothing: (when, at which version).
    empty_at: Option<(Instant, u64)>,
    last_claim: Option<Instant>,
}

/// Work from the learner's stream, as the [`WorkSource`] of this process's samplers.
pub struct RemoteWork {
    conn: Mutex<Conn>,
    keys: Keys,
    consumer: String,
    factory: Arc<dyn EnvFactory>,
    group_size: usize,
    mirror: Arc<MirrorState>,
    control: Arc<Control>,
    claim_after: Duration,
    state: Mutex<WorkState>,
}

/// After an empty read, samplers in the middle of generating ask again only this much later
/// (a new version asks at once).
const EMPTY_GAP: Duration = Duration::from_millis(5);

impl RemoteWork {
    pub fn new(
        config: &BrokerConfig,
        consumer: &str,
        factory: Arc<dyn EnvFactory>,
        group_size: usize,
        mirror: Arc<MirrorState>,
        control: Arc<Control>,
    ) -> Result<RemoteWork> {
        Ok(RemoteWork {
            conn: Mutex::new(Conn::open(&config.endpoint)?),
            keys: Keys::new(&config.prefix),
            consumer: consumer.to_string(),
            factory,
            group_size,
            mirror,
            control,
            claim_after: config.claim_after,
            state: Mutex::new(WorkState::default()),
        })
    }

    fn try_take(&self, version: u64) -> Result<Option<EnvGroup>> {
        let (incarnation, newest) = self.mirror.current();
        if version != newest {
            // The sampler is about to swap in the newest version; start nothing with an older one.
            return Ok(None);
        }
        let mut st = lock(&self.state);
        loop {
            let next = match st.waiting.take() {
                Some(held) => Some(held),
                None => self.read_one(&mut st, version)?,
            };
            let Some(held) = next else { return Ok(None) };
            if held.item.incarnation < incarnation {
                // Released by a learner that has since restarted: it releases again what it needs.
                self.drop_entries(&[held.entry])?;
                continue;
            }
            if held.item.incarnation > incarnation || version < held.item.not_before {
                st.waiting = Some(held);
                return Ok(None);
            }
            let problem = Arc::new(held.item.problem.clone());
            let envs = (0..self.group_size).map(|_| self.factory.make(problem.clone())).collect();
            let group = EnvGroup { id: held.item.id, epoch: held.item.epoch, problem, envs };
            st.in_flight.insert(held.item.id, held);
            return Ok(Some(group));
        }
    }

    /// One new item, or one claimed from a sampler that stopped renewing its work.
    fn read_one(&self, st: &mut WorkState, version: u64) -> Result<Option<Held>> {
        if st.empty_at.is_some_and(|(at, v)| v == version && at.elapsed() < EMPTY_GAP) {
            return Ok(None);
        }
        let k = &self.keys;
        let reply: Option<StreamReadReply> = lock(&self.conn).run(|c| {
            redis::cmd("XREADGROUP").arg("GROUP").arg(SAMPLER_GROUP).arg(&self.consumer).arg("COUNT").arg(1).arg("STREAMS").arg(k.work()).arg(">").query(c)
        })?;
        let mut entries: Vec<StreamId> = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
        if entries.is_empty() && st.last_claim.is_none_or(|t| t.elapsed() >= self.claim_after / 4) {
            st.last_claim = Some(Instant::now());
            let idle = self.claim_after.as_millis() as u64;
            let claimed: StreamAutoClaimReply = lock(&self.conn).run(|c| {
                redis::cmd("XAUTOCLAIM").arg(k.work()).arg(SAMPLER_GROUP).arg(&self.consumer).arg(idle).arg("0-0").arg("COUNT").arg(1).query(c)
            })?;
            if !claimed.claimed.is_empty() {
                tracing::info!(consumer = %self.consumer, entries = ?claimed.claimed.iter().map(|e| &e.id).collect::<Vec<_>>(), "claimed work a lost sampler held");
            }
            entries = claimed.claimed;
        }
        let Some(entry) = entries.into_iter().next() else {
            st.empty_at = Some((Instant::now(), version));
            return Ok(None);
        };
        st.empty_at = None;
        let item = entry.get::<String>("item").and_then(|t| serde_json::from_str::<WorkItem>(&t).ok());
        match item {
            Some(item) => Ok(Some(Held { entry: entry.id, item })),
            None => {
                tracing::warn!(entry = %entry.id, "dropping an unreadable work item");
                self.drop_entries(&[entry.id])?;
                Ok(None)
            }
        }
    }

    fn drop_entries(&self, entries: &[String]) -> Result<()> {
        let k = &self.keys;
        lock(&self.conn).run(|c| {
            redis::pipe().atomic().cmd("XACK").arg(k.work()).arg(SAMPLER_GROUP).arg(entries).ignore().cmd("XDEL").arg(k.work()).arg(entries).ignore().query::<()>(c)
        })
    }

    /// The work entry of group `id`, which is done (its group is about to be appended).
    fn finish(&self, id: u64) -> Option<Held> {
        lock(&self.state).in_flight.remove(&id)
    }

    /// Keep this process's work from being claimed: renew everything it holds.
    pub fn renew(&self) -> Result<()> {
        let entries: Vec<String> = {
            let st = lock(&self.state);
            st.in_flight.values().chain(st.waiting.as_ref()).map(|h| h.entry.clone()).collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        let k = &self.keys;
        lock(&self.conn).run(|c| {
            redis::cmd("XCLAIM").arg(k.work()).arg(SAMPLER_GROUP).arg(&self.consumer).arg(0).arg(&entries).arg("JUSTID").query::<()>(c)
        })
    }

    /// Leaving: put back everything this process holds, so others start it at once instead
    /// of after the claim timeout.
    pub fn release(&self) -> Result<()> {
        let held: Vec<Held> = {
            let mut st = lock(&self.state);
            let waiting = st.waiting.take();
            st.in_flight.drain().map(|(_, h)| h).chain(waiting).collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let k = &self.keys;
        let mut p = redis::pipe();
        p.atomic();
        for h in &held {
            let item = serde_json::to_string(&h.item).map_err(|e| BrokerError(e.to_string()))?;
            p.cmd("XADD").arg(k.work()).arg("*").arg("item").arg(item).ignore();
            p.cmd("XACK").arg(k.work()).arg(SAMPLER_GROUP).arg(&h.entry).ignore();
            p.cmd("XDEL").arg(k.work()).arg(&h.entry).ignore();
        }
        lock(&self.conn).run(|c| p.query::<()>(c))
    }
}

impl WorkSource for RemoteWork {
    fn take(&self, _sampler: usize, version: u64) -> Option<EnvGroup> {
        if self.control.stopped() {
            return None;
        }
        match self.try_take(version) {
            Ok(group) => group,
            Err(e) => {
                self.control.fail(e.0);
                None
            }
        }
    }
}

/// Append a group to the stream and acknowledge its work item, atomically. When the stream
/// is at its cap, the oldest entries (read by the learner long ago, unless it is stopped) are
/// trimmed first and counted.
const APPEND: &str = r#"
local cap = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) >= cap then
  local trimmed = redis.call('XTRIM', KEYS[1], 'MAXLEN', cap - 1)
  redis.call('INCRBY', KEYS[2], trimmed)
end
local id = redis.call('XADD', KEYS[1], '*', 'id', ARGV[3], 'inc', ARGV[4], 'group', ARGV[5])
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[6], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return id
"#;

/// This process's end of the groups stream, as a [`Transport`]. It also adds this process's
/// sampler counters to the shared stats hash, with each group (so a learner reading the group
/// sees the work that made it) and when asked.
pub struct GroupsOut {
    conn: Mutex<Conn>,
    keys: Keys,
    work: Arc<RemoteWork>,
    max_groups: usize,
    closed: AtomicBool,
    /// The counters, and what of them the server has already.
    stats: Mutex<Option<(StatsReader, Totals)>>,
}

impl GroupsOut {
    pub fn new(config: &BrokerConfig, work: Arc<RemoteWork>) -> Result<GroupsOut> {
        Ok(GroupsOut {
            conn: Mutex::new(Conn::open(&config.endpoint)?),
            keys: Keys::new(&config.prefix),
            work,
            max_groups: config.max_groups.max(2),
            closed: AtomicBool::new(false),
            stats: Mutex::new(None),
        })
    }

    /// Report these counters from now on.
    pub fn report(&self, stats: StatsReader) {
        *lock(&self.stats) = Some((stats, Totals::default()));
    }

    /// Add what the counters gained since the last report.
    pub fn push_stats(&self) -> Result<()> {
        self.run_with_stats(redis::pipe())
    }

    /// Run `p` with the counters' gains added to it. The counters stay locked until the
    /// server has them, so two threads never report the same gain.
    fn run_with_stats(&self, mut p: redis::Pipeline) -> Result<()> {
        let mut stats = lock(&self.stats);
        let now = stats.as_ref().map(|(reader, sent)| {
            let now = reader.totals();
            for (field, n) in wire::totals_fields(&wire::totals_delta(sent, &now)) {
                if n > 0 {
                    p.cmd("HINCRBY").arg(self.keys.stats()).arg(field).arg(n).ignore();
                }
            }
            now
        });
        if !p.is_empty() {
            lock(&self.conn).run(|c| p.query::<()>(c))?;
        }
        if let (Some(now), Some((_, sent))) = (now, stats.as_mut()) {
            *sent = now;
        }
        Ok(())
    }
}

impl Transport for GroupsOut {
    fn send(&self, group: TrajectoryGroup) -> std::result::Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let held = self.work.finish(group.id);
        let incarnation = held.as_ref().map(|h| h.item.incarnation).unwrap_or_else(|| self.work.mirror.current().0);
        let entry = held.map(|h| h.entry).unwrap_or_default();
        let json = serde_json::to_vec(&group).map_err(|e| TransportError::Failed(format!("cannot encode group {}: {e}", group.id)))?;
        let k = &self.keys;
        let mut p = redis::pipe();
        p.cmd("EVAL")
            .arg(APPEND)
            .arg(3)
            .arg(k.groups())
            .arg(k.trimmed())
            .arg(k.work())
            .arg(self.max_groups)
            .arg(&entry)
            .arg(group.id)
            .arg(incarnation)
            .arg(&json)
            .arg(SAMPLER_GROUP)
            .ignore();
        Ok(self.run_with_stats(p)?)
    }

    fn recv(&self, _timeout: Duration) -> std::result::Result<Option<Delivery>, TransportError> {
        Err(TransportError::Failed("a sampler's end of the groups stream does not receive".into()))
    }

    fn queued(&self) -> usize {
        0
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
