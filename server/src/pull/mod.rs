//! Getting models by name (`lmrs pull`, `lmrs models`, `lmrs rm`): the [`catalogue`] of known-good
//! completion models, what a NAME points at ([`reference`]), the resumable, verified [`download`]
//! from a Hugging Face-compatible hub, and the models folder the server loads from ([`local`]).

pub mod catalogue;
pub mod download;
pub mod local;
pub mod reference;

use std::path::Path;

use catalogue::CatalogueEntry;
use download::{DownloadError, DownloadRequest, Downloaded, Hub, Progress};

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
            catalogue::default_entry().name
        ),
    }
}

/// The catalogue model that the server may download by itself (its `autoPull` setting) to get
/// the model file at `path`: one whose file name is `path`'s and that this lmrs can run, when
/// `path` is in the models folder (the default model's path is such a path). `None` for any
/// other path: a file elsewhere is the person's own, and is never written to.
pub fn auto_pull_entry(path: &Path) -> Option<&'static CatalogueEntry> {
    let file_name = path.file_name()?.to_str()?;
    let entry = catalogue::by_file_name(file_name).filter(|entry| entry.loadable())?;
    (path.parent() == Some(crate::config::models_dir().as_path())).then_some(entry)
}

/// Downloads a catalogue model to `dest` from the hub of the environment (`HF_ENDPOINT`,
/// `HF_TOKEN`, proxies), checked against its pinned sha256, exactly as `lmrs pull NAME` does.
/// Blocks until the file is in place; `progress` is called as bytes arrive.
pub fn pull_entry(
    entry: &CatalogueEntry,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Downloaded, DownloadError> {
    let request = DownloadRequest {
        pinned_sha256: entry.sha256,
        ..DownloadRequest::new(entry.repo, entry.file, dest)
    };
    Hub::from_env().download(&request, progress)
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
            "run `lmrs pull qwen2.5-coder:1.5b` to download it"
        );
        let elsewhere = Path::new("/x/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        assert!(missing_model_hint(elsewhere)
            .starts_with("run `lmrs pull qwen2.5-coder:0.5b` and set the model path to "));
        assert!(missing_model_hint(Path::new("/x/mine.gguf"))
            .starts_with("run `lmrs pull qwen2.5-coder:1.5b` to get the default model"));
    }

    #[test]
    fn only_runnable_catalogue_files_in_the_models_folder_are_pulled_by_the_server() {
        let dir = models_dir();
        let default = auto_pull_entry(&dir.join(DEFAULT_MODEL_FILE)).unwrap();
        assert_eq!(default.name, "qwen2.5-coder:1.5b");
        let smaller = auto_pull_entry(&dir.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"));
        assert_eq!(smaller.unwrap().name, "qwen2.5-coder:0.5b");
        // Elsewhere or unknown: never.
        assert!(auto_pull_entry(Path::new("/x/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).is_none());
        assert!(auto_pull_entry(&dir.join("mine.gguf")).is_none());
        // Every catalogue model runs in this lmrs now (StarCoder2 was the last that did not), so
        // each is pulled; a model it cannot run would not be (`auto_pull_entry` checks
        // `loadable`, and `lmrs pull`'s refusal is tested with a gptj file in tests/pull.rs).
        for entry in catalogue::CATALOGUE {
            assert!(entry.loadable(), "{}", entry.name);
            let pulled = auto_pull_entry(&dir.join(entry.file)).map(|e| e.name);
            assert_eq!(pulled, Some(entry.name));
        }
    }
}
