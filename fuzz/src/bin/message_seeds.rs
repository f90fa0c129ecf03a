//! Writes the seed corpus of the `message_layer` target (framed LSP messages from
//! `lmrs_lsp::lsp::fuzzing::seed_inputs`) into the directory given as the first argument (default
//! `corpus/message_layer`).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/message_layer".to_owned());
    std::fs::create_dir_all(&dir)?;
    let seeds = lmrs_lsp::lsp::fuzzing::seed_inputs();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i:02}"), seed)?;
    }
    println!("wrote {} seeds to {dir}", seeds.len());
    Ok(())
}
