//! The catalogue of known-good completion models that `lmrs pull NAME` knows by short name: where
//! each lives on the Hugging Face hub, its size, its sha256 when pinned, and whether it can fill in
//! the middle.
//!
//! Only the architectures the engine's registry holds ([`lmrs::supported_architectures`]) load in
//! this lmrs; an entry of another architecture can be pulled (for another tool, or a later lmrs)
//! and `lmrs pull` says that this lmrs cannot run it.

/// One model of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// Short name given to `lmrs pull`, e.g. `qwen2.5-coder:0.5b`.
    pub name: &'static str,
    /// Hugging Face repository, `owner/name`.
    pub repo: &'static str,
    /// File inside the repository (also its name in the models folder).
    pub file: &'static str,
    /// Approximate size in bytes (for the listing; the download checks the hub's exact size).
    pub approx_bytes: u64,
    /// Pinned sha256 of the file, or `None` when not pinned: then the download is checked against
    /// the sha256 the hub reports for the file (its LFS object id).
    pub sha256: Option<&'static str>,
    /// Whether the model has fill-in-the-middle tokens (what inline completions need).
    pub fim: bool,
    /// `general.architecture` of the file.
    pub architecture: &'static str,
}

impl CatalogueEntry {
    /// Whether this lmrs can run the model.
    pub fn loadable(&self) -> bool {
        is_loadable(self.architecture)
    }
}

/// Whether this lmrs loads models of an architecture (`general.architecture`).
pub fn is_loadable(architecture: &str) -> bool {
    lmrs::supported_architectures().contains(&architecture)
}

const MB: u64 = 1_000_000;

/// The catalogue, smallest first within each family. The default model (what the server loads when
/// no model is configured) is [`default_entry`].
pub const CATALOGUE: &[CatalogueEntry] = &[
    // Qwen2.5-Coder Instruct, the official GGUF repositories. The 0.5B and 1.5B sha256 are the
    // files' own (the same files `shared/fetch-models.sh` assembles); the 3B and 7B are not pinned.
    CatalogueEntry {
        name: "qwen2.5-coder:0.5b",
        repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        approx_bytes: 491_400_064,
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        fim: true,
        architecture: "qwen2",
    },
    CatalogueEntry {
        name: "qwen2.5-coder:1.5b",
        repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        approx_bytes: 1_117_320_768,
        sha256: Some("cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        fim: true,
        architecture: "qwen2",
    },
    CatalogueEntry {
        name: "qwen2.5-coder:3b",
        repo: "Qwen/Qwen2.5-Coder-3B-Instruct-GGUF",
        file: "qwen2.5-coder-3b-instruct-q4_k_m.gguf",
        approx_bytes: 2_100 * MB,
        sha256: None, // not pinned: checked against the hub's sha256
        fim: true,
        architecture: "qwen2",
    },
    CatalogueEntry {
        name: "qwen2.5-coder:7b",
        repo: "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF",
        file: "qwen2.5-coder-7b-instruct-q4_k_m.gguf",
        approx_bytes: 4_680 * MB,
        sha256: None, // not pinned: checked against the hub's sha256
        fim: true,
        architecture: "qwen2",
    },
    // DeepSeek-Coder base (FIM-trained), TheBloke's GGUF conversions: `llama` architecture, so they
    // load. They predate `tokenizer.ggml.pre`, so the engine (like llama.cpp) tokenizes them with
    // the default pre-tokenizer. Not pinned: checked against the hub's sha256.
    CatalogueEntry {
        name: "deepseek-coder:1.3b",
        repo: "TheBloke/deepseek-coder-1.3b-base-GGUF",
        file: "deepseek-coder-1.3b-base.Q4_K_M.gguf",
        approx_bytes: 874 * MB,
        sha256: None,
        fim: true,
        architecture: "llama",
    },
    CatalogueEntry {
        name: "deepseek-coder:6.7b",
        repo: "TheBloke/deepseek-coder-6.7B-base-GGUF",
        file: "deepseek-coder-6.7b-base.Q4_K_M.gguf",
        approx_bytes: 4_080 * MB,
        sha256: None,
        fim: true,
        architecture: "llama",
    },
    // Not pinned: checked against the hub's sha256.
    CatalogueEntry {
        name: "starcoder2:3b",
        repo: "second-state/StarCoder2-3B-GGUF",
        file: "starcoder2-3b-Q4_K_M.gguf",
        approx_bytes: 1_850 * MB,
        sha256: None,
        fim: true,
        architecture: "starcoder2",
    },
    // Architecture `gemma` (CodeGemma). The Gemma terms apply. Not pinned: checked against the
    // hub's sha256.
    CatalogueEntry {
        name: "codegemma:2b",
        repo: "lmstudio-community/codegemma-2b-GGUF",
        file: "codegemma-2b-Q4_K_M.gguf",
        approx_bytes: 1_630 * MB,
        sha256: None,
        fim: true,
        architecture: "gemma",
    },
];

/// The catalogue entry with this short name.
pub fn by_name(name: &str) -> Option<&'static CatalogueEntry> {
    CATALOGUE
        .iter()
        .find(|entry| entry.name.eq_ignore_ascii_case(name))
}

/// The catalogue entry whose file has this name (the name in the models folder).
pub fn by_file_name(file_name: &str) -> Option<&'static CatalogueEntry> {
    CATALOGUE.iter().find(|entry| entry.file == file_name)
}

/// The model the server loads when no model path is set (the catalogue entry of
/// [`crate::config::DEFAULT_MODEL_FILE`]).
pub fn default_entry() -> &'static CatalogueEntry {
    by_file_name(crate::config::DEFAULT_MODEL_FILE)
        .expect("the default model is in the catalogue (checked by a test)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_well_formed_and_unique() {
        for (i, entry) in CATALOGUE.iter().enumerate() {
            assert!(entry.name.contains(':'), "{entry:?}");
            assert_eq!(entry.repo.split('/').count(), 2, "{entry:?}");
            assert!(entry.file.ends_with(".gguf"), "{entry:?}");
            if let Some(sha) = entry.sha256 {
                assert!(
                    sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{entry:?}"
                );
            }
            for other in &CATALOGUE[i + 1..] {
                assert_ne!(entry.name, other.name);
                assert_ne!(entry.file, other.file);
            }
        }
    }

    #[test]
    fn the_default_model_is_in_the_catalogue_and_loadable() {
        let entry = default_entry();
        assert_eq!(entry.name, "qwen2.5-coder:1.5b");
        assert_eq!(entry.file, crate::config::DEFAULT_MODEL_FILE);
        assert!(entry.loadable() && entry.fim && entry.sha256.is_some());
        assert_eq!(by_name("Qwen2.5-Coder:1.5B"), Some(entry));
        assert!(by_name("starcoder2:3b").unwrap().loadable());
        assert!(
            !is_loadable("gptj"),
            "no graph for GPT-J (llama.cpp has none either)"
        );
        assert!(by_name("deepseek-coder:1.3b").unwrap().loadable());
        assert!(by_name("codegemma:2b").unwrap().loadable());
    }
}
