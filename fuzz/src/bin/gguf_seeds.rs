//! Writes a seed corpus of small, valid GGUF files made with the test writer (lmrs-fixtures) into the directory given as
//! the first argument (default `corpus/gguf_reader`).

#[path = "../../../engine/src/gguf/mod.rs"]
#[allow(dead_code, unused_imports)]
mod gguf;

#[path = "../../../fixtures/src/gguf_writer.rs"]
#[allow(dead_code)]
mod gguf_writer;

use gguf_writer::GgufWriter;
use gguf::{GgmlType, MetadataArray, MetadataValue};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/gguf_reader".to_owned());
    std::fs::create_dir_all(&dir)?;
    let mut seeds: Vec<(&str, GgufWriter)> = Vec::new();

    seeds.push(("empty", GgufWriter::new()));

    let mut scalars = GgufWriter::new();
    scalars
        .add_u8("u8", 1)
        .add_i8("i8", -1)
        .add_u16("u16", 2)
        .add_i16("i16", -2)
        .add_u32("u32", 3)
        .add_i32("i32", -3)
        .add_u64("u64", 4)
        .add_i64("i64", -4)
        .add_f32("f32", 0.5)
        .add_f64("f64", 0.25)
        .add_bool("bool", true)
        .add_string("string", "text");
    seeds.push(("scalars", scalars));

    let mut arrays = GgufWriter::new();
    arrays
        .add_string_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b"])
        .add_f32_array("tokenizer.ggml.scores", &[0.0, -1.0, -2.0, -3.0])
        .add_i32_array("tokenizer.ggml.token_type", &[3, 3, 1, 1])
        .add_array("bools", MetadataArray::Bool(vec![true, false]))
        .add_array("u64s", MetadataArray::U64(vec![1, 2]))
        .add_array(
            "nested",
            MetadataArray::Array(vec![
                MetadataArray::U8(vec![1, 2]),
                MetadataArray::Array(vec![MetadataArray::String(vec!["x".into()])]),
            ]),
        );
    seeds.push(("arrays", arrays));

    let mut model = GgufWriter::new();
    model
        .add_string("general.architecture", "llama")
        .add_u32("llama.block_count", 1)
        .add_f32_tensor("token_embd.weight", &[4, 2], &[0.5; 8])
        .add_tensor(
            "blk.0.attn_q.weight",
            &[32, 2],
            GgmlType::Q4_0,
            vec![1u8; 36],
        )
        .add_tensor(
            "blk.0.ffn_up.weight",
            &[256],
            GgmlType::Q4_K,
            vec![2u8; 144],
        )
        .add_tensor(
            "output_norm.weight",
            &[1, 1, 1, 3],
            GgmlType::F16,
            vec![0u8; 6],
        );
    seeds.push(("model", model.clone()));

    let mut aligned = model.clone();
    aligned.set_alignment(64);
    seeds.push(("model_align64", aligned));
    let mut packed = model;
    packed.set_alignment(1);
    seeds.push(("model_align1", packed));

    let mut every_type = GgufWriter::new();
    for t in GgmlType::ALL {
        let size = t.row_size(t.block_size()).unwrap_or(0) as usize;
        every_type.add_tensor(
            format!("t.{}", t.name()),
            &[t.block_size()],
            t,
            vec![0u8; size],
        );
    }
    every_type.add_metadata("general.alignment", MetadataValue::U32(16));
    seeds.push(("every_type", every_type));

    for (name, writer) in &seeds {
        writer.write_to(std::path::Path::new(&dir).join(format!("{name}.gguf")))?;
    }
    // A version 2 file.
    let mut v2 = seeds[3].1.to_bytes();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(std::path::Path::new(&dir).join("model_v2.gguf"), v2)?;
    println!("wrote {} seeds to {dir}", seeds.len() + 1);
    Ok(())
}
