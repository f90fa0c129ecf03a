//! What a GGUF file says about one tensor: its name, shape, type and where its data is.

use super::types::GgmlType;

/// Where a tensor's data is and how to interpret it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, `ne[0]` (the contiguous one) first; 1 to 4 entries, each at least 1.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Total number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        // Checked when the file was parsed: the product fits in an i64.
        self.dims.iter().product()
    }

    /// Dimension `i`, or 1 past the tensor's rank (ggml's convention).
    pub fn dim(&self, i: usize) -> u64 {
        self.dims.get(i).copied().unwrap_or(1)
    }
}
