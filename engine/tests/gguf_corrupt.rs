//! A corpus of corrupted GGUF files derived from a valid writer output: every one must be rejected
//! with the specific [`GgufError`] variant, a message naming the field and its byte offset, and no
//! panic or huge allocation.

use lmrs::gguf::{GgmlType, GgufError, GgufFile, MetadataArray, MetadataValue};
use lmrs_fixtures::GgufWriter;

/// A valid file exercising every section: several metadata types, arrays, and three tensors.
fn base_writer() -> GgufWriter {
    let mut writer = GgufWriter::new();
    writer
        .add_string("general.architecture", "llama")
        .add_u32("general.alignment", 32)
        .add_u32("llama.block_count", 1)
        .add_bool("flag.bool", true)
        .add_string_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hello"])
        .add_f32_array("tokenizer.ggml.scores", &[0.0, -1.0, -2.0])
        .add_array(
            "nested.array",
            MetadataArray::Array(vec![
                MetadataArray::I32(vec![1, 2]),
                MetadataArray::U8(vec![3]),
            ]),
        )
        .add_string("dup.a", "first")
        .add_string("dup.b", "second")
        .add_f32_tensor("tensor_a", &[4, 2], &[1.0; 8])
        .add_tensor("tensor_b", &[32, 2], GgmlType::Q4_0, vec![7u8; 36])
        .add_tensor("tensor_c", &[8], GgmlType::I8, vec![1u8; 8]);
    writer
}

fn base() -> Vec<u8> {
    base_writer().to_bytes()
}

/// Position of the first occurrence of `needle`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

/// Offset just after the GGUF string `s` (its u64 length prefix plus its bytes).
fn after_string(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    find(bytes, &needle) + needle.len()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Field offsets within one tensor info.
struct InfoLayout {
    name_len: usize,
    n_dims: usize,
    dims: usize,
    ggml_type: usize,
    offset: usize,
}

fn tensor_layout(bytes: &[u8], name: &str) -> InfoLayout {
    let n_dims_at = after_string(bytes, name);
    let n_dims = u32::from_le_bytes(bytes[n_dims_at..n_dims_at + 4].try_into().unwrap()) as usize;
    let dims = n_dims_at + 4;
    let ggml_type = dims + 8 * n_dims;
    InfoLayout {
        name_len: n_dims_at - name.len() - 8,
        n_dims: n_dims_at,
        dims,
        ggml_type,
        offset: ggml_type + 4,
    }
}

fn parse_err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(file) => panic!("corrupt file parsed: {file:?}"),
        Err(e) => e,
    }
}

/// Asserts the message mentions every fragment (typically the field name and `byte N`).
fn assert_mentions(err: &GgufError, fragments: &[&str]) {
    let message = err.to_string();
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "error {message:?} should mention {fragment:?}"
        );
    }
}

#[test]
fn base_file_is_valid() {
    let file = GgufFile::from_bytes(base()).unwrap();
    assert_eq!(file.tensors().len(), 3);
    assert_eq!(file.get_str("dup.b"), Some("second"));
}

#[test]
fn truncation_at_every_byte_fails_cleanly() {
    let bytes = base();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let last_tensor_end = file
        .tensors()
        .iter()
        .map(|t| t.offset + t.size)
        .max()
        .unwrap() as usize;
    for len in 0..bytes.len() {
        let result = GgufFile::from_bytes(bytes[..len].to_vec());
        if len >= last_tensor_end {
            // Only trailing padding was cut.
            assert!(result.is_ok(), "cut at {len}: {:?}", result.err());
            continue;
        }
        let err = result.expect_err("truncated file must fail");
        let message = err.to_string();
        assert!(message.contains("byte"), "cut at {len}: {message}");
        match err {
            GgufError::Truncated {
                offset,
                needed,
                available,
                ..
            } => {
                assert!(offset <= len as u64, "cut at {len}: {message}");
                assert!(needed > available, "cut at {len}: {message}");
            }
            GgufError::TooLarge { .. } | GgufError::TensorOutOfBounds { .. } => {}
            other => panic!("cut at {len}: unexpected {other:?}"),
        }
    }
}

#[test]
fn truncation_at_section_boundaries_names_the_next_field() {
    let bytes = base();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    // (cut at, fragments the message must contain); fields are named with their byte offset.
    let at = |what: &str, offset: usize| format!("{what} at byte {offset}");
    let name_len_a = tensor_layout(&bytes, "tensor_a").name_len;
    let dims_b = tensor_layout(&bytes, "tensor_b").dims;
    let offset_c = tensor_layout(&bytes, "tensor_c").offset;
    // Past the smallest size the header counts require (checked up front).
    let type_8 = after_string(&bytes, "dup.b");
    assert!(type_8 > 24 + 9 * 13 + 3 * 32);
    let cases: Vec<(usize, String)> = vec![
        (0, at("magic", 0)),
        (2, at("magic", 0)),
        (4, at("version", 4)),
        (8, at("tensor_count", 8)),
        (16, at("metadata_kv_count", 16)),
        // The header is complete but the file cannot hold the 9 entries it announces.
        (24, at("metadata_kv_count = 9", 16)),
        (type_8, at("metadata #8 (\"dup.b\") type", type_8)),
        (name_len_a, at("tensor #0 name length", name_len_a)),
        (
            dims_b + 8,
            at("tensor #1 (\"tensor_b\") dims[1]", dims_b + 8),
        ),
        (offset_c, at("tensor #2 (\"tensor_c\") offset", offset_c)),
    ];
    for (len, fragment) in cases {
        let err = parse_err(bytes[..len].to_vec());
        assert!(
            matches!(err, GgufError::Truncated { .. }),
            "cut at {len}: {err:?}"
        );
        assert_mentions(&err, &[&fragment]);
    }
    // Cut at the start of the data section: the first tensor's data is missing.
    let err = parse_err(bytes[..file.data_offset() as usize].to_vec());
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["tensor #0 (\"tensor_a\") offset", "byte "]);
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = base();
    bytes[0..4].copy_from_slice(b"GGML");
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::BadMagic { found } if &found == b"GGML"));
    assert_mentions(&err, &["magic", "byte 0"]);

    for version in [0u32, 1, 4, 0xdead_beef] {
        let mut bytes = base();
        put_u32(&mut bytes, 4, version);
        let err = parse_err(bytes);
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: v } if v == version),
            "{err:?}"
        );
        assert_mentions(&err, &["version", "byte 4", &version.to_string()]);
    }

    let mut bytes = base();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let err = parse_err(bytes);
    assert!(
        matches!(err, GgufError::BigEndian { version: 3 }),
        "{err:?}"
    );
    assert_mentions(&err, &["big-endian", "byte 4"]);
}

#[test]
fn absurd_counts_fail_before_allocating() {
    for (at, field) in [(8, "tensor_count"), (16, "metadata_kv_count")] {
        for value in [1u64 << 60, u64::MAX, 1_000_000] {
            let mut bytes = base();
            put_u64(&mut bytes, at, value);
            let err = parse_err(bytes);
            if value > 1 << 20 {
                assert!(
                    matches!(err, GgufError::TooLarge { value: v, .. } if v == value),
                    "{field}={value}: {err:?}"
                );
            } else {
                // Under the cap, but the rest of the file cannot hold that many entries.
                assert!(
                    matches!(err, GgufError::Truncated { .. }),
                    "{field}={value}: {err:?}"
                );
            }
            assert_mentions(&err, &[field, &format!("byte {at}")]);
        }
    }
}

#[test]
fn absurd_string_lengths() {
    // Above the string cap.
    let mut bytes = base();
    put_u64(&mut bytes, 24, 1 << 60);
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err:?}");
    assert_mentions(&err, &["metadata #0 key length", "byte 24"]);

    // Below the cap but longer than the file.
    let mut bytes = base();
    put_u64(&mut bytes, 24, 1 << 20);
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::Truncated { .. }), "{err:?}");
    assert_mentions(&err, &["metadata #0 key", "byte 32"]);

    // A tensor name.
    let mut bytes = base();
    let at = tensor_layout(&bytes, "tensor_b").name_len;
    put_u64(&mut bytes, at, u64::MAX);
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err:?}");
    assert_mentions(&err, &["tensor #1 name length", &format!("byte {at}")]);
}

#[test]
fn absurd_array_lengths() {
    for (key, element_field) in [
        ("tokenizer.ggml.tokens", "tokens\") length"),
        ("tokenizer.ggml.scores", "scores\") length"),
        ("nested.array", "array\") length"),
    ] {
        for claimed in [1u64 << 60, u64::MAX, 1 << 27, 5000] {
            let mut bytes = base();
            // key, value type (u32), element type (u32), then the length.
            let at = after_string(&bytes, key) + 8;
            put_u64(&mut bytes, at, claimed);
            let err = parse_err(bytes);
            if claimed > lmrs::gguf::MAX_ARRAY_LEN {
                assert!(
                    matches!(err, GgufError::TooLarge { value, .. } if value == claimed),
                    "{key} length {claimed}: {err:?}"
                );
            } else {
                // Under the cap, but more elements than the rest of the file can hold.
                assert!(
                    matches!(err, GgufError::Truncated { .. }),
                    "{key} length {claimed}: {err:?}"
                );
            }
            assert_mentions(&err, &[element_field, &format!("byte {at}")]);
        }
    }
}

#[test]
fn unknown_metadata_types() {
    let mut bytes = base();
    let at = after_string(&bytes, "llama.block_count");
    put_u32(&mut bytes, at, 13);
    let err = parse_err(bytes);
    assert!(
        matches!(err, GgufError::UnknownMetadataType { type_id: 13, .. }),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["\"llama.block_count\") type", &format!("byte {at}")],
    );

    let mut bytes = base();
    let at = after_string(&bytes, "tokenizer.ggml.scores") + 4;
    put_u32(&mut bytes, at, 0xffff_ffff);
    let err = parse_err(bytes);
    assert!(
        matches!(
            err,
            GgufError::UnknownMetadataType {
                type_id: u32::MAX,
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(&err, &["scores\") element type", &format!("byte {at}")]);
}

#[test]
fn invalid_utf8_and_bool() {
    let mut bytes = base();
    let at = find(&bytes, b"general.architecture");
    bytes[at] = 0xff;
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }), "{err:?}");
    assert_mentions(&err, &["metadata #0 key", &format!("byte {at}")]);

    let mut bytes = base();
    let at = find(&bytes, b"hello");
    bytes[at + 1] = 0xc3; // a lone UTF-8 lead byte
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }), "{err:?}");
    assert_mentions(&err, &["tokens\")[2]", &format!("byte {at}")]);

    let mut bytes = base();
    let at = after_string(&bytes, "flag.bool") + 4;
    bytes[at] = 2;
    let err = parse_err(bytes);
    assert!(
        matches!(err, GgufError::InvalidBool { value: 2, .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["flag.bool", &format!("byte {at}")]);
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut bytes = base();
    let at = find(&bytes, b"dup.b");
    bytes[at + 4] = b'a';
    let key_at = at - 8;
    let err = parse_err(bytes);
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, .. } if key == "dup.a"),
        "{err:?}"
    );
    assert_mentions(&err, &["dup.a", &format!("byte {key_at}")]);

    let mut bytes = base();
    let layout = tensor_layout(&bytes, "tensor_b");
    bytes[layout.name_len + 8 + 7] = b'a';
    let err = parse_err(bytes);
    assert!(
        matches!(&err, GgufError::DuplicateTensor { name, .. } if name == "tensor_a"),
        "{err:?}"
    );
    assert_mentions(&err, &["tensor_a", &format!("byte {}", layout.name_len)]);
}

#[test]
fn bad_dimension_counts_and_dimensions() {
    for n_dims in [0u32, 5, u32::MAX] {
        let mut bytes = base();
        let at = tensor_layout(&bytes, "tensor_a").n_dims;
        put_u32(&mut bytes, at, n_dims);
        let err = parse_err(bytes);
        assert!(
            matches!(err, GgufError::BadDimensionCount { n_dims: n, .. } if n == n_dims),
            "{err:?}"
        );
        assert_mentions(&err, &["\"tensor_a\") n_dims", &format!("byte {at}")]);
    }
    for dim in [0u64, 1 << 63, u64::MAX] {
        let mut bytes = base();
        let at = tensor_layout(&bytes, "tensor_a").dims + 8;
        put_u64(&mut bytes, at, dim);
        let err = parse_err(bytes);
        assert!(
            matches!(err, GgufError::BadDimension { value, .. } if value == dim),
            "{err:?}"
        );
        assert_mentions(&err, &["\"tensor_a\") dims[1]", &format!("byte {at}")]);
    }
}

#[test]
fn dims_not_a_whole_number_of_blocks() {
    let mut bytes = base();
    let layout = tensor_layout(&bytes, "tensor_b");
    put_u64(&mut bytes, layout.dims, 33);
    let err = parse_err(bytes);
    assert!(
        matches!(
            err,
            GgufError::NotBlockMultiple {
                dim0: 33,
                block_size: 32,
                ggml_type: "q4_0",
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(&err, &["tensor_b", &format!("byte {}", layout.dims)]);
}

#[test]
fn element_count_and_size_overflow() {
    // 2^40 * 2^40 elements overflows u64.
    let mut bytes = base();
    let layout = tensor_layout(&bytes, "tensor_a");
    put_u64(&mut bytes, layout.dims, 1 << 40);
    put_u64(&mut bytes, layout.dims + 8, 1 << 40);
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::SizeOverflow { .. }), "{err:?}");
    assert_mentions(&err, &["tensor_a", &format!("byte {}", layout.dims)]);

    // 2^62 f32 elements fit in i64 but their byte size does not fit in u64.
    let mut bytes = base();
    put_u64(&mut bytes, layout.dims, 1 << 31);
    put_u64(&mut bytes, layout.dims + 8, 1 << 31);
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::SizeOverflow { .. }), "{err:?}");

    // Large but representable: the data does not fit in the file.
    let mut bytes = base();
    put_u64(&mut bytes, layout.dims, 1 << 20);
    let err = parse_err(bytes);
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["tensor_a", "offset"]);
}

#[test]
fn unknown_tensor_types() {
    for type_id in [4u32, 5, 31, 33, 36, 43, 1000, u32::MAX] {
        let mut bytes = base();
        let at = tensor_layout(&bytes, "tensor_c").ggml_type;
        put_u32(&mut bytes, at, type_id);
        let err = parse_err(bytes);
        assert!(
            matches!(err, GgufError::UnknownTensorType { type_id: t, .. } if t == type_id),
            "{err:?}"
        );
        assert_mentions(&err, &["\"tensor_c\") type", &format!("byte {at}")]);
    }
}

#[test]
fn bad_tensor_offsets() {
    let bytes = base();
    let layout = tensor_layout(&bytes, "tensor_b");
    let at = layout.offset;
    let original = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());

    let mut unaligned = bytes.clone();
    put_u64(&mut unaligned, at, original + 4);
    let err = parse_err(unaligned);
    assert!(
        matches!(err, GgufError::UnalignedTensor { alignment: 32, .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["\"tensor_b\") offset", &format!("byte {at}")]);

    for offset in [original + 4096, 1 << 40, u64::MAX - 31] {
        let mut past_end = bytes.clone();
        put_u64(&mut past_end, at, offset);
        let err = parse_err(past_end);
        assert!(
            matches!(err, GgufError::TensorOutOfBounds { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["\"tensor_b\") offset", &format!("byte {at}")]);
    }

    // tensor_b placed on top of tensor_a (offset 0); both lie inside the file.
    let mut overlapping = bytes.clone();
    put_u64(&mut overlapping, at, 0);
    let err = parse_err(overlapping);
    assert!(
        matches!(err, GgufError::OverlappingTensors { .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["tensor_a", "tensor_b"]);
}

#[test]
fn bad_alignment() {
    for alignment in [0u32, 3, 48, u32::MAX] {
        let mut bytes = base();
        let at = after_string(&bytes, "general.alignment") + 4;
        put_u32(&mut bytes, at, alignment);
        let err = parse_err(bytes);
        assert!(
            matches!(err, GgufError::BadAlignment { value, .. } if value == u64::from(alignment)),
            "{err:?}"
        );
        assert_mentions(&err, &["general.alignment", "byte "]);
    }

    let mut writer = base_writer();
    writer.add_metadata("general.alignment", MetadataValue::U64(32));
    let err = parse_err(writer.to_bytes());
    assert!(
        matches!(
            err,
            GgufError::WrongMetadataType {
                expected: "u32",
                found: "u64",
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(&err, &["general.alignment", "byte "]);

    // A larger valid alignment moves the data section and tensor offsets.
    let mut writer = base_writer();
    writer.set_alignment(256);
    let file = GgufFile::from_bytes(writer.to_bytes()).unwrap();
    assert_eq!(file.alignment(), 256);
    assert_eq!(file.data_offset() % 256, 0);
    assert!(file
        .tensors()
        .iter()
        .all(|t| (t.offset - file.data_offset()).is_multiple_of(256)));
}

fn nested(depth: usize) -> MetadataArray {
    let mut array = MetadataArray::U8(vec![1]);
    for _ in 1..depth {
        array = MetadataArray::Array(vec![array]);
    }
    array
}

#[test]
fn array_nesting_depth_is_capped() {
    let depth_limit = lmrs::gguf::MAX_ARRAY_DEPTH;
    let mut writer = GgufWriter::new();
    writer.add_array("deep.ok", nested(depth_limit));
    let file = GgufFile::from_bytes(writer.to_bytes()).unwrap();
    assert_eq!(file.get_array("deep.ok"), Some(&nested(depth_limit)));

    let mut writer = GgufWriter::new();
    writer.add_array("deep.too", nested(depth_limit + 1));
    let err = parse_err(writer.to_bytes());
    assert!(matches!(err, GgufError::ArrayTooDeep { .. }), "{err:?}");
    assert_mentions(&err, &["deep.too", "byte "]);
}

#[test]
fn single_byte_mutations_never_panic() {
    let bytes = base();
    let mut rejected = 0;
    for at in 0..bytes.len() {
        for value in [
            0x00,
            0xff,
            0x80,
            0x7f,
            bytes[at].wrapping_add(1),
            bytes[at] ^ 0x10,
        ] {
            let mut mutated = bytes.clone();
            mutated[at] = value;
            match GgufFile::from_bytes(mutated) {
                Ok(file) => {
                    for info in file.tensors() {
                        assert_eq!(file.tensor_data(info).len() as u64, info.size);
                    }
                }
                Err(err) => {
                    rejected += 1;
                    assert!(!err.to_string().is_empty());
                }
            }
        }
    }
    assert!(rejected > 0);
}
