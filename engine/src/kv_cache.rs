//! The key/value cache of a session: per layer, one F16 matrix of keys `[n_embd_kv, n_ctx]` (row `p`
//! holds position `p`) and one of values, in one CPU buffer. Values are stored like keys for flash
//! attention, or transposed `[n_ctx, n_embd_kv]` (column `p` holds position `p`) for the unfused
//! attention, whose weighted sum over positions is then a plain matrix product.

use ggml_sys::{BufferKind, Context, Destination, GgmlError, Tensor, TensorStore, TensorType};

use crate::hparams::Hyperparameters;

/// Keys and values of every layer for up to `n_ctx` positions.
pub(crate) struct KvCache {
    store: TensorStore,
    n_ctx: usize,
    n_layer: usize,
    transposed_values: bool,
}

/// The cache's tensors for building one graph, and the right to write them.
pub(crate) struct KvTensors<'a> {
    context: &'a Context,
    tensors: Vec<Tensor<'a>>,
}

impl<'a> KvTensors<'a> {
    /// Keys of `layer`, F16 `[n_embd_kv, n_ctx]`.
    pub(crate) fn keys(&self, layer: usize) -> Tensor<'a> {
        self.tensors[2 * layer]
    }

    /// Values of `layer`, F16 `[n_embd_kv, n_ctx]`, or `[n_ctx, n_embd_kv]` when transposed.
    pub(crate) fn values(&self, layer: usize) -> Tensor<'a> {
        self.tensors[2 * layer + 1]
    }

    /// `tensor` (a cache matrix or a view of one) as the destination of a graph's write.
    pub(crate) fn writable(&self, tensor: Tensor<'a>) -> Destination<'a> {
        self.context
            .destination(tensor)
            .expect("a cache matrix or a view of one")
    }
}

impl KvCache {
    /// Allocates a zeroed cache for `n_ctx` positions.
    pub(crate) fn new(
        hp: &Hyperparameters,
        n_ctx: usize,
        transposed_values: bool,
    ) -> Result<KvCache, GgmlError> {
        let context = Context::new(2 * hp.n_layer, 0)?;
        let (width, n_ctx_i64) = (hp.n_embd_kv() as i64, n_ctx as i64);
        let value_dims = if transposed_values {
            [n_ctx_i64, width]
        } else {
            [width, n_ctx_i64]
        };
        for layer in 0..hp.n_layer {
            context.new_tensor(
                &format!("cache_k_l{layer}"),
                TensorType::F16,
                &[width, n_ctx_i64],
            );
            context.new_tensor(&format!("cache_v_l{layer}"), TensorType::F16, &value_dims);
        }
        let mut store = context.allocate(BufferKind::Cpu)?;
        // Masked-out entries are still multiplied by zero weights: they must hold numbers, not NaN.
        store.clear(0);
        Ok(KvCache {
            store,
            n_ctx,
            n_layer: hp.n_layer,
            transposed_values,
        })
    }

    /// The tensors, for one graph.
    pub(crate) fn tensors(&self) -> KvTensors<'_> {
        KvTensors {
            context: self.store.context(),
            tensors: self.store.context().tensors().collect(),
        }
    }

    /// Bytes of memory.
    pub(crate) fn size_bytes(&self) -> usize {
        self.store.size_bytes()
    }

    /// Copies `other`'s content into this cache (same size and layout, else an error).
    pub(crate) fn copy_from(&mut self, other: &KvCache) -> Result<(), GgmlError> {
        self.store.copy_from(&other.store)
    }

    /// An independent copy with the same content.
    pub(crate) fn try_clone(&self, hp: &Hyperparameters) -> Result<KvCache, GgmlError> {
        debug_assert_eq!(hp.n_layer, self.n_layer);
        let mut copy = KvCache::new(hp, self.n_ctx, self.transposed_values)?;
        copy.store.copy_from(&self.store)?;
        Ok(copy)
    }

    /// Layer `layer`'s keys and values of the cache rows (positions) `first..first + n`, as F32,
    /// position by position (`n_embd_kv` values each).
    #[cfg(test)]
    pub(crate) fn read_rows(
        &self,
        hp: &Hyperparameters,
        layer: usize,
        first: usize,
        n: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let tensors = self.tensors();
        let width = hp.n_embd_kv();
        let read = |tensor: Tensor<'_>| {
            let mut bytes = Vec::new();
            tensor.read_bytes_into(&mut bytes).expect("cache memory");
            bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect::<Vec<f32>>()
        };
        let (keys, values) = (read(tensors.keys(layer)), read(tensors.values(layer)));
        let mut rows = (Vec::new(), Vec::new());
        for position in first..first + n {
            rows.0
                .extend_from_slice(&keys[position * width..(position + 1) * width]);
            if self.transposed_values {
                rows.1
                    .extend((0..width).map(|column| values[column * self.n_ctx + position]));
            } else {
                rows.1
                    .extend_from_slice(&values[position * width..(position + 1) * width]);
            }
        }
        rows
    }
}

/// IEEE half precision to single (tests only).
#[cfg(test)]
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}
