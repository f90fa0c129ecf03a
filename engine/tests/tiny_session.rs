//! Hermetic session tests on the tiny random-weight models of [`lmrs::tiny`]: prefix reuse gives the
//! same logits as evaluating from scratch, truncation, forks, deterministic greedy and seeded
//! generation, stop conditions, token healing, cancellation, error cases, and sessions on one model
//! in several threads.
//!
//! Where the same batches are evaluated (the cache reused with the same chunk boundaries as a fresh
//! evaluation, forks, threads) logits are compared bit for bit: this is what "prefix reuse is exact"
//! means. Logits of the same tokens evaluated with other batch shapes are compared within
//! [`tiny_support::BATCH_SHAPE_TOLERANCE`]; see there why GGML does not give identical (or 1e-4
//! close) results for them.

mod tiny_support;

use std::sync::Arc;
use std::time::Duration;

use lmrs::{
    CancelFlag, InferError, InferenceFeedback, InferenceParameters, InferenceStats, Model,
    ModelParams, Session, SessionParams, StopReason, TokenId,
};
use lmrs_fixtures::tiny::TinyArch;
use tiny_support::{
    assert_logits_close, assert_logits_equal, code_tokens, load_tiny, load_tiny_with, session, SEED,
};

/// What one generation produced.
#[derive(Debug, PartialEq)]
struct Generation {
    ids: Vec<TokenId>,
    text: String,
    logprobs: Vec<Vec<(TokenId, f32)>>,
}

fn generate(
    session: &mut Session,
    prompt: &[TokenId],
    max_tokens: usize,
    params: &InferenceParameters,
) -> (Generation, InferenceStats) {
    let mut generation = Generation {
        ids: Vec::new(),
        text: String::new(),
        logprobs: Vec::new(),
    };
    let stats = session
        .infer(prompt, max_tokens, params, |token| {
            generation.ids.push(token.id);
            generation.text.push_str(token.text);
            generation.logprobs.push(token.logprobs.to_vec());
            InferenceFeedback::Continue
        })
        .expect("generation");
    (generation, stats)
}

/// Logits after feeding `feeds` one after the other to a fresh session with batches of `n_batch`.
fn logits_after(model: &Arc<Model>, n_batch: usize, feeds: &[&[TokenId]]) -> Vec<f32> {
    let mut s = session(model, 512, n_batch);
    for feed in feeds {
        s.feed(feed).expect("feed");
    }
    s.logits().expect("logits").to_vec()
}

#[test]
fn prefix_reuse_is_exact() {
    const N_BATCH: usize = 8;
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        let n = prompt.len();
        assert!(n > 3 * N_BATCH, "{arch}: prompt of {n} tokens");

        // Fresh: the prompt in batches of 8.
        let mut fresh = session(model, 256, N_BATCH);
        let stats = fresh.feed(&prompt).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (0, n), "{arch}");
        assert_eq!(fresh.tokens(), &prompt[..]);
        let reference = fresh.logits().unwrap().to_vec();
        assert_eq!(reference.len(), model.info().hyperparameters.n_vocab);
        assert!(reference.iter().all(|l| l.is_finite()));

        // A shared prefix (two whole batches), a different continuation, then back to the real
        // prompt: the continuation is evaluated with the same batch boundaries as the fresh feed,
        // so the logits must be identical. (The detour starts with `#`, which the code prompt does
        // not have, so it differs from the prompt right after the shared prefix.)
        let shared = 2 * N_BATCH;
        let mut detour: Vec<TokenId> = prompt[..shared].to_vec();
        detour.extend(
            model
                .tokenizer()
                .encode("# other = {'a': 1}\nprint(other)\n", false),
        );
        assert_ne!(detour[shared], prompt[shared], "{arch}");
        let mut rewound = session(model, 256, N_BATCH);
        let stats = rewound.feed(&detour).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (0, detour.len()));
        let stats = rewound.feed(&prompt).unwrap();
        assert_eq!(
            (stats.reused, stats.evaluated),
            (shared, n - shared),
            "{arch}"
        );
        assert_eq!(rewound.tokens(), &prompt[..]);
        assert_logits_equal(
            rewound.logits().unwrap(),
            &reference,
            &format!("{arch}: rewound"),
        );

        // The same prompt again: nothing to evaluate, the same logits.
        let stats = rewound.feed(&prompt).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (n, 0), "{arch}");
        assert_logits_equal(
            rewound.logits().unwrap(),
            &reference,
            &format!("{arch}: again"),
        );

        // A prefix of the cached tokens: its last token is evaluated again, alone, for its logits.
        let k = 3 * N_BATCH + 1;
        let stats = rewound.feed(&prompt[..k]).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (k - 1, 1), "{arch}");
        let expected = logits_after(model, N_BATCH, &[&prompt[..k - 1], &prompt[..k]]);
        assert_logits_equal(
            rewound.logits().unwrap(),
            &expected,
            &format!("{arch}: prefix"),
        );

        // Extending the cache evaluates only the new tokens.
        let stats = rewound.feed(&prompt).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (k, n - k), "{arch}");
        let expected = logits_after(model, N_BATCH, &[&prompt[..k - 1], &prompt[..k], &prompt]);
        assert_logits_equal(
            rewound.logits().unwrap(),
            &expected,
            &format!("{arch}: extended"),
        );
        assert_logits_close(
            rewound.logits().unwrap(),
            &reference,
            &format!("{arch}: extended"),
        );
    }
}

#[test]
fn batch_shapes_give_close_logits() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        // 200 tokens: some batches are evaluated with GGML's tiled attention (64+ queries).
        let long: Vec<TokenId> = prompt.iter().copied().cycle().take(200).collect();
        let mut worst: f32 = 0.0;
        for tokens in [&prompt[..], &long[..]] {
            let whole = logits_after(model, 512, &[tokens]);
            for n_batch in [1, 3, 7, 64] {
                let batched = logits_after(model, n_batch, &[tokens]);
                let what = format!("{arch}: {} tokens, n_batch {n_batch}", tokens.len());
                worst = worst.max(assert_logits_close(&batched, &whole, &what));
            }
        }
        eprintln!("{arch}: largest logit difference between batch shapes: {worst:e}");
    }
}

#[test]
fn flash_and_unfused_attention_agree() {
    // 300 tokens one at a time cross the 256-row padding of the flash-attention cache (the graph of
    // a generated token is reused within a window and rebuilt at its edge); in batches of 64 they
    // use GGML's tiled kernel. The unfused attention (transposed value cache, no padding, a graph
    // per evaluation) must give the same logits within the batch-shape tolerance.
    for arch in TinyArch::ALL {
        let with = |flash_attention| {
            load_tiny_with(
                arch,
                SEED,
                ModelParams {
                    flash_attention,
                    ..tiny_support::model_params()
                },
            )
        };
        let (flash, unfused) = (with(true), with(false));
        let prompt = code_tokens(&flash.model);
        let long: Vec<TokenId> = prompt.iter().copied().cycle().take(300).collect();
        for n_batch in [1, 64] {
            assert_logits_close(
                &logits_after(&flash.model, n_batch, &[&long]),
                &logits_after(&unfused.model, n_batch, &[&long]),
                &format!("{arch}: flash vs unfused attention, n_batch {n_batch}"),
            );
        }
    }
}

/// Gemma 3's local layers see only the last `window` positions. With both tiny layers local, the
/// last token's logits depend on the last `2 (window - 1) + 1` tokens only (each layer reaches
/// `window - 1` further back): changing tokens before them changes nothing, while with both layers
/// global (or with the tiny model's own local-then-global pattern) it changes the logits. Checked
/// with flash attention and without, in one batch and token by token.
#[test]
fn sliding_window_layers_do_not_see_past_their_window() {
    use lmrs_fixtures::tiny::{tiny_model_writer, GEMMA3_SLIDING_WINDOW};
    let dir = tiny_support::TempDir::new("gemma3-window");
    let load = |pattern: Option<[bool; 2]>, flash_attention: bool| {
        let mut writer = tiny_model_writer(TinyArch::Gemma3, SEED);
        if let Some(pattern) = pattern {
            writer.add_bool_array("gemma3.attention.sliding_window_pattern", &pattern);
        }
        let path = dir.join(&format!("{pattern:?}-{flash_attention}.gguf"));
        writer.write_to(&path).expect("writing the model");
        let params = ModelParams {
            flash_attention,
            ..tiny_support::model_params()
        };
        Arc::new(Model::load(&path, params).expect("loading the model"))
    };
    let reach = 2 * (GEMMA3_SLIDING_WINDOW - 1) + 1;
    for flash_attention in [true, false] {
        let local = load(Some([true, true]), flash_attention);
        let prompt: Vec<TokenId> = code_tokens(&local).into_iter().take(reach + 6).collect();
        assert_eq!(prompt.len(), reach + 6, "the prompt is long enough");
        // The same prompt with its first tokens (all outside the reach) replaced.
        let mut changed = prompt.clone();
        for token in &mut changed[1..prompt.len() - reach] {
            *token = (*token + 1) % 200 + 40;
        }
        assert_ne!(prompt, changed);
        for n_batch in [512, 1] {
            let case = format!("flash {flash_attention}, n_batch {n_batch}");
            assert_logits_equal(
                &logits_after(&local, n_batch, &[&prompt]),
                &logits_after(&local, n_batch, &[&changed]),
                &format!("all local: {case}"),
            );
            for (what, model) in [
                ("all global", load(Some([false, false]), flash_attention)),
                ("local then global", load(None, flash_attention)),
            ] {
                let (a, b) = (
                    logits_after(&model, n_batch, &[&prompt]),
                    logits_after(&model, n_batch, &[&changed]),
                );
                assert!(
                    tiny_support::max_abs_diff(&a, &b) > 1e-3,
                    "{what}: {case}: the early tokens must matter"
                );
            }
        }
    }
}

#[test]
fn weights_give_the_same_logits_repacked_or_mapped() {
    for arch in TinyArch::ALL {
        let repacked = load_tiny(arch);
        let mapped = load_tiny_with(
            arch,
            SEED,
            ModelParams {
                n_threads: 2,
                repack: false,
                ..ModelParams::default()
            },
        );
        assert_eq!(mapped.model.info().repacked_bytes, 0);
        assert_prompt_logits_agree(
            &mapped.model,
            &repacked.model,
            &format!("{arch}: mapped vs repacked"),
        );
    }
}

#[test]
fn weights_give_the_same_logits_copied_into_memory_or_mapped() {
    for arch in TinyArch::ALL {
        let with = |map_weights| {
            load_tiny_with(
                arch,
                SEED,
                ModelParams {
                    n_threads: 2,
                    repack: false,
                    map_weights,
                    ..ModelParams::default()
                },
            )
        };
        let (copied, mapped) = (with(false), with(true));
        assert_prompt_logits_agree(
            &mapped.model,
            &copied.model,
            &format!("{arch}: mapped vs copied"),
        );
    }
}

/// Asserts that two loadings of the same model give the same logits (within the batch-shape
/// tolerance) after the tiny code prompt, evaluated one token at a time and as one batch.
fn assert_prompt_logits_agree(a: &Arc<Model>, b: &Arc<Model>, what: &str) {
    let prompt = code_tokens(a);
    for n_batch in [1, 512] {
        assert_logits_close(
            &logits_after(a, n_batch, &[&prompt]),
            &logits_after(b, n_batch, &[&prompt]),
            &format!("{what}, n_batch {n_batch}"),
        );
    }
}

#[test]
fn q5_0_matrices_give_the_same_logits_widened_to_q8_0_or_not() {
    for arch in TinyArch::ALL {
        let widened = load_tiny(arch);
        let kept = load_tiny_with(
            arch,
            SEED,
            ModelParams {
                n_threads: 2,
                widen_q5_0: false,
                ..tiny_support::model_params()
            },
        );
        assert!(
            widened.model.info().widened_bytes > 0,
            "{arch}: the tiny model has Q5_0 matrices to widen"
        );
        assert_eq!(kept.model.info().widened_bytes, 0);
        assert_prompt_logits_agree(
            &kept.model,
            &widened.model,
            &format!("{arch}: Q5_0 vs widened Q8_0"),
        );
    }
}

#[test]
fn truncate_forgets_the_tail() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let prompt = code_tokens(&tiny.model);
        let n = prompt.len();
        let mut s = session(&tiny.model, 256, 8);
        s.feed(&prompt).unwrap();
        let reference = s.logits().unwrap().to_vec();
        s.truncate(n); // Not shorter: nothing changes.
        assert_eq!(s.tokens().len(), n);
        assert!(s.logits().is_some());
        s.truncate(16);
        assert_eq!(s.tokens(), &prompt[..16]);
        assert!(s.logits().is_none(), "{arch}: logits of a forgotten token");
        // Cut at a batch boundary: the tail is evaluated in the same batches as before.
        let stats = s.feed(&prompt).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (16, n - 16), "{arch}");
        assert_logits_equal(
            s.logits().unwrap(),
            &reference,
            &format!("{arch}: truncated"),
        );
        s.truncate(0);
        assert!(s.tokens().is_empty());
        let stats = s.feed(&prompt).unwrap();
        assert_eq!((stats.reused, stats.evaluated), (0, n));
        assert_logits_equal(s.logits().unwrap(), &reference, &format!("{arch}: emptied"));
    }
}

#[test]
fn forks_continue_like_the_original() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let prompt = code_tokens(&tiny.model);
        let params = InferenceParameters::greedy().with_logprobs(3);
        let mut original = session(&tiny.model, 256, 512);
        original.feed(&prompt).unwrap();

        let mut forked = original.fork().unwrap();
        let mut cloned = original.clone();
        for copy in [&forked, &cloned] {
            assert_eq!(copy.tokens(), original.tokens());
            assert_eq!(copy.logits(), original.logits());
            assert_eq!(copy.n_ctx(), original.n_ctx());
        }
        // Generating on the copies does not touch the original's cache.
        let (from_fork, stats) = generate(&mut forked, &prompt, 16, &params);
        assert_eq!(
            (stats.prompt.reused, stats.prompt.evaluated),
            (prompt.len(), 0)
        );
        let (from_clone, _) = generate(&mut cloned, &prompt, 16, &params);
        let (from_original, stats) = generate(&mut original, &prompt, 16, &params);
        assert_eq!(
            (stats.prompt.reused, stats.prompt.evaluated),
            (prompt.len(), 0)
        );
        assert_eq!(from_fork, from_original, "{arch}: fork");
        assert_eq!(from_clone, from_original, "{arch}: clone");
        assert_eq!(from_original.ids.len(), 16);

        // Forked mid-generation, both sides continue identically.
        let mut continued = original.fork().unwrap();
        let mut next = prompt.clone();
        next.extend(&from_original.ids);
        let (a, _) = generate(&mut original, &next, 8, &params);
        let (b, _) = generate(&mut continued, &next, 8, &params);
        assert_eq!(a, b, "{arch}: forked after generating");
    }
}

#[test]
fn a_session_copies_another_one_s_state_and_works_on_without_touching_it() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let prompt = code_tokens(&tiny.model);
        let params = InferenceParameters::greedy().with_logprobs(3);
        let mut original = session(&tiny.model, 256, 512);
        original.feed(&prompt).unwrap();
        let mut spare = session(&tiny.model, 256, 512);
        spare.feed(&prompt[..prompt.len() / 2]).unwrap();
        spare.copy_state_from(&original).unwrap();
        assert_eq!(spare.tokens(), original.tokens());
        assert_eq!(spare.logits(), original.logits());
        // The copy generates from the cached prompt, evaluating nothing of it...
        let (from_copy, stats) = generate(&mut spare, &prompt, 16, &params);
        assert_eq!(
            (stats.prompt.reused, stats.prompt.evaluated),
            (prompt.len(), 0),
            "{arch}"
        );
        // ...and the original, untouched, generates the same.
        let (from_original, stats) = generate(&mut original, &prompt, 16, &params);
        assert_eq!(
            (stats.prompt.reused, stats.prompt.evaluated),
            (prompt.len(), 0),
            "{arch}"
        );
        assert_eq!(from_copy, from_original, "{arch}");
    }
}

#[test]
fn greedy_generation_is_deterministic() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let params = InferenceParameters::greedy().with_logprobs(5);
        let prompt = code_tokens(model);
        let (first, stats) = generate(&mut session(model, 256, 512), &prompt, 24, &params);
        assert_eq!(stats.generated, 24);
        assert_eq!(stats.stop, StopReason::MaxTokens);
        let (second, _) = generate(&mut session(model, 256, 512), &prompt, 24, &params);
        assert_eq!(first, second, "{arch}");
        // Greedy picks the most likely token; log-probabilities are sorted and normalised.
        for (id, top) in first.ids.iter().zip(&first.logprobs) {
            assert_eq!(top.len(), 5);
            assert_eq!(top[0].0, *id, "{arch}");
            assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(top.iter().all(|&(_, lp)| lp <= 0.0));
        }
        // The streamed text is the decoded tokens; the tiny models write printable ASCII.
        assert_eq!(first.text, model.tokenizer().decode(&first.ids));
        assert!(!first.text.is_empty());
        // A text prompt gives what its tokens give.
        let mut by_text = Generation {
            ids: Vec::new(),
            text: String::new(),
            logprobs: Vec::new(),
        };
        session(model, 256, 512)
            .infer(tiny_support::CODE_PROMPT, 24, &params, |token| {
                by_text.ids.push(token.id);
                by_text.text.push_str(token.text);
                by_text.logprobs.push(token.logprobs.to_vec());
                InferenceFeedback::Continue
            })
            .unwrap();
        assert_eq!(by_text, first, "{arch}: text prompt");
        // Different weights, different text.
        let other = load_tiny_with(arch, SEED + 1, tiny_support::model_params());
        let (different, _) = generate(&mut session(&other.model, 256, 512), &prompt, 24, &params);
        assert_ne!(different.ids, first.ids, "{arch}: seed ignored");
    }
}

#[test]
fn runner_up_is_the_second_most_likely_token() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let params = InferenceParameters::greedy()
            .with_logprobs(3)
            .with_runner_up(true);
        let prompt = code_tokens(model);
        let mut steps = Vec::new();
        session(model, 256, 512)
            .infer(&prompt[..], 16, &params, |token| {
                steps.push((token.id, token.logprobs.to_vec(), token.runner_up));
                InferenceFeedback::Continue
            })
            .unwrap();
        assert_eq!(steps.len(), 16, "{arch}");
        for (id, top, runner_up) in steps {
            let runner_up = runner_up.unwrap_or_else(|| panic!("{arch}: no runner-up"));
            assert_eq!(top[0].0, id, "{arch}");
            assert_eq!(runner_up.id, top[1].0, "{arch}");
            // The gap in logits is the gap in log-probabilities.
            let gap = top[0].1 - top[1].1;
            assert!(
                (runner_up.gap - gap).abs() < 1e-3,
                "{arch}: {runner_up:?} vs {gap}"
            );
        }
        // Not asked for, not reported.
        session(model, 256, 512)
            .infer(&prompt[..], 4, &InferenceParameters::greedy(), |token| {
                assert!(token.runner_up.is_none());
                InferenceFeedback::Continue
            })
            .unwrap();
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        let params = InferenceParameters::default().with_seed(7);
        let (a, _) = generate(&mut session(model, 256, 512), &prompt, 32, &params);
        let (b, _) = generate(&mut session(model, 256, 512), &prompt, 32, &params);
        assert_eq!(a, b, "{arch}: same seed");
        let (c, _) = generate(
            &mut session(model, 256, 512),
            &prompt,
            32,
            &params.clone().with_seed(8),
        );
        assert_ne!(a.ids, c.ids, "{arch}: another seed");
        let greedy = InferenceParameters::greedy();
        let (g, _) = generate(&mut session(model, 256, 512), &prompt, 32, &greedy);
        assert_ne!(
            a.ids, g.ids,
            "{arch}: sampling at temperature 0.8 is greedy"
        );
    }
}

#[test]
fn generation_stops_where_asked() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        let mut s = session(model, 256, 512);
        let greedy = InferenceParameters::greedy();

        // max_tokens, including none at all.
        for max_tokens in [0, 1, 5] {
            let (generation, stats) = generate(&mut s, &prompt, max_tokens, &greedy);
            assert_eq!(generation.ids.len(), max_tokens, "{arch}");
            assert_eq!(
                (stats.generated, stats.stop),
                (max_tokens, StopReason::MaxTokens)
            );
        }

        // A stop string taken from the middle of the greedy text.
        let (full, _) = generate(&mut s, &prompt, 32, &greedy);
        let pieces: Vec<String> = full
            .ids
            .iter()
            .map(|&id| String::from_utf8_lossy(model.tokenizer().token_bytes(id)).into_owned())
            .collect();
        let start = pieces[..6].concat().len();
        let stop: String = full.text[start..].chars().take(3).collect();
        assert_eq!(
            stop.len(),
            3,
            "{arch}: greedy text {:?} too short",
            full.text
        );
        let params = InferenceParameters::greedy().with_stop_strings([stop.clone()]);
        let (stopped, stats) = generate(&mut s, &prompt, 32, &params);
        assert_eq!(stats.stop, StopReason::StopString, "{arch}");
        assert!(stopped.text.contains(&stop));
        let before_last = model
            .tokenizer()
            .decode(&stopped.ids[..stopped.ids.len() - 1]);
        assert!(
            !before_last.contains(&stop),
            "{arch}: did not stop at the first {stop:?}"
        );
        assert_eq!(stopped.ids[..], full.ids[..stopped.ids.len()]);

        // The callback halts.
        let mut count = 0;
        let stats = s
            .infer(&prompt, 32, &greedy, |_| {
                count += 1;
                if count == 3 {
                    InferenceFeedback::Halt
                } else {
                    InferenceFeedback::Continue
                }
            })
            .unwrap();
        assert_eq!(
            (stats.generated, stats.stop),
            (3, StopReason::Halted),
            "{arch}"
        );

        // A full context.
        let mut small = session(model, 32, 512);
        let (generation, stats) = generate(&mut small, &prompt[..20], 100, &greedy);
        assert_eq!(stats.stop, StopReason::ContextFull, "{arch}");
        assert_eq!(generation.ids.len(), 32 - 20 + 1, "{arch}");
        assert_eq!(small.tokens().len(), 32);
    }
}

#[test]
fn required_prefix_heals_the_first_tokens() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        let mut s = session(model, 256, 512);
        for required in ["r", "ret", " return items", "x = 1\n", "naïve"] {
            let params = InferenceParameters::greedy().with_required_prefix(required);
            let (generation, _) = generate(&mut s, &prompt, 12, &params);
            let bytes: Vec<u8> = generation
                .ids
                .iter()
                .flat_map(|&id| model.tokenizer().token_bytes(id).to_vec())
                .collect();
            assert!(
                bytes.starts_with(required.as_bytes()),
                "{arch}: generated {:?} does not start with {required:?}",
                String::from_utf8_lossy(&bytes)
            );
            // Sampling honours it too.
            let params = InferenceParameters::default()
                .with_seed(3)
                .with_required_prefix(required);
            let (sampled, _) = generate(&mut s, &prompt, 12, &params);
            assert!(
                sampled.text.starts_with(required),
                "{arch}: sampled {:?}",
                sampled.text
            );
        }
    }
}

#[test]
fn cancellation_stops_work_and_leaves_the_session_usable() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt = code_tokens(model);
        let greedy = InferenceParameters::greedy();

        // Cancelled before feeding: nothing is evaluated.
        let mut s = session(model, 256, 4);
        let flag = CancelFlag::new();
        s.set_cancel_flag(flag.clone());
        flag.cancel();
        assert!(flag.is_cancelled());
        assert!(
            matches!(s.feed(&prompt), Err(InferError::Cancelled)),
            "{arch}"
        );
        assert!(s.tokens().is_empty() && s.logits().is_none());
        let result = s.infer(&prompt, 8, &greedy, |_| InferenceFeedback::Continue);
        assert!(matches!(result, Err(InferError::Cancelled)), "{arch}");
        // A new flag: the session works and equals a fresh one.
        s.set_cancel_flag(CancelFlag::new());
        let stats = s.feed(&prompt).unwrap();
        assert_eq!(stats.evaluated, prompt.len());
        let fresh = logits_after(model, 4, &[&prompt]);
        assert_logits_equal(
            s.logits().unwrap(),
            &fresh,
            &format!("{arch}: after cancel"),
        );

        // Cancelled while generating (from the callback): the next token is not evaluated.
        let mut s = session(model, 256, 512);
        let flag = CancelFlag::new();
        s.set_cancel_flag(flag.clone());
        let mut seen = 0;
        let result = s.infer(&prompt, 32, &greedy, |_| {
            seen += 1;
            if seen == 3 {
                flag.cancel();
            }
            InferenceFeedback::Continue
        });
        assert!(
            matches!(result, Err(InferError::Cancelled)),
            "{arch}: {result:?}"
        );
        assert_eq!(seen, 3);
        assert!(s.tokens().starts_with(&prompt));
        assert!(
            s.tokens().len() <= prompt.len() + 2,
            "{arch}: evaluated after the cancel"
        );
        // Generating again equals a session that took the same path without a cancel: the prompt
        // in one batch, then its last token again alone.
        s.set_cancel_flag(CancelFlag::new());
        let (after, _) = generate(&mut s, &prompt, 8, &greedy);
        let mut same_path = session(model, 256, 512);
        generate(&mut same_path, &prompt, 2, &greedy);
        let (expected, _) = generate(&mut same_path, &prompt, 8, &greedy);
        assert_eq!(after, expected, "{arch}: generation after a cancel");

        // Cancelled from another thread while a long prompt is fed in batches of 2. The feed must
        // outlast the delay; tried again with longer prompts if it does not.
        let mut cancelled = false;
        for (attempt, n_tokens) in [(0, 1000), (1, 2000), (2, 4000)] {
            let long: Vec<TokenId> = prompt.iter().copied().cycle().take(n_tokens).collect();
            let mut s = session(model, n_tokens, 2);
            let flag = CancelFlag::new();
            s.set_cancel_flag(flag.clone());
            let canceller = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2 << attempt));
                flag.cancel();
            });
            let result = s.feed(&long);
            canceller.join().unwrap();
            match result {
                Err(InferError::Cancelled) => {}
                Ok(_) => continue,
                Err(other) => panic!("{arch}: {other}"),
            }
            cancelled = true;
            let done = s.tokens().len();
            assert!(done < long.len(), "{arch}: {done} tokens done");
            assert_eq!(done % 2, 0, "{arch}: cancelled inside a batch of 2");
            assert_eq!(s.tokens(), &long[..done]);
            assert!(s.logits().is_none());
            // Usable again; the batches line up with a fresh feed's, so the logits are identical.
            s.set_cancel_flag(CancelFlag::new());
            let target = (done + 10).min(long.len());
            let stats = s.feed(&long[..target]).unwrap();
            assert_eq!((stats.reused, stats.evaluated), (done, target - done));
            let fresh = {
                let mut fresh = session(model, n_tokens, 2);
                fresh.feed(&long[..target]).unwrap();
                fresh.logits().unwrap().to_vec()
            };
            let what = format!("{arch}: after a cancelled feed");
            assert_logits_equal(s.logits().unwrap(), &fresh, &what);
            break;
        }
        assert!(cancelled, "{arch}: the feed was never cancelled");
    }
}

#[test]
fn bad_prompts_are_errors() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let n_vocab = model.info().hyperparameters.n_vocab;
        let mut s = session(model, 32, 8);
        let greedy = InferenceParameters::greedy();

        assert!(matches!(s.feed(&[]), Err(InferError::EmptyPrompt)));
        let empty = s.infer("", 4, &greedy, |_| InferenceFeedback::Continue);
        if model.tokenizer().add_bos() {
            // Llama flavour: the prompt is BOS alone.
            assert_eq!(empty.unwrap().prompt.evaluated, 1, "{arch}");
        } else {
            assert!(
                matches!(empty, Err(InferError::EmptyPrompt)),
                "{arch}: {empty:?}"
            );
        }

        let too_long = vec![5; 33];
        match s.feed(&too_long) {
            Err(InferError::PromptTooLong { n_tokens, n_ctx }) => {
                assert_eq!((n_tokens, n_ctx), (33, 32))
            }
            other => panic!("{arch}: expected PromptTooLong, got {other:?}"),
        }
        let text = "x = 1\n".repeat(40);
        let result = s.infer(text.as_str(), 4, &greedy, |_| InferenceFeedback::Continue);
        assert!(
            matches!(result, Err(InferError::PromptTooLong { .. })),
            "{arch}"
        );

        let invalid = [1, 2, n_vocab as TokenId];
        match s.feed(&invalid) {
            Err(InferError::InvalidToken { id, n_vocab: n }) => {
                assert_eq!((id as usize, n), (n_vocab, n_vocab))
            }
            other => panic!("{arch}: expected InvalidToken, got {other:?}"),
        }
        let result = s.infer(&[TokenId::MAX][..], 4, &greedy, |_| {
            InferenceFeedback::Continue
        });
        assert!(
            matches!(result, Err(InferError::InvalidToken { .. })),
            "{arch}"
        );

        // Still usable afterwards, and exactly at capacity works.
        let full: Vec<TokenId> = (0..32).map(|i| 300 + i).collect();
        let stats = s.feed(&full).unwrap();
        assert_eq!(stats.reused + stats.evaluated, 32);

        let bad = Session::new(
            Arc::clone(model),
            SessionParams {
                n_ctx: 0,
                n_batch: 8,
                n_threads: 1,
                cache_reuse_min_tokens: 0,
                cache_reuse_fence: None,
            },
        );
        assert!(matches!(bad, Err(InferError::InvalidParams(_))), "{arch}");
    }
}

/// Models with learned position embeddings have one row per position: a session may be as long as
/// the table (and then fills it to the last position), not longer.
#[test]
fn sessions_longer_than_learned_positions_are_refused() {
    for arch in [TinyArch::Gpt2, TinyArch::Starcoder] {
        let tiny = load_tiny(arch);
        let n_positions = tiny.model.info().hyperparameters.n_ctx_train;
        let params = |n_ctx| SessionParams {
            n_ctx,
            n_batch: 512,
            n_threads: 1,
            cache_reuse_min_tokens: 0,
            cache_reuse_fence: None,
        };
        let longer = Session::new(Arc::clone(&tiny.model), params(n_positions + 1));
        assert!(
            matches!(&longer, Err(InferError::InvalidParams(message)) if message.contains("position")),
            "{arch}: {:?}",
            longer.err()
        );
        // Exactly the table: the last position is usable.
        let mut full = Session::new(Arc::clone(&tiny.model), params(n_positions)).unwrap();
        let tokens: Vec<TokenId> = (0..n_positions)
            .map(|i| 300 + (i % 200) as TokenId)
            .collect();
        let stats = full.feed(&tokens).unwrap();
        assert_eq!(stats.evaluated, n_positions, "{arch}");
        assert!(
            full.logits().unwrap().iter().all(|l| l.is_finite()),
            "{arch}"
        );
    }
}

#[test]
fn fim_prompts_run() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let tokenizer = model.tokenizer();
        let fim = tokenizer.fim();
        let mut prompt = vec![fim.prefix.unwrap()];
        prompt.extend(tokenizer.encode("def add(a, b):\n    ", false));
        prompt.push(fim.suffix.unwrap());
        prompt.extend(tokenizer.encode("\n\nprint(add(1, 2))\n", false));
        prompt.push(fim.middle.unwrap());
        let (generation, stats) = generate(
            &mut session(model, 256, 512),
            &prompt,
            8,
            &InferenceParameters::greedy(),
        );
        assert_eq!(stats.prompt.evaluated, prompt.len());
        assert!(!generation
            .ids
            .iter()
            .any(|&id| tokenizer.is_end_of_generation(id)));
    }
}

#[test]
fn sessions_on_one_model_in_two_threads_agree() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let prompt = Arc::new(code_tokens(&tiny.model));
        let params = InferenceParameters::greedy().with_logprobs(2);
        let run = |model: Arc<Model>, prompt: Arc<Vec<TokenId>>, params: InferenceParameters| {
            std::thread::spawn(move || {
                let mut s = session(&model, 256, 4);
                let mut results = Vec::new();
                for _ in 0..3 {
                    s.truncate(0);
                    let (generation, _) = generate(&mut s, &prompt, 16, &params);
                    results.push(generation);
                }
                results
            })
        };
        let a = run(Arc::clone(&tiny.model), Arc::clone(&prompt), params.clone());
        let b = run(Arc::clone(&tiny.model), Arc::clone(&prompt), params.clone());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, b, "{arch}: threads disagree");
        assert!(
            a.windows(2).all(|w| w[0] == w[1]),
            "{arch}: repeated runs disagree"
        );
    }
}

#[test]
fn a_prompt_deadline_stops_between_micro_batches_and_keeps_what_was_evaluated() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let model = &tiny.model;
        let prompt: Vec<TokenId> = code_tokens(model).into_iter().cycle().take(40).collect();

        // A deadline already past: one micro-batch (4 tokens) is evaluated, then it stops.
        let mut s = session(model, 256, 4);
        let past = Some(std::time::Instant::now());
        let result = s.feed_until(&prompt, past);
        assert!(
            matches!(
                result,
                Err(InferError::PromptDeadline {
                    n_tokens: 40,
                    remaining: 36
                })
            ),
            "{arch}: {result:?}"
        );
        assert_eq!(s.tokens(), &prompt[..4], "{arch}");
        assert!(s.logits().is_none(), "{arch}: no logits for a cut prompt");

        // Feeding again with past deadlines always gets further, and ends with the logits of a
        // session that evaluated the prompt in the same micro-batches.
        let mut calls = 1;
        loop {
            calls += 1;
            match s.feed_until(&prompt, Some(std::time::Instant::now())) {
                Err(InferError::PromptDeadline { remaining, .. }) => {
                    assert_eq!(remaining, 40 - 4 * calls, "{arch}")
                }
                Ok(stats) => {
                    assert_eq!((stats.reused, stats.evaluated), (36, 4), "{arch}");
                    break;
                }
                Err(other) => panic!("{arch}: {other}"),
            }
        }
        assert_eq!(calls, 10, "{arch}");
        let whole = logits_after(model, 4, &[&prompt]);
        assert_logits_equal(s.logits().unwrap(), &whole, &format!("{arch}: resumed"));

        // Through infer: the deadline parameter stops the prompt, and no token is generated.
        let mut s = session(model, 256, 4);
        let params = InferenceParameters::greedy().with_prompt_deadline(past);
        let mut generated = 0;
        let result = s.infer(&prompt, 8, &params, |_| {
            generated += 1;
            InferenceFeedback::Continue
        });
        assert!(
            matches!(result, Err(InferError::PromptDeadline { .. })),
            "{arch}: {result:?}"
        );
        assert_eq!(generated, 0, "{arch}");
        // A deadline in the future changes nothing.
        let later = Some(std::time::Instant::now() + Duration::from_secs(3600));
        let (with_deadline, _) = generate(
            &mut session(model, 256, 4),
            &prompt,
            8,
            &InferenceParameters::greedy().with_prompt_deadline(later),
        );
        let (without, _) = generate(
            &mut session(model, 256, 4),
            &prompt,
            8,
            &InferenceParameters::greedy(),
        );
        assert_eq!(with_deadline, without, "{arch}");
    }
}

#[test]
fn ignore_end_of_generation_runs_to_the_token_budget() {
    let tiny = load_tiny(TinyArch::Qwen2);
    let model = &tiny.model;
    let tokenizer = model.tokenizer();
    let prompt = code_tokens(model);
    // A near-uniform draw over the vocabulary meets an end-of-generation token soon enough.
    let flat = |seed| InferenceParameters {
        temperature: 1000.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        ..InferenceParameters::default()
    };
    let budget = 400;
    let seed = (0..20)
        .find(|&seed| {
            let (_, stats) = generate(&mut session(model, 512, 64), &prompt, budget, &flat(seed));
            stats.stop == StopReason::EndOfGeneration
        })
        .expect("some seed meets an end-of-generation token");
    let (generation, stats) = generate(
        &mut session(model, 512, 64),
        &prompt,
        budget,
        &flat(seed).with_ignore_end_of_generation(true),
    );
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert_eq!(generation.ids.len(), budget);
    assert!(!generation
        .ids
        .iter()
        .any(|&id| tokenizer.is_end_of_generation(id)));
}
