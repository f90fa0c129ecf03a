//! Loading a model: the GGUF file, its tokenizer, its architecture and its weights.
//!
//! Weights are used in place from the memory-mapped file (zero copy), except the matrices that GGML's
//! CPU backend can run faster in an interleaved layout ("repacking"): those are read from the file with
//! positioned reads (so the mapping's pages for them are never touched and do not count as resident)
//! and stored repacked in a `CPU_REPACK` buffer, as llama.cpp does. Q5_0 matrices are widened to Q8_0
//! (exactly, see [`crate::widen`]) into memory of their own, repacked too where the CPU has kernels
//! for Q8_0, because GGML runs Q8_0 faster than Q5_0. On x86-64 a repacked k-quant matrix also keeps
//! an in-place twin in the mapping for batches of [`IN_PLACE_MIN_BATCH`] tokens or more, where GGML's
//! tiled kernels beat the repacked ones (the "dual layout"; those pages then become resident).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ggml_sys::{Buffer, BufferKind, Context, Tensor, TensorType};

use crate::gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use crate::models::{self, Architecture, Hyperparameters};
use crate::session::{InferError, Session, SessionParams};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Options for [`Model::load`].
#[derive(Clone, Debug)]
pub struct ModelParams {
    /// Threads used by sessions that do not say otherwise.
    pub n_threads: usize,
    /// Store matrices in GGML's repacked layout where the CPU has kernels for it (faster, copies
    /// those weights into memory instead of using them from the file mapping).
    pub repack: bool,
    /// Attention with GGML's fused flash-attention kernel, over the cache padded to 256 rows. On by
    /// default, as llama.cpp decides on CPUs: faster than the unfused form (scores, softmax, weighted
    /// sum over a transposed value cache) for prompts and for generation, lets a generated token
    /// reuse the previous token's graph, and computes exactly what llama.cpp computes on the same
    /// CPU. `LMRS_FLASH_ATTN=0` turns it off by default.
    pub flash_attention: bool,
    /// Store Q5_0 matrices as Q8_0 (the same values, see [`crate::widen`]): faster prompt
    /// evaluation for ~1.5× the memory of those matrices. On by default; `LMRS_WIDEN_Q5_0=0` turns
    /// it off by default.
    pub widen_q5_0: bool,
    /// Also keep repacked k-quant matrices in place in the file mapping and use those for batches
    /// of [`IN_PLACE_MIN_BATCH`] tokens or more (prompts): there GGML's tiled k-quant kernels beat
    /// the repacked ones, which stay in use for generation, where they are faster. x86-64 only (the
    /// tiled kernels' platform). Costs the resident pages of those matrices once a prompt has run
    /// (the file's clean pages, which the kernel can drop under memory pressure). On by default;
    /// `LMRS_DUAL_LAYOUT=0` turns it off by default.
    pub dual_layout: bool,
}

/// Smallest batch that runs on the in-place twins of repacked matrices ([`ModelParams::dual_layout`]).
/// Measured with Qwen2.5-Coder-1.5B on a 2-core AVX-512 VM: at 8 tokens the two layouts are even,
/// from 16 tokens on the in-place one is faster (151 vs 138 tok/s, 64 tokens: 231 vs 168).
pub const IN_PLACE_MIN_BATCH: usize = 16;

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            n_threads: default_thread_count(),
            repack: true,
            flash_attention: std::env::var("LMRS_FLASH_ATTN").map_or(true, |v| v != "0"),
            widen_q5_0: std::env::var("LMRS_WIDEN_Q5_0").map_or(true, |v| v != "0"),
            dual_layout: std::env::var("LMRS_DUAL_LAYOUT").map_or(true, |v| v != "0"),
        }
    }
}

/// Physical cores are what matter for GGML; without a way to count them, use the logical count
/// capped at 8 (more threads than memory bandwidth can feed only add contention).
pub fn default_thread_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .min(8)
}

/// Errors while loading a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or is not a valid GGUF file.
    #[error("{path}: {source}")]
    Gguf {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: GgufError,
    },
    /// The architecture named in `general.architecture` is not one lmrs runs.
    #[error("{path}: unsupported architecture {architecture:?}; supported: {}", models::SUPPORTED.join(", "))]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture found.
        architecture: String,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("metadata key {key:?} is missing or not {expected}")]
    MissingMetadata {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
    },
    /// A hyperparameter has a value lmrs cannot use.
    #[error("hyperparameter {key} = {value} is invalid: {reason}")]
    InvalidHyperparameter {
        /// The metadata key.
        key: String,
        /// Its value.
        value: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A weight tensor the architecture needs is missing.
    #[error("tensor {name:?} is missing")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A weight tensor has the wrong shape.
    #[error("tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        /// The tensor name.
        name: String,
        /// Shape in the file.
        actual: Vec<u64>,
        /// Shape the hyperparameters imply.
        expected: Vec<u64>,
    },
    /// A weight tensor has a type GGML cannot use for this role.
    #[error("tensor {name:?} has type {tensor_type} which cannot be used here")]
    UnsupportedTensorType {
        /// The tensor name.
        name: String,
        /// The type's name.
        tensor_type: &'static str,
    },
    /// A weight tensor's data cannot be what its type says.
    #[error("tensor {name:?} has {reason}")]
    BadTensorData {
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The tokenizer described by the metadata could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// GGML could not allocate memory for the weights.
    #[error("GGML: {0}")]
    Ggml(#[from] ggml_sys::GgmlError),
    /// Reading weights from the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Facts about a loaded model, for `lmrs info` and logs.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// Path of the file.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// Number of parameters (elements of all tensors).
    pub n_params: u64,
    /// Sizes of the architecture (layers, heads, widths, vocabulary, training context).
    pub hyperparameters: Hyperparameters,
    /// Tensor counts per type name, sorted by name.
    pub tensor_types: Vec<(String, usize)>,
    /// Bytes of weights stored repacked in memory (the rest is used from the file mapping).
    pub repacked_bytes: u64,
    /// Bytes in memory of the Q5_0 matrices stored as Q8_0 (included in `repacked_bytes` where those
    /// are repacked as well).
    pub widened_bytes: u64,
    /// Bytes of repacked matrices also used in place from the mapping for large batches
    /// ([`ModelParams::dual_layout`]).
    pub dual_layout_bytes: u64,
}

/// Index of a weight tensor in a model's [`Weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightId(usize);

/// Where a weight's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// In place in the file mapping.
    Mapped,
    /// Copied into the `CPU_REPACK` buffer (widened first if it was Q5_0).
    Repacked,
    /// Widened from Q5_0 to Q8_0 into plain CPU memory.
    Widened,
}

/// The weight tensors of a model: metadata in GGML contexts, data in the file mapping, in a
/// repacked buffer or in a buffer of widened matrices.
pub struct Weights {
    // Field order matters for drop order: buffers reference tensors and memory of the others.
    _mapped_buffer: Option<Buffer>,
    _repacked_buffer: Option<Buffer>,
    _widened_buffer: Option<Buffer>,
    mapped: Context,
    repacked: Context,
    widened: Context,
    /// For each WeightId: where it lives and its position in that placement's context.
    slots: Vec<(Placement, usize)>,
    /// For each WeightId: the position in `mapped` of its in-place twin, used for large batches.
    twins: Vec<Option<usize>>,
    names: Vec<String>,
    repacked_bytes: u64,
    widened_bytes: u64,
    dual_layout_bytes: u64,
}

/// The weight tensors of a model as GGML tensors, for building one graph.
pub struct WeightTensors<'a> {
    tensors: Vec<Tensor<'a>>,
}

impl<'a> WeightTensors<'a> {
    /// The tensor bound to `id`.
    pub fn get(&self, id: WeightId) -> Tensor<'a> {
        self.tensors[id.0]
    }
}

impl Weights {
    /// All weights as tensors, indexed by [`WeightId`], for graphs of batches of `n_tokens`: from
    /// [`IN_PLACE_MIN_BATCH`] tokens on, repacked matrices with an in-place twin are replaced by it.
    pub fn tensors_for_batch(&self, n_tokens: usize) -> WeightTensors<'_> {
        let mapped: Vec<Tensor<'_>> = self.mapped.tensors().collect();
        let repacked: Vec<Tensor<'_>> = self.repacked.tensors().collect();
        let widened: Vec<Tensor<'_>> = self.widened.tensors().collect();
        let use_twins = n_tokens >= IN_PLACE_MIN_BATCH;
        let tensors = self
            .slots
            .iter()
            .zip(&self.twins)
            .map(|(&(placement, index), twin)| match (placement, twin) {
                (_, Some(twin)) if use_twins => mapped[*twin],
                (Placement::Mapped, _) => mapped[index],
                (Placement::Repacked, _) => repacked[index],
                (Placement::Widened, _) => widened[index],
            })
            .collect();
        WeightTensors { tensors }
    }

    /// Name of the tensor bound to `id`.
    pub fn name(&self, id: WeightId) -> &str {
        &self.names[id.0]
    }
}

/// How a weight tensor is used, which decides where it may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightUse {
    /// The left operand of matrix multiplications (may be repacked).
    Matrix,
    /// Rows are looked up (token embeddings); also used as a matrix when the output is tied.
    Embedding,
    /// Norm weights and biases: added or multiplied element-wise; must be F32.
    Vector,
}

/// Collects the weights an architecture asks for, checking names, shapes and types.
pub struct WeightBinder<'f> {
    file: &'f Arc<GgufFile>,
    requests: Vec<(TensorInfo, WeightUse)>,
}

impl<'f> WeightBinder<'f> {
    fn new(file: &'f Arc<GgufFile>) -> Self {
        WeightBinder {
            file,
            requests: Vec::new(),
        }
    }

    /// The GGUF file being loaded.
    pub fn file(&self) -> &'f GgufFile {
        self.file
    }

    /// Binds the tensor `name`, which must have exactly `dims` (`ne[0]` first).
    pub fn require(
        &mut self,
        name: &str,
        dims: &[usize],
        usage: WeightUse,
    ) -> Result<WeightId, LoadError> {
        self.optional(name, dims, usage)?
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// Binds the tensor `name` if the file has it.
    pub fn optional(
        &mut self,
        name: &str,
        dims: &[usize],
        usage: WeightUse,
    ) -> Result<Option<WeightId>, LoadError> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let mut actual = info.dims.clone();
        while actual.len() > expected.len() && actual.last() == Some(&1) {
            actual.pop();
        }
        if actual != expected {
            return Err(LoadError::WrongShape {
                name: name.to_string(),
                actual: info.dims.clone(),
                expected,
            });
        }
        let type_ok = match usage {
            WeightUse::Vector => info.ggml_type == GgmlType::F32,
            WeightUse::Matrix | WeightUse::Embedding => !matches!(
                info.ggml_type,
                GgmlType::I8
                    | GgmlType::I16
                    | GgmlType::I32
                    | GgmlType::I64
                    | GgmlType::F64
                    | GgmlType::Q8_1
                    | GgmlType::Q8_K
            ),
        };
        if !type_ok {
            return Err(LoadError::UnsupportedTensorType {
                name: name.to_string(),
                tensor_type: info.ggml_type.name(),
            });
        }
        if let Some(position) = self.requests.iter().position(|(r, _)| r.name == name) {
            // Bound twice (e.g. tied embeddings): an embedding that is also a matrix stays mapped.
            if usage != self.requests[position].1 {
                self.requests[position].1 = WeightUse::Embedding;
            }
            return Ok(Some(WeightId(position)));
        }
        self.requests.push((info.clone(), usage));
        Ok(Some(WeightId(self.requests.len() - 1)))
    }

    /// Creates the GGML tensors and gives them memory: file mapping, repacked buffer or widened
    /// buffer.
    fn finish(self, path: &Path, params: &ModelParams) -> Result<Weights, LoadError> {
        let (repack, widen_q5_0) = (params.repack, params.widen_q5_0);
        let dual_layout = params.dual_layout && cfg!(target_arch = "x86_64");
        let n = self.requests.len();
        let mapped = Context::new(n, 0)?;
        let repacked = Context::new(n, 0)?;
        let widened = Context::new(n, 0)?;
        let mut slots = Vec::with_capacity(n);
        let mut twins = Vec::with_capacity(n);
        let mut dual_layout_bytes = 0;
        let mut names = Vec::with_capacity(n);
        let mut mapped_infos = Vec::new();
        let mut repacked_infos = Vec::new();
        let mut widened_infos = Vec::new();
        for (info, usage) in &self.requests {
            let dims: Vec<i64> = info.dims.iter().map(|&d| d as i64).collect();
            let is_matrix = *usage == WeightUse::Matrix && dims.len() == 2;
            let widen = widen_q5_0 && is_matrix && info.ggml_type == GgmlType::Q5_0;
            let tensor_type = if widen {
                TensorType(GgmlType::Q8_0.id())
            } else {
                TensorType(info.ggml_type.id())
            };
            let repackable =
                repack && is_matrix && ggml_sys::repack_supported(tensor_type, [dims[0], dims[1]]);
            let (placement, context, infos) = if repackable {
                (Placement::Repacked, &repacked, &mut repacked_infos)
            } else if widen {
                (Placement::Widened, &widened, &mut widened_infos)
            } else {
                (Placement::Mapped, &mapped, &mut mapped_infos)
            };
            context.new_tensor(tensor_type, &dims).set_name(&info.name);
            slots.push((placement, infos.len()));
            infos.push(info);
            names.push(info.name.clone());
            let twin = dual_layout && repackable && !widen && has_tiled_kernels(info.ggml_type);
            if twin {
                mapped.new_tensor(tensor_type, &dims).set_name(&info.name);
                dual_layout_bytes += info.size;
                twins.push(Some(mapped_infos.len()));
                mapped_infos.push(info);
            } else {
                twins.push(None);
            }
        }

        // Mapped weights: a host buffer over the whole file, each tensor at its file offset.
        let mapped_buffer = if !mapped_infos.is_empty() {
            let buffer = Buffer::from_shared_bytes(self.file.clone())?;
            for (tensor, info) in mapped.tensors().zip(&mapped_infos) {
                tensor.place_in(&buffer, info.offset as usize)?;
            }
            Some(buffer)
        } else {
            None
        };

        // Copied weights (repacked, widened): read with positioned reads, so that the mapping's pages
        // for them are never touched; Q5_0 widened on the way; repacked by the buffer's set_tensor.
        let loader = CopiedWeightLoader {
            path,
            file_bytes: self.file.bytes(),
        };
        let (repacked_buffer, repacked_bytes, widened_into_repacked) =
            loader.load(&repacked, &repacked_infos, BufferKind::Repack)?;
        let (widened_buffer, widened_alone, _) =
            loader.load(&widened, &widened_infos, BufferKind::Cpu)?;
        Ok(Weights {
            _mapped_buffer: mapped_buffer,
            _repacked_buffer: repacked_buffer,
            _widened_buffer: widened_buffer,
            mapped,
            repacked,
            widened,
            slots,
            twins,
            names,
            repacked_bytes,
            widened_bytes: widened_into_repacked + widened_alone,
            dual_layout_bytes,
        })
    }
}

/// Whether GGML's CPU backend has tiled batch kernels for matrices of this type (the k-quants and
/// IQ4_XS / IQ1-3 types, as of ggml 0.26; x86-64).
fn has_tiled_kernels(ggml_type: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ggml_type,
        Q2_K | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_XS
            | IQ2_XXS
            | IQ2_XS
            | IQ2_S
            | IQ3_XXS
            | IQ3_S
            | IQ1_S
            | IQ1_M
    )
}

/// Reads weights that are copied into memory rather than used from the mapping.
struct CopiedWeightLoader<'a> {
    path: &'a Path,
    file_bytes: &'a [u8],
}

impl CopiedWeightLoader<'_> {
    /// Allocates a `kind` buffer for `context`'s tensors and fills them from the file; returns the
    /// buffer (none for no tensors), the bytes stored and how many of those were widened from Q5_0.
    fn load(
        &self,
        context: &Context,
        infos: &[&TensorInfo],
        kind: BufferKind,
    ) -> Result<(Option<Buffer>, u64, u64), LoadError> {
        if infos.is_empty() {
            return Ok((None, 0, 0));
        }
        let io_error = |source| LoadError::Io {
            path: self.path.into(),
            source,
        };
        let buffer = Buffer::allocate_context(context, kind)?;
        let file = std::fs::File::open(self.path).map_err(io_error)?;
        let (mut stored, mut widened) = (0u64, 0u64);
        let mut scratch = Vec::new();
        let mut wide = Vec::new();
        for (tensor, info) in context.tensors().zip(infos) {
            scratch.resize(info.size as usize, 0);
            read_exact_at(&file, &mut scratch, info.offset, self.file_bytes).map_err(io_error)?;
            // A Q5_0 tensor created as Q8_0 is widened.
            let widen = info.ggml_type == GgmlType::Q5_0
                && tensor.tensor_type() == TensorType(GgmlType::Q8_0.id());
            let data = if widen {
                wide.clear();
                crate::widen::widen_q5_0_to_q8_0(&scratch, &mut wide).ok_or_else(|| {
                    LoadError::BadTensorData {
                        name: info.name.clone(),
                        reason: "Q5_0 data that is not a whole number of 22-byte blocks",
                    }
                })?;
                widened += wide.len() as u64;
                &wide
            } else {
                &scratch
            };
            tensor.set_data(data)?;
            stored += data.len() as u64;
        }
        Ok((Some(buffer), stored, widened))
    }
}

#[cfg(unix)]
fn read_exact_at(
    file: &std::fs::File,
    out: &mut [u8],
    offset: u64,
    _mapping: &[u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(out, offset)
}

#[cfg(not(unix))]
fn read_exact_at(
    _file: &std::fs::File,
    out: &mut [u8],
    offset: u64,
    mapping: &[u8],
) -> std::io::Result<()> {
    let start = offset as usize;
    out.copy_from_slice(&mapping[start..start + out.len()]);
    Ok(())
}

/// A loaded model: immutable, `Send + Sync`, shared between sessions as `Arc<Model>`.
pub struct Model {
    // Drop order: the architecture and weights reference the file mapping, which goes last.
    architecture: Box<dyn Architecture>,
    weights: Weights,
    tokenizer: Tokenizer,
    info: ModelInfo,
    params: ModelParams,
    _file: Arc<GgufFile>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads the GGUF model at `path`.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use lmrs::{InferenceFeedback, InferenceParameters, Model, ModelParams, SessionParams};
    ///
    /// let model = Arc::new(Model::load("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ModelParams::default())?);
    /// let mut session = model.create_session(SessionParams::default())?;
    /// let params = InferenceParameters::default().with_top_p(0.95).with_top_k(40);
    /// session.infer("def fibonacci(n):", 32, &params, |token| {
    ///     print!("{}", token.text);
    ///     InferenceFeedback::Continue
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(path: impl AsRef<Path>, params: ModelParams) -> Result<Model, LoadError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| LoadError::Gguf {
            path: path.into(),
            source,
        })?;
        let file = Arc::new(file);
        let architecture_name = file
            .get_str("general.architecture")
            .unwrap_or("")
            .to_string();
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let mut binder = WeightBinder::new(&file);
        let architecture = models::load(&architecture_name, &mut binder).map_err(|e| match e {
            LoadError::UnsupportedArchitecture { architecture, .. } => {
                LoadError::UnsupportedArchitecture {
                    path: path.into(),
                    architecture,
                }
            }
            other => other,
        })?;
        let weights = binder.finish(path, &params)?;
        let hp = architecture.hyperparameters();
        let mut type_counts: HashMap<&'static str, usize> = HashMap::new();
        for info in file.tensors() {
            *type_counts.entry(info.ggml_type.name()).or_default() += 1;
        }
        let mut tensor_types: Vec<(String, usize)> = type_counts
            .into_iter()
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        tensor_types.sort();
        let info = ModelInfo {
            architecture: architecture_name,
            name: file.get_str("general.name").map(str::to_string),
            path: path.to_path_buf(),
            file_size: file.bytes().len() as u64,
            n_params: file.tensors().iter().map(|t| t.n_elements()).sum(),
            hyperparameters: hp.clone(),
            tensor_types,
            repacked_bytes: weights.repacked_bytes,
            widened_bytes: weights.widened_bytes,
            dual_layout_bytes: weights.dual_layout_bytes,
        };
        tracing::info!(
            architecture = %info.architecture,
            layers = info.hyperparameters.n_layer,
            repacked_mb = info.repacked_bytes / (1 << 20),
            widened_mb = info.widened_bytes / (1 << 20),
            dual_layout_mb = info.dual_layout_bytes / (1 << 20),
            "model loaded"
        );
        Ok(Model {
            architecture,
            weights,
            tokenizer,
            info,
            params,
            _file: file,
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The parameters it was loaded with.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    pub(crate) fn architecture(&self) -> &dyn Architecture {
        self.architecture.as_ref()
    }

    pub(crate) fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Starts a session (its own KV cache and compute buffers) on this model.
    pub fn create_session(self: &Arc<Self>, params: SessionParams) -> Result<Session, InferError> {
        Session::new(Arc::clone(self), params)
    }
}
