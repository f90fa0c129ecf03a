//! The project's definitions: an index from a name to the chunks that define it in the files of
//! the workspace folders, built by walking them (respecting `.gitignore`, with caps on file size,
//! file count and total bytes) and kept fresh file by file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::cross_file::Provided;
use super::definitions::{definitions, outline, Definition, Language};
use crate::config::Config;

/// Caps of a workspace walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexLimits {
    /// Files larger than this are skipped (generated code, data).
    pub(crate) max_file_bytes: u64,
    /// The walk stops after this many indexed files.
    pub(crate) max_files: usize,
    /// The walk stops after reading this many bytes in all.
    pub(crate) max_total_bytes: u64,
}

/// What to walk: the caps and the globs of files never indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WalkParams {
    /// Caps.
    pub(crate) limits: IndexLimits,
    /// Gitignore-style globs, relative to the folder.
    pub(crate) exclude: Vec<String>,
}

impl WalkParams {
    /// The walk the configuration asks for.
    pub(crate) fn from_config(cfg: &Config) -> WalkParams {
        WalkParams {
            limits: IndexLimits {
                max_file_bytes: cfg.index_max_file_bytes,
                max_files: cfg.index_max_files,
                max_total_bytes: cfg.index_max_total_bytes,
            },
            exclude: cfg.index_exclude.clone(),
        }
    }
}

/// A definition found in a file of the project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProjectDefinition {
    /// The file, relative to its workspace folder, with `/` separators.
    pub(crate) path: Arc<str>,
    /// 0-based line of the defining keyword.
    pub(crate) line: usize,
    /// The chunk that defines the name.
    chunk: Chunk,
}

/// Where a definition's chunk is. Files read from disk keep only the chunk's lines: on a large
/// workspace (the cargo registry's sources: 657,000 definitions) the chunks' text would take most of
/// the index's memory, while a prompt shows a handful of them, read again when shown.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Chunk {
    /// The text itself (a file indexed from text that is not on disk).
    Text(Arc<str>),
    /// Lines `lines` of the file at `file` (end exclusive).
    OnDisk {
        file: Arc<Path>,
        lines: std::ops::Range<u32>,
    },
}

impl ProjectDefinition {
    /// The chunk's text: read again from disk for a file indexed from disk, `None` when that file
    /// can no longer be read or no longer has the definition there (changed since it was indexed).
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        match &self.chunk {
            Chunk::Text(text) => Some(text.to_string()),
            Chunk::OnDisk { file, lines } => {
                let bytes = std::fs::read(file).ok()?;
                let text = source_text(&bytes)?;
                let mut chunk = String::new();
                for line in text.lines().skip(lines.start as usize).take(lines.len()) {
                    chunk.push_str(line);
                    chunk.push('\n');
                }
                chunk.contains(name).then_some(chunk)
            }
        }
    }
}

/// Name → definitions, over the files of the workspace.
#[derive(Debug, Default)]
pub(crate) struct ProjectIndex {
    by_name: HashMap<String, Vec<ProjectDefinition>>,
    /// For each indexed file, the names it defines (to replace them when it changes).
    names_by_file: HashMap<Arc<str>, Vec<String>>,
    /// For each indexed file, its outline (see [`outline`]).
    outlines: HashMap<Arc<str>, Arc<str>>,
    /// Module name (a file's stem, or its folder's name for `__init__.py` / `mod.rs` / `index.*`)
    /// → the files.
    by_module: HashMap<String, Vec<Arc<str>>>,
    /// For each file indexed from disk, where it is (see [`ProjectIndex::nearby_files`]).
    on_disk: HashMap<Arc<str>, Arc<Path>>,
}

/// Lines of a module's outline in a prompt.
const MAX_OUTLINE_LINES: usize = 40;

/// The module name a file answers to: `pkg/errors.py` → `errors`, `src/net/mod.rs` → `net`.
fn module_name(path: &str) -> Option<&str> {
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = file.split('.').next()?;
    if matches!(stem, "__init__" | "mod" | "index" | "lib") {
        let parent = dir.rsplit('/').next()?;
        return (!parent.is_empty()).then_some(parent);
    }
    (!stem.is_empty()).then_some(stem)
}

/// The directory part of a path (`""` at the top).
fn directory(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// What a walk did, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WalkStats {
    /// Files indexed.
    pub(crate) files: usize,
    /// Bytes read.
    pub(crate) bytes: u64,
    /// Definitions found.
    pub(crate) definitions: usize,
    /// Whether a cap stopped the walk early.
    pub(crate) capped: bool,
    /// Milliseconds spent.
    pub(crate) millis: u64,
}

impl ProjectIndex {
    /// Indexes (or re-indexes) the file at `path` (relative to its workspace folder) with content
    /// `text`, keeping the chunks' text; its earlier definitions are dropped first.
    #[cfg(test)]
    pub(crate) fn update_file(&mut self, path: &str, text: &str) -> usize {
        self.index_file(path, text, None)
    }

    /// [`update_file`](Self::update_file) for a file read from `on_disk`: the chunks are read from
    /// there again when shown, so the index holds only their line ranges.
    pub(crate) fn update_file_on_disk(&mut self, path: &str, on_disk: &Path, text: &str) -> usize {
        self.index_file(path, text, Some(Arc::from(on_disk)))
    }

    fn index_file(&mut self, path: &str, text: &str, on_disk: Option<Arc<Path>>) -> usize {
        self.remove_file(path);
        let path: Arc<str> = Arc::from(path);
        let found = definitions(&path, text);
        self.outlines.insert(
            Arc::clone(&path),
            Arc::from(outline(&found, MAX_OUTLINE_LINES)),
        );
        if let Some(module) = module_name(&path) {
            self.by_module
                .entry(module.to_owned())
                .or_default()
                .push(Arc::clone(&path));
        }
        let mut names = Vec::with_capacity(found.len());
        for definition in found {
            names.push(definition.name.clone());
            self.by_name
                .entry(definition.name)
                .or_default()
                .push(ProjectDefinition {
                    path: Arc::clone(&path),
                    line: definition.line,
                    chunk: match &on_disk {
                        Some(file) => Chunk::OnDisk {
                            file: Arc::clone(file),
                            lines: definition.lines.start as u32..definition.lines.end as u32,
                        },
                        None => Chunk::Text(Arc::from(definition.text)),
                    },
                });
        }
        let count = names.len();
        if let Some(file) = on_disk {
            self.on_disk.insert(Arc::clone(&path), file);
        }
        self.names_by_file.insert(path, names);
        count
    }

    /// Forgets the definitions of the file at `path`.
    pub(crate) fn remove_file(&mut self, path: &str) {
        let Some(names) = self.names_by_file.remove(path) else {
            return;
        };
        self.outlines.remove(path);
        self.on_disk.remove(path);
        if let Some(module) = module_name(path) {
            if let Some(files) = self.by_module.get_mut(module) {
                files.retain(|f| &**f != path);
                if files.is_empty() {
                    self.by_module.remove(module);
                }
            }
        }
        for name in names {
            if let Some(list) = self.by_name.get_mut(&name) {
                list.retain(|d| &*d.path != path);
                if list.is_empty() {
                    self.by_name.remove(&name);
                }
            }
        }
    }

    /// The definitions of `name`.
    pub(crate) fn lookup(&self, name: &str) -> &[ProjectDefinition] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The definitions of `name` for the prompt: those of the open documents first (their
    /// current text, `open` = path and definitions of each), then the index's in files that are
    /// not open (the index holds what is saved on disk).
    ///
    /// A name nothing defines may name a module (`errors` in `errors.InvalidDateDefect`): then
    /// the outline of that module's file, the one nearest `current` first.
    pub(crate) fn provided(
        &self,
        name: &str,
        open: &[(String, Vec<Definition>)],
        current: &str,
    ) -> Vec<Provided> {
        let mut out: Vec<Provided> = open
            .iter()
            .flat_map(|(path, definitions)| {
                definitions
                    .iter()
                    .filter(|d| d.name == name)
                    .map(move |d| Provided {
                        path: path.clone(),
                        line: d.line,
                        text: d.text.clone(),
                    })
            })
            .collect();
        for d in self.lookup(name) {
            if open.iter().any(|(path, _)| **path == *d.path) {
                continue;
            }
            if let Some(text) = d.text(name) {
                out.push(Provided {
                    path: d.path.to_string(),
                    line: d.line,
                    text,
                });
            }
        }
        if out.is_empty() {
            out.extend(self.module_outline(name, open, current));
        }
        out
    }

    /// The outline of the module `name` (an open document's current one first), preferring a
    /// file in `current`'s directory, then the shortest path.
    fn module_outline(
        &self,
        name: &str,
        open: &[(String, Vec<Definition>)],
        current: &str,
    ) -> Option<Provided> {
        let here = directory(current);
        let rank = |path: &str| (directory(path) != here, path.len());
        let open_match = open
            .iter()
            .filter(|(path, _)| module_name(path) == Some(name) && path != current)
            .min_by_key(|(path, _)| rank(path));
        if let Some((path, definitions)) = open_match {
            let text = outline(definitions, MAX_OUTLINE_LINES);
            return (!text.is_empty()).then(|| Provided {
                path: path.clone(),
                line: 0,
                text,
            });
        }
        let path = self
            .by_module
            .get(name)?
            .iter()
            .filter(|path| &***path != current)
            .min_by_key(|path| rank(path))?;
        let text = self.outlines.get(path)?;
        (!text.is_empty()).then(|| Provided {
            path: path.to_string(),
            line: 0,
            text: text.to_string(),
        })
    }

    /// Every definition with its name, in no particular order.
    pub(crate) fn definitions(&self) -> impl Iterator<Item = (&str, &ProjectDefinition)> {
        self.by_name
            .iter()
            .flat_map(|(name, found)| found.iter().map(move |d| (name.as_str(), d)))
    }

    /// Files on disk near `current` (a path relative to its workspace folder), where code like
    /// the code being written is likeliest: the other files of its folder, then those of the
    /// folders beside it (same parent), at most `max`, in path order within each tier.
    pub(crate) fn nearby_files(&self, current: &str, max: usize) -> Vec<(String, Arc<Path>)> {
        let folder = directory(current);
        let parent = directory(folder);
        let mut same_folder = Vec::new();
        let mut beside = Vec::new();
        for (path, file) in &self.on_disk {
            if &**path == current {
                continue;
            }
            let dir = directory(path);
            if dir == folder {
                same_folder.push((path.to_string(), Arc::clone(file)));
            } else if !folder.is_empty() && directory(dir) == parent {
                beside.push((path.to_string(), Arc::clone(file)));
            }
        }
        same_folder.sort();
        beside.sort();
        same_folder.extend(beside);
        same_folder.truncate(max);
        same_folder
    }

    /// Number of indexed files.
    #[cfg(test)]
    pub(crate) fn files(&self) -> usize {
        self.names_by_file.len()
    }

    /// Walks `root` (a workspace folder) and indexes every source file the scanner knows, skipping
    /// what `.gitignore` and hidden folders exclude, files over the size cap, binary files, and
    /// lines-long minified ones; stops at the count and byte caps. `keep_going` is called with
    /// the figures so far before each entry (progress reports); `false` stops the walk.
    pub(crate) fn index_folder(
        &mut self,
        root: &Path,
        walk: &WalkParams,
        keep_going: &dyn Fn(&WalkStats) -> bool,
    ) -> WalkStats {
        let started = Instant::now();
        let limits = &walk.limits;
        let mut stats = WalkStats::default();
        let mut overrides = ignore::overrides::OverrideBuilder::new(root);
        for glob in &walk.exclude {
            // A bad glob is skipped (the walk is not the place to fail); configuration checks it.
            let _ = overrides.add(&format!("!{glob}"));
        }
        let overrides = overrides
            .build()
            .unwrap_or_else(|_| ignore::overrides::Override::empty());
        let walker = ignore::WalkBuilder::new(root)
            .overrides(overrides)
            .hidden(true)
            .git_ignore(true)
            .git_exclude(true)
            .parents(false)
            .require_git(false)
            .follow_links(false)
            .build();
        for entry in walker {
            if !keep_going(&stats) {
                stats.capped = true;
                break;
            }
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let Some(relative) = relative_path(root, path) else {
                continue;
            };
            if Language::of_path(&relative).is_none() {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size > limits.max_file_bytes {
                continue;
            }
            if stats.files >= limits.max_files || stats.bytes + size > limits.max_total_bytes {
                stats.capped = true;
                break;
            }
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            stats.bytes += bytes.len() as u64;
            let Some(text) = source_text(&bytes) else {
                continue;
            };
            stats.definitions += self.update_file_on_disk(&relative, path, text);
            stats.files += 1;
        }
        stats.millis = started.elapsed().as_millis() as u64;
        stats
    }
}

/// `path` relative to `root` with `/` separators, if it is inside it.
pub(crate) fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The text of a file worth indexing: UTF-8, no NUL byte (binary), and not minified (a few very
/// long lines).
pub(crate) fn source_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let lines = text.lines().count().max(1);
    (text.len() / lines <= 300).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_and_removed() {
        let mut index = ProjectIndex::default();
        index.update_file("a.py", "def parse(x):\n    return x\n");
        index.update_file(
            "b.py",
            "def parse(y):\n    return y\n\ndef other():\n    pass\n",
        );
        assert_eq!(index.lookup("parse").len(), 2);
        index.update_file("a.py", "def render(x):\n    return x\n");
        assert_eq!(index.lookup("parse").len(), 1);
        assert_eq!(&*index.lookup("render")[0].path, "a.py");
        index.remove_file("b.py");
        assert!(index.lookup("parse").is_empty());
        assert_eq!(index.files(), 1);
        // A module name with no definition of its own gives that module's outline.
        index.update_file(
            "pkg/errors.py",
            "class MessageError(Exception):\n    pass\n",
        );
        index.update_file("other/errors.py", "class Unrelated:\n    pass\n");
        let provided = index.provided("errors", &[], "pkg/main.py");
        assert_eq!(provided.len(), 1);
        assert_eq!(
            provided[0].path, "pkg/errors.py",
            "the one beside the current file"
        );
        assert_eq!(provided[0].text, "class MessageError(Exception):\n");
        assert!(index.provided("errors", &[], "other/errors.py")[0].path == "pkg/errors.py");
    }

    #[test]
    fn a_walk_respects_gitignore_caps_and_binary_files() {
        let root = std::env::temp_dir().join(format!("lmrs-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::write(root.join("src/lib.rs"), "pub fn kept() {}\n").unwrap();
        std::fs::write(root.join("target/gen.rs"), "pub fn ignored() {}\n").unwrap();
        std::fs::write(root.join("src/blob.rs"), b"pub fn binary() {}\n\0\0").unwrap();
        std::fs::write(root.join("src/big.rs"), "pub fn big() {}\n".repeat(1000)).unwrap();
        std::fs::write(root.join("src/skip.rs"), "pub fn excluded() {}\n").unwrap();
        let limits = IndexLimits {
            max_file_bytes: 4096,
            max_files: 100,
            max_total_bytes: 1 << 20,
        };
        let walk = WalkParams {
            limits,
            exclude: vec!["src/skip.rs".into()],
        };
        let mut index = ProjectIndex::default();
        let stats = index.index_folder(&root, &walk, &|_| true);
        assert_eq!(index.lookup("kept").len(), 1);
        assert_eq!(&*index.lookup("kept")[0].path, "src/lib.rs");
        assert!(index.lookup("ignored").is_empty(), "gitignored");
        assert!(index.lookup("binary").is_empty(), "binary");
        assert!(index.lookup("big").is_empty(), "over the size cap");
        assert!(index.lookup("excluded").is_empty(), "excluded by a glob");
        assert_eq!(stats.files, 1);
        let capped = ProjectIndex::default().index_folder(
            &root,
            &WalkParams {
                limits: IndexLimits {
                    max_files: 0,
                    ..limits
                },
                exclude: Vec::new(),
            },
            &|_| true,
        );
        assert!(capped.capped && capped.files == 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_walked_file_s_chunks_are_read_from_disk_when_shown() {
        let root = std::env::temp_dir().join(format!("lmrs-index-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let text = "import os\n\n# Parses.\ndef parse(text):\n    return text.split()\n";
        std::fs::write(root.join("util.py"), text).unwrap();
        let mut index = ProjectIndex::default();
        index.index_folder(&root, &WalkParams::from_config(&Config::default()), &|_| {
            true
        });
        // The same chunk the scanner makes from the text.
        let expected = definitions("util.py", text).remove(0).text;
        assert_eq!(index.provided("parse", &[], "main.py")[0].text, expected);
        // Changed on disk since: a chunk that no longer holds the name is not shown.
        std::fs::write(root.join("util.py"), "import os\n").unwrap();
        assert!(index.provided("parse", &[], "main.py").is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn nearby_files_are_the_folder_s_then_the_neighbouring_folders() {
        let mut index = ProjectIndex::default();
        for path in [
            "pkg/core/a.py",
            "pkg/core/b.py",
            "pkg/core/c.py",
            "pkg/net/d.py",
            "pkg/e.py",
            "other/f.py",
        ] {
            index.update_file_on_disk(path, Path::new(path), "def f():\n    pass\n");
        }
        // Indexed from text (an open document's): not a file to read.
        index.update_file("pkg/core/open.py", "def g():\n    pass\n");
        let near = |index: &ProjectIndex, current: &str, max: usize| -> Vec<String> {
            index
                .nearby_files(current, max)
                .into_iter()
                .map(|(path, _)| path)
                .collect()
        };
        assert_eq!(
            near(&index, "pkg/core/b.py", 8),
            ["pkg/core/a.py", "pkg/core/c.py", "pkg/net/d.py"]
        );
        assert_eq!(near(&index, "pkg/core/b.py", 1), ["pkg/core/a.py"]);
        assert_eq!(near(&index, "top.py", 8), Vec::<String>::new());
        index.remove_file("pkg/core/a.py");
        assert_eq!(near(&index, "pkg/core/b.py", 1), ["pkg/core/c.py"]);
    }
}
