//! Builds GGUF v3 files in memory: metadata of any type and tensors with alignment padding.
//!
//! Used by tests and by the generator of tiny random-weight models:
//!
//! ```
//! use lmrs::gguf::{writer::GgufWriter, GgmlType, GgufFile};
//!
//! let mut writer = GgufWriter::new();
//! writer
//!     .add_string("general.architecture", "llama")
//!     .add_u32("llama.block_count", 1)
//!     .add_string_array("tokenizer.ggml.tokens", ["a", "b"])
//!     .add_tensor("output.weight", &[2, 3], GgmlType::F32, vec![0u8; 24]);
//! let file = GgufFile::from_bytes(writer.to_bytes()).unwrap();
//! assert_eq!(file.get_u32("llama.block_count"), Some(1));
//! assert_eq!(file.tensor_data(&file.tensors()[0]).len(), 24);
//! ```

use std::io;
use std::path::Path;

use super::metadata::{MetadataArray, MetadataValue};
use super::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use super::types::GgmlType;

/// A tensor waiting to be written.
#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then serializes them as a GGUF v3 file.
///
/// Metadata keys keep the order they were first added in; adding a key again replaces its value.
/// Tensor data is laid out in the order added, each tensor starting on an alignment boundary.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors, default alignment (32).
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets `key` to `value` (replacing an earlier value of the same key, keeping its position).
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> &mut Self {
        let key = key.into();
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Sets a `u8` value.
    pub fn add_u8(&mut self, key: impl Into<String>, value: u8) -> &mut Self {
        self.add_metadata(key, MetadataValue::U8(value))
    }

    /// Sets an `i8` value.
    pub fn add_i8(&mut self, key: impl Into<String>, value: i8) -> &mut Self {
        self.add_metadata(key, MetadataValue::I8(value))
    }

    /// Sets a `u16` value.
    pub fn add_u16(&mut self, key: impl Into<String>, value: u16) -> &mut Self {
        self.add_metadata(key, MetadataValue::U16(value))
    }

    /// Sets an `i16` value.
    pub fn add_i16(&mut self, key: impl Into<String>, value: i16) -> &mut Self {
        self.add_metadata(key, MetadataValue::I16(value))
    }

    /// Sets a `u32` value.
    pub fn add_u32(&mut self, key: impl Into<String>, value: u32) -> &mut Self {
        self.add_metadata(key, MetadataValue::U32(value))
    }

    /// Sets an `i32` value.
    pub fn add_i32(&mut self, key: impl Into<String>, value: i32) -> &mut Self {
        self.add_metadata(key, MetadataValue::I32(value))
    }

    /// Sets a `u64` value.
    pub fn add_u64(&mut self, key: impl Into<String>, value: u64) -> &mut Self {
        self.add_metadata(key, MetadataValue::U64(value))
    }

    /// Sets an `i64` value.
    pub fn add_i64(&mut self, key: impl Into<String>, value: i64) -> &mut Self {
        self.add_metadata(key, MetadataValue::I64(value))
    }

    /// Sets an `f32` value.
    pub fn add_f32(&mut self, key: impl Into<String>, value: f32) -> &mut Self {
        self.add_metadata(key, MetadataValue::F32(value))
    }

    /// Sets an `f64` value.
    pub fn add_f64(&mut self, key: impl Into<String>, value: f64) -> &mut Self {
        self.add_metadata(key, MetadataValue::F64(value))
    }

    /// Sets a boolean value.
    pub fn add_bool(&mut self, key: impl Into<String>, value: bool) -> &mut Self {
        self.add_metadata(key, MetadataValue::Bool(value))
    }

    /// Sets a string value.
    pub fn add_string(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.add_metadata(key, MetadataValue::String(value.into()))
    }

    /// Sets an array value of any element type.
    pub fn add_array(&mut self, key: impl Into<String>, value: MetadataArray) -> &mut Self {
        self.add_metadata(key, MetadataValue::Array(value))
    }

    /// Sets an array of strings.
    pub fn add_string_array<S: Into<String>>(
        &mut self,
        key: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        let values = values.into_iter().map(Into::into).collect();
        self.add_array(key, MetadataArray::String(values))
    }

    /// Sets an array of `f32`.
    pub fn add_f32_array(&mut self, key: impl Into<String>, values: &[f32]) -> &mut Self {
        self.add_array(key, MetadataArray::F32(values.to_vec()))
    }

    /// Sets an array of `i32`.
    pub fn add_i32_array(&mut self, key: impl Into<String>, values: &[i32]) -> &mut Self {
        self.add_array(key, MetadataArray::I32(values.to_vec()))
    }

    /// Sets an array of `u32`.
    pub fn add_u32_array(&mut self, key: impl Into<String>, values: &[u32]) -> &mut Self {
        self.add_array(key, MetadataArray::U32(values.to_vec()))
    }

    /// Sets `general.alignment`, the alignment of the tensor data.
    ///
    /// # Panics
    ///
    /// If `alignment` is not a non-zero power of two.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        assert!(
            alignment.is_power_of_two(),
            "GGUF alignment must be a non-zero power of two, got {alignment}"
        );
        self.add_u32("general.alignment", alignment)
    }

    /// The alignment the file will use: `general.alignment` if set to a valid `u32`, else 32.
    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| match v {
                MetadataValue::U32(a) if a.is_power_of_two() => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Adds a tensor. `dims` lists `ne[0]` (the contiguous dimension) first; `data` is the raw bytes in
    /// ggml's layout for `ggml_type`.
    ///
    /// # Panics
    ///
    /// If the name is already used, `dims` has not 1 to 4 entries, a dimension is 0, `dims[0]` is not a
    /// multiple of the type's block size, or `data` is not exactly the tensor's size.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        let name = name.into();
        let data = data.into();
        assert!(
            !self.tensors.iter().any(|t| t.name == name),
            "tensor {name:?} added twice"
        );
        assert!(
            !dims.is_empty() && dims.len() <= MAX_DIMS as usize && dims.iter().all(|&d| d > 0),
            "tensor {name:?}: dims {dims:?} must be 1 to 4 non-zero values"
        );
        let expected = tensor_size(dims, ggml_type).unwrap_or_else(|| {
            panic!(
                "tensor {name:?}: dims {dims:?} do not fit type {ggml_type} (block size {})",
                ggml_type.block_size()
            )
        });
        assert_eq!(
            data.len() as u64,
            expected,
            "tensor {name:?}: {} bytes of data for dims {dims:?} of type {ggml_type}",
            data.len()
        );
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// Adds an `f32` tensor from its values (see [`add_tensor`](Self::add_tensor)).
    pub fn add_f32_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> &mut Self {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, dims, GgmlType::F32, data)
    }

    /// Serializes the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut data_offset = 0u64;
        for tensor in &self.tensors {
            write_string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&data_offset.to_le_bytes());
            data_offset = align_up(data_offset + tensor.data.len() as u64, alignment);
        }
        if !self.tensors.is_empty() {
            pad_to(&mut out, alignment);
            for tensor in &self.tensors {
                out.extend_from_slice(&tensor.data);
                pad_to(&mut out, alignment);
            }
        }
        out
    }

    /// Serializes the file and writes it to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

/// Byte size of a tensor, or `None` if the dimensions do not fit the type or overflow.
fn tensor_size(dims: &[u64], ggml_type: GgmlType) -> Option<u64> {
    let rows = dims
        .iter()
        .skip(1)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    ggml_type.row_size(*dims.first()?)?.checked_mul(rows)
}

fn align_up(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = align_up(out.len() as u64, alignment) as usize;
    out.resize(len, 0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetadataValue) {
    match value {
        MetadataValue::U8(v) => out.push(*v),
        MetadataValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Bool(v) => out.push(u8::from(*v)),
        MetadataValue::String(v) => write_string(out, v),
        MetadataValue::Array(v) => write_array(out, v),
    }
}

fn write_array(out: &mut Vec<u8>, array: &MetadataArray) {
    out.extend_from_slice(&array.element_type_id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        MetadataArray::U8(v) => out.extend_from_slice(v),
        MetadataArray::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetadataArray::Bool(v) => v.iter().for_each(|&x| out.push(u8::from(x))),
        MetadataArray::String(v) => v.iter().for_each(|s| write_string(out, s)),
        MetadataArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
    }
}
