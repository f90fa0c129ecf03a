//! Downloading one file of a Hugging Face-compatible hub to a path: resumable (the bytes so far
//! stay in `FILE.part` and a later try asks for the rest with an HTTP `Range`), checked (size, and
//! sha256 against the catalogue's pin or the hub's LFS object id) before `FILE.part` is renamed to
//! `FILE`, so a partial or corrupt file never sits at the final name.
//!
//! The hub's `resolve` URL answers an LFS file with a redirect to its storage that carries the
//! file's sha256 and size (`X-Linked-ETag`, `X-Linked-Size`); a plain server's `ETag` and
//! `Content-Length` are used when those are absent.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::http::{HeaderMap, StatusCode};

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The repository has no such file.
    #[error("no file {file} in repo {repo} ({url})")]
    NoSuchFile {
        /// Path of the file in the repository.
        file: String,
        /// The repository.
        repo: String,
        /// The URL asked.
        url: String,
    },
    /// The repository does not exist, or is private and needs a token.
    #[error("no repo {repo} at {endpoint} (a private repo needs HF_TOKEN set to an access token that can read it)")]
    NoSuchRepo {
        /// The repository.
        repo: String,
        /// The hub.
        endpoint: String,
    },
    /// The hub refused access (gated or private repository, bad token).
    #[error("access to {url} was refused (HTTP {status}{gated}): {advice}")]
    Refused {
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
        /// `, the repo is gated` or nothing.
        gated: &'static str,
        /// What to do about HF_TOKEN.
        advice: &'static str,
    },
    /// Any other unexpected HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The request could not be made or answered (DNS, connection, TLS, proxy, timeout).
    #[error("network error fetching {url}")]
    Network {
        /// The URL asked.
        url: String,
        /// What failed.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The connection broke while the file was coming; what arrived is kept in the `.part` file.
    #[error("the download of {url} broke off after {received} bytes (run the same command again to resume)")]
    Interrupted {
        /// The URL asked.
        url: String,
        /// Bytes of the file in the `.part` file.
        received: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server answered a `Range` request with another part of the file.
    #[error("{url} answered `bytes={asked}-` with `Content-Range: {got}`")]
    BadRange {
        /// The URL asked.
        url: String,
        /// The first byte asked for.
        asked: u64,
        /// The `Content-Range` received.
        got: String,
    },
    /// The file that arrived does not have the size the hub announced.
    #[error(
        "{path}: {actual} bytes arrived, {expected} were announced; the partial file was removed"
    )]
    SizeMismatch {
        /// The `.part` file (removed).
        path: PathBuf,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// The file that arrived does not have the expected sha256.
    #[error("{file}: sha256 {actual} does not match the expected {expected} ({from}); the download was removed")]
    Sha256Mismatch {
        /// The final file name.
        file: String,
        /// Expected digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
        /// Where the expected digest comes from.
        from: &'static str,
    },
    /// The hub's file is not the one the catalogue pins.
    #[error("{url}: the hub's file has sha256 {hub}, the catalogue pins {pinned}; the file changed upstream, so nothing was downloaded")]
    PinMismatch {
        /// The URL asked.
        url: String,
        /// The hub's digest.
        hub: String,
        /// The catalogue's digest.
        pinned: String,
    },
    /// A local file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done, e.g. `writing`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// What the hub says about a file before it is downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Size in bytes, when announced.
    pub size: Option<u64>,
    /// sha256 (lower-case hex), when the hub gives one (LFS files).
    pub sha256: Option<String>,
}

/// How a finished download was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Against the catalogue's pinned sha256.
    Pinned,
    /// Against the sha256 the hub reports.
    Hub,
    /// Neither gave a sha256: only the size was checked (when announced).
    Unverified,
}

/// A finished download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The final path.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// How it was checked.
    pub verification: Verification,
}

/// Progress of a download, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file on disk so far.
    pub done: u64,
    /// The file's size, when known.
    pub total: Option<u64>,
    /// Bytes that were already there when this download started (resumed from).
    pub resumed_from: u64,
}

/// One file to download.
#[derive(Clone, Debug)]
pub struct DownloadRequest<'a> {
    /// Repository, `owner/name`.
    pub repo: &'a str,
    /// Path of the file in the repository.
    pub path: &'a str,
    /// Where the file goes; `DEST.part` holds it while it arrives.
    pub dest: &'a Path,
    /// The sha256 the file must have, when pinned.
    pub pinned_sha256: Option<&'a str>,
    /// Tries of the transfer, counting the first: a connection that breaks mid-file is resumed
    /// this many times minus one before the error is returned.
    pub attempts: u32,
    /// Pause before a retry (doubled each time).
    pub retry_delay: Duration,
}

impl<'a> DownloadRequest<'a> {
    /// A request with the default retries (5 tries, 1 s apart and doubling).
    pub fn new(repo: &'a str, path: &'a str, dest: &'a Path) -> Self {
        DownloadRequest {
            repo,
            path,
            dest,
            pinned_sha256: None,
            attempts: 5,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The `.part` file of a destination.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// A Hugging Face-compatible hub: its address, the token sent to it, and the HTTP agent.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Bytes read from the network at a time.
const CHUNK: usize = 256 * 1024;

impl Hub {
    /// A hub at `endpoint` (e.g. `https://huggingface.co`), sending `token` as a Bearer token when
    /// given; `proxy_from_env` uses `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (and `NO_PROXY`).
    pub fn new(endpoint: &str, token: Option<String>, proxy_from_env: bool) -> Hub {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("lmrs/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)));
        if !proxy_from_env {
            config = config.proxy(None);
        }
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent: config.build().into(),
        }
    }

    /// The hub of the environment: `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]), `HF_TOKEN`, proxies.
    pub fn from_env() -> Hub {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Hub::new(&endpoint, std::env::var("HF_TOKEN").ok(), true)
    }

    /// The hub's address.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The download URL of a file on the main branch.
    pub fn file_url(&self, repo: &str, path: &str) -> String {
        format!(
            "{}/{}/resolve/main/{}",
            self.endpoint,
            percent_encode_path(repo),
            percent_encode_path(path)
        )
    }

    fn request<B>(&self, mut request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request
    }

    /// Asks the hub for a file's size and sha256 without downloading it.
    pub fn probe(&self, repo: &str, path: &str) -> Result<RemoteFile, DownloadError> {
        let url = self.file_url(repo, path);
        let network = |e| DownloadError::Network {
            url: url.clone(),
            source: Box::new(e),
        };
        let response = self
            .request(self.agent.head(&url))
            .config()
            .max_redirects(0)
            .build()
            .call()
            .map_err(network)?;
        let status = response.status();
        let headers = response.headers();
        if status.is_redirection() {
            let linked = RemoteFile {
                size: header(headers, "x-linked-size").and_then(|s| s.parse().ok()),
                sha256: header(headers, "x-linked-etag").and_then(sha256_of_etag),
            };
            if linked.size.is_some() || linked.sha256.is_some() {
                return Ok(linked);
            }
            // A redirect that is not to LFS storage (a renamed repository): follow it.
            let response = self
                .request(self.agent.head(&url))
                .call()
                .map_err(network)?;
            return remote_file_of(&response, self, repo, path, &url);
        }
        remote_file_of(&response, self, repo, path, &url)
    }

    /// Downloads a file to `request.dest` through `DEST.part`, resuming what a `.part` file
    /// already holds, and checks it before renaming it into place. `progress` is called as bytes
    /// arrive.
    pub fn download(
        &self,
        request: &DownloadRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Downloaded, DownloadError> {
        let url = self.file_url(request.repo, request.path);
        let remote = self.probe(request.repo, request.path)?;
        let expected = match (request.pinned_sha256, &remote.sha256) {
            (Some(pinned), Some(hub)) if !pinned.eq_ignore_ascii_case(hub) => {
                return Err(DownloadError::PinMismatch {
                    url,
                    hub: hub.clone(),
                    pinned: pinned.to_string(),
                })
            }
            (Some(pinned), _) => Some((pinned.to_ascii_lowercase(), Verification::Pinned)),
            (None, Some(hub)) => Some((hub.clone(), Verification::Hub)),
            (None, None) => None,
        };
        let part = part_path(request.dest);
        if let Some(parent) = part.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
        }
        let mut state = PartFile::open(&part, remote.size)?;
        let resumed_from = state.len;
        progress(Progress {
            done: state.len,
            total: remote.size,
            resumed_from,
        });
        let mut delay = request.retry_delay;
        let mut attempt = 1;
        loop {
            let result = if remote.size == Some(state.len) {
                Ok(())
            } else {
                self.transfer(&url, &mut state, remote.size, &mut |done| {
                    progress(Progress {
                        done,
                        total: remote.size,
                        resumed_from,
                    })
                })
            };
            match result {
                Ok(()) => break,
                Err(error @ DownloadError::Interrupted { .. }) if attempt < request.attempts => {
                    tracing::warn!("{error}; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
        let PartFile {
            file, len, hasher, ..
        } = state;
        file.sync_all().map_err(io_error("writing", &part))?;
        drop(file);
        if let Some(size) = remote.size.filter(|&size| size != len) {
            let _ = std::fs::remove_file(&part);
            return Err(DownloadError::SizeMismatch {
                path: part,
                expected: size,
                actual: len,
            });
        }
        let sha256 = hex(&hasher.finalize());
        let verification = match expected {
            Some((want, how)) if want != sha256 => {
                let _ = std::fs::remove_file(&part);
                return Err(DownloadError::Sha256Mismatch {
                    file: request.dest.display().to_string(),
                    expected: want,
                    actual: sha256,
                    from: match how {
                        Verification::Pinned => "pinned by the catalogue",
                        _ => "reported by the hub",
                    },
                });
            }
            Some((_, how)) => how,
            None => Verification::Unverified,
        };
        std::fs::rename(&part, request.dest).map_err(io_error("renaming", &part))?;
        Ok(Downloaded {
            path: request.dest.to_path_buf(),
            size: len,
            sha256,
            verification,
        })
    }

    /// One HTTP transfer of the rest of the file into the `.part` file.
    fn transfer(
        &self,
        url: &str,
        state: &mut PartFile,
        total: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        let mut request = self.request(self.agent.get(url));
        if state.len > 0 {
            request = request.header("Range", format!("bytes={}-", state.len));
        }
        let response = request.call().map_err(|e| DownloadError::Network {
            url: url.to_string(),
            source: Box::new(e),
        })?;
        match response.status() {
            StatusCode::OK => state.restart()?,
            StatusCode::PARTIAL_CONTENT => {
                let range = header(response.headers(), "content-range").unwrap_or("");
                if range_start(range) != Some(state.len) {
                    return Err(DownloadError::BadRange {
                        url: url.to_string(),
                        asked: state.len,
                        got: range.to_string(),
                    });
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if state.len > 0 => {
                // More than the file holds: start over.
                state.restart()?;
                return Err(DownloadError::Interrupted {
                    url: url.to_string(),
                    received: 0,
                    source: std::io::Error::other("the partial file was longer than the file"),
                });
            }
            _ => {
                let (repo, path) = split_url(url);
                return Err(status_error(&response, self, &repo, &path, url));
            }
        }
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(DownloadError::Interrupted {
                        url: url.to_string(),
                        received: state.len,
                        source,
                    })
                }
            };
            state.append(&buf[..n])?;
            progress(state.len);
        }
        match total {
            Some(total) if state.len < total => Err(DownloadError::Interrupted {
                url: url.to_string(),
                received: state.len,
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server ended the response early",
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// The `.part` file being filled, its length and the sha256 of its bytes so far.
struct PartFile {
    path: PathBuf,
    file: File,
    len: u64,
    hasher: Sha256,
}

impl PartFile {
    /// Opens (or creates) the `.part` file and hashes what it already holds; one longer than the
    /// announced size is emptied.
    fn open(path: &Path, size: Option<u64>) -> Result<PartFile, DownloadError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error("opening", path))?;
        let mut state = PartFile {
            path: path.to_path_buf(),
            file,
            len: 0,
            hasher: Sha256::new(),
        };
        let on_disk = state
            .file
            .metadata()
            .map_err(io_error("reading", path))?
            .len();
        if size.is_some_and(|size| on_disk > size) {
            state.restart()?;
            return Ok(state);
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = state
                .file
                .read(&mut buf)
                .map_err(io_error("reading", path))?;
            if n == 0 {
                break;
            }
            state.hasher.update(&buf[..n]);
            state.len += n as u64;
        }
        Ok(state)
    }

    /// Empties the file (the server sends it whole).
    fn restart(&mut self) -> Result<(), DownloadError> {
        self.file
            .set_len(0)
            .map_err(io_error("truncating", &self.path))?;
        self.len = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), DownloadError> {
        self.file
            .write_all(bytes)
            .map_err(io_error("writing", &self.path))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io { what, path, source }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The sha256 in an ETag (`"<64 hex>"`, possibly weak), if it is one.
fn sha256_of_etag(etag: &str) -> Option<String> {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase())
}

/// Size and sha256 from a direct (non-redirect) answer, or the error its status means.
fn remote_file_of(
    response: &ureq::http::Response<ureq::Body>,
    hub: &Hub,
    repo: &str,
    path: &str,
    url: &str,
) -> Result<RemoteFile, DownloadError> {
    if !response.status().is_success() {
        return Err(status_error(response, hub, repo, path, url));
    }
    let headers = response.headers();
    Ok(RemoteFile {
        size: header(headers, "x-linked-size")
            .or_else(|| header(headers, "content-length"))
            .and_then(|s| s.parse().ok()),
        sha256: header(headers, "x-linked-etag")
            .or_else(|| header(headers, "etag"))
            .and_then(sha256_of_etag),
    })
}

/// The error an unexpected status means (the hub's `X-Error-Code` tells a missing repository from
/// a missing file and a gated repository).
fn status_error<B>(
    response: &ureq::http::Response<B>,
    hub: &Hub,
    repo: &str,
    path: &str,
    url: &str,
) -> DownloadError {
    let code = header(response.headers(), "x-error-code").unwrap_or("");
    let status = response.status().as_u16();
    match (status, code) {
        (_, "RepoNotFound") => DownloadError::NoSuchRepo {
            repo: repo.to_string(),
            endpoint: hub.endpoint.clone(),
        },
        (404, _) | (_, "EntryNotFound" | "RevisionNotFound") => DownloadError::NoSuchFile {
            file: path.to_string(),
            repo: repo.to_string(),
            url: url.to_string(),
        },
        (401 | 403, code) => DownloadError::Refused {
            url: url.to_string(),
            status,
            gated: if code == "GatedRepo" {
                ", the repo is gated"
            } else {
                ""
            },
            advice: match (code == "GatedRepo", hub.has_token()) {
                (true, _) => "accept the model's terms on its hub page, then set HF_TOKEN to an access token of that account",
                (false, false) => "set HF_TOKEN to a Hugging Face access token that can read the repo",
                (false, true) => "the token in HF_TOKEN was refused; check that it is valid and can read the repo",
            },
        },
        _ => DownloadError::Status {
            url: url.to_string(),
            status,
        },
    }
}

/// Repository and file path back from a resolve URL (for error messages of the transfer).
fn split_url(url: &str) -> (String, String) {
    let after_host = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_host.split_once('/').map_or("", |(_, path)| path);
    match path.split_once("/resolve/main/") {
        Some((repo, file)) => (repo.to_string(), file.to_string()),
        None => (String::new(), path.to_string()),
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL`.
fn range_start(content_range: &str) -> Option<u64> {
    let rest = content_range.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// Percent-encodes a URL path, keeping `/` and RFC 3986's unreserved characters.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_ranges_parse() {
        let sha = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";
        assert_eq!(sha256_of_etag(&format!("\"{sha}\"")).as_deref(), Some(sha));
        assert_eq!(
            sha256_of_etag(&format!("W/\"{}\"", sha.to_uppercase())).as_deref(),
            Some(sha)
        );
        assert_eq!(sha256_of_etag("\"a1b2c3\""), None);
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(percent_encode_path("a b/c+d.gguf"), "a%20b/c%2Bd.gguf");
        assert_eq!(
            part_path(Path::new("/m/x.gguf")),
            PathBuf::from("/m/x.gguf.part")
        );
        let hub = Hub::new("http://127.0.0.1:1/", None, false);
        let url = hub.file_url("o/r", "sub/f.gguf");
        assert_eq!(url, "http://127.0.0.1:1/o/r/resolve/main/sub/f.gguf");
        assert_eq!(
            split_url(&url),
            ("o/r".to_string(), "sub/f.gguf".to_string())
        );
    }
}
