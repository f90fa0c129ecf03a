//! Turning logits into the next token: repetition penalty, top-k, top-p, min-p, temperature and a
//! seeded random draw (or greedy argmax), in llama.cpp's order; plus the "required prefix" constraint
//! used for token healing and the top-k log-probabilities reported to callers.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::tokenizer::{TokenId, Tokenizer};

/// How to pick tokens. Built with [`InferenceParameters::default`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceParameters {
    /// Softmax temperature; `0` (or less) means greedy decoding.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (`0` = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities sum to `top_p` (`1` = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (`0` = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (`1` = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random draw; `None` takes one from the clock.
    pub seed: Option<u64>,
    /// Generation stops when the generated text contains one of these.
    pub stop_strings: Vec<String>,
    /// How many top log-probabilities (before sampling) to report per token (`0` = none).
    pub logprobs: usize,
    /// The generated text must start with these bytes (token healing): tokens that disagree with them
    /// are excluded until they are spelled out.
    pub required_prefix: Vec<u8>,
    /// Never sample control or user-defined (special) tokens other than end-of-generation ones.
    pub suppress_special: bool,
    /// Never sample end-of-generation tokens (llama.cpp's `ignore_eos`): generation then runs until
    /// the token budget, a stop string, the callback or a full context ends it.
    pub ignore_end_of_generation: bool,
    /// Report each token's runner-up (see [`RunnerUp`]).
    pub runner_up: bool,
    /// Stop evaluating the prompt once this instant has passed (checked between micro-batches,
    /// after at least one), with [`InferError::PromptDeadline`](crate::InferError::PromptDeadline).
    pub prompt_deadline: Option<Instant>,
}

impl Default for InferenceParameters {
    fn default() -> Self {
        InferenceParameters {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            stop_strings: Vec::new(),
            logprobs: 0,
            required_prefix: Vec::new(),
            suppress_special: false,
            ignore_end_of_generation: false,
            runner_up: false,
            prompt_deadline: None,
        }
    }
}

impl InferenceParameters {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        InferenceParameters {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        }
    }
    /// Sets the temperature (`0` = greedy).
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }
    /// Sets the prompt deadline (`None` = evaluate the whole prompt whatever it takes).
    pub fn with_prompt_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.prompt_deadline = deadline;
        self
    }
    /// Sets top-k (`0` = off).
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.top_k = top_k;
        self
    }
    /// Sets top-p (`1` = off).
    pub fn with_top_p(mut self, top_p: f32) -> Self {
        self.top_p = top_p;
        self
    }
    /// Sets min-p (`0` = off).
    pub fn with_min_p(mut self, min_p: f32) -> Self {
        self.min_p = min_p;
        self
    }
    /// Sets the repetition penalty and its window.
    pub fn with_repeat_penalty(mut self, penalty: f32, last_n: usize) -> Self {
        self.repeat_penalty = penalty;
        self.repeat_last_n = last_n;
        self
    }
    /// Fixes the random seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Stops generation at any of these strings.
    pub fn with_stop_strings(mut self, stops: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.stop_strings = stops.into_iter().map(Into::into).collect();
        self
    }
    /// Reports the top `k` log-probabilities of each step.
    pub fn with_logprobs(mut self, k: usize) -> Self {
        self.logprobs = k;
        self
    }
    /// Never samples control/special tokens except end-of-generation ones (code completion: a
    /// stray `<|fim_middle|>` or `<|im_start|>` is never a useful continuation).
    pub fn with_suppress_special(mut self, suppress: bool) -> Self {
        self.suppress_special = suppress;
        self
    }
    /// Never samples end-of-generation tokens (see
    /// [`InferenceParameters::ignore_end_of_generation`]).
    pub fn with_ignore_end_of_generation(mut self, ignore: bool) -> Self {
        self.ignore_end_of_generation = ignore;
        self
    }
    /// Reports each generated token's runner-up in [`crate::GeneratedToken::runner_up`].
    pub fn with_runner_up(mut self, report: bool) -> Self {
        self.runner_up = report;
        self
    }

    /// Requires the generation to start with `prefix` (token healing).
    pub fn with_required_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.required_prefix = prefix.into();
        self
    }
}

/// Stateful sampler for one generation.
pub(crate) struct Sampler {
    params: InferenceParameters,
    rng: ChaCha8Rng,
    required: Vec<u8>,
    candidates: Vec<(TokenId, f32)>,
}

impl Sampler {
    /// A sampler for `params`.
    pub(crate) fn new(params: &InferenceParameters) -> Sampler {
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Sampler {
            params: params.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            required: params.required_prefix.clone(),
            candidates: Vec::new(),
        }
    }

    /// Picks the next token from `logits`; `recent` are the latest tokens (for the penalty).
    pub(crate) fn sample(
        &mut self,
        logits: &[f32],
        recent: &[TokenId],
        tokenizer: &Tokenizer,
    ) -> TokenId {
        let p = &self.params;
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as TokenId, l)));

        // Repetition penalty on recently seen tokens.
        if p.repeat_penalty != 1.0 && p.repeat_penalty > 0.0 {
            let window = &recent[recent.len().saturating_sub(p.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &token in window {
                if seen.insert(token) {
                    if let Some(c) = self.candidates.get_mut(token as usize) {
                        c.1 = if c.1 > 0.0 {
                            c.1 / p.repeat_penalty
                        } else {
                            c.1 * p.repeat_penalty
                        };
                    }
                }
            }
        }

        // Special tokens other than end-of-generation ones are never candidates.
        if p.suppress_special {
            self.candidates
                .retain(|&(id, _)| !tokenizer.is_special(id) || tokenizer.is_end_of_generation(id));
            if self.candidates.is_empty() {
                self.candidates
                    .extend(logits.iter().enumerate().map(|(i, &l)| (i as TokenId, l)));
            }
        }

        // End-of-generation tokens are never candidates when asked (unless nothing else is left).
        if p.ignore_end_of_generation {
            self.candidates
                .retain(|&(id, _)| !tokenizer.is_end_of_generation(id));
            if self.candidates.is_empty() {
                self.candidates
                    .extend(logits.iter().enumerate().map(|(i, &l)| (i as TokenId, l)));
            }
        }

        // Token healing: only tokens consistent with the required bytes.
        if !self.required.is_empty() {
            let required = &self.required;
            self.candidates.retain(|&(id, _)| {
                if tokenizer.is_special(id) {
                    return false;
                }
                let bytes = tokenizer.token_bytes(id);
                !bytes.is_empty() && (bytes.starts_with(required) || required.starts_with(bytes))
            });
            if self.candidates.is_empty() {
                // Nothing spells the prefix: give up the constraint rather than fail.
                self.required.clear();
                self.candidates
                    .extend(logits.iter().enumerate().map(|(i, &l)| (i as TokenId, l)));
            }
        }

        let chosen = if p.temperature <= 0.0 {
            argmax(&self.candidates)
        } else {
            self.sample_distribution()
        };
        if !self.required.is_empty() {
            let bytes = tokenizer.token_bytes(chosen);
            if bytes.len() >= self.required.len() {
                self.required.clear();
            } else {
                self.required.drain(..bytes.len());
            }
        }
        chosen
    }

    fn sample_distribution(&mut self) -> TokenId {
        let p = &self.params;
        let candidates = &mut self.candidates;
        candidates.retain(|c| c.1.is_finite());
        if candidates.is_empty() {
            return 0;
        }
        // Sort by logit, highest first (top-k first to keep the sort small).
        let k = if p.top_k == 0 {
            candidates.len()
        } else {
            p.top_k.min(candidates.len())
        };
        if k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));

        // Probabilities at temperature 1 for top-p and min-p.
        let probabilities = softmax(candidates.iter().map(|c| c.1));
        let mut keep = candidates.len();
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, prob) in probabilities.iter().enumerate() {
                cumulative += prob;
                if cumulative >= p.top_p {
                    keep = keep.min(i + 1);
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let threshold = probabilities[0] * p.min_p;
            let above = probabilities
                .iter()
                .take_while(|&&prob| prob >= threshold)
                .count()
                .max(1);
            keep = keep.min(above);
        }
        candidates.truncate(keep.max(1));

        // Temperature, then a draw.
        let probabilities = softmax(candidates.iter().map(|c| c.1 / p.temperature));
        let mut draw: f32 = self.rng.random();
        for (candidate, prob) in candidates.iter().zip(&probabilities) {
            if draw < *prob {
                return candidate.0;
            }
            draw -= prob;
        }
        candidates[candidates.len() - 1].0
    }
}

fn argmax(candidates: &[(TokenId, f32)]) -> TokenId {
    let mut best = (0, f32::NEG_INFINITY);
    for &(id, logit) in candidates {
        if logit > best.1 {
            best = (id, logit);
        }
    }
    best.0
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most likely tokens with their log-probabilities (log-softmax of `logits`), best first.
pub(crate) fn top_logprobs(logits: &[f32], k: usize) -> Vec<(TokenId, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_sum = max as f64 + sum.ln();
    let mut indexed: Vec<(TokenId, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as TokenId, l))
        .collect();
    let k = k.min(indexed.len());
    indexed.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    indexed.truncate(k);
    indexed.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    indexed
        .into_iter()
        .map(|(id, l)| (id, (l as f64 - log_sum) as f32))
        .collect()
}

/// The most likely token other than the one chosen at a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunnerUp {
    /// Token id.
    pub id: TokenId,
    /// How far (in nats) its logit lies below the chosen token's. Logit differences are
    /// log-probability differences, so `exp(-gap)` is its probability relative to the chosen token's
    /// (negative when sampling chose a less likely token).
    pub gap: f32,
}

/// The runner-up to `chosen` in `logits`: the best other token, skipping special tokens when
/// `suppress_special` (as the sampler does). One pass keeping the best few, so it costs about as
/// much as an argmax.
pub(crate) fn runner_up(
    logits: &[f32],
    chosen: TokenId,
    tokenizer: &Tokenizer,
    suppress_special: bool,
) -> Option<RunnerUp> {
    const KEEP: usize = 4;
    let mut best: [(TokenId, f32); KEEP] = [(0, f32::NEG_INFINITY); KEEP];
    for (i, &logit) in logits.iter().enumerate() {
        if logit <= best[KEEP - 1].1 || i as TokenId == chosen {
            continue;
        }
        let mut slot = KEEP - 1;
        while slot > 0 && best[slot - 1].1 < logit {
            best[slot] = best[slot - 1];
            slot -= 1;
        }
        best[slot] = (i as TokenId, logit);
    }
    let chosen_logit = *logits.get(chosen as usize)?;
    best.iter()
        .filter(|(_, logit)| logit.is_finite())
        .find(|(id, _)| !(suppress_special && tokenizer.is_special(*id)))
        .map(|&(id, logit)| RunnerUp {
            id,
            gap: chosen_logit - logit,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logprobs_are_normalised_and_sorted() {
        let top = top_logprobs(&[1.0, 3.0, 2.0], 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        let total: f32 = top.iter().map(|t| t.1.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn argmax_picks_the_largest() {
        assert_eq!(argmax(&[(0, 0.5), (1, 2.0), (2, -1.0)]), 1);
    }
}
