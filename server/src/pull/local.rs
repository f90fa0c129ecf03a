//! The models folder as `lmrs models` and `lmrs rm` see it: its GGUF files with their size,
//! architecture (read from the GGUF header) and catalogue name, unfinished downloads, and removing
//! one model (never anything outside the folder).

use std::path::{Component, Path, PathBuf};

use super::catalogue::{self, CatalogueEntry};
use super::download::part_path;
use super::reference;

/// A model file in the models folder.
#[derive(Clone, Debug)]
pub struct LocalModel {
    /// The file.
    pub path: PathBuf,
    /// Its name.
    pub file_name: String,
    /// Its size in bytes.
    pub size: u64,
    /// `general.architecture`, or why the header could not be read.
    pub architecture: Result<String, String>,
    /// The catalogue entry with this file name.
    pub entry: Option<&'static CatalogueEntry>,
    /// An unfinished download (`NAME.gguf.part`): size so far, no header read.
    pub partial: bool,
}

/// Errors of the models folder.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Nothing of that name in the folder.
    #[error("no model `{name}` in {dir} (`lmrs models` lists them)")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The models folder.
        dir: PathBuf,
    },
    /// A path outside the models folder.
    #[error("{path} is not in the models folder {dir}: lmrs only removes its own models")]
    Outside {
        /// The path given.
        path: PathBuf,
        /// The models folder.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The `.gguf` files (and unfinished `.gguf.part` downloads) in `dir`, by name; a missing folder
/// has none.
pub fn list(dir: &Path) -> Result<Vec<LocalModel>, LocalError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalError::Io { what, path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("reading", dir))?;
        let path = entry.path();
        let Some(file_name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let lower = file_name.to_ascii_lowercase();
        let partial = lower.ends_with(".gguf.part");
        if !(partial || lower.ends_with(".gguf")) || !path.is_file() {
            continue;
        }
        let size = entry.metadata().map_err(io("reading", &path))?.len();
        let model_name = file_name.strip_suffix(".part").unwrap_or(&file_name);
        models.push(LocalModel {
            architecture: if partial {
                Err("unfinished download".to_string())
            } else {
                architecture_of(&path)
            },
            entry: catalogue::by_file_name(model_name),
            path,
            file_name,
            size,
            partial,
        });
    }
    models.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(models)
}

/// `general.architecture` of a GGUF file, or why it could not be read.
pub fn architecture_of(path: &Path) -> Result<String, String> {
    let file = lmrs::gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    file.architecture()
        .map(str::to_string)
        .ok_or_else(|| "no general.architecture".to_string())
}

/// The file in `dir` that NAME means: a catalogue name, a hub path `owner/repo/file.gguf`, a file
/// name in the folder, or a path to a file inside the folder.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf, LocalError> {
    let not_found = || LocalError::NotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    };
    let exists = |path: &Path| path.is_file() || part_path(path).is_file();
    if let Some(entry) = catalogue::by_name(name) {
        return Ok(dir.join(entry.file));
    }
    let given = Path::new(name);
    let mut components = given.components();
    if let (Some(Component::Normal(_)), None) = (components.next(), components.next()) {
        let path = dir.join(name);
        return if exists(&path) {
            Ok(path)
        } else {
            Err(not_found())
        };
    }
    if given.exists() {
        // A path: it must be inside the folder.
        let canonical_dir = dir.canonicalize().map_err(|_| not_found())?;
        let canonical = given.canonicalize().map_err(|source| LocalError::Io {
            what: "resolving",
            path: given.to_path_buf(),
            source,
        })?;
        return match (canonical.parent(), canonical.file_name()) {
            (Some(parent), Some(file_name)) if parent == canonical_dir => Ok(dir.join(file_name)),
            _ => Err(LocalError::Outside {
                path: given.to_path_buf(),
                dir: dir.to_path_buf(),
            }),
        };
    }
    match reference::resolve(name) {
        Ok(target) if exists(&dir.join(&target.file_name)) => Ok(dir.join(target.file_name)),
        _ => Err(not_found()),
    }
}

/// Removes the model that NAME means (see [`locate`]) and its unfinished download; returns the
/// files removed.
pub fn remove(dir: &Path, name: &str) -> Result<Vec<PathBuf>, LocalError> {
    let path = locate(dir, name)?;
    let mut removed = Vec::new();
    for file in [path.clone(), part_path(&path)] {
        match std::fs::remove_file(&file) {
            Ok(()) => removed.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LocalError::Io {
                    what: "removing",
                    path: file,
                    source,
                })
            }
        }
    }
    if removed.is_empty() {
        return Err(LocalError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lmrs-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn lists_models_and_partial_downloads() {
        let dir = temp_dir("list");
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        std::fs::write(dir.join("broken.gguf"), "not gguf").unwrap();
        std::fs::write(
            dir.join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf.part"),
            "abc",
        )
        .unwrap();
        let models = list(&dir).unwrap();
        let names: Vec<_> = models.iter().map(|m| m.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "broken.gguf",
                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf.part"
            ]
        );
        assert!(models[0].architecture.is_err() && !models[0].partial);
        assert!(models[1].partial && models[1].size == 3);
        assert_eq!(models[1].entry.unwrap().name, "qwen2.5-coder:1.5b");
        assert!(list(&dir.join("missing")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removes_only_inside_the_folder() {
        let dir = temp_dir("rm");
        let outside = temp_dir("rm-outside").join("other.gguf");
        std::fs::write(&outside, "x").unwrap();
        let err = remove(&dir, outside.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, LocalError::Outside { .. }), "{err}");
        assert!(outside.exists());
        let err = remove(&dir, "../rm-outside/other.gguf").unwrap_err();
        assert!(
            matches!(
                err,
                LocalError::NotFound { .. } | LocalError::Outside { .. }
            ),
            "{err}"
        );
        assert!(outside.exists());
        // `..` and `.` are not file names in the folder (`../.part` must survive).
        let nested = dir.join("models");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(dir.join(".part"), "x").unwrap();
        for name in ["..", ".", "/"] {
            assert!(remove(&nested, name).is_err(), "{name}");
        }
        assert!(dir.join(".part").exists());
        std::fs::remove_file(dir.join(".part")).unwrap();

        std::fs::write(dir.join("a.gguf"), "x").unwrap();
        std::fs::write(dir.join("a.gguf.part"), "x").unwrap();
        assert_eq!(remove(&dir, "a.gguf").unwrap().len(), 2);
        assert!(matches!(
            remove(&dir, "a.gguf"),
            Err(LocalError::NotFound { .. })
        ));
        std::fs::write(dir.join("b.gguf"), "x").unwrap();
        assert_eq!(
            remove(&dir, "owner/repo/b.gguf").unwrap(),
            [dir.join("b.gguf")]
        );
        std::fs::write(dir.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"), "x").unwrap();
        assert_eq!(remove(&dir, "qwen2.5-coder:0.5b").unwrap().len(), 1);
        std::fs::write(dir.join("c.gguf"), "x").unwrap();
        assert_eq!(
            remove(&dir, dir.join("c.gguf").to_str().unwrap())
                .unwrap()
                .len(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(outside.parent().unwrap()).unwrap();
    }
}
