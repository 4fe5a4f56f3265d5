//! The learner's side: registering a run, publishing adapter versions, and reading finished
//! groups through the `learner` consumer group.
//!
//! A group is acknowledged (and deleted) only when the learner says so, which it does after a
//! checkpoint that covers it. Until then it stays in the consumer group's pending list, and a
//! learner restarted with `--resume` gets it again before anything new.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use super::wire::{self, Registration, VersionHeader};
use super::{BrokerConfig, BrokerError, Conn, Keys, Result, LEARNER_GROUP, SAMPLER_GROUP};
use crate::engine::Totals;
use crate::transport::{Delivery, DeliveryTag, Transport, TransportError};
use crate::trajectory::TrajectoryGroup;
use crate::versions::Snapshot;

/// Notifications of versions kept (the adapter itself is one key, overwritten).
const VERSIONS_KEPT: usize = 64;
/// A learner whose heartbeat is older than this is taken for gone.
const LEARNER_GONE_AFTER_MS: u64 = 15_000;

/// The learner's connection for everything but reading groups.
pub struct LearnerLink {
    conn: Mutex<Conn>,
    keys: Keys,
    registration: Registration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LearnerLink {
    /// Register as the learner of `run`. A fresh run clears whatever an earlier run under the
    /// same prefix left; a resumed one keeps its unacknowledged groups (they are delivered
    /// again) and replaces the work stream, which its dispenser refills from the checkpoint.
    pub fn register(config: &BrokerConfig, run: &str, fingerprint: &str, contract: &str, resume: bool) -> Result<LearnerLink> {
        let (mut conn, previous) = Self::previous(config, run)?;
        let keys = Keys::new(&config.prefix);
        let incarnation: u64 = conn.run(|c| redis::cmd("INCR").arg(keys.incarnations()).query(c))?;
        let first_incarnation = match &previous {
            Some(p) if resume && p.run == run && p.first_incarnation > 0 => p.first_incarnation,
            _ => incarnation,
        };
        let mut clear = vec![keys.work()];
        if !resume {
            clear.extend([keys.groups(), keys.adapter(), keys.versions(), keys.stats(), keys.trimmed()]);
        }
        let registration = Registration {
            incarnation,
            first_incarnation,
            fingerprint: fingerprint.to_string(),
            contract: contract.to_string(),
            run: run.to_string(),
            state: wire::RUNNING.to_string(),
            heartbeat_ms: now_ms(),
        };
        conn.run(|c| {
            let mut p = redis::pipe();
            p.atomic().cmd("DEL").arg(&clear).ignore();
            p.cmd("XGROUP").arg("CREATE").arg(keys.work()).arg(SAMPLER_GROUP).arg("0").arg("MKSTREAM").ignore();
            p.cmd("DEL").arg(keys.learner()).ignore();
            p.cmd("HSET").arg(keys.learner()).arg(registration.to_fields()).ignore();
            p.query::<()>(c)
        })?;
        // Kept across resumes: from the stream's start, so nothing a sampler appended is missed.
        let created = conn.run(|c| redis::cmd("XGROUP").arg("CREATE").arg(keys.groups()).arg(LEARNER_GROUP).arg("0").arg("MKSTREAM").query::<()>(c));
        if let Err(e) = created {
            if !e.0.contains("BUSYGROUP") {
                return Err(e);
            }
        }
        Ok(LearnerLink { conn: Mutex::new(conn), keys, registration })
    }

    /// Whether `run` may register: the server is reachable, takes the password, and no other
    /// run's learner is alive under the prefix.
    pub fn check_free(config: &BrokerConfig, run: &str) -> Result<()> {
        Self::previous(config, run).map(|_| ())
    }

    /// A connection, and the previous learner's registration if it may be replaced.
    fn previous(config: &BrokerConfig, run: &str) -> Result<(Conn, Option<Registration>)> {
        let mut conn = Conn::open(&config.endpoint)?;
        let key = Keys::new(&config.prefix).learner();
        let fields: HashMap<String, String> = conn.run(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        let previous = Registration::from_fields(&fields);
        if let Some(p) = &previous {
            let alive = p.state == wire::RUNNING && now_ms().saturating_sub(p.heartbeat_ms) < LEARNER_GONE_AFTER_MS;
            if alive && p.run != run {
                return Err(BrokerError(format!(
                    "{}: another learner is running under the prefix {:?} (run {}); give this run its own redis_prefix or database",
                    conn.url(),
                    config.prefix,
                    p.run
                )));
            }
        }
        Ok((conn, previous))
    }

    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Make `snapshot` the version samplers take next.
    pub fn publish(&self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.model.is_some() {
            return Err(BrokerError("full fine-tuning cannot publish through Redis (only adapters)".into()));
        }
        let lora = snapshot.adapter.as_ref().map(|a| wire::lora_layout(&a.config));
        let values = match &snapshot.adapter {
            Some(a) => wire::adapter_bytes(a).map_err(BrokerError)?,
            None => Vec::new(),
        };
        let header = VersionHeader { incarnation: self.registration.incarnation, version: snapshot.version, published_unix_ns: wire::unix_ns(), lora };
        let header = serde_json::to_string(&header).map_err(|e| BrokerError(e.to_string()))?;
        let k = &self.keys;
        lock(&self.conn).run(|c| {
            redis::pipe()
                .atomic()
                .cmd("HSET").arg(k.adapter()).arg("header").arg(&header).arg("values").arg(&values).ignore()
                .cmd("XADD").arg(k.versions()).arg("MAXLEN").arg("~").arg(VERSIONS_KEPT).arg("*")
                .arg("incarnation").arg(self.registration.incarnation).arg("version").arg(snapshot.version).ignore()
                .query::<()>(c)
        })
    }

    /// Tell samplers this learner is alive (they are not told when it dies; a new learner
    /// uses the heartbeat to tell a crashed run from a live one).
    pub fn heartbeat(&self) -> Result<()> {
        lock(&self.conn).run(|c| redis::cmd("HSET").arg(self.keys.learner()).arg("heartbeat_ms").arg(now_ms()).query::<()>(c))
    }

    /// The run is over: samplers waiting for work exit.
    pub fn finish(&self) -> Result<()> {
        lock(&self.conn).run(|c| redis::cmd("HSET").arg(self.keys.learner()).arg("state").arg(wire::FINISHED).query::<()>(c))
    }

    /// Every remote sampler's counters, summed, and the groups trimmed by the stream cap.
    pub fn totals(&self) -> Result<(Totals, u64)> {
        let k = &self.keys;
        let (fields, trimmed): (HashMap<String, u64>, Option<u64>) =
            lock(&self.conn).run(|c| redis::pipe().cmd("HGETALL").arg(k.stats()).cmd("GET").arg(k.trimmed()).query(c))?;
        Ok((wire::totals_from(&fields), trimmed.unwrap_or(0)))
    }
}

pub fn now_ms() -> u64 {
    wire::unix_ns() / 1_000_000
}

/// Groups read per round trip.
const READ_BATCH: usize = 64;
/// Longest single blocking read (the caller's timeout is honoured across several).
const MAX_BLOCK: Duration = Duration::from_millis(1000);

/// The learner's end of the groups stream, as a [`Transport`].
pub struct GroupsIn {
    conn: Mutex<Conn>,
    keys: Keys,
    registration: Registration,
    /// Read from the server, not yet handed to the learner (the replayed pending ones first).
    buffer: Mutex<VecDeque<Delivery>>,
    /// Entries the learner will never use (trimmed while pending, undecodable, another
    /// run's): acknowledged with the next batch of acks.
    discard: Mutex<Vec<String>>,
    discarded: AtomicU64,
    closed: AtomicBool,
}

impl GroupsIn {
    /// Open the stream; groups delivered to an earlier incarnation of this run and never
    /// acknowledged are read back first.
    pub fn open(config: &BrokerConfig, link: &LearnerLink) -> Result<GroupsIn> {
        let conn = Conn::open(&config.endpoint)?;
        let me = GroupsIn {
            conn: Mutex::new(conn),
            keys: link.keys.clone(),
            registration: link.registration.clone(),
            buffer: Mutex::new(VecDeque::new()),
            discard: Mutex::new(Vec::new()),
            discarded: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        };
        let mut after = "0".to_string();
        loop {
            let read = me.read_group(&after, None)?;
            let Some(last) = read.last() else { break };
            after = last.id.clone();
            me.accept(read);
        }
        Ok(me)
    }

    /// Ids of every group waiting on the server (replayed or not read yet): the dispenser
    /// need not release them again.
    pub fn waiting_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: StreamRangeReply =
                lock(&self.conn).run(|c| redis::cmd("XRANGE").arg(self.keys.groups()).arg(&start).arg("+").arg("COUNT").arg(256).query(c))?;
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            ids.extend(page.ids.iter().filter(|e| self.incarnation_ok(e)).filter_map(|e| e.get::<u64>("id")));
        }
        Ok(ids)
    }

    /// Entries dropped since the start: trimmed while pending, undecodable, or another run's.
    pub fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    fn read_group(&self, after: &str, block: Option<Duration>) -> Result<Vec<StreamId>> {
        let k = &self.keys;
        let reply: Option<StreamReadReply> = lock(&self.conn).run(|c| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(LEARNER_GROUP).arg(LEARNER_GROUP).arg("COUNT").arg(READ_BATCH);
            if let Some(b) = block {
                cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
            }
            cmd.arg("STREAMS").arg(k.groups()).arg(after).query(c)
        })?;
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    fn incarnation_ok(&self, e: &StreamId) -> bool {
        let r = &self.registration;
        e.get::<u64>("inc").is_some_and(|i| (r.first_incarnation..=r.incarnation).contains(&i))
    }

    /// Decode entries into the buffer; set aside the ones that cannot be used.
    fn accept(&self, entries: Vec<StreamId>) {
        let mut buffer = lock(&self.buffer);
        for e in entries {
            let group = e.get::<Vec<u8>>("group").map(|bytes| serde_json::from_slice::<TrajectoryGroup>(&bytes));
            let why = match group {
                _ if e.map.is_empty() => "trimmed by the stream cap before it was acknowledged",
                _ if !self.incarnation_ok(&e) => "sampled for another run",
                Some(Ok(group)) => {
                    let replay = e.get::<u64>("inc").is_some_and(|i| i < self.registration.incarnation);
                    buffer.push_back(Delivery { group, tag: DeliveryTag(e.id), replay });
                    continue;
                }
                Some(Err(_)) | None => "not a trajectory group this learner can read",
            };
            tracing::warn!(entry = %e.id, "dropping a stream entry: {why}");
            self.discarded.fetch_add(1, Ordering::Relaxed);
            lock(&self.discard).push(e.id);
        }
    }
}

impl Transport for GroupsIn {
    fn send(&self, _group: TrajectoryGroup) -> std::result::Result<(), TransportError> {
        Err(TransportError::Failed("the learner's end of the groups stream does not send".into()))
    }

    fn recv(&self, timeout: Duration) -> std::result::Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = lock(&self.buffer).pop_front() {
                return Ok(Some(d));
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(TransportError::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let entries = self.read_group(">", Some(left.min(MAX_BLOCK)))?;
            self.accept(entries);
        }
    }

    fn ack(&self, tags: &[DeliveryTag]) -> std::result::Result<(), TransportError> {
        let mut ids: Vec<String> = tags.iter().map(|t| t.0.clone()).collect();
        ids.append(&mut lock(&self.discard));
        let k = &self.keys;
        for chunk in ids.chunks(256) {
            let acked = lock(&self.conn).run(|c| {
                redis::pipe()
                    .atomic()
                    .cmd("XACK").arg(k.groups()).arg(LEARNER_GROUP).arg(chunk).ignore()
                    .cmd("XDEL").arg(k.groups()).arg(chunk).ignore()
                    .query::<()>(c)
            });
            acked?;
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        lock(&self.buffer).len()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
