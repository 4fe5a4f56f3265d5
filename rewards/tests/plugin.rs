//! External reward plugins: the README's example, timeouts, crashes, garbage, threads.

use std::time::{Duration, Instant};

use rewards::plugin::PluginReward;
use rewards::{Episode, Reward};

fn example_path() -> String {
    format!("{}/examples/plugin_example.py", env!("CARGO_MANIFEST_DIR"))
}

fn ep<'a>(completion: &'a str, reference: &'a str) -> Episode<'a> {
    Episode { prompt: "What is 6*7?", completion, reference }
}

/// A plugin that misbehaves on request: `sleep`, `crash`, `garbage`, `badid`, `nan`.
const FLAKY: &str = r#"
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    c = req["completion"]
    if c == "sleep":
        time.sleep(30)
    if c == "crash":
        sys.exit(3)
    if c == "garbage":
        print("this is not json", flush=True)
        continue
    if c == "badid":
        print(json.dumps({"id": req["id"] + 100, "reward": 1.0}), flush=True)
        continue
    if c == "nan":
        print('{"reward": "high"}', flush=True)
        continue
    print(json.dumps({"reward": 1.0, "metrics": {"len": len(c)}}), flush=True)
"#;

fn flaky(timeout_ms: u64) -> PluginReward {
    let cmd = vec!["python3".to_string(), "-c".to_string(), FLAKY.to_string()];
    PluginReward::start("flaky", cmd, Duration::from_millis(timeout_ms)).expect("python3 starts")
}

fn assert_ok(p: &PluginReward, completion: &str) {
    let s = p.score(&ep(completion, "42"));
    assert_eq!(s.reward, 1.0, "{completion}: {s:?}");
    assert_eq!(s.metrics.get("plugin_error"), Some(&0.0));
    assert_eq!(s.metrics.get("len"), Some(&(completion.len() as f64)));
}

fn assert_failed(p: &PluginReward, completion: &str) {
    let s = p.score(&ep(completion, "42"));
    assert_eq!(s.reward, 0.0, "{completion}: {s:?}");
    assert_eq!(s.metrics.get("plugin_error"), Some(&1.0));
}

#[test]
fn readme_example_plugin_runs() {
    let p = PluginReward::start("example", vec!["python3".into(), example_path()], Duration::from_secs(10))
        .expect("example plugin starts");
    let right = p.score(&ep("6*7 = 42", "42"));
    assert_eq!(right.reward, 1.0);
    assert_eq!(right.metrics.get("mentions_reference"), Some(&1.0));
    assert_eq!(right.metrics.get("plugin_error"), Some(&0.0));
    let wrong = p.score(&ep("it is 41", "42"));
    assert_eq!(wrong.reward, 0.0);
    let long = "42 ".repeat(100);
    assert_eq!(p.score(&ep(&long, "42")).reward, 0.5);
    // Reused, in order.
    let batch: Vec<_> = (0..20).map(|i| if i % 2 == 0 { ep("42", "42") } else { ep("1", "42") }).collect();
    let scores = p.score_batch(&batch);
    for (i, s) in scores.iter().enumerate() {
        assert_eq!(s.reward, if i % 2 == 0 { 1.0 } else { 0.0 });
    }
}

#[test]
fn timeout_scores_zero_and_restarts() {
    let p = flaky(400);
    assert_ok(&p, "fine");
    let start = Instant::now();
    assert_failed(&p, "sleep");
    assert!(start.elapsed() < Duration::from_secs(3), "timeout not enforced: {:?}", start.elapsed());
    assert_ok(&p, "after restart");
}

#[test]
fn crash_mid_run_scores_zero_and_restarts() {
    let p = flaky(5000);
    assert_ok(&p, "one");
    assert_ok(&p, "two");
    assert_failed(&p, "crash");
    assert_ok(&p, "three");
    assert_failed(&p, "crash");
    assert_failed(&p, "crash");
    assert_ok(&p, "four");
}

#[test]
fn garbage_output_scores_zero_and_restarts() {
    let p = flaky(5000);
    assert_failed(&p, "garbage");
    assert_ok(&p, "ok");
    assert_failed(&p, "badid");
    assert_ok(&p, "ok again");
    assert_failed(&p, "nan");
    assert_ok(&p, "and again");
}

#[test]
fn plugin_that_cannot_start_is_a_build_error() {
    let err = PluginReward::start("nope", vec!["/nonexistent/plugin-binary".into()], Duration::from_secs(1));
    assert!(err.is_err());
    let spec = rewards::RewardSpec::Plugin {
        weight: 1.0,
        command: vec!["/nonexistent/plugin-binary".into()],
        timeout_ms: 100,
        name: None,
    };
    assert!(rewards::build(&[spec]).is_err());
}

#[test]
fn shared_between_threads() {
    let p = std::sync::Arc::new(flaky(5000));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let text = format!("thread {t} request {i}");
                    assert_ok(&p, &text);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread panicked");
    }
}
