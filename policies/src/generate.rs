//! Batched generation with a KV cache: prompts of different lengths share one batch (each cache
//! row holds its own sequence), rows leave the batch when they finish, and every sampled token
//! comes back with its behaviour log-prob.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::invalid;
use crate::lora::LoraRuntime;
use crate::model::Model;
use crate::rng::SplitMix;
use crate::sampling::{choose, SamplingParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

#[derive(Debug, Clone)]
pub struct Completion {
    /// Sampled tokens, including the eos or the token that completed a stop string.
    pub tokens: Vec<i64>,
    /// Behaviour log-prob of each sampled token.
    pub logprobs: Vec<f32>,
    /// Decoded text, without special tokens and cut before a stop string.
    pub text: String,
    pub finish_reason: FinishReason,
}

/// Generation settings that do not change per call.
pub struct Generation<'a> {
    pub model: &'a Model,
    pub lora: Option<&'a LoraRuntime>,
    pub eos_ids: &'a [i64],
    /// Token ids to text (for stop strings and the returned text).
    pub decode: &'a dyn Fn(&[i64]) -> Result<String>,
}

struct Row {
    /// Index into the caller's prompts.
    origin: usize,
    out: Completion,
    done: bool,
}

impl Generation<'_> {
    /// Generate one completion per prompt. `streams[i]` picks prompt i's random stream, so a
    /// sequence's samples depend only on (seed, stream), not on the rest of the batch.
    pub fn run(&self, prompts: &[Vec<i64>], streams: &[u64], params: &SamplingParams) -> Result<Vec<Completion>> {
        params.validate()?;
        if prompts.len() != streams.len() {
            return Err(invalid!("{} prompts but {} random streams", prompts.len(), streams.len()));
        }
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = self.model.config.vocab_size;
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(invalid!("prompt {i} is empty"));
            }
            if let Some(bad) = p.iter().find(|&&t| t < 0 || t >= vocab) {
                return Err(invalid!("prompt {i} has token id {bad}, outside the vocabulary (size {vocab})"));
            }
        }
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as i64;
        let mut cache = self.model.new_cache(prompts.len() as i64, longest + params.max_new_tokens.max(1));
        let mut rows: Vec<Row> = (0..prompts.len())
            .map(|i| Row {
                origin: i,
                out: Completion { tokens: Vec::new(), logprobs: Vec::new(), text: String::new(), finish_reason: FinishReason::Length },
                done: params.max_new_tokens == 0,
            })
            .collect();
        // One random stream per row, kept parallel to `rows`.
        let mut rngs: Vec<SplitMix> = streams.iter().map(|&s| SplitMix::for_stream(params.seed, s)).collect();
        // The caller's adapters until the batch shrinks; then their rows' share of the routing.
        let mut shrunk_lora: Option<LoraRuntime> = None;

        // Prefill every prompt at once, right-padded; take each row's last real position.
        let lens: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
        let padded: Vec<i64> = prompts.iter().flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(0, (longest - p.len() as i64) as usize))).collect();
        let tokens = Tensor::from_slice(&padded).view([prompts.len() as i64, longest]).to_device(device);
        let hidden = self.model.forward_cached(&tokens, &lens, &mut cache, self.lora)?;
        let last_index = Tensor::from_slice(&lens).to_device(device) - 1;
        let mut last = hidden.gather(1, &last_index.view([-1, 1, 1]).expand([-1, 1, hidden.size()[2]], false), false).squeeze_dim(1);

        let mut finished: Vec<Option<Completion>> = vec![None; prompts.len()];
        for step in 0..params.max_new_tokens {
            let lora = shrunk_lora.as_ref().or(self.lora);
            let logits = self.model.logits(&last, lora);
            let (next, logp) = choose(&logits, params, &mut rngs);
            let next_v = Vec::<i64>::try_from(&next.to_device(tch::Device::Cpu))?;
            let logp_v = Vec::<f32>::try_from(&logp.to_kind(Kind::Float).to_device(tch::Device::Cpu))?;
            for (i, row) in rows.iter_mut().enumerate() {
                self.push_token(row, next_v[i], logp_v[i], params)?;
            }
            if rows.iter().all(|r| r.done) || step + 1 == params.max_new_tokens {
                break;
            }
            let mut next_tokens = next.view([-1, 1]);
            // Drop finished rows once they are a quarter of the batch: less work per step.
            let live: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].done).collect();
            if live.len() * 4 <= rows.len() * 3 {
                cache.retain_rows(&live)?;
                shrunk_lora = lora.map(|l| l.select_rows(&live));
                rngs = live.iter().map(|&i| rngs[i].clone()).collect();
                let index = Tensor::from_slice(&live.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device);
                next_tokens = next_tokens.index_select(0, &index);
                let (done, kept): (Vec<Row>, Vec<Row>) = std::mem::take(&mut rows).into_iter().partition(|r| r.done);
                for row in done {
                    finished[row.origin] = Some(row.out);
                }
                rows = kept;
            }
            let counts = vec![1i64; rows.len()];
            last = self.model.forward_cached(&next_tokens, &counts, &mut cache, shrunk_lora.as_ref().or(self.lora))?.squeeze_dim(1);
        }
        for row in rows {
            finished[row.origin] = Some(row.out);
        }
        let mut out = Vec::with_capacity(finished.len());
        for c in finished {
            let mut c = c.ok_or_else(|| invalid!("internal: a sequence went missing during generation"))?;
            // A stopped row already holds its text, cut before the stop string (maybe empty).
            if c.finish_reason != FinishReason::Stop {
                c.text = self.visible_text(&c)?;
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Record one sampled token and decide whether the row is finished.
    fn push_token(&self, row: &mut Row, token: i64, logprob: f32, params: &SamplingParams) -> Result<()> {
        if row.done {
            return Ok(());
        }
        row.out.tokens.push(token);
        row.out.logprobs.push(logprob);
        if !params.ignore_eos && self.eos_ids.contains(&token) {
            row.out.finish_reason = FinishReason::Eos;
            row.done = true;
        } else if !params.stop.is_empty() && self.stop_in_tail(&row.out.tokens, &params.stop)? {
            // Only now decode the whole sequence, and cut at the first stop string.
            let text = (self.decode)(&row.out.tokens)?;
            if let Some(cut) = params.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                row.out.text = text[..cut].to_string();
                row.out.finish_reason = FinishReason::Stop;
                row.done = true;
            }
        }
        if !row.done && row.out.tokens.len() as i64 >= params.max_new_tokens {
            row.out.finish_reason = FinishReason::Length;
            row.done = true;
        }
        Ok(())
    }

    /// Whether a stop string ends within the last few tokens. Every earlier position was checked
    /// on earlier steps, so only a window as long as the longest stop string (in bytes; a token
    /// decodes to at least one byte) plus a margin for split characters needs decoding: the check
    /// costs the same at token 10 and at token 10 000.
    fn stop_in_tail(&self, tokens: &[i64], stop: &[String]) -> Result<bool> {
        let window = stop.iter().map(String::len).max().unwrap_or(0) + 4;
        let tail = (self.decode)(&tokens[tokens.len().saturating_sub(window)..])?;
        Ok(stop.iter().any(|s| tail.contains(s.as_str())))
    }

    /// The text of a completion, without a final eos token.
    fn visible_text(&self, c: &Completion) -> Result<String> {
        let end = if c.finish_reason == FinishReason::Eos { c.tokens.len() - 1 } else { c.tokens.len() };
        (self.decode)(&c.tokens[..end])
    }
}
