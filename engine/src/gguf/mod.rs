//! GGUF v2/v3 files: a validating, zero-copy reader ([`GgufFile`]); the writer is a test fixture
//! (crate `lmrs-fixtures`).
//!
//! A GGUF file is a header (magic `GGUF`, version, tensor count, metadata count), typed key/value
//! metadata, tensor infos (name, dimensions, ggml type, offset), then the tensor data section, which
//! starts at the end of the tensor infos rounded up to `general.alignment` (default 32). All numbers are
//! little-endian; big-endian files are detected and rejected.
//!
//! [`GgufFile::open`] memory-maps the file and tensor data is handed out as slices of the mapping.
//! Everything read from the file is validated (see [`GgufError`]), so a corrupt or hostile file yields
//! an error naming the field and byte offset rather than a panic or a huge allocation.

mod error;
mod metadata;
mod reader;
mod tensor_info;
mod types;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

pub use error::GgufError;
pub use metadata::{MetadataArray, MetadataValue};
pub use reader::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_DIMS, MAX_METADATA_ENTRIES,
    MAX_STRING_LEN, MAX_TENSORS,
};
pub use tensor_info::TensorInfo;
pub use types::{GgmlType, UnknownGgmlType};

/// The bytes a [`GgufFile`] reads from.
enum Storage {
    /// A read-only memory mapping of the file.
    Mapped(Mmap),
    /// Bytes owned by the reader.
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// A parsed GGUF file: metadata and tensor infos in memory, tensor data left in the file's bytes.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_error = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some systems; an empty file is simply truncated.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only and lives as long as this `GgufFile`. Rust's aliasing
            // rules would be broken if another process truncated or wrote to the file while it is
            // mapped; we assume model files are not modified while lmrs has them open (the same
            // assumption llama.cpp makes). Truncation would cause SIGBUS on access, not silent UB in
            // the parser, and every offset we read is bounds-checked against the length we mapped.
            let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
            Storage::Mapped(map)
        };
        Self::from_storage(storage)
    }

    /// Parses a GGUF file held in memory, with the same checks as [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let parsed = reader::parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            metadata_index: parsed.metadata_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The metadata value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, value)| value)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer value that is non-negative (and so fits in `u64`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer value that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }

    /// Any integer value that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An `f32` value, or an `f64` value converted to `f32`.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// An array value of any element type.
    pub fn get_array(&self, key: &str) -> Option<&MetadataArray> {
        self.get(key)?.as_array()
    }

    /// An array of strings.
    pub fn get_string_array(&self, key: &str) -> Option<&[String]> {
        self.get_array(key)?.as_strings()
    }

    /// `general.architecture` (e.g. `"qwen2"`, `"llama"`).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The bytes of a tensor's data: a slice of the mapping, never a copy.
    ///
    /// # Panics
    ///
    /// If `info` does not describe data inside this file, which cannot happen for infos returned by
    /// this file's [`tensors`](Self::tensors) or [`tensor`](Self::tensor).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.data_range(info.offset, info.size).unwrap_or_else(|| {
            panic!(
                "tensor {:?} (bytes {}+{}) does not lie inside this {}-byte GGUF file",
                info.name,
                info.offset,
                info.size,
                self.bytes().len()
            )
        })
    }

    /// The data of the tensor named `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Option<&[u8]> {
        let info = self.tensor(name)?;
        self.data_range(info.offset, info.size)
    }

    fn data_range(&self, offset: u64, size: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.bytes().get(start..end)
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Whether the bytes are a memory mapping of a file (as opposed to an owned buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Alignment of the tensor data section and of each tensor's offset within it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.bytes().len())
            .field("mapped", &self.is_mapped())
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl AsRef<[u8]> for GgufFile {
    /// The whole file, as [`GgufFile::bytes`].
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}
