//! Reusing cached keys and values past the common prefix: when a prompt changes in the middle (a
//! context chunk replaced, a line typed before a suffix that stays the same), the tokens after the
//! change are usually still in the cache, only at other positions. Instead of evaluating them
//! again, the session moves their cache rows to their new positions and re-rotates their keys by
//! the distance moved ([`crate::models::architecture::PositionShift`]); only the tokens between
//! such runs are evaluated.
//!
//! llama.cpp's server does the same with `--cache-reuse N` for runs the new prompt keeps in order
//! after deletions; this plan also finds runs after insertions and runs that changed order.
//!
//! The moved keys and values were computed while the tokens attended to what preceded them then,
//! not to what precedes them now: the result is close to, not equal to, evaluating the prompt
//! afresh. That is why runs shorter than a minimum are evaluated instead.
//!
//! This module is the pure part: which runs to reuse ([`plan_reuse`]) and in what order to evaluate
//! what is left ([`segments`]).

use std::collections::HashMap;
use std::ops::Range;

use crate::tokenizer::TokenId;

/// A run of cached tokens that the new prompt holds again: cache rows `from..from + len` become
/// rows `to..to + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReusedRun {
    /// First cache row (position) of the run now.
    pub from: usize,
    /// First position of the run in the new prompt.
    pub to: usize,
    /// Tokens in the run.
    pub len: usize,
}

impl ReusedRun {
    /// Whether the run changes position (its keys then need re-rotating).
    pub(crate) fn moves(&self) -> bool {
        self.from != self.to
    }
}

/// Most candidate cache positions looked at per anchor: bounds the work on repetitive text (runs of
/// the same indentation token) without missing the runs that matter, which are long.
const MAX_CANDIDATES: usize = 16;

/// Tokens an anchor (the lookup key of a run's start) spans at most.
const MAX_ANCHOR: usize = 8;

/// Runs of `cached[keep..]` that reappear in `prompt[keep..limit]`, at least `min_len` tokens
/// long, in prompt order and not overlapping in the prompt. The prompt's last token is never part
/// of a run: its logits are what the evaluation is for. `keep` is the prefix both share (it stays
/// in place); from `limit` on everything is evaluated. `min_len == 0` disables reuse.
///
/// Greedy from the left: at each prompt position the longest cached run starting with the same
/// tokens is taken (the closest one on ties, so that nothing moves when nothing has to); a position
/// no run of `min_len` starts at is left for evaluation.
pub(crate) fn plan_reuse(
    cached: &[TokenId],
    prompt: &[TokenId],
    keep: usize,
    min_len: usize,
    limit: usize,
) -> Vec<ReusedRun> {
    let mut runs = Vec::new();
    if min_len == 0 || prompt.len() < 2 || keep >= cached.len() {
        return runs;
    }
    // The last prompt token is evaluated whatever happens.
    let end = (prompt.len() - 1).min(limit);
    if keep >= end || end - keep < min_len {
        return runs;
    }
    let anchor = min_len.clamp(1, MAX_ANCHOR);
    if cached.len() - keep < anchor {
        return runs;
    }
    // Cache positions by the tokens starting there, most recent last.
    let mut starts: HashMap<&[TokenId], Vec<usize>> = HashMap::new();
    for position in keep..=cached.len() - anchor {
        starts
            .entry(&cached[position..position + anchor])
            .or_default()
            .push(position);
    }
    let mut position = keep;
    while position + min_len <= end {
        let best = starts
            .get(&prompt[position..position + anchor])
            .into_iter()
            .flat_map(|candidates| {
                // The candidates nearest the prompt position first: they need the smallest moves.
                let mut nearest: Vec<usize> = candidates.clone();
                nearest.sort_by_key(|&c| c.abs_diff(position));
                nearest.truncate(MAX_CANDIDATES);
                nearest
            })
            .map(|from| {
                let len = cached[from..]
                    .iter()
                    .zip(&prompt[position..end])
                    .take_while(|(a, b)| a == b)
                    .count();
                (len, from)
            })
            // Longest; on ties the first, which is the nearest.
            .fold(None::<(usize, usize)>, |best, candidate| match best {
                Some(b) if b.0 >= candidate.0 => Some(b),
                _ => Some(candidate),
            });
        match best {
            Some((len, from)) if len >= min_len => {
                runs.push(ReusedRun {
                    from,
                    to: position,
                    len,
                });
                position += len;
            }
            _ => position += 1,
        }
    }
    runs
}

/// One part of the prompt after the kept prefix, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Tokens to evaluate (prompt positions).
    Evaluate(Range<usize>),
    /// Tokens whose cache rows a reused run supplies (prompt positions).
    Reused(Range<usize>),
}

/// The prompt `keep..n_prompt` cut into what `runs` supply and what is left to evaluate.
pub(crate) fn segments(keep: usize, n_prompt: usize, runs: &[ReusedRun]) -> Vec<Segment> {
    let mut parts = Vec::new();
    let mut position = keep;
    for run in runs {
        if run.to > position {
            parts.push(Segment::Evaluate(position..run.to));
        }
        parts.push(Segment::Reused(run.to..run.to + run.len));
        position = run.to + run.len;
    }
    if position < n_prompt {
        parts.push(Segment::Evaluate(position..n_prompt));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<TokenId> {
        text.bytes().map(TokenId::from).collect()
    }

    fn plan(cached: &str, prompt: &str, min_len: usize) -> Vec<(usize, usize, usize)> {
        let (cached, prompt) = (tokens(cached), tokens(prompt));
        let keep = cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        plan_reuse(&cached, &prompt, keep, min_len, prompt.len())
            .into_iter()
            .map(|r| (r.from, r.to, r.len))
            .collect()
    }

    #[test]
    fn a_deleted_span_moves_what_follows_back() {
        // "BBBB" deleted: "CCCCCCCC" moves from 8 to 4; the final "!" is evaluated.
        assert_eq!(plan("AAAABBBBCCCCCCCC!", "AAAACCCCCCCC!", 4), [(8, 4, 8)]);
    }

    #[test]
    fn an_inserted_span_is_evaluated_and_what_follows_moves_on() {
        // "xy" typed before a suffix that stays: the suffix moves two rows on.
        assert_eq!(
            plan("prefix|suffix-text;", "prefixxy|suffix-text;", 4),
            [(6, 8, 12)]
        );
    }

    #[test]
    fn a_replaced_chunk_leaves_the_chunks_around_it() {
        let cached = "<c1:aaaaaaaa><c2:bbbbbbbb><file:ffffffffffff>?";
        let prompt = "<c1:aaaaaaaa><c3:zzzz><file:ffffffffffff>?";
        // Common prefix up to "<c"; "3:zzzz" is new; from the ">" before "<file" on, all of it
        // but the last token moves back 4.
        let runs = plan(cached, prompt, 6);
        assert_eq!(runs, [(25, 21, 20)]);
    }

    #[test]
    fn runs_can_change_order() {
        // The kept prefix is "#["; its rows stay and are not a source (so the second "[" is
        // evaluated).
        let runs = plan(
            "#[first-chunk][second-chunk]!",
            "#[second-chunk][first-chunk]!",
            6,
        );
        assert_eq!(runs, [(15, 2, 13), (2, 16, 12)]);
    }

    #[test]
    fn short_runs_are_evaluated_instead() {
        assert_eq!(plan("AAAABBBBCCC!", "AAAACCC!", 4), []);
        assert_eq!(plan("AAAABBBBCCC!", "AAAACCC!", 3), [(8, 4, 3)]);
    }

    #[test]
    fn the_last_prompt_token_is_never_reused() {
        // Everything after the kept prefix is in the cache, but the last token must be evaluated.
        let runs = plan("AAAABBBBCCCCDDDD", "AAAACCCCDDDD", 4);
        assert_eq!(runs, [(8, 4, 7)]);
    }

    #[test]
    fn reuse_off_or_nothing_after_the_prefix_plans_nothing() {
        assert_eq!(plan("AAAABBBBCCCC!", "AAAACCCC!", 0), []);
        assert_eq!(plan("AAAA", "AAAAB", 1), []);
        assert_eq!(plan("AAAABBBB", "AAAAB", 1), []);
    }

    #[test]
    fn nothing_from_the_limit_on_is_reused() {
        let (cached, prompt) = (tokens("AAAABBBBCCCC|DDDD!"), tokens("AAAACCCC|DDDD!"));
        let plan = |limit| {
            plan_reuse(&cached, &prompt, 4, 3, limit)
                .into_iter()
                .map(|r| (r.from, r.to, r.len))
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(prompt.len()), [(8, 4, 9)]);
        // A limit at the "|": the run stops before it, and "|DDDD" is evaluated.
        assert_eq!(plan(8), [(8, 4, 4)]);
        assert_eq!(plan(6), []);
    }

    #[test]
    fn the_nearest_of_equal_runs_is_taken() {
        // "xyz" occurs twice in the cache; the copy already at the right position stays.
        let runs = plan("ab.xyz.xyz!", "ab:xyz.xyz!", 3);
        assert_eq!(runs, [(3, 3, 7)]);
    }

    #[test]
    fn segments_alternate_between_evaluated_and_reused_parts() {
        let runs = [
            ReusedRun {
                from: 20,
                to: 5,
                len: 10,
            },
            ReusedRun {
                from: 40,
                to: 15,
                len: 4,
            },
        ];
        assert_eq!(
            segments(2, 30, &runs),
            [
                Segment::Evaluate(2..5),
                Segment::Reused(5..15),
                Segment::Reused(15..19),
                Segment::Evaluate(19..30),
            ]
        );
        assert_eq!(segments(2, 30, &[]), [Segment::Evaluate(2..30)]);
    }
}
