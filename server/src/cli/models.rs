//! `lmrs models` (the models folder's GGUF files with size, architecture and catalogue name) and
//! `lmrs rm NAME|FILE` (removes one of them, never anything outside the folder).

use clap::Args;

use super::pull::human_bytes;
use crate::config::{models_dir, DEFAULT_MODEL_FILE};
use crate::outln;
use crate::pull::catalogue;
use crate::pull::local;

/// Arguments of `lmrs rm`.
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// A catalogue name (`qwen2.5-coder:0.5b`), a Hugging Face path `owner/repo/file.gguf`, or a
    /// file name or path in the models folder.
    name: String,
}

/// Runs `lmrs models`.
pub(crate) fn list() -> anyhow::Result<()> {
    let dir = models_dir();
    let models = local::list(&dir)?;
    if models.is_empty() {
        outln!(
            "no models in {} (`lmrs pull {}` gets the default model)",
            dir.display(),
            catalogue::default_entry().name
        )?;
        return Ok(());
    }
    outln!("models in {}:", dir.display())?;
    outln!(
        "{:<44} {:>9}  {:<24} {}",
        "FILE",
        "SIZE",
        "ARCHITECTURE",
        "NAME"
    )?;
    for model in &models {
        let architecture = match &model.architecture {
            Ok(arch) if catalogue::is_loadable(arch) => arch.clone(),
            Ok(arch) => format!("{arch} (cannot run yet)"),
            Err(_) if model.partial => "(unfinished download)".to_string(),
            Err(why) => format!("(unreadable: {why})"),
        };
        let mut name = model.entry.map_or("-", |entry| entry.name).to_string();
        if model.file_name == DEFAULT_MODEL_FILE {
            name.push_str(" (default)");
        }
        outln!(
            "{:<44} {:>9}  {:<24} {}",
            model.file_name,
            human_bytes(model.size),
            architecture,
            name
        )?;
    }
    Ok(())
}

/// Runs `lmrs rm`.
pub(crate) fn remove(args: &RmArgs) -> anyhow::Result<()> {
    for path in local::remove(&models_dir(), &args.name)? {
        outln!("removed {}", path.display())?;
    }
    Ok(())
}
