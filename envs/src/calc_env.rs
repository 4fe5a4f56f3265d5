//! The calculator tool env: a multi-turn episode on a math problem.
//!
//! The model may write `<calc>expression</calc>`. `</calc>` is a stop string, so the turn ends
//! there; the env evaluates the expression with the verifier's bounded parser
//! (`rewards::calc::evaluate`) and answers ` = value` (or ` = error: why`), which the sampler
//! appends to the sequence, masked out of the loss, before the model continues. A turn without a
//! calculator call is the final answer and is scored by the reward (the math verifier by
//! default) against the gold answer. Only that last turn is scored, so the calculator's own
//! output cannot be mistaken for the model's answer.
//!
//! `max_turns` caps an episode: a calculator call on the last allowed turn ends it with reward 0
//! and `truncated = 1`.
//!
//! Metrics: `turns`, `calc_calls`, `calc_errors`, `truncated`, plus the reward's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use rewards::Reward;

use crate::env::{Env, EnvFactory, Observation, Problem, Step};
use crate::math_env::score_answer;
use crate::template::Prompter;

/// Opening tag of a calculator call.
pub const CALC_OPEN: &str = "<calc>";
/// Closing tag of a calculator call; also the turn's stop string.
pub const CALC_CLOSE: &str = "</calc>";
/// Longest expression the env will evaluate (longer ones get an error observation).
pub const MAX_EXPR_CHARS: usize = 256;
/// Default cap on turns per episode (calls + the final answer).
pub const DEFAULT_MAX_TURNS: usize = 5;

/// A default prompt for base models that explains the tool.
pub const CALC_FORMAT_TEMPLATE: &str = "Question: {question}\nYou can use a calculator: write <calc>expression</calc> and it replies = value. Finish with the final answer.\nAnswer:";
/// A default system prompt for chat models that explains the tool.
pub const CALC_SYSTEM_PROMPT: &str = "You can use a calculator: write <calc>expression</calc> and it replies = value. Finish with the final answer.";

/// What a turn asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalcCall<'a> {
    /// `<calc>expr</calc>` at the end of the turn.
    Expr(&'a str),
    /// The turn ended with `</calc>` but has no `<calc>` before it.
    Unopened,
}

/// The calculator call that ends `action`, if any. Trailing whitespace after `</calc>` is
/// allowed; a `</calc>` that is not at the end of the turn is not a call (the sampler cuts turns
/// at the stop string).
pub fn parse_call(action: &str) -> Option<CalcCall<'_>> {
    let body = action.trim_end().strip_suffix(CALC_CLOSE)?;
    match body.rfind(CALC_OPEN) {
        Some(i) => Some(CalcCall::Expr(body[i + CALC_OPEN.len()..].trim())),
        None => Some(CalcCall::Unopened),
    }
}

fn short(msg: &str) -> String {
    let one_line = msg.replace('\n', " ");
    if one_line.chars().count() <= 80 {
        one_line
    } else {
        let mut s: String = one_line.chars().take(77).collect();
        s.push_str("...");
        s
    }
}

/// One calculator episode.
pub struct CalcEnv {
    problem: Arc<Problem>,
    prompt: Observation,
    stop: Arc<Vec<String>>,
    reward: Arc<dyn Reward>,
    max_turns: usize,
    turns: usize,
    calls: usize,
    errors: usize,
    done: Option<Step>,
}

impl CalcEnv {
    pub fn new(
        problem: Arc<Problem>,
        prompter: &Prompter,
        stop: Arc<Vec<String>>,
        reward: Arc<dyn Reward>,
        max_turns: usize,
    ) -> Self {
        let prompt = prompter.render(&problem.question);
        CalcEnv {
            problem,
            prompt,
            stop,
            reward,
            max_turns: max_turns.max(1),
            turns: 0,
            calls: 0,
            errors: 0,
            done: None,
        }
    }

    fn finish(&mut self, reward: f64, mut metrics: BTreeMap<String, f64>, truncated: bool) -> Step {
        metrics.insert("turns".into(), self.turns as f64);
        metrics.insert("calc_calls".into(), self.calls as f64);
        metrics.insert("calc_errors".into(), self.errors as f64);
        metrics.insert("truncated".into(), if truncated { 1.0 } else { 0.0 });
        let step = Step::Done { reward, metrics };
        self.done = Some(step.clone());
        step
    }

    /// The calculator's reply to one call.
    fn answer(&mut self, call: CalcCall<'_>) -> String {
        let result = match call {
            CalcCall::Unopened => Err(format!("no {CALC_OPEN} before {CALC_CLOSE}")),
            CalcCall::Expr(e) if e.chars().count() > MAX_EXPR_CHARS => Err(format!(
                "expression longer than {MAX_EXPR_CHARS} characters"
            )),
            CalcCall::Expr(e) => rewards::calc::evaluate(e),
        };
        match result {
            Ok(v) => format!(" = {v}"),
            Err(why) => {
                self.errors += 1;
                format!(" = error: {}", short(&why))
            }
        }
    }
}

impl Env for CalcEnv {
    fn initial_observation(&self) -> Observation {
        self.prompt.clone()
    }

    fn stop_strings(&self) -> &[String] {
        &self.stop
    }

    fn step(&mut self, action: &str) -> Step {
        if let Some(done) = &self.done {
            return done.clone();
        }
        self.turns += 1;
        if let Some(call) = parse_call(action) {
            self.calls += 1;
            if self.turns >= self.max_turns {
                // Out of turns with no answer given.
                return self.finish(0.0, BTreeMap::new(), true);
            }
            let observation = self.answer(call);
            return Step::Continue { observation };
        }
        let score = score_answer(self.reward.as_ref(), &self.prompt, &self.problem, action);
        self.finish(score.reward, score.metrics, false)
    }

    fn problem(&self) -> &Arc<Problem> {
        &self.problem
    }
}

/// Makes [`CalcEnv`]s.
#[derive(Clone)]
pub struct CalcEnvFactory {
    prompter: Prompter,
    stop: Arc<Vec<String>>,
    reward: Arc<dyn Reward>,
    max_turns: usize,
}

impl CalcEnvFactory {
    /// `extra_stop` is added to the `</calc>` stop string.
    pub fn new(
        prompter: Prompter,
        extra_stop: Vec<String>,
        reward: Arc<dyn Reward>,
        max_turns: usize,
    ) -> Self {
        let mut stop = vec![CALC_CLOSE.to_string()];
        stop.extend(extra_stop.into_iter().filter(|s| s != CALC_CLOSE));
        CalcEnvFactory {
            prompter,
            stop: Arc::new(stop),
            reward,
            max_turns: max_turns.max(1),
        }
    }
}

impl EnvFactory for CalcEnvFactory {
    fn name(&self) -> &str {
        "calc"
    }

    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env> {
        Box::new(CalcEnv::new(
            problem,
            &self.prompter,
            self.stop.clone(),
            self.reward.clone(),
            self.max_turns,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_found_only_at_the_end_of_a_turn() {
        assert_eq!(
            parse_call("So <calc> 3*4 </calc>"),
            Some(CalcCall::Expr("3*4"))
        );
        assert_eq!(
            parse_call("<calc>1</calc> then <calc>2+2</calc>\n "),
            Some(CalcCall::Expr("2+2"))
        );
        assert_eq!(parse_call("2+2</calc>"), Some(CalcCall::Unopened));
        assert_eq!(parse_call("<calc>2+2</calc> so 4"), None);
        assert_eq!(parse_call("<calc>2+2"), None);
        assert_eq!(parse_call("The answer is 4."), None);
        assert_eq!(short(&"x".repeat(200)).chars().count(), 80);
    }
}
