//! External reward plugins: any executable that reads one JSON request per line on stdin
//! and writes one JSON response per line on stdout, in order.
//!
//! Request: `{"id": 7, "prompt": "…", "completion": "…", "reference": "…"}`.
//! Response: `{"reward": 0.5, "metrics": {"name": 1.0}}` (`metrics` optional; an `id`, if
//! echoed, must match). The process is started once and reused. A request that times out,
//! a crash, or a garbled response kills the process (it is restarted on the next request),
//! scores the episode 0 with metric `plugin_error` = 1, and is logged; the run goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value as Json;

use crate::{Episode, Reward, Score};

/// Longest response line read from a plugin (bytes); longer is garbage.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A running plugin process.
struct Running {
    child: Child,
    stdin: ChildStdin,
    /// Lines from the plugin's stdout, read by a dedicated thread so that waiting for a
    /// response can time out without signals.
    lines: Receiver<std::io::Result<String>>,
}

impl Running {
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct State {
    running: Option<Running>,
    next_id: u64,
    /// Failures so far (timeouts, crashes, garbage), for logs.
    failures: u64,
}

pub struct PluginReward {
    name: String,
    command: Vec<String>,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    prompt: &'a str,
    completion: &'a str,
    reference: &'a str,
}

impl std::fmt::Debug for PluginReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginReward").field("name", &self.name).field("command", &self.command).finish()
    }
}

fn spawn(command: &[String]) -> Result<Running, String> {
    let (program, args) = command.split_first().ok_or("empty plugin command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("plugin pipes unavailable".into());
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("plugin-reader-{}", child.id()))
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                // `take` bounds a line that never ends.
                match Read::by_ref(&mut reader).take(MAX_RESPONSE_BYTES as u64 + 1).read_line(&mut line) {
                    Ok(0) => return, // EOF: the plugin exited; dropping `tx` tells the reader side
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start reader thread: {e}"))?;
    Ok(Running { child, stdin, lines: rx })
}

fn parse_response(line: &str, id: u64) -> Result<Score, String> {
    if line.len() > MAX_RESPONSE_BYTES || !line.ends_with('\n') {
        return Err("response line too long or cut off".into());
    }
    let value: Json = serde_json::from_str(line.trim()).map_err(|e| format!("response is not JSON: {e}"))?;
    let obj = value.as_object().ok_or("response is not a JSON object")?;
    if let Some(echo) = obj.get("id") {
        if echo.as_u64() != Some(id) {
            return Err(format!("response id {echo} does not match request id {id}"));
        }
    }
    let reward = obj.get("reward").and_then(Json::as_f64).ok_or("response has no numeric \"reward\"")?;
    if !reward.is_finite() {
        return Err("reward is not finite".into());
    }
    let mut metrics = BTreeMap::new();
    match obj.get("metrics") {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (k, v) in m {
                let x = v.as_f64().filter(|x| x.is_finite()).ok_or(format!("metric {k} is not a finite number"))?;
                metrics.insert(k.clone(), x);
            }
        }
        Some(_) => return Err("\"metrics\" is not an object".into()),
    }
    metrics.insert("plugin_error".to_string(), 0.0);
    Ok(Score { reward, metrics })
}

impl PluginReward {
    /// Starts the plugin now, so that a bad command fails at configuration time.
    pub fn start(name: impl Into<String>, command: Vec<String>, timeout: Duration) -> Result<PluginReward, String> {
        let running = spawn(&command)?;
        Ok(PluginReward {
            name: name.into(),
            command,
            timeout,
            state: Mutex::new(State { running: Some(running), next_id: 0, failures: 0 }),
        })
    }

    fn request(&self, state: &mut State, episode: &Episode<'_>) -> Result<Score, String> {
        if state.running.is_none() {
            state.running = Some(spawn(&self.command)?);
        }
        let id = state.next_id;
        state.next_id += 1;
        let running = state.running.as_mut().ok_or("plugin not running")?;
        let request = Request { id, prompt: episode.prompt, completion: episode.completion, reference: episode.reference };
        let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        line.push('\n');
        running
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| running.stdin.flush())
            .map_err(|e| format!("plugin stopped reading: {e}"))?;
        match running.lines.recv_timeout(self.timeout) {
            Ok(Ok(response)) => parse_response(&response, id),
            Ok(Err(e)) => Err(format!("reading the plugin's output failed: {e}")),
            Err(RecvTimeoutError::Timeout) => Err(format!("no response within {} ms", self.timeout.as_millis())),
            Err(RecvTimeoutError::Disconnected) => {
                let status = running.child.try_wait().ok().flatten();
                Err(format!("plugin exited ({})", status.map_or("still closing".to_string(), |s| s.to_string())))
            }
        }
    }
}

impl Reward for PluginReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, episode: &Episode<'_>) -> Score {
        // A panic elsewhere while holding the lock leaves the state usable: take it anyway.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.request(&mut state, episode) {
            Ok(score) => score,
            Err(why) => {
                state.failures += 1;
                if let Some(running) = state.running.take() {
                    running.kill();
                }
                tracing::warn!(plugin = %self.name, failures = state.failures, "reward plugin failed, episode scored 0: {why}");
                Score { reward: 0.0, metrics: BTreeMap::from([("plugin_error".to_string(), 1.0)]) }
            }
        }
    }
}

impl Drop for PluginReward {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = state.running.take() {
            running.kill();
        }
    }
}
