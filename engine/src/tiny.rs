//! Tiny random-weight models for hermetic tests: valid GGUF files of the `qwen2` and `llama`
//! architectures that load with [`Model::load`](crate::Model::load) and run a forward pass in well
//! under a millisecond.
//!
//! The weights are deterministic pseudo-random numbers (a seeded SplitMix64), so the same
//! `(arch, seed)` always gives the same file, byte for byte. Matrices use a mix of F32, F16, Q8_0
//! and Q5_0 (so the quantized and converting paths of GGML, and the loader's Q5_0 widening, are
//! exercised), norms and biases are F32.
//!
//! The vocabulary is a real byte-level BPE (`tokenizer.ggml.model = gpt2`): the 256 GPT-2 byte
//! tokens, a few hundred merges learned from a built-in code snippet (so code tokenizes into tokens
//! like `def`, `Ġreturn`, `fn`, runs of spaces), and control tokens. The Qwen2 flavour uses the
//! `qwen2` pre-tokenizer and Qwen's FIM tokens (`<|fim_prefix|>`, ...) after the ordinary tokens;
//! the llama flavour uses the `smollm` pre-tokenizer, SmolLM/StarCoder-style specials (`<fim_prefix>`,
//! ...) first, and adds a BOS token to prompts.
//!
//! Output rows of control tokens and of bytes that are not printable ASCII are scaled down, so
//! greedy and sampled generations are plain ASCII text that rarely ends by itself.
//!
//! ```no_run
//! use lmrs::tiny::{write_tiny_model, TinyArch};
//! use lmrs::{Model, ModelParams};
//!
//! let path = std::env::temp_dir().join("tiny-qwen2.gguf");
//! write_tiny_model(&path, TinyArch::Qwen2, 42)?;
//! let model = Model::load(&path, ModelParams::default())?;
//! assert_eq!(model.info().hyperparameters.n_layer, lmrs::tiny::N_LAYER);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::gguf::writer::GgufWriter;
use crate::gguf::{GgmlType, MetadataArray};

/// Embedding width of the tiny models.
pub const N_EMBD: usize = 64;
/// Number of layers.
pub const N_LAYER: usize = 2;
/// Attention (query) heads.
pub const N_HEAD: usize = 4;
/// Key/value heads (grouped-query attention: two query heads per KV head).
pub const N_HEAD_KV: usize = 2;
/// Width of one head.
pub const HEAD_DIM: usize = N_EMBD / N_HEAD;
/// Hidden width of the feed-forward network.
pub const N_FF: usize = 128;
/// Training context length written to the metadata.
pub const N_CTX_TRAIN: usize = 4096;
/// Most merges learned for the vocabulary.
pub const MAX_MERGES: usize = 320;

/// Which architecture (and vocabulary flavour) to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TinyArch {
    /// `qwen2`: q/k/v biases, NeoX RoPE, tied output embedding, Qwen's control tokens at the end.
    Qwen2,
    /// `llama`: no biases, normal RoPE, separate output matrix, SmolLM-style specials first, BOS.
    Llama,
}

impl TinyArch {
    /// Both architectures.
    pub const ALL: [TinyArch; 2] = [TinyArch::Qwen2, TinyArch::Llama];

    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            TinyArch::Qwen2 => "qwen2",
            TinyArch::Llama => "llama",
        }
    }

    /// The `tokenizer.ggml.pre` name.
    pub fn pre_tokenizer(self) -> &'static str {
        match self {
            TinyArch::Qwen2 => "qwen2",
            TinyArch::Llama => "smollm",
        }
    }

    /// Control tokens of this flavour, in vocabulary order.
    pub fn control_tokens(self) -> &'static [&'static str] {
        match self {
            TinyArch::Qwen2 => &[
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "<|fim_prefix|>",
                "<|fim_middle|>",
                "<|fim_suffix|>",
                "<|fim_pad|>",
                "<|repo_name|>",
                "<|file_sep|>",
            ],
            TinyArch::Llama => &[
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "<repo_name>",
                "<file_sep>",
                "<fim_prefix>",
                "<fim_middle>",
                "<fim_suffix>",
                "<fim_pad>",
            ],
        }
    }
}

impl std::fmt::Display for TinyArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture name [`TinyArch`] does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown tiny model architecture {0:?}; known: qwen2, llama")]
pub struct UnknownTinyArch(pub String);

impl std::str::FromStr for TinyArch {
    type Err = UnknownTinyArch;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "qwen2" => Ok(TinyArch::Qwen2),
            "llama" => Ok(TinyArch::Llama),
            other => Err(UnknownTinyArch(other.to_string())),
        }
    }
}

/// Writes the tiny model of `arch` with weights drawn from `seed` to `path`.
pub fn write_tiny_model(path: &Path, arch: TinyArch, seed: u64) -> std::io::Result<()> {
    tiny_model_writer(arch, seed).write_to(path)
}

/// The tiny model as GGUF bytes.
pub fn tiny_model_bytes(arch: TinyArch, seed: u64) -> Vec<u8> {
    tiny_model_writer(arch, seed).to_bytes()
}

/// The tiny model as a writer, for tests that change metadata (adding a key again replaces it)
/// before serializing.
pub fn tiny_model_writer(arch: TinyArch, seed: u64) -> GgufWriter {
    let vocab = TinyVocab::build(arch);
    let n_vocab = vocab.tokens.len();
    let name = arch.name();
    let mut writer = GgufWriter::new();
    writer
        .add_string("general.architecture", name)
        .add_string("general.name", format!("tiny-{name}"))
        .add_u32(format!("{name}.context_length"), N_CTX_TRAIN as u32)
        .add_u32(format!("{name}.embedding_length"), N_EMBD as u32)
        .add_u32(format!("{name}.block_count"), N_LAYER as u32)
        .add_u32(format!("{name}.feed_forward_length"), N_FF as u32)
        .add_u32(format!("{name}.attention.head_count"), N_HEAD as u32)
        .add_u32(format!("{name}.attention.head_count_kv"), N_HEAD_KV as u32)
        .add_u32(format!("{name}.rope.dimension_count"), HEAD_DIM as u32)
        .add_f32(
            format!("{name}.rope.freq_base"),
            match arch {
                TinyArch::Qwen2 => 1_000_000.0,
                TinyArch::Llama => 10_000.0,
            },
        )
        .add_f32(format!("{name}.attention.layer_norm_rms_epsilon"), 1e-6)
        .add_string("tokenizer.ggml.model", "gpt2")
        .add_string("tokenizer.ggml.pre", arch.pre_tokenizer())
        .add_string_array("tokenizer.ggml.tokens", vocab.tokens.iter().cloned())
        .add_array(
            "tokenizer.ggml.token_type",
            MetadataArray::I32(vocab.token_types.clone()),
        )
        .add_string_array("tokenizer.ggml.merges", vocab.merges.iter().cloned())
        .add_u32("tokenizer.ggml.bos_token_id", vocab.endoftext)
        .add_u32("tokenizer.ggml.eos_token_id", vocab.endoftext)
        .add_u32("tokenizer.ggml.padding_token_id", vocab.endoftext)
        .add_bool("tokenizer.ggml.add_bos_token", arch == TinyArch::Llama);

    let mut rng = SplitMix64::new(seed ^ 0x7469_6e79_6d6f_6465);
    // Output preference per token: ordinary tokens get full-size output rows, the others small ones.
    let row_scale: Vec<f32> = vocab
        .preferred
        .iter()
        .map(|&p| if p { 1.0 } else { 0.05 })
        .collect();
    let embedding = matrix_rows(&mut rng, N_EMBD, n_vocab, 0.4, Some(&row_scale));
    let embedding_type = match arch {
        TinyArch::Qwen2 => GgmlType::Q8_0,
        TinyArch::Llama => GgmlType::F16,
    };
    add_matrix(
        &mut writer,
        "token_embd.weight",
        [N_EMBD, n_vocab],
        embedding_type,
        &embedding,
    );

    let n_q = N_HEAD * HEAD_DIM;
    let n_kv = N_HEAD_KV * HEAD_DIM;
    let types = [GgmlType::F16, GgmlType::Q8_0, GgmlType::F32, GgmlType::Q5_0];
    for layer in 0..N_LAYER {
        let name = |suffix: &str| format!("blk.{layer}.{suffix}");
        add_vector(&mut writer, &name("attn_norm.weight"), &norm(&mut rng));
        // (name, n_in, n_out): types rotate over the tensors and layers.
        let matrices: [(&str, usize, usize); 7] = [
            ("attn_q.weight", N_EMBD, n_q),
            ("attn_k.weight", N_EMBD, n_kv),
            ("attn_v.weight", N_EMBD, n_kv),
            ("attn_output.weight", n_q, N_EMBD),
            ("ffn_gate.weight", N_EMBD, N_FF),
            ("ffn_up.weight", N_EMBD, N_FF),
            ("ffn_down.weight", N_FF, N_EMBD),
        ];
        for (index, (suffix, n_in, n_out)) in matrices.into_iter().enumerate() {
            let values = matrix_rows(&mut rng, n_in, n_out, 1.0 / (n_in as f32).sqrt(), None);
            let ggml_type = types[(index + layer) % types.len()];
            add_matrix(
                &mut writer,
                &name(suffix),
                [n_in, n_out],
                ggml_type,
                &values,
            );
            if arch == TinyArch::Qwen2 && index < 3 {
                let bias_name = name(&suffix.replace("weight", "bias"));
                add_vector(&mut writer, &bias_name, &uniform(&mut rng, n_out, 0.1));
            }
        }
        add_vector(&mut writer, &name("ffn_norm.weight"), &norm(&mut rng));
    }
    add_vector(&mut writer, "output_norm.weight", &norm(&mut rng));
    if arch == TinyArch::Llama {
        let output = matrix_rows(&mut rng, N_EMBD, n_vocab, 0.4, Some(&row_scale));
        add_matrix(
            &mut writer,
            "output.weight",
            [N_EMBD, n_vocab],
            GgmlType::Q8_0,
            &output,
        );
    }
    writer
}

/// Norm weights: around 1.
fn norm(rng: &mut SplitMix64) -> Vec<f32> {
    uniform(rng, N_EMBD, 0.1)
        .into_iter()
        .map(|v| 1.0 + v)
        .collect()
}

/// `n` values uniform in `[-amplitude, amplitude)`.
fn uniform(rng: &mut SplitMix64, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n).map(|_| rng.next_symmetric() * amplitude).collect()
}

/// `n_rows` rows of `n_in` values with standard deviation `std` (uniform distribution), each row
/// multiplied by its entry of `row_scale`.
fn matrix_rows(
    rng: &mut SplitMix64,
    n_in: usize,
    n_rows: usize,
    std: f32,
    row_scale: Option<&[f32]>,
) -> Vec<f32> {
    // A uniform distribution on [-a, a) has standard deviation a / sqrt(3).
    let amplitude = std * 3f32.sqrt();
    let mut values = Vec::with_capacity(n_in * n_rows);
    for row in 0..n_rows {
        let scale = row_scale.map_or(1.0, |s| s[row]) * amplitude;
        values.extend((0..n_in).map(|_| rng.next_symmetric() * scale));
    }
    values
}

fn add_vector(writer: &mut GgufWriter, name: &str, values: &[f32]) {
    writer.add_f32_tensor(name, &[values.len() as u64], values);
}

/// Adds a `[n_in, n_out]` matrix (`n_out` rows of `n_in` values) stored as `ggml_type`.
fn add_matrix(
    writer: &mut GgufWriter,
    name: &str,
    [n_in, n_out]: [usize; 2],
    ggml_type: GgmlType,
    values: &[f32],
) {
    debug_assert_eq!(values.len(), n_in * n_out);
    let data = match ggml_type {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(values),
        GgmlType::Q5_0 => quantize_q5_0(values),
        other => unreachable!("tiny models do not use {other}"),
    };
    writer.add_tensor(name, &[n_in as u64, n_out as u64], ggml_type, data);
}

/// Q5_0: per block of 32 values, an F16 scale `d = max|x| / 15`, the fifth bits of the 32 codes
/// `round(x / d) + 16` (in `0..32`) as a `u32`, then their low nibbles, two per byte (value `j` and
/// `j + 16` share byte `j`).
fn quantize_q5_0(values: &[f32]) -> Vec<u8> {
    const BLOCK: usize = 32;
    debug_assert_eq!(values.len() % BLOCK, 0);
    let mut out = Vec::with_capacity(values.len() / BLOCK * 22);
    for block in values.chunks(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 15.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        let codes: Vec<u8> = block
            .iter()
            .map(|&v| ((v * inverse).round().clamp(-16.0, 15.0) as i32 + 16) as u8)
            .collect();
        let high_bits = codes
            .iter()
            .enumerate()
            .fold(0u32, |bits, (j, &code)| bits | (u32::from(code >> 4) << j));
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend_from_slice(&high_bits.to_le_bytes());
        out.extend((0..16).map(|j| (codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4)));
    }
    out
}

/// Q8_0: per block of 32 values, an F16 scale `d = max|x| / 127` and 32 `i8` values `round(x / d)`.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    const BLOCK: usize = 32;
    debug_assert_eq!(values.len() % BLOCK, 0);
    let mut out = Vec::with_capacity(values.len() / BLOCK * (2 + BLOCK));
    for block in values.chunks(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend(
            block
                .iter()
                .map(|&v| ((v * inverse).round().clamp(-127.0, 127.0) as i8) as u8),
        );
    }
    out
}

/// IEEE 754 half precision, rounding to nearest even (NaN stays NaN, overflow becomes infinity).
pub fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        return sign | 0x7c00 | if mantissa != 0 { 0x200 } else { 0 };
    }
    let half_exponent = exponent - 127 + 15;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |value: u32, shift: u32| {
        let kept = value >> shift;
        let rest = value & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        if rest > halfway || (rest == halfway && kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    if half_exponent <= 0 {
        // Subnormal (or zero): the implicit bit becomes explicit, in units of 2^-24.
        if half_exponent < -10 {
            return sign;
        }
        let shift = (14 - half_exponent) as u32;
        return sign | round(mantissa | 0x80_0000, shift) as u16;
    }
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | round(((half_exponent as u32) << 23) | mantissa, 13) as u16
}

/// Code the vocabulary's merges are learned from.
const TRAINING_CODE: &str = r#"def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def quick_sort(items):
    if len(items) <= 1:
        return items
    pivot = items[len(items) // 2]
    left = [x for x in items if x < pivot]
    middle = [x for x in items if x == pivot]
    right = [x for x in items if x > pivot]
    return quick_sort(left) + middle + quick_sort(right)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def is_empty(self):
        return len(self.items) == 0


def main():
    for i in range(10):
        print(fibonacci(i))
    numbers = [3, 1, 4, 1, 5, 9, 2, 6]
    print(quick_sort(numbers))


if __name__ == "__main__":
    main()

fn fibonacci(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    fibonacci(n - 1) + fibonacci(n - 2)
}

pub fn sum(values: &[i32]) -> i32 {
    let mut total = 0;
    for value in values {
        total += value;
    }
    total
}

impl Stack {
    pub fn new() -> Self {
        Self { items: Vec::new() }
    }

    pub fn push(&mut self, item: i32) {
        self.items.push(item);
    }

    pub fn pop(&mut self) -> Option<i32> {
        self.items.pop()
    }
}

function fibonacci(n) {
    if (n < 2) {
        return n;
    }
    return fibonacci(n - 1) + fibonacci(n - 2);
}

const numbers = [1, 2, 3, 4, 5];
const doubled = numbers.map((value) => value * 2);
console.log(doubled);

export async function fetchUser(id: string): Promise<User | null> {
    const response = await fetch(`/api/users/${id}`);
    if (!response.ok) {
        throw new Error("request failed: " + response.status);
    }
    return (await response.json()) as User;
}

import os
import json
from typing import Dict, List, Optional


def read_config(path: str) -> Dict[str, str]:
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def find_files(root: str, suffix: str) -> List[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(suffix):
                found.append(os.path.join(directory, name))
    return sorted(found)

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub name: String,
    pub values: HashMap<String, usize>,
}

pub fn count_words(text: &str) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

func Max(a, b int) int {
    if a > b {
        return a
    }
    return b
}
"#;

/// The vocabulary of a tiny model.
struct TinyVocab {
    tokens: Vec<String>,
    token_types: Vec<i32>,
    merges: Vec<String>,
    /// Whether the token gets a full-size output row (printable ASCII text, no control token).
    preferred: Vec<bool>,
    endoftext: u32,
}

/// `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;

impl TinyVocab {
    fn build(arch: TinyArch) -> TinyVocab {
        let spelling = gpt2_byte_spellings();
        let mut tokens: Vec<String> = Vec::new();
        let mut token_types = Vec::new();
        let mut preferred = Vec::new();
        let controls = arch.control_tokens();
        let push_controls = |tokens: &mut Vec<String>, types: &mut Vec<i32>, p: &mut Vec<bool>| {
            for &control in controls {
                tokens.push(control.to_string());
                types.push(TYPE_CONTROL);
                p.push(false);
            }
        };
        if arch == TinyArch::Llama {
            push_controls(&mut tokens, &mut token_types, &mut preferred);
        }
        // Byte tokens in GPT-2's order: the self-spelled bytes first, then the others.
        let mut byte_order: Vec<u8> = (0..=255u8).filter(|&b| is_self_spelled(b)).collect();
        byte_order.extend((0..=255u8).filter(|&b| !is_self_spelled(b)));
        for b in byte_order {
            tokens.push(spelling[usize::from(b)].clone());
            token_types.push(TYPE_NORMAL);
            preferred.push(b == b'\n' || (0x20..0x7f).contains(&b));
        }
        let merges = learn_merges(TRAINING_CODE, &spelling, MAX_MERGES);
        let mut known: HashSet<String> = tokens.iter().cloned().collect();
        for merge in &merges {
            let merged = merge.replacen(' ', "", 1);
            if known.insert(merged.clone()) {
                tokens.push(merged);
                token_types.push(TYPE_NORMAL);
                preferred.push(true);
            }
        }
        if arch == TinyArch::Qwen2 {
            push_controls(&mut tokens, &mut token_types, &mut preferred);
        }
        let endoftext = tokens
            .iter()
            .position(|t| t == "<|endoftext|>")
            .expect("every flavour has <|endoftext|>") as u32;
        TinyVocab {
            tokens,
            token_types,
            merges,
            preferred,
            endoftext,
        }
    }
}

fn is_self_spelled(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2's spelling of every byte: printable Latin-1 bytes stand for themselves, the others get
/// U+0100, U+0101, ... in byte order.
fn gpt2_byte_spellings() -> Vec<String> {
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if is_self_spelled(b) {
                char::from(b).to_string()
            } else {
                let c = char::from_u32(next).expect("U+0100..U+0143 are characters");
                next += 1;
                c.to_string()
            }
        })
        .collect()
}

/// Learns up to `max_merges` BPE merges from `text`: words are split roughly like GPT-2's
/// pre-tokenizer, spelled in the byte alphabet, and the most frequent adjacent pair (ties: the
/// lexicographically smallest) is merged, until `max_merges` or every word is one symbol.
fn learn_merges(text: &str, spelling: &[String], max_merges: usize) -> Vec<String> {
    let mut word_counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for word in split_words(text) {
        let symbols = word
            .bytes()
            .map(|b| spelling[usize::from(b)].clone())
            .collect();
        *word_counts.entry(symbols).or_default() += 1;
    }
    let mut words: Vec<(Vec<String>, usize)> = word_counts.into_iter().collect();
    let mut merges = Vec::new();
    while merges.len() < max_merges {
        let mut pair_counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (symbols, count) in &words {
            for pair in symbols.windows(2) {
                *pair_counts.entry((&pair[0], &pair[1])).or_default() += count;
            }
        }
        let best = pair_counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
        let Some(((left, right), _)) = best else {
            break;
        };
        let (left, right) = (left.to_string(), right.to_string());
        let merged = format!("{left}{right}");
        for (symbols, _) in &mut words {
            let mut i = 0;
            while i + 1 < symbols.len() {
                if symbols[i] == left && symbols[i + 1] == right {
                    symbols[i] = merged.clone();
                    symbols.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(format!("{left} {right}"));
    }
    merges
}

/// Splits text into words roughly like GPT-2-style pre-tokenizers: an optional space then letters,
/// an optional space then one digit, an optional space then punctuation, white space up to the last
/// newline, and runs of spaces that leave their last space to the word that follows.
fn split_words(text: &str) -> Vec<&str> {
    #[derive(PartialEq)]
    enum Class {
        Letter,
        Digit,
        Space,
        Newline,
        Punctuation,
    }
    let class = |c: char| match c {
        '\n' | '\r' => Class::Newline,
        c if c.is_whitespace() => Class::Space,
        c if c.is_alphabetic() => Class::Letter,
        c if c.is_numeric() => Class::Digit,
        _ => Class::Punctuation,
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |&(at, _)| at);
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = class(chars[i].1);
        let next = chars.get(i + 1).map(|&(_, c)| class(c));
        let leading_space = c == Class::Space
            && matches!(
                next,
                Some(Class::Letter | Class::Digit | Class::Punctuation)
            );
        let body = if leading_space {
            i += 1;
            next.expect("checked above")
        } else {
            c
        };
        match body {
            Class::Letter => {
                while i < chars.len() && class(chars[i].1) == body {
                    i += 1;
                }
            }
            Class::Punctuation => {
                // Punctuation takes the newlines right after it, as in Qwen2's pattern.
                while i < chars.len() && class(chars[i].1) == body {
                    i += 1;
                }
                while i < chars.len() && class(chars[i].1) == Class::Newline {
                    i += 1;
                }
            }
            Class::Digit => i += 1,
            Class::Space | Class::Newline => {
                let mut j = i;
                let mut last_newline = None;
                while j < chars.len() && matches!(class(chars[j].1), Class::Space | Class::Newline)
                {
                    if class(chars[j].1) == Class::Newline {
                        last_newline = Some(j);
                    }
                    j += 1;
                }
                i = match last_newline {
                    Some(newline) => newline + 1,
                    // Spaces before a word: the last one starts the word.
                    None if j < chars.len() && j - i > 1 => j - 1,
                    None => j,
                };
            }
        }
        words.push(&text[chars[start].0..end_of(i)]);
    }
    words
}

/// SplitMix64: a tiny, good-enough generator for reproducible weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    fn next_symmetric(&mut self) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        unit * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(0.5), 0x3800);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(f32::NAN) & 0x7c00, 0x7c00);
        // Smallest subnormal and a value that rounds to it.
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(1.4 * 2f32.powi(-24)), 0x0001);
        // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    }

    #[test]
    fn q8_0_blocks_have_scale_and_values() {
        let values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let block = quantize_q8_0(&values);
        assert_eq!(block.len(), 34);
        assert_eq!(
            u16::from_le_bytes([block[0], block[1]]),
            f32_to_f16(16.0 / 127.0)
        );
        assert_eq!(block[2] as i8, -127);
        assert_eq!(block[2 + 16] as i8, 0);
    }

    #[test]
    fn words_split_like_gpt2() {
        assert_eq!(
            split_words("def f(x):\n    return x1\n"),
            vec!["def", " f", "(", "x", "):\n", "   ", " return", " x", "1", "\n"]
        );
    }

    #[test]
    fn merges_are_learned_deterministically() {
        let spelling = gpt2_byte_spellings();
        let merges = learn_merges(TRAINING_CODE, &spelling, MAX_MERGES);
        assert_eq!(merges.len(), MAX_MERGES);
        assert_eq!(merges, learn_merges(TRAINING_CODE, &spelling, MAX_MERGES));
        let vocab = TinyVocab::build(TinyArch::Qwen2);
        for token in ["def", "Ġreturn", "Ġfn", "ĠĠĠ", "ĠĠĠĠĠĠĠ"] {
            assert!(vocab.tokens.iter().any(|t| t == token), "{token} missing");
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(
            tiny_model_bytes(TinyArch::Llama, 7),
            tiny_model_bytes(TinyArch::Llama, 7)
        );
        assert_ne!(
            tiny_model_bytes(TinyArch::Llama, 7),
            tiny_model_bytes(TinyArch::Llama, 8)
        );
    }
}
