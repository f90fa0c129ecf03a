//! Fuzz target: `GgufFile::from_bytes` on arbitrary bytes must return `Ok` or `Err`, never panic,
//! abort or allocate without bound; every accessor of a file it accepts must work, and rewriting an
//! accepted file with the writer must give a file that parses to the same thing.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../engine/src/gguf/mod.rs"]
#[allow(dead_code, unused_imports)]
mod gguf;

#[path = "../../fixtures/src/gguf_writer.rs"]
#[allow(dead_code)]
mod gguf_writer;

use gguf_writer::GgufWriter;
use gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(file) => file,
        Err(err) => {
            // Messages must always render.
            let _ = err.to_string();
            return;
        }
    };
    touch_everything(&file);

    // Rewrite what was read; the rewritten file must parse and rewrite to identical bytes.
    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        writer.add_metadata(key.clone(), value.clone());
    }
    for info in file.tensors() {
        writer.add_tensor(
            info.name.clone(),
            &info.dims,
            info.ggml_type,
            file.tensor_data(info).to_vec(),
        );
    }
    let rewritten = writer.to_bytes();
    let reread = GgufFile::from_bytes(rewritten.clone()).expect("writer output must parse");
    touch_everything(&reread);
    assert_eq!(reread.tensors().len(), file.tensors().len());
    assert_eq!(reread.metadata().len(), file.metadata().len());
    let mut again = GgufWriter::new();
    for (key, value) in reread.metadata() {
        again.add_metadata(key.clone(), value.clone());
    }
    for info in reread.tensors() {
        again.add_tensor(
            info.name.clone(),
            &info.dims,
            info.ggml_type,
            reread.tensor_data(info).to_vec(),
        );
    }
    assert_eq!(again.to_bytes(), rewritten);
});

fn touch_everything(file: &GgufFile) {
    assert!(matches!(file.version(), 2 | 3));
    assert!(file.alignment().is_power_of_two());
    assert!(file.data_offset().is_multiple_of(file.alignment()));
    let _ = format!("{file:?}");
    let _ = file.architecture();
    let _ = file.is_mapped();
    let len = file.bytes().len() as u64;
    for (key, value) in file.metadata() {
        // Same entry (compared by address: NaN floats are not equal to themselves).
        assert!(file
            .get(key)
            .is_some_and(|found| std::ptr::eq(found, value)));
        let _ = file.get_str(key);
        let _ = file.get_u64(key);
        let _ = file.get_u32(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = value.type_name();
        if let Some(array) = file.get_array(key) {
            let _ = array.len();
            let _ = array.element_type_name();
            let _ = array.integer_at(0);
            let _ = file.get_string_array(key);
        }
    }
    for info in file.tensors() {
        assert_eq!(file.tensor(&info.name), Some(info));
        let data = file.tensor_data(info);
        assert_eq!(data.len() as u64, info.size);
        assert!(info.offset >= file.data_offset());
        assert!(info.offset + info.size <= len);
        assert!((1..=4).contains(&info.dims.len()));
        let _ = info.n_elements();
        let _ = info.ggml_type.name();
        assert_eq!(file.tensor_data_by_name(&info.name), Some(data));
    }
}
