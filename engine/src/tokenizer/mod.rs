//! Tokenizers built from GGUF metadata. Being written.
