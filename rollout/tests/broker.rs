//! The Redis transport's own guarantees, against a throwaway local server: groups stay until
//! acknowledged and come back to a restarted learner, work held by a lost sampler is claimed
//! by another, and the groups stream's cap trims and counts. No model is needed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::arith_groups;
use rollout::broker::feeder::Feeder;
use rollout::broker::learner::{GroupsIn, LearnerLink};
use rollout::broker::local_server::LocalServer;
use rollout::broker::sampler::{GroupsOut, MirrorState, RemoteWork};
use rollout::broker::{BrokerConfig, Endpoint};
use rollout::{Control, Dispenser, Transport, TrajectoryGroup, WorkPlan, WorkSource};

fn config(server: &LocalServer, claim_after: Duration, max_groups: usize) -> BrokerConfig {
    BrokerConfig {
        endpoint: Endpoint { url: server.url(), password: None, password_hint: "NOREGRET_REDIS_PASSWORD".into(), retry_for: Duration::from_secs(1) },
        prefix: "t".into(),
        claim_after,
        max_groups,
        max_work: 8,
    }
}

/// A learner registered on the server, with `groups` groups of 2 episodes released at version 0.
fn learner(config: &BrokerConfig, groups: u64, resume: bool) -> (Arc<LearnerLink>, GroupsIn) {
    let link = Arc::new(LearnerLink::register(config, "run", "fp", "{}", resume).unwrap());
    let groups_in = GroupsIn::open(config, &link).unwrap();
    let plan = WorkPlan { groups_per_batch: groups, versions_per_batch: 1, max_staleness: 0, samplers: 1, deterministic: false };
    let feeder = Feeder::new(config, &link, Arc::new(Dispenser::new(arith_groups(2, 1), plan, None))).unwrap();
    if !resume {
        assert_eq!(feeder.feed(0).unwrap() as u64, groups);
    }
    (link, groups_in)
}

fn sampler(config: &BrokerConfig, name: &str, link: &LearnerLink) -> (Arc<RemoteWork>, GroupsOut) {
    let factory = envs::EnvConfig::default().build_factory(None).unwrap();
    let mirror = Arc::new(MirrorState::at(link.registration().incarnation, 0));
    let work = Arc::new(RemoteWork::new(config, name, factory, 2, mirror, Arc::new(Control::new())).unwrap());
    let out = GroupsOut::new(config, work.clone()).unwrap();
    (work, out)
}

/// A finished group for work item `id` (its episodes do not matter here).
fn finished(group: &envs::EnvGroup) -> TrajectoryGroup {
    TrajectoryGroup {
        id: group.id,
        epoch: group.epoch,
        problem: (*group.problem).clone(),
        prompt: group.problem.question.clone(),
        episodes: Vec::new(),
        sampler: "t".into(),
        skipped: None,
    }
}

#[test]
fn unacknowledged_groups_come_back_to_a_restarted_learner() {
    let Some(server) = LocalServer::start(None) else { return };
    let cfg = config(&server, Duration::from_secs(30), 100);
    let (link, groups_in) = learner(&cfg, 2, false);
    let (work, out) = sampler(&cfg, "a", &link);
    for _ in 0..2 {
        let group = work.take(0, 0).expect("work released at version 0");
        out.send(finished(&group)).unwrap();
    }
    let first = groups_in.recv(Duration::from_secs(2)).unwrap().expect("a group");
    let second = groups_in.recv(Duration::from_secs(2)).unwrap().expect("a group");
    assert!(!first.replay && !second.replay);
    groups_in.ack(std::slice::from_ref(&first.tag)).unwrap();
    drop(groups_in);

    // The learner restarts: only the unacknowledged group comes back, marked as a replay.
    let (link2, again) = learner(&cfg, 2, true);
    assert!(link2.registration().incarnation > link.registration().incarnation);
    assert_eq!(again.waiting_ids().unwrap(), vec![second.group.id]);
    let back = again.recv(Duration::from_millis(200)).unwrap().expect("the pending group again");
    assert_eq!(back.group.id, second.group.id);
    assert!(back.replay);
    assert!(again.recv(Duration::from_millis(200)).unwrap().is_none(), "an acknowledged group came back");
    // The old work stream is gone with the old learner: the new one releases its own.
    assert!(work.take(0, 0).is_none());
}

#[test]
fn work_held_by_a_lost_sampler_is_claimed_by_another() {
    let Some(server) = LocalServer::start(None) else { return };
    let claim = Duration::from_millis(400);
    let cfg = config(&server, claim, 100);
    let (link, groups_in) = learner(&cfg, 2, false);
    let (a, _a_out) = sampler(&cfg, "a", &link);
    let (b, b_out) = sampler(&cfg, "b", &link);
    let held_by_a = a.take(0, 0).expect("work for a");
    let own = b.take(0, 0).expect("work for b");
    b_out.send(finished(&own)).unwrap();
    // While a renews what it holds, nobody takes it.
    for _ in 0..6 {
        a.renew().unwrap();
        std::thread::sleep(claim / 3);
        assert!(b.take(0, 0).is_none(), "took work a sampler still renews");
    }
    // a is gone (stops renewing): b claims its work after the idle time.
    std::thread::sleep(claim + claim / 2);
    let claimed = (0..20).find_map(|_| {
        std::thread::sleep(claim / 4);
        b.take(0, 0)
    });
    let claimed = claimed.expect("b never claimed a's work");
    assert_eq!(claimed.id, held_by_a.id);
    b_out.send(finished(&claimed)).unwrap();
    let mut ids: Vec<u64> = (0..2).map(|_| groups_in.recv(Duration::from_secs(2)).unwrap().unwrap().group.id).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
}

#[test]
fn the_groups_stream_is_capped_and_what_is_trimmed_is_counted() {
    let Some(server) = LocalServer::start(None) else { return };
    let cfg = config(&server, Duration::from_secs(30), 3);
    let (link, _groups_in) = learner(&cfg, 5, false);
    let (work, out) = sampler(&cfg, "a", &link);
    // A learner that never reads: the stream keeps the newest 3.
    for _ in 0..5 {
        let group = work.take(0, 0).expect("work");
        out.send(finished(&group)).unwrap();
    }
    let (_, trimmed) = link.totals().unwrap();
    assert_eq!(trimmed, 2);
    let fresh = GroupsIn::open(&cfg, &link).unwrap();
    let mut ids = fresh.waiting_ids().unwrap();
    ids.sort();
    assert_eq!(ids, vec![2, 3, 4]);
}
