//! The GGUF reader against the test writer: round trips of every value type and tensor layout.

use lmrs::gguf::*;
use lmrs_fixtures::GgufWriter;

fn every_value_type() -> Vec<(&'static str, MetadataValue)> {
    vec![
        ("t.u8", MetadataValue::U8(200)),
        ("t.i8", MetadataValue::I8(-100)),
        ("t.u16", MetadataValue::U16(60000)),
        ("t.i16", MetadataValue::I16(-30000)),
        ("t.u32", MetadataValue::U32(4_000_000_000)),
        ("t.i32", MetadataValue::I32(-2_000_000_000)),
        ("t.u64", MetadataValue::U64(u64::MAX)),
        ("t.i64", MetadataValue::I64(i64::MIN)),
        ("t.f32", MetadataValue::F32(1.5e-6)),
        ("t.f64", MetadataValue::F64(-2.25e100)),
        ("t.bool", MetadataValue::Bool(true)),
        ("t.string", MetadataValue::String("héllo ✓ \0 end".into())),
        ("t.empty_string", MetadataValue::String(String::new())),
        ("t.arr.u8", MetadataArray::U8(vec![0, 1, 255]).into()),
        ("t.arr.i8", MetadataArray::I8(vec![-128, 0, 127]).into()),
        ("t.arr.u16", MetadataArray::U16(vec![0, 65535]).into()),
        ("t.arr.i16", MetadataArray::I16(vec![-32768, 32767]).into()),
        ("t.arr.u32", MetadataArray::U32(vec![7, u32::MAX]).into()),
        ("t.arr.i32", MetadataArray::I32(vec![-1, 2, -3]).into()),
        ("t.arr.u64", MetadataArray::U64(vec![u64::MAX, 0]).into()),
        (
            "t.arr.i64",
            MetadataArray::I64(vec![i64::MIN, i64::MAX]).into(),
        ),
        (
            "t.arr.f32",
            MetadataArray::F32(vec![0.5, -0.0, f32::INFINITY]).into(),
        ),
        ("t.arr.f64", MetadataArray::F64(vec![1e300, -1e-300]).into()),
        (
            "t.arr.bool",
            MetadataArray::Bool(vec![true, false, true]).into(),
        ),
        (
            "t.arr.string",
            MetadataArray::String(vec!["a".into(), "".into(), "ü".into()]).into(),
        ),
        ("t.arr.empty", MetadataArray::I32(vec![]).into()),
        (
            "t.arr.nested",
            MetadataArray::Array(vec![
                MetadataArray::String(vec!["x".into()]),
                MetadataArray::F32(vec![1.0, 2.0]),
                MetadataArray::Array(vec![MetadataArray::U8(vec![9])]),
                MetadataArray::Array(vec![]),
            ])
            .into(),
        ),
    ]
}

#[test]
fn every_metadata_type_round_trips() {
    let mut writer = GgufWriter::new();
    for (key, value) in every_value_type() {
        writer.add_metadata(key, value);
    }
    let file = GgufFile::from_bytes(writer.to_bytes()).expect("writer output parses");
    assert_eq!(file.version(), 3);
    let expected = every_value_type();
    assert_eq!(file.metadata().len(), expected.len());
    for ((key, value), (read_key, read_value)) in expected.iter().zip(file.metadata()) {
        assert_eq!(key, read_key, "metadata keeps file order");
        assert_eq!(value, read_value, "value of {key}");
        assert_eq!(file.get(key), Some(value));
    }
    assert!(file.tensors().is_empty());
    assert_eq!(file.alignment(), 32);
}

#[test]
fn typed_getters_convert_sensibly() {
    let mut writer = GgufWriter::new();
    writer
        .add_u8("small", 7)
        .add_i32("negative", -5)
        .add_i32("positive", 12)
        .add_u64("huge", u64::MAX)
        .add_f64("double", 0.25)
        .add_f32("single", 1.5)
        .add_bool("flag", true)
        .add_string("name", "qwen2")
        .add_string_array("tokens", ["<s>", "a"])
        .add_f32_array("scores", &[0.0, -1.0]);
    let file = GgufFile::from_bytes(writer.to_bytes()).unwrap();
    assert_eq!(file.get_u64("small"), Some(7));
    assert_eq!(file.get_u32("small"), Some(7));
    assert_eq!(file.get_i64("small"), Some(7));
    assert_eq!(file.get_u64("negative"), None);
    assert_eq!(file.get_u32("negative"), None);
    assert_eq!(file.get_i64("negative"), Some(-5));
    assert_eq!(file.get_u32("positive"), Some(12));
    assert_eq!(file.get_u64("huge"), Some(u64::MAX));
    assert_eq!(file.get_u32("huge"), None);
    assert_eq!(file.get_i64("huge"), None);
    assert_eq!(file.get_f32("double"), Some(0.25));
    assert_eq!(file.get_f32("single"), Some(1.5));
    assert_eq!(file.get_f32("small"), None);
    assert_eq!(file.get_bool("flag"), Some(true));
    assert_eq!(file.get_bool("small"), None);
    assert_eq!(file.get_str("name"), Some("qwen2"));
    assert_eq!(file.get_str("small"), None);
    assert_eq!(
        file.get_string_array("tokens"),
        Some(&["<s>".to_owned(), "a".to_owned()][..])
    );
    assert_eq!(file.get_string_array("scores"), None);
    assert_eq!(file.get_array("scores").map(|a| a.len()), Some(2));
    assert_eq!(file.get("missing"), None);
    assert_eq!(file.get_u32("missing"), None);
}

#[test]
fn writer_replaces_repeated_keys_in_place() {
    let mut writer = GgufWriter::new();
    writer
        .add_u32("a", 1)
        .add_u32("b", 2)
        .add_string("a", "again");
    let file = GgufFile::from_bytes(writer.to_bytes()).unwrap();
    assert_eq!(file.metadata().len(), 2);
    assert_eq!(file.metadata()[0].0, "a");
    assert_eq!(file.get_str("a"), Some("again"));
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn tensors_round_trip_for_every_type_and_alignment() {
    for alignment in [1u32, 8, 32, 64, 4096] {
        let mut writer = GgufWriter::new();
        writer
            .set_alignment(alignment)
            .add_string("general.architecture", "test");
        let mut expected = Vec::new();
        for (i, ggml_type) in GgmlType::ALL.iter().copied().enumerate() {
            let dims = [ggml_type.block_size() * 2, 3];
            let size = ggml_type.row_size(dims[0]).unwrap() * 3;
            let data = pattern(size as usize, i as u8);
            let name = format!("tensor.{}", ggml_type.name());
            writer.add_tensor(name.clone(), &dims, ggml_type, data.clone());
            expected.push((name, dims, ggml_type, data));
        }
        writer.add_f32_tensor("one_d", &[5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        writer.add_tensor("four_d", &[1, 2, 3, 4], GgmlType::I8, pattern(24, 99));
        let bytes = writer.to_bytes();
        let file = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(file.alignment(), u64::from(alignment));
        assert_eq!(file.data_offset() % u64::from(alignment), 0);
        assert_eq!(file.tensors().len(), expected.len() + 2);
        for (name, dims, ggml_type, data) in &expected {
            let info = file.tensor(name).unwrap();
            assert_eq!(&info.dims, dims);
            assert_eq!(info.ggml_type, *ggml_type);
            assert_eq!(info.size, data.len() as u64);
            assert_eq!(info.n_elements(), dims[0] * dims[1]);
            assert_eq!(info.dim(1), dims[1]);
            assert_eq!(info.dim(3), 1);
            assert_eq!((info.offset - file.data_offset()) % u64::from(alignment), 0);
            assert_eq!(file.tensor_data(info), &data[..]);
            assert_eq!(file.tensor_data_by_name(name), Some(&data[..]));
        }
        let one_d = file.tensor_data_by_name("one_d").unwrap();
        assert_eq!(&one_d[4..8], &2.0f32.to_le_bytes());
        assert_eq!(file.tensor("four_d").unwrap().dims, vec![1, 2, 3, 4]);
        assert_eq!(file.tensor("missing"), None);
    }
}

#[test]
fn version_2_files_parse_like_version_3() {
    let mut writer = GgufWriter::new();
    writer
        .add_u32("x", 1)
        .add_f32_tensor("t", &[2], &[1.0, 2.0]);
    let mut bytes = writer.to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.get_u32("x"), Some(1));
    assert_eq!(file.tensors().len(), 1);
}

#[test]
fn open_maps_the_file_and_slices_it() {
    let mut writer = GgufWriter::new();
    writer
        .add_string("general.architecture", "llama")
        .add_tensor("w", &[32, 2], GgmlType::Q8_0, pattern(68, 3));
    let dir = std::env::temp_dir().join(format!("lmrs-gguf-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mapped.gguf");
    writer.write_to(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert!(file.is_mapped());
    assert_eq!(file.architecture(), Some("llama"));
    let info = &file.tensors()[0];
    let data = file.tensor_data(info);
    assert_eq!(data, &pattern(68, 3)[..]);
    // Zero-copy: the slice points into the file's bytes.
    let base = file.bytes().as_ptr() as usize;
    assert_eq!(data.as_ptr() as usize - base, info.offset as usize);
    assert!(format!("{file:?}").contains("tensors: 1"));

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty),
        Err(GgufError::Truncated { .. })
    ));
    let missing = GgufFile::open(dir.join("missing.gguf")).unwrap_err();
    assert!(matches!(missing, GgufError::Io { .. }));
    assert!(missing.to_string().contains("missing.gguf"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gguf_file_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<GgufError>();
}
