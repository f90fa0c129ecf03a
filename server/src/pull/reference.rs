//! What a NAME given to `lmrs pull` points at: a catalogue short name (`qwen2.5-coder:0.5b`) or a
//! Hugging Face path `owner/repo/path/to/file.gguf`, and the file name it gets in the models folder.

use super::catalogue::{self, CatalogueEntry, CATALOGUE};

/// A file on the hub to pull, and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullTarget {
    /// Repository, `owner/name`.
    pub repo: String,
    /// Path of the file inside the repository.
    pub path: String,
    /// Name of the file in the models folder (the last component of `path`).
    pub file_name: String,
    /// The catalogue entry when the file is one of the catalogue's.
    pub entry: Option<&'static CatalogueEntry>,
}

impl PullTarget {
    /// The pinned sha256 of the file, when the catalogue pins one.
    pub fn pinned_sha256(&self) -> Option<&'static str> {
        self.entry.and_then(|entry| entry.sha256)
    }

    fn from_entry(entry: &'static CatalogueEntry) -> PullTarget {
        PullTarget {
            repo: entry.repo.to_string(),
            path: entry.file.to_string(),
            file_name: entry.file.to_string(),
            entry: Some(entry),
        }
    }
}

/// A NAME that names nothing pullable.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Neither a catalogue name nor a hub path.
    #[error("unknown model `{name}`: known names are {known}; or give a Hugging Face path owner/repo/file.gguf")]
    Unknown {
        /// The name given.
        name: String,
        /// The catalogue's names, comma-separated.
        known: String,
    },
    /// A hub path that cannot be a file of a repository.
    #[error("`{name}` is not a Hugging Face file path owner/repo/file.gguf: {why}")]
    BadPath {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The catalogue's names, comma-separated.
pub fn known_names() -> String {
    CATALOGUE
        .iter()
        .map(|entry| entry.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a NAME: a catalogue short name, or `owner/repo/path/file.gguf`.
pub fn resolve(name: &str) -> Result<PullTarget, NameError> {
    let name = name.trim();
    if let Some(entry) = catalogue::by_name(name) {
        return Ok(PullTarget::from_entry(entry));
    }
    if !name.contains('/') {
        return Err(NameError::Unknown {
            name: name.to_string(),
            known: known_names(),
        });
    }
    let bad = |why| NameError::BadPath {
        name: name.to_string(),
        why,
    };
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() < 3 {
        return Err(bad("it needs an owner, a repository and a file"));
    }
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(bad("empty, `.` or `..` path component"));
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("control character or backslash"));
        }
    }
    let file_name = parts[parts.len() - 1];
    if !file_name.to_ascii_lowercase().ends_with(".gguf") {
        return Err(bad("the file must be a .gguf file"));
    }
    let repo = parts[..2].join("/");
    let path = parts[2..].join("/");
    let entry = CATALOGUE
        .iter()
        .find(|entry| entry.repo.eq_ignore_ascii_case(&repo) && entry.file == path);
    Ok(PullTarget {
        repo,
        path,
        file_name: file_name.to_string(),
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_and_hub_paths_resolve() {
        let t = resolve("qwen2.5-coder:1.5b").unwrap();
        assert_eq!(t.repo, "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF");
        assert_eq!(t.file_name, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf");
        assert!(t.pinned_sha256().is_some());

        let t = resolve("someone/some-repo/sub/dir/model.Q4_K_M.gguf").unwrap();
        assert_eq!(t.repo, "someone/some-repo");
        assert_eq!(t.path, "sub/dir/model.Q4_K_M.gguf");
        assert_eq!(t.file_name, "model.Q4_K_M.gguf");
        assert_eq!(t.entry, None);

        // A hub path of a catalogue file gets its pinned sha256.
        let t = resolve(
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        )
        .unwrap();
        assert_eq!(t.entry.unwrap().name, "qwen2.5-coder:0.5b");
    }

    #[test]
    fn bad_names_are_clear_errors() {
        let e = resolve("qwen9:1b").unwrap_err().to_string();
        assert!(
            e.contains("qwen2.5-coder:0.5b") && e.contains("owner/repo/file.gguf"),
            "{e}"
        );
        for bad in [
            "a/b",
            "a/b/c.bin",
            "a/../c.gguf",
            "a//c.gguf",
            "a/b/..",
            "a/b/c\\d.gguf",
        ] {
            assert!(
                matches!(resolve(bad), Err(NameError::BadPath { .. })),
                "{bad}"
            );
        }
    }
}
