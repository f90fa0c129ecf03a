//! The major Unicode general categories as llama.cpp's pre-tokenizers tell them apart: the values
//! of the generated table in `unicode_tables.rs` and of [`super::unicode::char_class`].

/// The major general category of a code point (`\p{L}`, `\p{N}`, ...), or `Undefined` when unassigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CharClass {
    /// Unassigned (`Cn`).
    Undefined,
    /// `\p{N}`.
    Number,
    /// `\p{L}`.
    Letter,
    /// `\p{Z}`.
    Separator,
    /// `\p{M}`.
    Mark,
    /// `\p{P}`.
    Punctuation,
    /// `\p{S}`.
    Symbol,
    /// `\p{C}` other than `Cn`.
    Control,
}
