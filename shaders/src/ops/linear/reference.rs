//! The CPU reference the linear kernels are tested against: rows dequantized exactly and
//! dotted in f32.

use super::{Mode, invocation_rows};
use crate::model::quant::dequantize;
use crate::model::{GgmlType, ModelError};

/// CPU reference: `x` is `n × cols`, `y` is `n × out_rows`; `w` is `rows × cols` of `ty`
/// (`rows = 2 out_rows` for SwiGLU). Rows are dequantized exactly and dotted in f32.
pub fn reference(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    mode: Mode,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), ModelError> {
    let row_bytes = ty
        .bytes_for(cols)
        .ok_or_else(|| ModelError::Malformed(format!("{} row of {cols}", ty.name())))?;
    if w.len() != row_bytes * rows || !x.len().is_multiple_of(cols) {
        return Err(ModelError::Malformed(format!(
            "linear reference: {} bytes of weights for {rows}x{cols}, {} inputs",
            w.len(),
            x.len()
        )));
    }
    let n = x.len() / cols;
    if mode == Mode::QkvRope {
        return Err(ModelError::Malformed(
            "the q/k/v mode's reference is the composition in engine::cpu".into(),
        ));
    }
    let out_rows = invocation_rows(rows, mode);
    let mut row = vec![0f32; cols];
    let mut wx = vec![0f32; n * rows];
    for r in 0..rows {
        dequantize(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut row)?;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            wx[t * rows + r] = row.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
    for t in 0..n {
        for r in 0..out_rows {
            let o = &mut y[t * out_rows + r];
            let v = wx[t * rows + r];
            match mode {
                Mode::Store => *o = v,
                Mode::Accumulate => *o += v,
                Mode::SwiGlu => *o = crate::ops::elementwise::silu(v) * wx[t * rows + r + out_rows],
                Mode::GeGlu => {
                    *o = crate::ops::elementwise::gelu_tanh(v) * wx[t * rows + r + out_rows]
                }
                Mode::QkvRope => unreachable!("rejected above"),
            }
        }
    }
    Ok(())
}
