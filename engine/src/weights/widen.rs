//! Exact widening of Q5_0 weights to Q8_0 at load time.
//!
//! Quantized files whose matrix rows are not a multiple of 256 values cannot use the k-quants: the
//! quantizer stores those matrices as Q5_0 instead. GGML's CPU kernels for Q5_0 rebuild each weight
//! from a 4-bit nibble and a separately stored fifth bit before every dot product, which costs more
//! than reading the wider Q8_0 block does, so prompts evaluate faster with those matrices as Q8_0
//! (measurements: `docs/performance.md`).
//!
//! The conversion loses nothing. Both formats hold blocks of 32 weights with one F16 scale `d`; a Q5_0
//! weight is `d * (q - 16)` with `q` in `0..32`, and `q - 16` fits an `i8`, so the Q8_0 block with the
//! same `d` and `q - 16` as its values dequantizes to exactly the same numbers.
//!
//! Block layouts (little-endian, as in GGML):
//! - Q5_0, 22 bytes: `d: f16`, `qh: [u8; 4]` (bit `j` of the `u32` is the fifth bit of weight `j`),
//!   `qs: [u8; 16]` (weight `j < 16` in the low nibble of `qs[j]`, weight `j + 16` in its high nibble).
//! - Q8_0, 34 bytes: `d: f16`, `qs: [i8; 32]`.

/// Bytes of one Q5_0 block.
pub(super) const Q5_0_BLOCK_BYTES: usize = 22;
/// Bytes of one Q8_0 block.
pub(super) const Q8_0_BLOCK_BYTES: usize = 34;

/// Converts Q5_0 blocks to Q8_0 blocks holding the same values, appending them to `out`.
///
/// Returns `None` (and appends nothing) when `q5_0` is not a whole number of blocks.
pub(super) fn widen_q5_0_to_q8_0(q5_0: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if !q5_0.len().is_multiple_of(Q5_0_BLOCK_BYTES) {
        return None;
    }
    let n_blocks = q5_0.len() / Q5_0_BLOCK_BYTES;
    let start = out.len();
    out.resize(start + n_blocks * Q8_0_BLOCK_BYTES, 0);
    let blocks_in = q5_0.chunks_exact(Q5_0_BLOCK_BYTES);
    let blocks_out = out[start..].chunks_exact_mut(Q8_0_BLOCK_BYTES);
    for (block, wide) in blocks_in.zip(blocks_out) {
        let (scale, rest) = block.split_at(2);
        let (high_bits, nibbles) = rest.split_at(4);
        let high_bits =
            u32::from_le_bytes([high_bits[0], high_bits[1], high_bits[2], high_bits[3]]);
        let (wide_scale, values) = wide.split_at_mut(2);
        // Same scale.
        wide_scale.copy_from_slice(scale);
        // Weight j < 16 from the low nibble of byte j, weight j + 16 from its high nibble, each with
        // its fifth bit; the code (0..32) minus 16 is the i8 value (two's complement byte).
        let (first_half, second_half) = values.split_at_mut(16);
        for (j, &byte) in nibbles.iter().enumerate() {
            let fifth_low = ((high_bits >> j) & 1) as u8;
            let fifth_high = ((high_bits >> (j + 16)) & 1) as u8;
            first_half[j] = ((byte & 0x0F) | (fifth_low << 4)).wrapping_sub(16);
            second_half[j] = ((byte >> 4) | (fifth_high << 4)).wrapping_sub(16);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes 32 values in `-16..16` and a scale as one Q5_0 block (the layout in the module docs).
    fn q5_0_block(scale: [u8; 2], values: &[i8; 32]) -> Vec<u8> {
        let mut high_bits = 0u32;
        let mut nibbles = [0u8; 16];
        for (index, &value) in values.iter().enumerate() {
            let unsigned = (value + 16) as u8;
            if unsigned & 0x10 != 0 {
                high_bits |= 1 << index;
            }
            if index < 16 {
                nibbles[index] |= unsigned & 0x0F;
            } else {
                nibbles[index - 16] |= (unsigned & 0x0F) << 4;
            }
        }
        let mut block = scale.to_vec();
        block.extend_from_slice(&high_bits.to_le_bytes());
        block.extend_from_slice(&nibbles);
        block
    }

    #[test]
    fn every_q5_0_value_keeps_its_scale_and_value() {
        // Two blocks covering all 32 codes, in two orders, with different scales.
        let ascending: [i8; 32] = std::array::from_fn(|i| i as i8 - 16);
        let scrambled: [i8; 32] = std::array::from_fn(|i| ((i * 7 + 3) % 32) as i8 - 16);
        let mut input = q5_0_block([0x00, 0x3C], &ascending); // d = 1.0
        input.extend(q5_0_block([0x66, 0x2E], &scrambled)); // d ≈ 0.1
        assert_eq!(input.len(), 2 * Q5_0_BLOCK_BYTES);

        let mut out = Vec::new();
        widen_q5_0_to_q8_0(&input, &mut out).unwrap();

        assert_eq!(out.len(), 2 * Q8_0_BLOCK_BYTES);
        assert_eq!(&out[..2], &[0x00, 0x3C]);
        let first: Vec<i8> = out[2..34].iter().map(|&b| b as i8).collect();
        assert_eq!(first, ascending);
        assert_eq!(&out[34..36], &[0x66, 0x2E]);
        let second: Vec<i8> = out[36..].iter().map(|&b| b as i8).collect();
        assert_eq!(second, scrambled);
    }

    #[test]
    fn a_partial_block_is_refused() {
        let mut out = vec![7];
        assert_eq!(widen_q5_0_to_q8_0(&[0; 23], &mut out), None);
        assert_eq!(out, vec![7]);
        assert_eq!(widen_q5_0_to_q8_0(&[], &mut out), Some(()));
        assert_eq!(out, vec![7]);
    }
}
