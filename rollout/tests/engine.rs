//! The rollout engine end to end on small checkpoints made here.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use envs::{Env, EnvFactory, Observation, Problem, Step};
use tch::{Device, Kind, Tensor};

/// Per episode: group id, tokens, log-prob bits, versions, reward.
type Summary = Vec<(u64, Vec<i64>, Vec<u32>, Vec<u64>, f64)>;

fn summary(groups: &[rollout::TrajectoryGroup]) -> Summary {
    groups
        .iter()
        .flat_map(|g| {
            g.episodes.iter().map(move |e| {
                // Log-probs compared bit for bit.
                let bits = e.logprobs.iter().map(|l| l.to_bits()).collect();
                (g.id, e.tokens.clone(), bits, e.versions.clone(), e.reward)
            })
        })
        .collect()
}

#[test]
fn synchronous_runs_repeat_exactly_with_one_and_with_several_samplers() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny_model(dir.path());
    for samplers in [1, 3] {
        let run = || {
            // Slots for fewer episodes than a batch holds: admission happens mid-batch too.
            let config = sampler_config(12, 3, 8, true);
            let r = run_engine(model.clone(), tokenizer.clone(), arith_groups(4, 5), config, samplers, 0, 3, 6, None);
            assert!(r.failure.is_none(), "{:?}", r.failure);
            r.groups
        };
        let (first, second) = (run(), run());
        assert_eq!(first.len(), 18);
        // Every group of batch b was sampled entirely with version b (on-policy).
        for g in &first {
            let b = g.id / 6;
            assert!(g.episodes.iter().all(|e| e.versions.iter().all(|&v| v == b)), "group {} has versions off batch {b}", g.id);
        }
        assert_eq!(summary(&first), summary(&second), "two runs with {samplers} sampler(s) differ");
    }
}

/// Log-probs of `tokens` under the model with `adapter` (temperature 1, no truncation), by a
/// fresh forward pass over the whole sequence.
fn rescore(model: &policies::Model, adapter: &policies::Adapter, tokens: &[i64]) -> Vec<f32> {
    let _guard = tch::no_grad_guard();
    let lora = policies::LoraRuntime::single(&model.config, adapter, model.kind()).unwrap();
    let t = Tensor::from_slice(tokens).view([1, -1]);
    let logp = model.token_logprobs(&t, Some(&lora)).to_kind(Kind::Float).to_device(Device::Cpu);
    Vec::<f32>::try_from(logp.view([-1])).unwrap()
}

#[test]
fn a_sequence_spanning_an_adapter_swap_records_both_versions_and_their_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny_model(dir.path());
    // Micro-turns of 2 tokens, 12-token answers, a new version every few milliseconds and a lag
    // budget that never holds samplers back: sequences straddle versions.
    let mut config = sampler_config(16, 2, 12, false);
    config.sampling.ignore_eos = true;
    let every = Some(std::time::Duration::from_millis(3));
    let r = run_engine(model.clone(), tokenizer, arith_groups(4, 9), config, 1, 1_000_000, 6, 1, every);
    assert!(r.failure.is_none(), "{:?}", r.failure);
    let mut spanning = 0;
    let mut worst = 0f32;
    for g in &r.groups {
        for e in &g.episodes {
            let versions: std::collections::BTreeSet<u64> = e.versions.iter().copied().collect();
            if versions.len() > 1 {
                spanning += 1;
            }
            for &v in &versions {
                let expected = rescore(&model, &adapter(&model, v), &e.tokens);
                for (i, (&lp, &tv)) in e.logprobs.iter().zip(&e.versions).enumerate() {
                    if tv == v {
                        let pos = e.prompt_len + i;
                        worst = worst.max((lp - expected[pos - 1]).abs());
                    }
                }
            }
        }
    }
    assert!(spanning > 0, "no sequence spanned a version swap");
    assert!(worst < 1e-4, "behaviour log-probs differ from a fresh scoring by {worst}");
}

#[test]
fn calculator_episodes_mask_observations_and_train_on_actions() {
    let dir = tempfile::tempdir().unwrap();
    let call = "<calc>2+3</calc>";
    let answer = "The answer is 5";
    // The prompt ends with "Answer:"; the calculator answers " = 5".
    let (model, tokenizer) = scripted_model(dir.path(), &[call, answer], &[(":", call), ("5", answer)]);
    let env = envs::EnvConfig { kind: envs::EnvKind::Calc, group_size: 2, ..Default::default() };
    let factory = env.build_factory(None).unwrap();
    let source = list_groups(&[("What is 2+3?", "5")], factory, 2);
    let config = sampler_config(4, 4, 8, true);
    let r = run_engine(model, tokenizer.clone(), source, config, 1, 0, 1, 1, None);
    assert!(r.failure.is_none(), "{:?}", r.failure);
    let e = &r.groups[0].episodes[0];
    let after: Vec<i64> = e.tokens[e.prompt_len..].to_vec();
    let observation = tokenizer.encode(" = 5", false).unwrap();
    let call_id = tokenizer.token_to_id(call).unwrap();
    let answer_id = tokenizer.token_to_id(answer).unwrap();
    let mut expected_tokens = vec![call_id];
    expected_tokens.extend(&observation);
    expected_tokens.extend([answer_id, 2]);
    assert_eq!(after, expected_tokens, "{}", e.completion);
    let mut expected_mask = vec![true];
    expected_mask.extend(vec![false; observation.len()]);
    expected_mask.extend([true, true]);
    assert_eq!(e.action, expected_mask);
    assert_eq!(e.turns, 2);
    assert_eq!(e.reward, 1.0);
    assert_eq!(e.metrics.get("calc_calls"), Some(&1.0));
}

/// An env whose reward panics: the reward worker fails.
struct Panicking(Arc<Problem>);
impl Env for Panicking {
    fn initial_observation(&self) -> Observation {
        Observation::Text(self.0.question.clone())
    }
    fn stop_strings(&self) -> &[String] {
        &[]
    }
    fn step(&mut self, _action: &str) -> Step {
        panic!("the reward exploded");
    }
    fn problem(&self) -> &Arc<Problem> {
        &self.0
    }
}
struct PanickingFactory;
impl EnvFactory for PanickingFactory {
    fn name(&self) -> &str {
        "panicking"
    }
    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env> {
        Box::new(Panicking(problem))
    }
}

/// An env whose prompt asks for a chat template the model does not have: the sampler fails.
struct NeedsChat(Arc<Problem>);
impl Env for NeedsChat {
    fn initial_observation(&self) -> Observation {
        Observation::Chat { messages: vec![envs::Message::new(envs::Role::User, "hi")], add_generation_prompt: true }
    }
    fn stop_strings(&self) -> &[String] {
        &[]
    }
    fn step(&mut self, _action: &str) -> Step {
        Step::Done { reward: 0.0, metrics: BTreeMap::new() }
    }
    fn problem(&self) -> &Arc<Problem> {
        &self.0
    }
}
struct NeedsChatFactory;
impl EnvFactory for NeedsChatFactory {
    fn name(&self) -> &str {
        "chat"
    }
    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env> {
        Box::new(NeedsChat(problem))
    }
}

#[test]
fn a_failing_reward_or_sampler_ends_the_run_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny_model(dir.path());
    let cases: [(Arc<dyn EnvFactory>, &str); 2] =
        [(Arc::new(PanickingFactory), "the reward exploded"), (Arc::new(NeedsChatFactory), "chat template")];
    for (factory, expected) in cases {
        let source = list_groups(&[("1+1=", "2"), ("2+2=", "4")], factory, 2);
        let start = std::time::Instant::now();
        let r = run_engine(model.clone(), tokenizer.clone(), source, sampler_config(8, 4, 4, false), 2, 0, 3, 2, None);
        let failure = r.failure.expect("the run must fail");
        assert!(failure.contains(expected), "{failure}");
        assert!(!failure.contains('\n'), "not one line: {failure}");
        assert!(start.elapsed().as_secs() < 30, "stopping took {:?}", start.elapsed());
    }
}

#[test]
fn a_full_queue_holds_samplers_back_and_stopping_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny_model(dir.path());
    let versions = Arc::new(rollout::VersionSlot::new(rollout::Snapshot::new(0, None)));
    // A lag budget far ahead, a queue of 2 and a learner that never reads.
    let plan = rollout::WorkPlan { groups_per_batch: 1, versions_per_batch: 1, max_staleness: 1000, samplers: 2, deterministic: false };
    let work = Arc::new(rollout::Dispenser::new(arith_groups(2, 1), plan, None));
    let transport: Arc<dyn rollout::Transport> = Arc::new(rollout::InProcess::new(2));
    let control = Arc::new(rollout::Control::new());
    let config = rollout::EngineConfig { samplers: 2, sampler: sampler_config(4, 4, 4, false), reward_workers: 1 };
    let shared = rollout::Shared { model, tokenizer, versions, work, transport: transport.clone(), control };
    let engine = rollout::Engine::start(config, "t", shared);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(transport.queued(), 2, "the queue holds what fits, no more");
    let made = engine.totals().groups;
    assert!(made <= 4, "samplers ran ahead of a full queue: {made} groups");
    let start = std::time::Instant::now();
    engine.stop();
    assert!(start.elapsed().as_secs() < 5, "stop took {:?}", start.elapsed());
    // Groups already accepted are still there for the learner.
    assert!(transport.recv(std::time::Duration::from_millis(10)).unwrap().is_some());
}
