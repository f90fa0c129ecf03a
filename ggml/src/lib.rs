//! ggml-sys
