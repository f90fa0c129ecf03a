//! Getting models by name (`lmrs pull`, `lmrs models`, `lmrs rm`): the [`catalogue`] of known-good
//! completion models, what a NAME points at ([`reference`]), the resumable, verified [`download`]
//! from a Hugging Face-compatible hub, and the models folder the server loads from ([`local`]).

pub mod catalogue;
pub mod download;
pub mod local;
pub mod reference;

use std::path::Path;

/// What to run when the model file at `path` does not exist: `lmrs pull` with the catalogue name
/// of that file, or of the default model when the file is not in the catalogue.
pub fn missing_model_hint(path: &Path) -> String {
    let dir = crate::config::models_dir();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match catalogue::by_file_name(file_name) {
        Some(entry) if path.parent() == Some(dir.as_path()) => {
            format!("run `lmrs pull {}` to download it", entry.name)
        }
        Some(entry) => format!(
            "run `lmrs pull {}` and set the model path to {}",
            entry.name,
            dir.join(entry.file).display()
        ),
        None => format!(
            "run `lmrs pull {}` to get the default model, which is loaded when no model path is set",
            catalogue::CATALOGUE[0].name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{models_dir, DEFAULT_MODEL_FILE};

    #[test]
    fn the_hint_names_the_catalogue_model_of_the_missing_file() {
        let default = models_dir().join(DEFAULT_MODEL_FILE);
        assert_eq!(
            missing_model_hint(&default),
            "run `lmrs pull qwen2.5-coder:0.5b` to download it"
        );
        let elsewhere = Path::new("/x/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf");
        assert!(missing_model_hint(elsewhere)
            .starts_with("run `lmrs pull qwen2.5-coder:1.5b` and set the model path to "));
        assert!(missing_model_hint(Path::new("/x/mine.gguf"))
            .starts_with("run `lmrs pull qwen2.5-coder:0.5b` to get the default model"));
    }
}
