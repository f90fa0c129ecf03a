//! A loaded model ([`Model`]): the GGUF file, its tokenizer, its architecture (found in the
//! [`models`] registry) and its weights (bound and placed by [`crate::weights`]); the options it is
//! loaded with ([`ModelParams`]) and the facts about it ([`ModelInfo`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LoadError;
use crate::gguf::GgufFile;
use crate::hparams::Hyperparameters;
use crate::models::{self, Architecture};
use crate::tokenizer::Tokenizer;
use crate::weights::{PlacementParams, WeightBinder, Weights};

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
    /// Store Q5_0 matrices as Q8_0 (exactly the same values, see `weights/widen.rs`): faster prompt
    /// evaluation for ~1.5× the memory of those matrices. On by default; `LMRS_WIDEN_Q5_0=0` turns
    /// it off by default.
    pub widen_q5_0: bool,
    /// Also keep repacked k-quant matrices in place in the file mapping and use those for batches
    /// of [`IN_PLACE_MIN_BATCH`](crate::IN_PLACE_MIN_BATCH) tokens or more (prompts): there GGML's tiled k-quant kernels beat
    /// the repacked ones, which stay in use for generation, where they are faster. x86-64 only (the
    /// tiled kernels' platform). Costs the resident pages of those matrices once a prompt has run
    /// (the file's clean pages, which the kernel can drop under memory pressure). On by default;
    /// `LMRS_DUAL_LAYOUT=0` turns it off by default.
    pub dual_layout: bool,
    /// Use the weights that are not copied anyway (not repacked, not widened) in place from the
    /// file mapping instead of copying them into the process's memory. Mapped pages are shared with
    /// the page cache (and with other processes mapping the same file) and can be dropped under
    /// memory pressure, but a model file truncated or rewritten while it is mapped makes the next
    /// access fault (SIGBUS) or read changed weights. Off by default: the copy keeps serving the
    /// model as it was loaded whatever happens to the file, and the file is closed after loading.
    /// `LMRS_MAP_WEIGHTS=1` turns it on by default.
    pub map_weights: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            n_threads: default_thread_count(),
            repack: true,
            flash_attention: std::env::var("LMRS_FLASH_ATTN").map_or(true, |v| v != "0"),
            widen_q5_0: std::env::var("LMRS_WIDEN_Q5_0").map_or(true, |v| v != "0"),
            dual_layout: std::env::var("LMRS_DUAL_LAYOUT").map_or(true, |v| v != "0"),
            map_weights: std::env::var("LMRS_MAP_WEIGHTS").is_ok_and(|v| v == "1"),
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

/// A loaded model: immutable, `Send + Sync`, shared between sessions as `Arc<Model>`.
pub struct Model {
    // Drop order: the weights may use the file mapping, which goes last.
    architecture: Box<dyn Architecture>,
    weights: Weights,
    tokenizer: Tokenizer,
    info: ModelInfo,
    params: ModelParams,
    /// The mapped file, kept only while weights are used from it ([`ModelParams::map_weights`]);
    /// otherwise it is closed once the model is loaded.
    _file: Option<Arc<GgufFile>>,
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
    /// use lmrs::{InferenceFeedback, InferenceParameters, Model, ModelParams, Session, SessionParams};
    ///
    /// let model = Arc::new(Model::load("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ModelParams::default())?);
    /// let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
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
        let load_architecture =
            models::find(&architecture_name).ok_or_else(|| LoadError::UnsupportedArchitecture {
                path: path.into(),
                architecture: architecture_name.clone(),
                supported: models::supported(),
            })?;
        let mut binder = WeightBinder::new(&file);
        let architecture = load_architecture(&mut binder)?;
        let placement = PlacementParams {
            repack: params.repack,
            widen_q5_0: params.widen_q5_0,
            dual_layout: params.dual_layout,
            map_weights: params.map_weights,
        };
        let weights = binder.finish(path, placement)?;
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
        let params_map_weights = params.map_weights;
        Ok(Model {
            architecture,
            weights,
            tokenizer,
            info,
            params,
            _file: params_map_weights.then_some(file),
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
}
