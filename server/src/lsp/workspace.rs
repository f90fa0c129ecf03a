//! The client's workspace folders: which folder a document is in, and its path inside it (the
//! repo-level prompt header shows both).

use tower_lsp_server::gen_lsp_types::{InitializeParams, WorkspaceFolders};

/// The workspace folders the client named at `initialize`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Workspace {
    /// (folder URI with a trailing '/', folder name)
    folders: Vec<(String, String)>,
}

impl Workspace {
    /// The folders of `initialize`: its workspace folders, else its (deprecated) root URI.
    pub(crate) fn from_initialize(params: &InitializeParams) -> Self {
        let mut folders = Vec::new();
        if let Some(WorkspaceFolders::WorkspaceFolderList(list)) =
            &params.workspace_folders_initialize_params.workspace_folders
        {
            for f in list {
                folders.push((
                    format!("{}/", f.uri.0.trim_end_matches('/')),
                    f.name.clone(),
                ));
            }
        }
        #[allow(deprecated)]
        if folders.is_empty() {
            if let Some(root) = &params.root_uri {
                folders.push((
                    format!("{}/", root.0.trim_end_matches('/')),
                    folder_name(&root.0),
                ));
            }
        }
        Self { folders }
    }

    /// The folders on disk (those with `file://` URIs).
    pub(crate) fn folder_paths(&self) -> Vec<std::path::PathBuf> {
        self.folders
            .iter()
            .filter_map(|(uri, _)| uri.strip_prefix("file://"))
            .map(|path| std::path::PathBuf::from(decode_path(path.trim_end_matches('/'))))
            .collect()
    }

    /// The name of the folder holding the document `uri` and the document's path inside it
    /// (decoded), or `(None, None)` outside every folder.
    pub(crate) fn file(&self, uri: &str) -> (Option<String>, Option<String>) {
        for (root, name) in &self.folders {
            if let Some(rel) = uri.strip_prefix(root.as_str()) {
                return (Some(name.clone()), Some(percent_decode(rel)));
            }
        }
        (None, None)
    }
}

/// A `file://` URI's path part, percent-decoded.
pub(crate) fn decode_path(path: &str) -> String {
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn folder_name(uri: &str) -> String {
    percent_decode(uri.trim_end_matches('/').rsplit('/').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_helpers() {
        assert_eq!(percent_decode("a%20b/c%C3%A9.rs"), "a b/cé.rs");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(folder_name("file:///home/u/my%20proj/"), "my proj");
        let workspace = Workspace {
            folders: vec![("file:///home/u/my%20proj/".into(), "my proj".into())],
        };
        assert_eq!(
            workspace.folder_paths(),
            vec![std::path::PathBuf::from("/home/u/my proj")]
        );
    }
}
