//! GGUF v2/v3 reader (and a writer for tests). Being written.
