//! Errors produced while opening or parsing a GGUF file.
//!
//! Every parse error names the field it was reading (for example `tensor #3 ("blk.0.attn_q.weight")
//! dims[1]`) and the byte offset in the file where that field starts, so that a broken or hostile file
//! can be diagnosed with a hex dump.

use std::path::PathBuf;

/// Why a GGUF file could not be opened or parsed.
///
/// `field` strings describe what was being read; `offset` values are byte offsets from the start of
/// the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, inspected or memory-mapped.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The path given to [`GgufFile::open`](super::GgufFile::open).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic at byte 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The four bytes found at offset 0.
        found: [u8; 4],
    },

    /// The version field only makes sense read as big-endian: the file was written for a big-endian
    /// machine, which this reader does not support.
    #[error(
        "big-endian GGUF file (version field at byte 4 reads {version} when byte-swapped); \
         only little-endian GGUF files are supported"
    )]
    BigEndian {
        /// The version number read as big-endian.
        version: u32,
    },

    /// GGUF v1 or a version this reader does not know.
    #[error("unsupported GGUF version {version} (field `version` at byte 4); supported versions are 2 and 3")]
    UnsupportedVersion {
        /// The version found in the header.
        version: u32,
    },

    /// The file ends in the middle of a field.
    #[error(
        "file truncated: {field} at byte {offset} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        /// What was being read.
        field: String,
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A count or length is larger than this reader accepts, or than the rest of the file could hold.
    #[error("{field} at byte {offset} is {value}, more than the limit of {limit}")]
    TooLarge {
        /// What was being read.
        field: String,
        /// Where the field starts.
        offset: u64,
        /// The value found.
        value: u64,
        /// The largest value accepted here.
        limit: u64,
    },

    /// A string is not valid UTF-8.
    #[error("{field} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// What was being read.
        field: String,
        /// Where the string's bytes start.
        offset: u64,
    },

    /// A metadata value type id is not one of GGUF's 13 types.
    #[error("{field} at byte {offset} is the unknown metadata value type id {type_id}")]
    UnknownMetadataType {
        /// What was being read.
        field: String,
        /// Where the type id is.
        offset: u64,
        /// The id found.
        type_id: u32,
    },

    /// A boolean metadata value is neither 0 nor 1.
    #[error("{field} at byte {offset} is the byte {value}, not a boolean (0 or 1)")]
    InvalidBool {
        /// What was being read.
        field: String,
        /// Where the byte is.
        offset: u64,
        /// The byte found.
        value: u8,
    },

    /// Arrays of arrays are nested deeper than this reader accepts.
    #[error("{field} at byte {offset} nests arrays {depth} deep, more than the limit of {limit}")]
    ArrayTooDeep {
        /// What was being read.
        field: String,
        /// Where the innermost rejected array header is.
        offset: u64,
        /// Nesting depth reached.
        depth: usize,
        /// The deepest nesting accepted.
        limit: usize,
    },

    /// Two metadata entries have the same key.
    #[error("duplicate metadata key {key:?} at byte {offset}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Where the second occurrence's key starts.
        offset: u64,
    },

    /// A well-known metadata key holds a value of the wrong type.
    #[error("metadata key {key:?} at byte {offset} has type {found}, expected {expected}")]
    WrongMetadataType {
        /// The key.
        key: String,
        /// Where the entry's key starts.
        offset: u64,
        /// The type required.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("metadata key \"general.alignment\" at byte {offset} is {value}, which is not a non-zero power of two")]
    BadAlignment {
        /// Where the entry's key starts.
        offset: u64,
        /// The alignment found.
        value: u64,
    },

    /// Two tensors have the same name.
    #[error("duplicate tensor name {name:?} at byte {offset}")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
        /// Where the second tensor info starts.
        offset: u64,
    },

    /// A tensor has no dimensions or more than four.
    #[error("{field} at byte {offset} is {n_dims}; a tensor has 1 to 4 dimensions")]
    BadDimensionCount {
        /// What was being read.
        field: String,
        /// Where the count is.
        offset: u64,
        /// The count found.
        n_dims: u32,
    },

    /// A tensor dimension is zero or does not fit in a signed 64-bit integer.
    #[error("{field} at byte {offset} is {value}; dimensions must be between 1 and 2^63-1")]
    BadDimension {
        /// What was being read.
        field: String,
        /// Where the dimension is.
        offset: u64,
        /// The dimension found.
        value: u64,
    },

    /// A tensor type id is not one of ggml's current types.
    #[error("{field} at byte {offset} is the unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// What was being read.
        field: String,
        /// Where the type id is.
        offset: u64,
        /// The id found.
        type_id: u32,
    },

    /// A tensor's first dimension is not a whole number of its type's blocks.
    #[error(
        "{field} at byte {offset}: dims[0] = {dim0} is not a multiple of the block size {block_size} of type {ggml_type}"
    )]
    NotBlockMultiple {
        /// Which tensor.
        field: String,
        /// Where its dimensions start.
        offset: u64,
        /// The first dimension.
        dim0: u64,
        /// The type's block size.
        block_size: u64,
        /// The type's name.
        ggml_type: &'static str,
    },

    /// A tensor's element count or byte size overflows 64 bits.
    #[error("{field} at byte {offset}: element count or byte size overflows 64 bits")]
    SizeOverflow {
        /// Which tensor.
        field: String,
        /// Where its dimensions start.
        offset: u64,
    },

    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error(
        "{field} at byte {offset} is {tensor_offset}, not a multiple of the alignment {alignment}"
    )]
    UnalignedTensor {
        /// Which tensor's offset field.
        field: String,
        /// Where the offset field is.
        offset: u64,
        /// The offset found (relative to the data section).
        tensor_offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor's data does not lie inside the file.
    #[error(
        "{field} at byte {offset}: data spans bytes {start}..{end} of the file, but the file is {file_len} bytes"
    )]
    TensorOutOfBounds {
        /// Which tensor.
        field: String,
        /// Where its offset field is.
        offset: u64,
        /// Absolute start of the data (saturated on overflow).
        start: u64,
        /// Absolute end of the data (saturated on overflow).
        end: u64,
        /// File size.
        file_len: u64,
    },

    /// Two tensors' data ranges overlap.
    #[error(
        "tensor data overlaps: {first:?} spans bytes {first_start}..{first_end}, {second:?} starts at byte {second_start}"
    )]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Its absolute start.
        first_start: u64,
        /// Its absolute end.
        first_end: u64,
        /// The tensor that starts inside the first one's data.
        second: String,
        /// Its absolute start.
        second_start: u64,
    },
}
