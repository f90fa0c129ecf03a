//! Tokenizers built from GGUF metadata, producing exactly the token ids llama.cpp produces.
//!
//! Two vocabulary kinds are supported (`tokenizer.ggml.model`):
//! - `gpt2`: byte-level BPE. Text is split into words by a pre-tokenizer chosen by
//!   `tokenizer.ggml.pre` ([`pretokenize`]), each word is spelled in GPT-2's byte alphabet and merged
//!   by merge rank ([`bpe`]). Used by Qwen 2.5 Coder, SmolLM, StarCoder, DeepSeek Coder, Llama 3.
//! - `llama`: SentencePiece. Spaces become `▁` (with a leading one when `add_space_prefix`), then
//!   characters are merged by vocabulary score, with `<0xXX>` byte fallback ([`spm`]). Used by
//!   Llama 2, CodeLlama, Phi-3, Gemma.
//!
//! Before either, special tokens are cut out of the text ([`special`]): user-defined tokens always,
//! control tokens only when `parse_special` is set. Decoding maps tokens back to bytes ([`decode`]);
//! [`StreamDecoder`] releases text only in whole UTF-8 characters.
//!
//! `encode` never adds BOS/EOS; callers add [`Tokenizer::bos`] themselves when [`Tokenizer::add_bos`].

mod bpe;
mod byte_level;
mod char_class;
mod decode;
mod error;
mod pretokenize;
mod special;
mod special_ids;
mod spm;
mod unicode;
mod unicode_tables;
mod vocab;

use crate::gguf::GgufFile;

use bpe::{BpeModel, BpeScratch};
use decode::{Spelling, TokenBytes};
use pretokenize::PreTokenizer;
use special::{Fragment, SpecialMatcher};
use special_ids::{Family, SpecialIds};
use vocab::{attr, Vocab};

pub use vocab::TokenId;

pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use special_ids::FimTokens;

/// Values of `tokenizer.ggml.model` lmrs supports.
const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE), llama (SentencePiece)";

/// The algorithm that turns plain text into tokens.
enum Algorithm {
    BytePairs {
        pre_tokenizer: PreTokenizer,
        model: Box<BpeModel>,
    },
    SentencePiece {
        add_space_prefix: bool,
        /// Token for each byte: `<0xXX>`, or else the one-character string.
        byte_tokens: Box<[Option<TokenId>; 256]>,
    },
}

/// A vocabulary and the rules to turn text into its tokens and back.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    special_matcher: SpecialMatcher,
    special_ids: SpecialIds,
    token_bytes: TokenBytes,
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.algorithm {
            Algorithm::BytePairs { pre_tokenizer, .. } => {
                format!("byte-level BPE ({pre_tokenizer:?})")
            }
            Algorithm::SentencePiece { .. } => "SentencePiece".to_owned(),
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.special_ids.bos)
            .field("eos", &self.special_ids.eos)
            .field("fim", &self.special_ids.fim)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file
            .get_str("tokenizer.ggml.model")
            .ok_or(TokenizerError::MissingKey {
                key: "tokenizer.ggml.model",
            })?;
        let family = match model {
            "gpt2" => Family::BytePairs,
            "llama" => Family::SentencePiece,
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.to_owned(),
                    supported: SUPPORTED_MODELS,
                })
            }
        };
        // Checked before the (large) vocabulary is read.
        let pre_config = match family {
            Family::BytePairs => Some(PreTokenizer::from_name(file.get_str("tokenizer.ggml.pre"))?),
            Family::SentencePiece => None,
        };

        let mut vocab = Vocab::from_gguf(file)?;
        let special_ids = SpecialIds::resolve(file, &mut vocab, family);
        special_ids::apply_model_quirks(file, &mut vocab);

        let flag = |key: &str, default: bool| file.get_bool(key).unwrap_or(default);
        let (algorithm, spelling, add_bos_default) = match pre_config {
            Some(config) => {
                const KEY: &str = "tokenizer.ggml.merges";
                let merges = vocab::string_array(file, KEY)?
                    .ok_or(TokenizerError::MissingKey { key: KEY })?;
                let model = Box::new(BpeModel::new(merges, &vocab, config.ignore_merges));
                let algorithm = Algorithm::BytePairs {
                    pre_tokenizer: config.pre_tokenizer,
                    model,
                };
                (algorithm, Spelling::ByteLevel, config.add_bos_default)
            }
            None => {
                let byte_tokens = Box::new(std::array::from_fn(|b| {
                    vocab
                        .token_id(&format!("<0x{b:02X}>"))
                        .or_else(|| vocab.token_id(char::from(b as u8).encode_utf8(&mut [0; 4])))
                }));
                let algorithm = Algorithm::SentencePiece {
                    add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
                    byte_tokens,
                };
                (algorithm, Spelling::SentencePiece, true)
            }
        };
        let special_matcher = SpecialMatcher::new(&vocab);
        let token_bytes = TokenBytes::new(&vocab, spelling);
        Ok(Tokenizer {
            add_bos: flag("tokenizer.ggml.add_bos_token", add_bos_default),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            vocab,
            algorithm,
            special_matcher,
            special_ids,
            token_bytes,
        })
    }

    /// Tokenizes `text`. Never adds BOS or EOS.
    ///
    /// With `parse_special`, control tokens written in the text (`<|fim_prefix|>`) become those
    /// tokens; without it they are tokenized as plain text. User-defined tokens are always matched,
    /// as in llama.cpp.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        self.encode_bytes(text.as_bytes(), parse_special)
    }

    /// The tokens of a prompt that starts a sequence: BOS when the model asks for one
    /// (`tokenizer.ggml.add_bos_token`), then [`encode`](Self::encode) of `text`.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        let mut tokens: Vec<TokenId> = self.bos().filter(|_| self.add_bos).into_iter().collect();
        tokens.extend(self.encode(text, parse_special));
        tokens
    }

    /// Tokenizes bytes that may not be UTF-8, as llama.cpp does: byte-level BPE reads each stray
    /// byte as U+FFFD, SentencePiece falls back to byte tokens for it. Otherwise as [`encode`](Self::encode).
    pub fn encode_bytes(&self, bytes: &[u8], parse_special: bool) -> Vec<TokenId> {
        let mut out = Vec::with_capacity(bytes.len() / 3 + 1);
        match &self.algorithm {
            Algorithm::BytePairs {
                pre_tokenizer,
                model,
            } => {
                let text = unicode::to_text_like_llama(bytes);
                let fragments =
                    self.special_matcher
                        .partition(text.as_bytes(), parse_special, &self.vocab);
                let mut words = Vec::new();
                let mut scratch = BpeScratch::default();
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(piece) => {
                            // Special tokens are UTF-8, so they cut UTF-8 text at character boundaries.
                            let Ok(piece) = std::str::from_utf8(piece) else {
                                continue;
                            };
                            words.clear();
                            pre_tokenizer.split(piece, &mut words);
                            for word in &words {
                                model.encode_word(word, &self.vocab, &mut scratch, &mut out);
                            }
                        }
                    }
                }
            }
            Algorithm::SentencePiece {
                add_space_prefix,
                byte_tokens,
            } => {
                let fragments = self
                    .special_matcher
                    .partition(bytes, parse_special, &self.vocab);
                // A fragment at the start or right after a special token gets a leading space.
                let mut after_special = true;
                let mut escaped = Vec::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(piece) => {
                            escaped.clear();
                            if *add_space_prefix && after_special {
                                escaped.extend_from_slice("▁".as_bytes());
                            }
                            for &b in piece {
                                if b == b' ' {
                                    escaped.extend_from_slice("▁".as_bytes());
                                } else {
                                    escaped.push(b);
                                }
                            }
                            spm::encode(
                                &escaped,
                                &self.vocab,
                                byte_tokens,
                                self.special_ids.unknown,
                                &mut out,
                            );
                            after_special = false;
                        }
                    }
                }
            }
        }
        out
    }

    /// The raw bytes token `id` decodes to.
    ///
    /// Control and unknown tokens decode to nothing (llama.cpp's `token_to_piece` without
    /// `special`); user-defined tokens decode to their text; an id out of range to nothing.
    pub fn token_bytes(&self, id: TokenId) -> &[u8] {
        self.token_bytes.get(id)
    }

    /// The concatenated bytes of `ids` as text; invalid UTF-8 becomes U+FFFD.
    ///
    /// Nothing is stripped or cleaned up: for SentencePiece vocabularies with `add_space_prefix`
    /// the space [`encode`](Self::encode) added in front comes back.
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        }
    }

    /// A decoder for generated tokens that yields only complete UTF-8 characters.
    pub fn decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(&self.token_bytes)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The token's text as stored in the vocabulary (`Ġ`/`▁` spellings included).
    pub fn token_text(&self, id: TokenId) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of the token whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.vocab.token_id(text)
    }

    /// Whether generating `id` ends generation (EOS, EOT, EOM, FIM pad/repo/file-separator tokens
    /// and well-known end tokens such as `<|endoftext|>`, `<|im_end|>`, `<EOT>`, `</s>`).
    pub fn is_end_of_generation(&self, id: TokenId) -> bool {
        self.special_ids
            .end_of_generation
            .binary_search(&id)
            .is_ok()
    }

    /// All end-of-generation tokens, sorted.
    pub fn end_of_generation_tokens(&self) -> &[TokenId] {
        &self.special_ids.end_of_generation
    }

    /// Whether `id` is a control or user-defined token.
    pub fn is_special(&self, id: TokenId) -> bool {
        self.vocab.has_attr(id, attr::CONTROL | attr::USER_DEFINED)
    }

    /// Whether `id` is a control token (never produced from plain text without `parse_special`).
    pub fn is_control(&self, id: TokenId) -> bool {
        self.vocab.has_attr(id, attr::CONTROL)
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<TokenId> {
        self.special_ids.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<TokenId> {
        self.special_ids.eos
    }

    /// The end-of-turn token.
    pub fn eot(&self) -> Option<TokenId> {
        self.special_ids.eot
    }

    /// The unknown token.
    pub fn unknown(&self) -> Option<TokenId> {
        self.special_ids.unknown
    }

    /// The padding token.
    pub fn padding(&self) -> Option<TokenId> {
        self.special_ids.padding
    }

    /// Whether prompts should start with [`bos`](Self::bos) (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.special_ids.bos.is_some()
    }

    /// Whether prompts should end with [`eos`](Self::eos) (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.special_ids.eos.is_some()
    }

    /// The fill-in-the-middle tokens.
    pub fn fim(&self) -> &FimTokens {
        &self.special_ids.fim
    }
}
