//! A model's weight tensors: binding them by GGUF name with their shapes and types checked
//! ([`WeightBinder`]), and placing them ([`Weights`]).
//!
//! Weights are used in place from the memory-mapped file (zero copy), except the matrices that GGML's
//! CPU backend can run faster in an interleaved layout ("repacking"): those are read from the file with
//! positioned reads (so the mapping's pages for them are never touched and do not count as resident)
//! and stored repacked in a `CPU_REPACK` buffer, as llama.cpp does. Q5_0 matrices are widened to Q8_0
//! (exactly, see [`widen`]) into memory of their own, repacked too where the CPU has kernels for
//! Q8_0, because GGML runs Q8_0 faster than Q5_0. On x86-64 a repacked k-quant matrix also keeps an
//! in-place twin in the mapping for batches of [`IN_PLACE_MIN_BATCH`] tokens or more, where GGML's
//! tiled kernels beat the repacked ones (the "dual layout"; those pages then become resident).

mod widen;

use std::path::Path;
use std::sync::Arc;

use ggml_sys::{BufferKind, Context, FrozenContext, Tensor, TensorType};

use crate::error::LoadError;
use crate::gguf::{GgmlType, GgufFile, TensorInfo};

/// How [`WeightBinder::finish`] places the weights (the placement switches of `ModelParams`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlacementParams {
    /// Store matrices in GGML's repacked layout where the CPU has kernels for it.
    pub repack: bool,
    /// Store Q5_0 matrices as Q8_0.
    pub widen_q5_0: bool,
    /// Keep in-place twins of repacked k-quant matrices for large batches (x86-64 only).
    pub dual_layout: bool,
    /// Use the in-place weights from the file mapping instead of copies in memory.
    pub map_weights: bool,
}

/// Smallest batch that runs on the in-place twins of repacked matrices ([`ModelParams::dual_layout`]).
/// Below it the repacked kernels are as fast or faster (measured: `docs/performance.md`).
pub const IN_PLACE_MIN_BATCH: usize = 16;

/// Index of a weight tensor in a model's [`Weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WeightId(usize);

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
pub(crate) struct Weights {
    mapped: FrozenContext,
    repacked: FrozenContext,
    widened: FrozenContext,
    /// For each WeightId: where it lives and its position in that placement's context.
    slots: Vec<(Placement, usize)>,
    /// For each WeightId: the position in `mapped` of its in-place twin, used for large batches.
    twins: Vec<Option<usize>>,
    pub(crate) repacked_bytes: u64,
    pub(crate) widened_bytes: u64,
    pub(crate) dual_layout_bytes: u64,
}

/// The weight tensors of a model as GGML tensors, for building one graph.
pub(crate) struct WeightTensors<'a> {
    tensors: Vec<Tensor<'a>>,
}

impl<'a> WeightTensors<'a> {
    /// The tensor bound to `id`.
    pub(crate) fn get(&self, id: WeightId) -> Tensor<'a> {
        self.tensors[id.0]
    }
}

impl Weights {
    /// All weights as tensors, indexed by [`WeightId`], for graphs of batches of `n_tokens`: from
    /// [`IN_PLACE_MIN_BATCH`] tokens on, repacked matrices with an in-place twin are replaced by it.
    pub(crate) fn tensors_for_batch(&self, n_tokens: usize) -> WeightTensors<'_> {
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
}

/// How a weight tensor is used, which decides where it may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightUse {
    /// The left operand of matrix multiplications (may be repacked).
    Matrix,
    /// Rows are looked up (token embeddings); also used as a matrix when the output is tied.
    Embedding,
    /// Norm weights and biases: added or multiplied element-wise; must be F32.
    Vector,
}

/// Collects the weights an architecture asks for, checking names, shapes and types.
pub(crate) struct WeightBinder<'f> {
    file: &'f Arc<GgufFile>,
    requests: Vec<(TensorInfo, WeightUse)>,
}

impl<'f> WeightBinder<'f> {
    pub(crate) fn new(file: &'f Arc<GgufFile>) -> Self {
        WeightBinder {
            file,
            requests: Vec::new(),
        }
    }

    /// The GGUF file being loaded.
    pub(crate) fn file(&self) -> &'f GgufFile {
        self.file
    }

    /// Binds the tensor `name`, which must have exactly `dims` (`ne[0]` first).
    pub(crate) fn require(
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
    pub(crate) fn optional(
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
    pub(crate) fn finish(self, path: &Path, params: PlacementParams) -> Result<Weights, LoadError> {
        let (repack, widen_q5_0) = (params.repack, params.widen_q5_0);
        let dual_layout = params.dual_layout && cfg!(target_arch = "x86_64");
        let n = self.requests.len();
        let mapped = Context::new(n, 0)?;
        let repacked = Context::new(n, 0)?;
        let widened = Context::new(n, 0)?;
        let mut slots = Vec::with_capacity(n);
        let mut twins = Vec::with_capacity(n);
        let mut dual_layout_bytes = 0;
        let mut mapped_infos = Vec::new();
        let mut repacked_infos = Vec::new();
        let mut widened_infos = Vec::new();
        for (info, usage) in &self.requests {
            let dims: Vec<i64> = info.dims.iter().map(|&d| d as i64).collect();
            let is_matrix = *usage == WeightUse::Matrix && dims.len() == 2;
            // Experts of a mixture (`[n_in, n_out, n_expert]`), multiplied with `mul_mat_id`.
            let is_expert_stack = *usage == WeightUse::Matrix && dims.len() == 3;
            let widen = widen_q5_0 && is_matrix && info.ggml_type == GgmlType::Q5_0;
            let tensor_type = if widen {
                TensorType(GgmlType::Q8_0.id())
            } else {
                TensorType(info.ggml_type.id())
            };
            let repackable = repack
                && if is_matrix {
                    ggml_sys::repack_supported(tensor_type, [dims[0], dims[1]])
                } else {
                    is_expert_stack
                        && ggml_sys::repack_supported_experts(
                            tensor_type,
                            [dims[0], dims[1], dims[2]],
                        )
                };
            let (placement, context, infos) = if repackable {
                (Placement::Repacked, &repacked, &mut repacked_infos)
            } else if widen {
                (Placement::Widened, &widened, &mut widened_infos)
            } else {
                (Placement::Mapped, &mapped, &mut mapped_infos)
            };
            context.new_tensor(&info.name, tensor_type, &dims);
            slots.push((placement, infos.len()));
            infos.push(info);
            let twin = dual_layout
                && is_matrix
                && repackable
                && !widen
                && has_tiled_kernels(info.ggml_type);
            if twin {
                mapped.new_tensor(&info.name, tensor_type, &dims);
                dual_layout_bytes += info.size;
                twins.push(Some(mapped_infos.len()));
                mapped_infos.push(info);
            } else {
                twins.push(None);
            }
        }

        // Copied weights (repacked, widened, and the in-place ones unless they are mapped): read
        // with positioned reads, so that the mapping's pages for them are never touched; Q5_0
        // widened on the way; repacked by the buffer's set_tensor.
        let loader = CopiedWeightLoader {
            path,
            file_bytes: self.file.bytes(),
        };

        // In-place weights: a host buffer over the whole file, each tensor at its file offset, or
        // a copy of them in plain CPU memory (the same layout).
        let mapped = if mapped_infos.is_empty() {
            FrozenContext::empty()?
        } else if params.map_weights {
            let offsets: Vec<usize> = mapped_infos.iter().map(|i| i.offset as usize).collect();
            mapped.freeze_in_shared_bytes(self.file.clone(), &offsets)?
        } else {
            loader.load(mapped, &mapped_infos, BufferKind::Cpu)?.0
        };
        let (repacked, repacked_bytes, widened_into_repacked) =
            loader.load(repacked, &repacked_infos, BufferKind::Repack)?;
        let (widened, widened_alone, _) = loader.load(widened, &widened_infos, BufferKind::Cpu)?;
        Ok(Weights {
            mapped,
            repacked,
            widened,
            slots,
            twins,
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
    /// Gives `context`'s tensors memory of `kind`, fills them from the file and freezes them;
    /// returns them, the bytes stored and how many of those were widened from Q5_0.
    fn load(
        &self,
        context: Context,
        infos: &[&TensorInfo],
        kind: BufferKind,
    ) -> Result<(FrozenContext, u64, u64), LoadError> {
        if infos.is_empty() {
            return Ok((FrozenContext::empty()?, 0, 0));
        }
        let io_error = |source| LoadError::Io {
            path: self.path.into(),
            source,
        };
        let store = context.allocate(kind)?;
        let file = std::fs::File::open(self.path).map_err(io_error)?;
        let (mut stored, mut widened) = (0u64, 0u64);
        let mut scratch = Vec::new();
        let mut wide = Vec::new();
        for (tensor, info) in store.context().tensors().zip(infos) {
            scratch.resize(info.size as usize, 0);
            read_exact_at(&file, &mut scratch, info.offset, self.file_bytes).map_err(io_error)?;
            // A Q5_0 tensor created as Q8_0 is widened.
            let widen = info.ggml_type == GgmlType::Q5_0
                && tensor.tensor_type() == TensorType(GgmlType::Q8_0.id());
            let data = if widen {
                wide.clear();
                widen::widen_q5_0_to_q8_0(&scratch, &mut wide).ok_or_else(|| {
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
            store.context().set_data(tensor, data)?;
            stored += data.len() as u64;
        }
        Ok((store.freeze()?, stored, widened))
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
