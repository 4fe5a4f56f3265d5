//! Prompt templates: how a [`Problem`](crate::Problem)'s question becomes the first observation.
//!
//! Two kinds, because base models and chat models want different things:
//! - a plain format string (`"Question: {question}\nAnswer:"`), rendered here into
//!   [`Observation::Text`];
//! - the model's own chat template, with an optional system prompt: rendered by the policy
//!   (which owns the tokenizer and the Jinja template), so here we only build the messages.
//!
//! Format strings know one placeholder, `{question}`; `{{` and `}}` write literal braces (so a
//! prompt can ask for `\boxed{{}}`). Anything else in braces is a config error, caught when the
//! template is compiled rather than silently sent to the model.

use serde::{Deserialize, Serialize};

use crate::env::{Message, Observation, Role};
use crate::error::EnvError;

/// A prompt template, as written in the config.
///
/// TOML: `template = { format = "Question: {question}\nAnswer:" }` or
/// `template = { chat = { system = "Think step by step.", user = "{question}" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Template {
    /// Plain text; the only placeholder is `{question}`.
    Format(String),
    /// Chat messages for the model's chat template.
    Chat {
        /// Optional system prompt (taken literally, no placeholders).
        #[serde(default)]
        system: Option<String>,
        /// Format string for the user message (default `{question}`).
        #[serde(default = "default_user")]
        user: String,
    },
}

fn default_user() -> String {
    "{question}".to_string()
}

impl Template {
    /// A plain template that shows the question alone (the arithmetic curriculum's default).
    pub fn question_only() -> Self {
        Template::Format("{question}".into())
    }

    /// The default for JSONL math datasets: `Question: {question}\nAnswer:`.
    pub fn question_answer() -> Self {
        Template::Format("Question: {question}\nAnswer:".into())
    }

    /// Check placeholders and prepare for rendering.
    pub fn compile(&self) -> Result<Prompter, EnvError> {
        match self {
            Template::Format(f) => Ok(Prompter(Compiled::Text(parse(f)?))),
            Template::Chat { system, user } => Ok(Prompter(Compiled::Chat {
                system: system.clone(),
                user: parse(user)?,
            })),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Question,
}

/// A compiled template; cheap to clone and to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompter(Compiled);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Compiled {
    Text(Vec<Piece>),
    Chat {
        system: Option<String>,
        user: Vec<Piece>,
    },
}

impl Prompter {
    /// The first observation for `question`.
    pub fn render(&self, question: &str) -> Observation {
        match &self.0 {
            Compiled::Text(p) => Observation::Text(fill(p, question)),
            Compiled::Chat { system, user } => {
                let mut messages = Vec::with_capacity(2);
                if let Some(s) = system {
                    messages.push(Message::new(Role::System, s.clone()));
                }
                messages.push(Message::new(Role::User, fill(user, question)));
                Observation::Chat {
                    messages,
                    add_generation_prompt: true,
                }
            }
        }
    }
}

fn fill(pieces: &[Piece], question: &str) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Lit(s) => out.push_str(s),
            Piece::Question => out.push_str(question),
        }
    }
    out
}

fn parse(fmt: &str) -> Result<Vec<Piece>, EnvError> {
    let bad = |why: String| EnvError::Template {
        template: fmt.to_string(),
        why,
    };
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = fmt.chars().peekable();
    let mut has_question = false;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => {
                            return Err(bad("unclosed `{` (write `{{` for a literal brace)".into()))
                        }
                    }
                }
                if name.trim() != "question" {
                    return Err(bad(format!(
                        "unknown placeholder `{{{name}}}`: the only placeholder is `{{question}}` (write `{{{{` and `}}}}` for literal braces)"
                    )));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Question);
                has_question = true;
            }
            '}' => return Err(bad("unmatched `}` (write `}}` for a literal brace)".into())),
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    if !has_question {
        return Err(bad(
            "no `{question}` placeholder: the model would never see the problem".into(),
        ));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_renders_question_and_escapes() {
        let p = Template::Format("Q: {question}\nPut it in \\boxed{{}}.\nA:".into())
            .compile()
            .unwrap();
        assert_eq!(
            p.render("1+1?"),
            Observation::Text("Q: 1+1?\nPut it in \\boxed{}.\nA:".into())
        );
        let p = Template::question_only().compile().unwrap();
        assert_eq!(p.render("12+35-8="), Observation::Text("12+35-8=".into()));
    }

    #[test]
    fn chat_builds_messages() {
        let t = Template::Chat {
            system: Some("Be brief.".into()),
            user: "Solve: {question}".into(),
        };
        let obs = t.compile().unwrap().render("2+2");
        assert_eq!(
            obs,
            Observation::Chat {
                messages: vec![
                    Message::new(Role::System, "Be brief."),
                    Message::new(Role::User, "Solve: 2+2"),
                ],
                add_generation_prompt: true,
            }
        );
        let t = Template::Chat {
            system: None,
            user: default_user(),
        };
        let Observation::Chat { messages, .. } = t.compile().unwrap().render("x") else {
            panic!()
        };
        assert_eq!(messages, vec![Message::new(Role::User, "x")]);
    }

    #[test]
    fn bad_templates_are_errors() {
        for (f, want) in [
            ("Q: {problem}", "unknown placeholder `{problem}`"),
            ("Q: {question", "unclosed"),
            ("Q: question}", "unmatched"),
            ("Q: nothing", "no `{question}`"),
        ] {
            let e = Template::Format(f.into())
                .compile()
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{f}: {e}");
        }
    }
}
