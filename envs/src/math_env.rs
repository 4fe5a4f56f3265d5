//! Single-turn math: the one-step case of [`Env`]. The prompt is the templated question; the
//! model's one turn is the answer, scored by a [`Reward`] (the math verifier by default).

use std::collections::BTreeMap;
use std::sync::Arc;

use rewards::{Episode, Reward, Score};

use crate::env::{Env, EnvFactory, Observation, Problem, Step};
use crate::template::Prompter;

/// Score a final answer against the problem's gold answer (shared by every env that ends in one).
pub(crate) fn score_answer(reward: &dyn Reward, prompt: &Observation, problem: &Problem, answer: &str) -> Score {
    let prompt = prompt.plain_text();
    reward.score(&Episode { prompt: &prompt, completion: answer, reference: &problem.answer })
}

/// One episode: prompt, one answer, done.
pub struct MathEnv {
    problem: Arc<Problem>,
    prompt: Observation,
    stop: Arc<Vec<String>>,
    reward: Arc<dyn Reward>,
    done: Option<Step>,
}

impl MathEnv {
    pub fn new(
        problem: Arc<Problem>,
        prompter: &Prompter,
        stop: Arc<Vec<String>>,
        reward: Arc<dyn Reward>,
    ) -> Self {
        let prompt = prompter.render(&problem.question);
        MathEnv {
            problem,
            prompt,
            stop,
            reward,
            done: None,
        }
    }
}

impl Env for MathEnv {
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
        let score = score_answer(self.reward.as_ref(), &self.prompt, &self.problem, action);
        let mut metrics: BTreeMap<String, f64> = score.metrics;
        metrics.insert("turns".into(), 1.0);
        let step = Step::Done {
            reward: score.reward,
            metrics,
        };
        self.done = Some(step.clone());
        step
    }

    fn problem(&self) -> &Arc<Problem> {
        &self.problem
    }
}

/// Makes [`MathEnv`]s.
#[derive(Clone)]
pub struct MathEnvFactory {
    prompter: Prompter,
    stop: Arc<Vec<String>>,
    reward: Arc<dyn Reward>,
}

impl MathEnvFactory {
    /// `stop`: extra strings that end the answer besides EOS (e.g. `"\nQuestion:"` for base
    /// models that would go on inventing questions).
    pub fn new(prompter: Prompter, stop: Vec<String>, reward: Arc<dyn Reward>) -> Self {
        MathEnvFactory {
            prompter,
            stop: Arc::new(stop),
            reward,
        }
    }
}

impl EnvFactory for MathEnvFactory {
    fn name(&self) -> &str {
        "math"
    }

    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env> {
        Box::new(MathEnv::new(
            problem,
            &self.prompter,
            self.stop.clone(),
            self.reward.clone(),
        ))
    }
}
