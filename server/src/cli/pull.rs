//! `lmrs pull NAME`: downloads a model of the catalogue (or any `owner/repo/file.gguf` of the
//! Hugging Face hub) into the models folder, with a progress bar on a terminal and a line every
//! 10% otherwise; `lmrs pull --list` shows the catalogue.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{models_dir, DEFAULT_MODEL_FILE};
use crate::outln;
use crate::pull::catalogue::{self, CATALOGUE};
use crate::pull::download::{DownloadRequest, Hub, Progress, Verification};
use crate::pull::{local, reference};

/// Arguments of `lmrs pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// A catalogue name such as `qwen2.5-coder:0.5b` (`--list` shows them) or a Hugging Face path
    /// `owner/repo/file.gguf`. The hub is `$HF_ENDPOINT` (default https://huggingface.co);
    /// `$HF_TOKEN` is sent when set; proxies come from `HTTPS_PROXY` and friends.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the catalogue's models instead.
    #[arg(long)]
    list: bool,
}

/// Runs `lmrs pull`.
pub(crate) fn run(args: &PullArgs) -> anyhow::Result<()> {
    let Some(name) = args.name.as_deref().filter(|_| !args.list) else {
        return list();
    };
    let target = reference::resolve(name)?;
    let dir = models_dir();
    let dest = dir.join(&target.file_name);
    if dest.is_file() {
        eprintln!(
            "{} is already there (`lmrs rm {name}` removes it)",
            dest.display()
        );
        outln!("{}", dest.display())?;
        return Ok(());
    }
    let hub = Hub::from_env();
    let size = target
        .entry
        .map(|entry| format!(", about {}", human_bytes(entry.approx_bytes)))
        .unwrap_or_default();
    eprintln!(
        "pulling {}/{} from {}{size} into {}",
        target.repo,
        target.path,
        hub.endpoint(),
        dir.display()
    );
    let request = DownloadRequest {
        pinned_sha256: target.pinned_sha256(),
        ..DownloadRequest::new(&target.repo, &target.path, &dest)
    };
    let mut display = ProgressDisplay::new(&target.file_name, std::io::stderr().is_terminal());
    let result = hub.download(&request, &mut |progress| display.update(progress));
    display.finish();
    let downloaded = result.with_context(|| format!("pulling {name}"))?;
    match downloaded.verification {
        Verification::Pinned => eprintln!("sha256 {} matches the catalogue", downloaded.sha256),
        Verification::Hub => eprintln!(
            "sha256 {} matches the hub's (not pinned in lmrs's catalogue)",
            downloaded.sha256
        ),
        Verification::Unverified => eprintln!(
            "warning: the hub gave no sha256 for this file, so only its size was checked (sha256 {})",
            downloaded.sha256
        ),
    }
    let architecture = match target.entry {
        Some(entry) => Ok(entry.architecture.to_string()),
        None => local::architecture_of(&dest),
    };
    match architecture {
        Ok(arch) if !catalogue::is_loadable(&arch) => eprintln!(
            "note: this is a `{arch}` model, which this lmrs cannot run yet (it runs {})",
            lmrs::supported_architectures().join(", ")
        ),
        Ok(_) if target.file_name == DEFAULT_MODEL_FILE => {
            eprintln!("the language server loads it when no model is configured")
        }
        Ok(_) => eprintln!("use it with `lmrs lsp --model {}`", dest.display()),
        Err(why) => eprintln!(
            "warning: {} is not a readable GGUF file: {why}",
            dest.display()
        ),
    }
    outln!("{}", downloaded.path.display())?;
    Ok(())
}

/// `lmrs pull --list`: the catalogue.
fn list() -> anyhow::Result<()> {
    outln!(
        "{:<22} {:>8}  {:<4} {:<12} {}",
        "NAME",
        "SIZE",
        "FIM",
        "ARCH",
        "HUGGING FACE FILE"
    )?;
    for entry in CATALOGUE {
        let arch = if entry.loadable() {
            entry.architecture.to_string()
        } else {
            format!("{}*", entry.architecture)
        };
        outln!(
            "{:<22} {:>8}  {:<4} {:<12} {}/{}",
            entry.name,
            human_bytes(entry.approx_bytes),
            if entry.fim { "yes" } else { "no" },
            arch,
            entry.repo,
            entry.file
        )?;
    }
    outln!(
        "* not runnable by this lmrs yet (it runs {}); pullable all the same",
        lmrs::supported_architectures().join(", ")
    )?;
    Ok(())
}

/// Sizes as people read them: `491.4 MB`, `1.12 GB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// Shows download progress: a bar on a terminal, else a line at every 10% (every 100 MB when the
/// size is unknown).
enum ProgressDisplay {
    Bar(Option<ProgressBar>),
    Lines {
        name: String,
        /// The last tenth (or 100 MB step) printed.
        step: Option<u64>,
    },
}

impl ProgressDisplay {
    fn new(name: &str, terminal: bool) -> ProgressDisplay {
        if terminal {
            ProgressDisplay::Bar(None)
        } else {
            ProgressDisplay::Lines {
                name: name.to_string(),
                step: None,
            }
        }
    }

    fn update(&mut self, progress: Progress) {
        match self {
            ProgressDisplay::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| new_bar(progress));
                bar.set_position(progress.done);
            }
            ProgressDisplay::Lines { name, step } => {
                let now = match progress.total {
                    Some(total) if total > 0 => progress.done * 10 / total,
                    _ => progress.done / 100_000_000,
                };
                if step.is_none() && progress.resumed_from > 0 {
                    eprintln!(
                        "{name}: resuming after {} already downloaded",
                        human_bytes(progress.resumed_from)
                    );
                }
                if *step != Some(now) {
                    *step = Some(now);
                    match progress.total {
                        Some(total) if total > 0 => eprintln!(
                            "{name}: {}% ({} of {})",
                            now * 10,
                            human_bytes(progress.done),
                            human_bytes(total)
                        ),
                        _ => eprintln!("{name}: {}", human_bytes(progress.done)),
                    }
                }
            }
        }
    }

    fn finish(self) {
        // Cleared: indicatif leaves the cursor at the end of a finished bar's line.
        if let ProgressDisplay::Bar(Some(bar)) = self {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(progress: Progress) -> ProgressBar {
    let bar = match progress.total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_position(progress.done);
    bar.reset_eta();
    bar
}
