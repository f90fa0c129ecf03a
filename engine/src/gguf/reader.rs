//! The GGUF parser: header, metadata and tensor infos, validated against hostile input.
//!
//! The parser reads from a byte slice (a memory mapping or an owned buffer) and returns owned
//! metadata and tensor infos; tensor data is never copied. Every count and length read from the file
//! is checked against a fixed cap and against the bytes left in the file before anything is
//! allocated, so a corrupt file costs at most a small multiple of its own size in memory.

use std::collections::HashMap;

use super::error::GgufError;
use super::metadata::{type_id, type_name_of_id, MetadataArray, MetadataValue};
use super::tensor_info::TensorInfo;
use super::types::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data when the file has no `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata entries a file may declare.
pub const MAX_METADATA_ENTRIES: u64 = 1 << 20;
/// Longest string (key, value or tensor name) accepted, in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 28;
/// Most elements one metadata array may declare.
pub const MAX_ARRAY_LEN: u64 = 1 << 28;
/// Deepest nesting of arrays inside arrays (an array of scalars has depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most elements reserved up front for an array of strings, bools or arrays; longer arrays grow as
/// their elements are actually read, so nested claimed lengths cannot multiply allocations.
const MAX_PREALLOCATED_ELEMENTS: u64 = 1 << 16;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// Smallest possible encoded tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Smallest possible encoded metadata entry: key length, value type, a one-byte value.
const MIN_METADATA_ENTRY_BYTES: u64 = 8 + 4 + 1;
/// Size of the fixed header: magic, version, tensor count, metadata count.
const HEADER_BYTES: u64 = 4 + 4 + 8 + 8;

/// What the parser extracted from a file.
pub(crate) struct ParsedFile {
    pub version: u32,
    pub metadata: Vec<(String, MetadataValue)>,
    pub metadata_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Describes the field being read, built only when an error is reported.
type Field<'f> = &'f dyn Fn() -> String;

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// Takes the next `n` bytes, or reports which field the file ends in.
    fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                field: field(),
                offset: self.offset(),
                needed: n,
                available,
            });
        }
        // `n <= available`, and `available` came from a usize, so this cannot truncate.
        let n = n as usize;
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], GgufError> {
        let slice = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, field: Field) -> Result<u8, GgufError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: Field) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: Field) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a count and checks it against `cap` ([`GgufError::TooLarge`]) and against what the rest
    /// of the file can hold when each item takes at least `min_item_bytes` ([`GgufError::Truncated`]),
    /// so that callers may allocate `count` items.
    fn count(&mut self, cap: u64, min_item_bytes: u64, field: Field) -> Result<u64, GgufError> {
        let offset = self.offset();
        let value = self.capped_u64(cap, field)?;
        self.ensure_room(value, min_item_bytes, 0, offset, field)?;
        Ok(value)
    }

    /// Reads a u64 that must not exceed `cap`.
    fn capped_u64(&mut self, cap: u64, field: Field) -> Result<u64, GgufError> {
        let offset = self.offset();
        let value = self.u64(field)?;
        if value > cap {
            return Err(GgufError::TooLarge {
                field: field(),
                offset,
                value,
                limit: cap,
            });
        }
        Ok(value)
    }

    /// Checks that `count` items of at least `min_item_bytes` each, after `reserved` bytes that other
    /// data needs, fit in the rest of the file. `offset` is where the count was read.
    fn ensure_room(
        &self,
        count: u64,
        min_item_bytes: u64,
        reserved: u64,
        offset: u64,
        field: Field,
    ) -> Result<(), GgufError> {
        let needed = count
            .saturating_mul(min_item_bytes)
            .saturating_add(reserved);
        let available = self.remaining();
        if needed > available {
            return Err(GgufError::Truncated {
                field: format!("{} = {count}", field()),
                offset,
                needed,
                available,
            });
        }
        Ok(())
    }

    /// Reads a GGUF string: a u64 byte length, then that many bytes of UTF-8.
    fn string(&mut self, field: Field) -> Result<String, GgufError> {
        let len_offset = self.offset();
        let len = self.u64(&|| format!("{} length", field()))?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::TooLarge {
                field: format!("{} length", field()),
                offset: len_offset,
                value: len,
                limit: MAX_STRING_LEN,
            });
        }
        let bytes_offset = self.offset();
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                field: field(),
                offset: bytes_offset,
            }),
        }
    }

    fn bool(&mut self, field: Field) -> Result<bool, GgufError> {
        let offset = self.offset();
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool {
                field: field(),
                offset,
                value,
            }),
        }
    }

    /// Reads `len` fixed-size elements after checking the whole run is present.
    fn fixed_array<T, const N: usize>(
        &mut self,
        len: u64,
        decode: fn([u8; N]) -> T,
        field: Field,
    ) -> Result<Vec<T>, GgufError> {
        // `len` was bounded by the remaining bytes, so this product cannot overflow.
        let bytes = self.take(len * N as u64, field)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut raw = [0u8; N];
                raw.copy_from_slice(chunk);
                decode(raw)
            })
            .collect())
    }
}

/// Smallest encoded size of one value of GGUF type `id` (used to bound array lengths).
fn min_encoded_size(id: u32) -> u64 {
    match id {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 => 8,
        type_id::STRING => 8,
        // element type + length
        type_id::ARRAY => 4 + 8,
        _ => 1,
    }
}

fn read_value(
    cur: &mut Cursor,
    type_offset: u64,
    type_id_value: u32,
    depth: usize,
    field: Field,
) -> Result<MetadataValue, GgufError> {
    Ok(match type_id_value {
        type_id::U8 => MetadataValue::U8(cur.u8(field)?),
        type_id::I8 => MetadataValue::I8(i8::from_le_bytes(cur.array(field)?)),
        type_id::U16 => MetadataValue::U16(u16::from_le_bytes(cur.array(field)?)),
        type_id::I16 => MetadataValue::I16(i16::from_le_bytes(cur.array(field)?)),
        type_id::U32 => MetadataValue::U32(u32::from_le_bytes(cur.array(field)?)),
        type_id::I32 => MetadataValue::I32(i32::from_le_bytes(cur.array(field)?)),
        type_id::U64 => MetadataValue::U64(u64::from_le_bytes(cur.array(field)?)),
        type_id::I64 => MetadataValue::I64(i64::from_le_bytes(cur.array(field)?)),
        type_id::F32 => MetadataValue::F32(f32::from_le_bytes(cur.array(field)?)),
        type_id::F64 => MetadataValue::F64(f64::from_le_bytes(cur.array(field)?)),
        type_id::BOOL => MetadataValue::Bool(cur.bool(field)?),
        type_id::STRING => MetadataValue::String(cur.string(field)?),
        type_id::ARRAY => MetadataValue::Array(read_array(cur, depth + 1, field)?),
        unknown => {
            return Err(GgufError::UnknownMetadataType {
                field: format!("{} type", field()),
                offset: type_offset,
                type_id: unknown,
            })
        }
    })
}

/// Reads an array body (element type, length, elements); `depth` counts this array.
fn read_array(cur: &mut Cursor, depth: usize, field: Field) -> Result<MetadataArray, GgufError> {
    let header_offset = cur.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            field: field(),
            offset: header_offset,
            depth,
            limit: MAX_ARRAY_DEPTH,
        });
    }
    let element_type = cur.u32(&|| format!("{} element type", field()))?;
    if element_type > type_id::F64 {
        return Err(GgufError::UnknownMetadataType {
            field: format!("{} element type", field()),
            offset: header_offset,
            type_id: element_type,
        });
    }
    let len = cur.count(MAX_ARRAY_LEN, min_encoded_size(element_type), &|| {
        format!("{} length", field())
    })?;
    // `len` items fit in the bytes left. Fixed-size elements are decoded from bytes already taken;
    // variable-size ones reserve a bounded capacity and grow as elements are read.
    let capacity = len.min(MAX_PREALLOCATED_ELEMENTS) as usize;
    let element = |i: u64| move || format!("{}[{i}]", field());
    Ok(match element_type {
        type_id::U8 => MetadataArray::U8(cur.fixed_array(len, u8::from_le_bytes, field)?),
        type_id::I8 => MetadataArray::I8(cur.fixed_array(len, i8::from_le_bytes, field)?),
        type_id::U16 => MetadataArray::U16(cur.fixed_array(len, u16::from_le_bytes, field)?),
        type_id::I16 => MetadataArray::I16(cur.fixed_array(len, i16::from_le_bytes, field)?),
        type_id::U32 => MetadataArray::U32(cur.fixed_array(len, u32::from_le_bytes, field)?),
        type_id::I32 => MetadataArray::I32(cur.fixed_array(len, i32::from_le_bytes, field)?),
        type_id::U64 => MetadataArray::U64(cur.fixed_array(len, u64::from_le_bytes, field)?),
        type_id::I64 => MetadataArray::I64(cur.fixed_array(len, i64::from_le_bytes, field)?),
        type_id::F32 => MetadataArray::F32(cur.fixed_array(len, f32::from_le_bytes, field)?),
        type_id::F64 => MetadataArray::F64(cur.fixed_array(len, f64::from_le_bytes, field)?),
        type_id::BOOL => {
            let mut values = Vec::with_capacity(capacity);
            for i in 0..len {
                values.push(cur.bool(&element(i))?);
            }
            MetadataArray::Bool(values)
        }
        type_id::STRING => {
            let mut values = Vec::with_capacity(capacity);
            for i in 0..len {
                values.push(cur.string(&element(i))?);
            }
            MetadataArray::String(values)
        }
        _ => {
            // type_id::ARRAY: the only id left after the range check above.
            let mut values = Vec::with_capacity(capacity);
            for i in 0..len {
                values.push(read_array(cur, depth + 1, &element(i))?);
            }
            MetadataArray::Array(values)
        }
    })
}

fn read_header(cur: &mut Cursor) -> Result<u32, GgufError> {
    if cur.remaining() >= 4 && cur.bytes[..4] != GGUF_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&cur.bytes[..4]);
        return Err(GgufError::BadMagic { found });
    }
    let magic: [u8; 4] = cur.array(&|| "magic".to_owned())?;
    debug_assert_eq!(magic, GGUF_MAGIC);
    let version = cur.u32(&|| "version".to_owned())?;
    match version {
        2 | 3 => Ok(version),
        _ => {
            let swapped = version.swap_bytes();
            if version & 0xffff == 0 && (1..=0xffff).contains(&swapped) {
                Err(GgufError::BigEndian { version: swapped })
            } else {
                Err(GgufError::UnsupportedVersion { version })
            }
        }
    }
}

/// Reads one tensor info; returns it (offset still relative) and where its offset field is.
fn read_tensor_info(cur: &mut Cursor, index: u64) -> Result<(TensorInfo, u64), GgufError> {
    let name = cur.string(&|| format!("tensor #{index} name"))?;
    let what = format!("tensor #{index} ({name:?})");
    let n_dims_offset = cur.offset();
    let n_dims = cur.u32(&|| format!("{what} n_dims"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadDimensionCount {
            field: format!("{what} n_dims"),
            offset: n_dims_offset,
            n_dims,
        });
    }
    let dims_offset = cur.offset();
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let offset = cur.offset();
        let value = cur.u64(&|| format!("{what} dims[{d}]"))?;
        if value == 0 || value > i64::MAX as u64 {
            return Err(GgufError::BadDimension {
                field: format!("{what} dims[{d}]"),
                offset,
                value,
            });
        }
        dims.push(value);
    }
    let type_offset = cur.offset();
    let type_id_value = cur.u32(&|| format!("{what} type"))?;
    let ggml_type =
        GgmlType::try_from(type_id_value).map_err(|_| GgufError::UnknownTensorType {
            field: format!("{what} type"),
            offset: type_offset,
            type_id: type_id_value,
        })?;
    let offset_field_at = cur.offset();
    let relative_offset = cur.u64(&|| format!("{what} offset"))?;

    if !dims[0].is_multiple_of(ggml_type.block_size()) {
        return Err(GgufError::NotBlockMultiple {
            field: what,
            offset: dims_offset,
            dim0: dims[0],
            block_size: ggml_type.block_size(),
            ggml_type: ggml_type.name(),
        });
    }
    let overflow = || GgufError::SizeOverflow {
        field: what.clone(),
        offset: dims_offset,
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let size = ggml_type
        .row_size(dims[0])
        .and_then(|row| row.checked_mul(n_elements / dims[0]))
        .ok_or_else(overflow)?;
    Ok((
        TensorInfo {
            name,
            dims,
            ggml_type,
            offset: relative_offset, // made absolute by the caller once the data section is known
            size,
        },
        offset_field_at,
    ))
}

/// Parses a whole GGUF file held in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<ParsedFile, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let version = read_header(&mut cur)?;
    let tensor_count_field: Field = &|| "tensor_count".to_owned();
    let metadata_count_field: Field = &|| "metadata_kv_count".to_owned();
    let tensor_count = cur.capped_u64(MAX_TENSORS, tensor_count_field)?;
    let metadata_count = cur.capped_u64(MAX_METADATA_ENTRIES, metadata_count_field)?;
    // The metadata comes first, then the tensor infos: check the counts in file order.
    let metadata_bytes = metadata_count * MIN_METADATA_ENTRY_BYTES;
    cur.ensure_room(
        metadata_count,
        MIN_METADATA_ENTRY_BYTES,
        0,
        16,
        metadata_count_field,
    )?;
    cur.ensure_room(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        metadata_bytes,
        8,
        tensor_count_field,
    )?;
    debug_assert_eq!(cur.offset(), HEADER_BYTES);

    let mut metadata = Vec::with_capacity(metadata_count as usize);
    let mut metadata_index = HashMap::with_capacity(metadata_count as usize);
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..metadata_count {
        let entry_offset = cur.offset();
        let key = cur.string(&|| format!("metadata #{i} key"))?;
        let what = || format!("metadata #{i} ({key:?})");
        let type_offset = cur.offset();
        let value_type = cur.u32(&|| format!("{} type", what()))?;
        let value = read_value(&mut cur, type_offset, value_type, 0, &what)?;
        if metadata_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: entry_offset,
            });
        }
        if key == "general.alignment" {
            let MetadataValue::U32(value) = value else {
                return Err(GgufError::WrongMetadataType {
                    key,
                    offset: entry_offset,
                    expected: type_name_of_id(type_id::U32),
                    found: value.type_name(),
                });
            };
            if !value.is_power_of_two() {
                return Err(GgufError::BadAlignment {
                    offset: entry_offset,
                    value: value.into(),
                });
            }
            alignment = value.into();
        }
        metadata_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
    let mut offset_fields = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let info_offset = cur.offset();
        let (info, offset_field_at) = read_tensor_info(&mut cur, i)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor {
                name: info.name,
                offset: info_offset,
            });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
        offset_fields.push(offset_field_at);
    }

    // The data section starts at the end of the tensor infos rounded up to the alignment. A file
    // without tensors may end before that point.
    let infos_end = cur.offset();
    let data_offset = infos_end.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;

    for (i, (info, &field_at)) in tensors.iter_mut().zip(&offset_fields).enumerate() {
        let what = || format!("tensor #{i} ({:?}) offset", info.name);
        if !info.offset.is_multiple_of(alignment) {
            return Err(GgufError::UnalignedTensor {
                field: what(),
                offset: field_at,
                tensor_offset: info.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => info.offset = start,
            _ => {
                let start = data_offset.saturating_add(info.offset);
                return Err(GgufError::TensorOutOfBounds {
                    field: what(),
                    offset: field_at,
                    start,
                    end: start.saturating_add(info.size),
                    file_len,
                });
            }
        }
    }

    let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.offset);
    for pair in by_start.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        // Offsets and sizes were bounds-checked above, so `offset + size <= file_len`.
        let first_end = first.offset + first.size;
        if second.offset < first_end {
            return Err(GgufError::OverlappingTensors {
                first: first.name.clone(),
                first_start: first.offset,
                first_end,
                second: second.name.clone(),
                second_start: second.offset,
            });
        }
    }

    Ok(ParsedFile {
        version,
        metadata,
        metadata_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}
