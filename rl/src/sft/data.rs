//! SFT examples: a prompt and the completion to learn, from problems (gold answers as
//! completions) or from a JSONL file of pairs or chats; tokenised so that only completion
//! tokens are in the loss.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use envs::{Cursor, EpochShuffle, Message, Observation, Prompter, ProblemSource, Role};
use policies::TextTokenizer;
use serde::Deserialize;

use super::config::SftData;

/// A prompt and the completion to learn.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub prompt: Observation,
    pub completion: String,
}

/// Token ids, and from which position on they are learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub tokens: Vec<i64>,
    pub prompt_len: usize,
}

pub enum Source {
    Problems { problems: Arc<dyn ProblemSource>, prompter: Prompter },
    Lines { train: Vec<Example>, test: Vec<Example>, shuffle: EpochShuffle },
}

impl Source {
    pub fn build(data: &SftData) -> Result<Source> {
        if let Some(p) = &data.problems {
            let env = envs::EnvConfig { problems: p.clone(), template: data.template.clone(), ..Default::default() };
            let problems = env.build_problems().map_err(|e| anyhow!("[data.problems]: {e}"))?;
            let prompter = env.effective_template().compile().map_err(|e| anyhow!("[data] template: {e}"))?;
            return Ok(Source::Problems { problems, prompter });
        }
        let train_path = data.train.as_deref().expect("checked: problems or train");
        let mut train = read_lines(train_path)?;
        let test = match &data.test {
            Some(path) => read_lines(path)?,
            None => {
                // A seeded split: every k-th example of a shuffled order.
                let n_test = ((train.len() as f64) * data.test_fraction).round() as usize;
                let order = EpochShuffle::new(train.len(), data.seed ^ 0x5eed);
                let held: std::collections::BTreeSet<usize> = (0..n_test as u64).filter_map(|i| order.get(0, i)).collect();
                let mut test = Vec::new();
                let mut kept = Vec::new();
                for (i, e) in train.into_iter().enumerate() {
                    if held.contains(&i) { test.push(e) } else { kept.push(e) }
                }
                train = kept;
                test
            }
        };
        if train.is_empty() {
            bail!("{}: no training examples", train_path.display());
        }
        let shuffle = EpochShuffle::new(train.len(), data.seed);
        Ok(Source::Lines { train, test, shuffle })
    }

    /// The next training example, advancing `cursor` (a new shuffled epoch after the last).
    pub fn next(&self, cursor: &mut Cursor) -> Result<Example> {
        for _ in 0..2 {
            let example = match self {
                Source::Problems { problems, prompter } => problems
                    .train_problem(cursor.epoch, cursor.index)
                    .map(|p| Example { prompt: prompter.render(&p.question), completion: p.answer.clone() }),
                Source::Lines { train, shuffle, .. } => shuffle.get(cursor.epoch, cursor.index).map(|i| train[i].clone()),
            };
            if let Some(e) = example {
                cursor.index += 1;
                cursor.groups += 1;
                return Ok(e);
            }
            cursor.epoch += 1;
            cursor.index = 0;
        }
        bail!("the training data is empty")
    }

    pub fn heldout(&self, limit: usize) -> Vec<Example> {
        match self {
            Source::Problems { problems, prompter } => problems
                .test_set()
                .iter()
                .take(limit)
                .map(|p| Example { prompt: prompter.render(&p.question), completion: p.answer.clone() })
                .collect(),
            Source::Lines { test, .. } => test.iter().take(limit).cloned().collect(),
        }
    }
}

/// Prompt and completion ids. Plain prompts get the tokenizer's special tokens (e.g. bos) and
/// the completion an eos; chats are rendered whole by the chat template, and the completion is
/// what the full rendering adds to the prompt's (so the template's end-of-turn is learned too).
pub fn tokenize(tok: &TextTokenizer, e: &Example) -> Result<Tokenized> {
    match &e.prompt {
        Observation::Text(text) => {
            let mut tokens = tok.encode(text, true)?;
            let prompt_len = tokens.len();
            tokens.extend(tok.encode(&e.completion, false)?);
            if let Some(&eos) = tok.eos_ids.first() {
                tokens.push(eos);
            }
            Ok(Tokenized { tokens, prompt_len })
        }
        Observation::Chat { messages, .. } => {
            let to_policy = |m: &Message| policies::Message::new(m.role.as_str(), &m.content);
            let mut all: Vec<policies::Message> = messages.iter().map(to_policy).collect();
            let prompt = tok.encode_chat(&all, true)?;
            all.push(policies::Message::new(Role::Assistant.as_str(), &e.completion));
            let tokens = tok.encode_chat(&all, false)?;
            if tokens.len() <= prompt.len() || tokens[..prompt.len()] != prompt[..] {
                bail!("the chat template does not render the prompt as a prefix of the whole conversation");
            }
            Ok(Tokenized { tokens, prompt_len: prompt.len() })
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    completion: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
}

fn read_lines(path: &Path) -> Result<Vec<Example>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    let source = path.display().to_string();
    crate::jsonl::for_each_line(std::io::BufReader::new(file), &source, |n, line: Line| {
        let example = match line {
            Line { prompt: Some(prompt), completion: Some(completion), messages: None } => Example { prompt: Observation::Text(prompt), completion },
            Line { prompt: None, completion: None, messages: Some(mut messages) } => {
                let last = messages.pop().filter(|m| m.role == Role::Assistant);
                let Some(last) = last else { bail!("{source}:{n}: the last message must be the assistant's (the completion)") };
                if messages.is_empty() {
                    bail!("{source}:{n}: a chat needs a message before the assistant's");
                }
                Example { prompt: Observation::Chat { messages, add_generation_prompt: true }, completion: last.content }
            }
            _ => bail!("{source}:{n}: expected {{\"prompt\", \"completion\"}} or {{\"messages\"}}"),
        };
        out.push(example);
        Ok(())
    })?;
    Ok(out)
}
