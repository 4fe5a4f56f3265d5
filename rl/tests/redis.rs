//! `noregret train` with its samplers in `noregret sampler` processes, through a Redis server
//! each test starts for itself (a free local port, no persistence; the tests are skipped, with a
//! line saying so, only where redis-server is not installed): the run trains as the in-process
//! one does, a sampler or the learner killed with SIGKILL costs nothing that was accepted,
//! samplers with another base model or other settings are refused, and a wrong password, an
//! unreachable server or one that goes away end in one line, quickly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rollout::broker::local_server::{free_port, LocalServer};
use serde_json::Value;

/// A `noregret` process with `threads` threads, its stderr in `dir/NAME.log`.
fn start(dir: &Path, name: &str, threads: usize, args: &[&str], env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noregret"));
    cmd.args(["--threads", &threads.to_string()]).args(args).stdout(Stdio::null()).stderr(log);
    cmd.env_remove("NOREGRET_REDIS_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start noregret")
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Wait for `child` at most `limit`; a process still running then fails the test.
fn finish(child: &mut Child, limit: Duration, what: &str, dir: &Path) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} still running after {limit:?}: {}", log(dir, what));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn succeeds(child: &mut Child, dir: &Path, name: &str) {
    let status = finish(child, Duration::from_secs(120), name, dir);
    assert!(status.success(), "{name} failed: {}", log(dir, name));
}

/// The single `error:` line of a failed process (and no panic).
fn one_error(dir: &Path, name: &str) -> String {
    let text = log(dir, name);
    assert!(!text.contains("panicked"), "{name} panicked: {text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{name}: want one error line: {text}");
    errors[0].to_string()
}

fn random_model(dir: &Path, seed: u64) -> PathBuf {
    let path = dir.join(format!("model-{seed}"));
    policies::init::write_random_checkpoint(&path, &policies::init::preset("tiny").unwrap(), seed, 0.05).unwrap();
    path
}

/// A tiny RL run (a length penalty gives a random model rewards that differ within a group)
/// whose batch is one group per sampler of `samplers`; `rollout` adds [rollout] keys.
fn write_experiment(dir: &Path, name: &str, model: &Path, samplers: usize, steps: u64, rollout: &str) -> PathBuf {
    let text = format!(
        "[model]\npath = \"{model}\"\n\n[env.problems]\nsource = \"arith\"\nlevel = \"add2\"\ntest_size = 8\n\n\
         [[reward]]\nkind = \"length_penalty\"\ntarget_chars = 1\nmax_chars = 6\n\n[[reward]]\nkind = \"math\"\n\n\
         [rollout]\ngroup_size = 4\ngroups_per_step = {samplers}\nsamplers = {samplers}\nmax_new_tokens = 6\n\
         redis_claim_seconds = 1.0\nredis_retry_seconds = 2.0\n{rollout}\n\n\
         [rl]\nsteps = {steps}\nlr = 1e-3\n\n[eval]\nevery = 0\n\n[run]\nout = \"{out}\"\ncheckpoint_every = 2\nseed = 5\n",
        model = model.display(),
        out = dir.join(name).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A server, a scratch directory and a tiny model in it; None where redis-server is missing.
fn setup() -> Option<(LocalServer, tempfile::TempDir, PathBuf)> {
    let server = LocalServer::start(None)?;
    let tmp = tempfile::tempdir().unwrap();
    let model = random_model(tmp.path(), 1);
    Some((server, tmp, model))
}

fn transport(server: &LocalServer) -> String {
    format!("transport = \"{}\"", server.url())
}

fn step_lines(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|l| l.get("loss").is_some()).collect()
}

/// Per step: the groups trained on and the numbers that depend on the data alone.
fn history(run: &Path) -> Vec<(Value, Value, Value, Value)> {
    step_lines(run).into_iter().map(|l| (l["step"].clone(), l["groups"].clone(), l["reward_mean"].clone(), l["loss"].clone())).collect()
}

/// Every step trained on exactly its own batch at max_staleness 0: batch b is groups
/// b·n .. b·n + n - 1, each trained once.
fn assert_every_group_once(run: &Path, steps: u64, per_step: u64) {
    let lines = step_lines(run);
    assert_eq!(lines.len() as u64, steps, "steps in {}: {lines:?}", run.display());
    let mut seen = BTreeSet::new();
    for (b, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], b as u64 + 1);
        let ids: Vec<u64> = l["groups"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let want: Vec<u64> = (b as u64 * per_step..(b as u64 + 1) * per_step).collect();
        assert_eq!(ids, want, "step {} trained on other groups", b + 1);
        for id in ids {
            assert!(seen.insert(id), "group {id} trained twice");
        }
        assert!(l["agreement_max"].as_f64().unwrap() < 1e-4, "sampler/learner disagree: {l}");
        // A step whose groups all had uniform rewards has nothing to learn from.
        let learned = l["agreement_tokens"].as_u64().unwrap() > 0;
        assert_eq!(learned, l["grad_norm"].as_f64().unwrap() > 0.0, "{l}");
        assert_eq!(l["staleness_max"], 0);
    }
}

fn redis(server: &LocalServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

/// Work items the sampler `name` holds now.
fn held_by(con: &mut redis::Connection, name: &str) -> usize {
    let pending: redis::Value =
        redis::cmd("XPENDING").arg("noregret:work").arg("samplers").arg("-").arg("+").arg(10).arg(name).query(con).unwrap_or(redis::Value::Nil);
    match pending {
        redis::Value::Array(items) => items.len(),
        _ => 0,
    }
}

#[test]
fn remote_samplers_train_as_in_process_ones_and_a_killed_learner_resumes() {
    let Some((server, tmp, model)) = setup() else { return };
    let dir = tmp.path();
    let steps = 6;

    // In-process, 3 sampler threads.
    let local = write_experiment(dir, "local", &model, 3, steps, "");
    succeeds(&mut start(dir, "local", 2, &["train", local.to_str().unwrap()], &[]), dir, "local");

    // The same run with 3 sampler processes through Redis.
    let remote = write_experiment(dir, "remote", &model, 3, steps, &transport(&server));
    let cfg = remote.to_str().unwrap();
    let mut learner = start(dir, "learner", 2, &["train", cfg], &[]);
    let mut samplers: Vec<Child> = (0..3).map(|i| start(dir, &format!("s{i}"), 1, &["sampler", cfg, "--name", &format!("s{i}")], &[])).collect();
    succeeds(&mut learner, dir, "learner");
    for (i, s) in samplers.iter_mut().enumerate() {
        // The run is over: samplers exit by themselves.
        succeeds(s, dir, &format!("s{i}"));
    }
    assert_every_group_once(&dir.join("remote"), steps, 3);
    // Per-episode random streams, work released only at its version, one group per sampler
    // batch: the trajectories, and so every number, are the in-process run's.
    assert_eq!(history(&dir.join("local")), history(&dir.join("remote")), "remote and in-process runs differ");
    let last = step_lines(&dir.join("remote")).pop().unwrap();
    assert!(last["sampled_tokens_per_s"].as_f64().unwrap() > 0.0 && last["transport_trimmed"] == 0, "{last}");

    // The learner killed with SIGKILL after step 3 (checkpoint at 2; it is held there so that
    // the kill lands at a known point), resumed while the samplers keep going: the groups it
    // had taken and not checkpointed come back, every group is trained on once, and the
    // numbers are the uninterrupted run's.
    let crash = write_experiment(dir, "crash", &model, 3, steps, &transport(&server));
    let cfg = crash.to_str().unwrap();
    let mut learner = start(dir, "crash-learner", 2, &["train", cfg], &[("NOREGRET_FAULT", "hang_after_step:3")]);
    let mut samplers: Vec<Child> = (0..2).map(|i| start(dir, &format!("c{i}"), 1, &["sampler", cfg], &[])).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log(dir, "crash-learner").contains("hanging at") {
        assert!(Instant::now() < deadline && learner.try_wait().unwrap().is_none(), "no step 3: {}", log(dir, "crash-learner"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let pending: (u64, Option<String>, Option<String>, Option<redis::Value>) =
        redis::cmd("XPENDING").arg("noregret:groups").arg("learner").query(&mut redis(&server)).unwrap();
    assert_eq!(pending.0, 3, "the groups of step 3 are not pending");
    learner.kill().unwrap();
    learner.wait().unwrap();
    let run = dir.join("crash");
    let mut resumed = start(dir, "resumed", 2, &["train", "--resume", run.to_str().unwrap()], &[]);
    succeeds(&mut resumed, dir, "resumed");
    assert!(log(dir, "resumed").contains("(step 2)"), "{}", log(dir, "resumed"));
    for (i, s) in samplers.iter_mut().enumerate() {
        succeeds(s, dir, &format!("c{i}"));
    }
    assert_every_group_once(&run, steps, 3);
    assert_eq!(history(&dir.join("local")), history(&run), "the resumed run differs from the uninterrupted one");
}

#[test]
fn a_sampler_killed_mid_episode_costs_only_its_work_in_flight() {
    let Some((server, tmp, model)) = setup() else { return };
    let dir = tmp.path();
    let exp = write_experiment(dir, "run", &model, 2, 6, &transport(&server));
    let cfg = exp.to_str().unwrap();
    let mut learner = start(dir, "learner", 2, &["train", cfg], &[]);
    let mut doomed = start(dir, "a", 1, &["sampler", cfg, "--name", "a"], &[("NOREGRET_FAULT", "hang_group:3")]);
    let mut survivor = start(dir, "b", 1, &["sampler", cfg, "--name", "b"], &[("NOREGRET_LOG", "rollout=info")]);
    // `a` stops as it starts its third group (a step has passed by then), holding that work; it
    // is killed there, and `b` must claim the group once `a` stops renewing it.
    let mut con = redis(&server);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log(dir, "a").contains("hanging at") {
        assert!(Instant::now() < deadline && doomed.try_wait().unwrap().is_none(), "sampler a never reached its third group: {}", log(dir, "a"));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(held_by(&mut con, "a"), 1, "sampler a holds no work");
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    succeeds(&mut learner, dir, "learner");
    succeeds(&mut survivor, dir, "b");
    assert!(log(dir, "b").contains("claimed work a lost sampler held"), "{}", log(dir, "b"));
    assert_every_group_once(&dir.join("run"), 6, 2);
}

#[test]
fn a_lag_budget_holds_through_redis_as_in_process() {
    let Some((server, tmp, model)) = setup() else { return };
    let dir = tmp.path();
    let exp = write_experiment(dir, "run", &model, 2, 6, &format!("{}\nmax_staleness = 1", transport(&server)));
    let cfg = exp.to_str().unwrap();
    let mut learner = start(dir, "learner", 2, &["train", cfg], &[]);
    let mut samplers: Vec<Child> = (0..2).map(|i| start(dir, &format!("s{i}"), 1, &["sampler", cfg], &[])).collect();
    succeeds(&mut learner, dir, "learner");
    for (i, s) in samplers.iter_mut().enumerate() {
        succeeds(s, dir, &format!("s{i}"));
    }
    let lines = step_lines(&dir.join("run"));
    assert_eq!(lines.len(), 6);
    let mut seen = BTreeSet::new();
    for l in &lines {
        assert!(l["staleness_max"].as_u64().unwrap() <= 1, "{l}");
        for id in l["groups"].as_array().unwrap() {
            assert!(seen.insert(id.as_u64().unwrap()), "group {id} trained twice");
        }
    }
}

#[test]
fn other_base_models_settings_and_passwords_are_refused_in_one_line() {
    let Some((server, tmp, model)) = setup() else { return };
    let Some(locked) = LocalServer::start(Some("s3cret")) else { return };
    let dir = tmp.path();
    let other = random_model(dir, 9);
    let exp = write_experiment(dir, "run", &model, 1, 2, &transport(&server));
    let mut learner = start(dir, "learner", 2, &["train", exp.to_str().unwrap()], &[]);

    // A sampler with another base model: refused, naming both fingerprints.
    let mine = write_experiment(dir, "mine", &other, 1, 2, &transport(&server));
    let mut s = start(dir, "other-model", 1, &["sampler", mine.to_str().unwrap()], &[]);
    assert!(!finish(&mut s, Duration::from_secs(20), "other-model", dir).success());
    let err = one_error(dir, "other-model");
    let theirs = policies::weights::fingerprint(&model).unwrap();
    let ours = policies::weights::fingerprint(&other).unwrap();
    assert!(err.contains(&theirs) && err.contains(&ours), "{err}");
    // Another temperature: refused, naming it.
    let mut s = start(dir, "other-settings", 1, &["sampler", exp.to_str().unwrap(), "--set", "rollout.temperature=0.5"], &[]);
    assert!(!finish(&mut s, Duration::from_secs(20), "other-settings", dir).success());
    assert!(one_error(dir, "other-settings").contains("rollout.temperature = 0.5 here, 1.0 at the learner"));
    // A second run's learner under the same prefix: refused before it writes anything.
    let mut second = start(dir, "second-learner", 1, &["train", mine.to_str().unwrap()], &[]);
    assert!(!finish(&mut second, Duration::from_secs(20), "second-learner", dir).success());
    assert!(one_error(dir, "second-learner").contains("another learner is running"));
    assert!(!dir.join("mine").exists());
    let _ = learner.kill();
    let _ = learner.wait();

    // Passwords and servers: one line each, fast, and nothing written.
    let locked_exp = write_experiment(dir, "locked", &model, 1, 2, &format!("transport = \"{}\"", locked.url()));
    let unreachable = write_experiment(dir, "nowhere", &model, 1, 2, &format!("transport = \"redis://127.0.0.1:{}/0\"", free_port()));
    // (name, arguments, environment, what the error says)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        ("wrong-password", &["train", locked_exp.to_str().unwrap()], &[("NOREGRET_REDIS_PASSWORD", "wrong")], "refused the password"),
        ("no-password", &["sampler", locked_exp.to_str().unwrap()], &[], "needs a password"),
        ("unreachable", &["train", unreachable.to_str().unwrap()], &[], "cannot connect"),
        ("password-flag", &["train", locked_exp.to_str().unwrap(), "--set", "rollout.redis_password=s3cret"], &[], "not taken from the command line"),
        ("password-in-url", &["train", exp.to_str().unwrap(), "--transport", &format!("redis://:s3cret@127.0.0.1:{}/0", locked.port)], &[], "redis_password"),
        ("small-cap", &["train", locked_exp.to_str().unwrap(), "--set", "rollout.redis_max_groups=3"], &[], "redis_max_groups (3) must be at least twice the queue"),
        ("full-fine-tuning", &["train", locked_exp.to_str().unwrap(), "--set", "adapter.rank=full"], &[], "adapters only"),
    ];
    for (name, args, env, expected) in cases {
        let started = Instant::now();
        let mut p = start(dir, name, 1, args, env);
        assert!(!finish(&mut p, Duration::from_secs(20), name, dir).success());
        let err = one_error(dir, name);
        assert!(err.contains(expected) && !err.contains("s3cret"), "{name}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name} took {:?}", started.elapsed());
    }
    assert!(!dir.join("locked").exists() && !dir.join("nowhere").exists(), "a refused run wrote its directory");
    // The right password works (the learner gets as far as waiting for samplers).
    let mut ok = start(dir, "right-password", 2, &["train", locked_exp.to_str().unwrap()], &[("NOREGRET_REDIS_PASSWORD", "s3cret")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log(dir, "right-password").contains("noregret sampler --connect") {
        assert!(Instant::now() < deadline && ok.try_wait().unwrap().is_none(), "{}", log(dir, "right-password"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ok.kill();
    let _ = ok.wait();
}

#[test]
fn a_server_that_goes_away_ends_learner_and_samplers_with_one_line() {
    let Some((mut server, tmp, model)) = setup() else { return };
    let dir = tmp.path();
    let exp = write_experiment(dir, "run", &model, 1, 40, &transport(&server));
    let cfg = exp.to_str().unwrap();
    let mut learner = start(dir, "learner", 2, &["train", cfg], &[]);
    let mut sampler = start(dir, "sampler", 1, &["sampler", cfg], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while step_lines(&dir.join("run")).len() < 2 {
        assert!(Instant::now() < deadline, "no progress: {}", log(dir, "learner"));
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    // Retried for redis_retry_seconds (2 s), then one line each.
    for (child, name) in [(&mut learner, "learner"), (&mut sampler, "sampler")] {
        assert!(!finish(child, Duration::from_secs(30), name, dir).success());
        let err = one_error(dir, name);
        assert!(err.contains(&server.url()) && err.contains("gave up"), "{name}: {err}");
    }
    // The learner checkpointed what it had: the run can be resumed once the server is back.
    assert!(dir.join("run/checkpoints/index.jsonl").exists());
}
