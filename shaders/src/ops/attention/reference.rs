//! The CPU reference the attention kernels are tested against: a two-pass softmax in f32.

use super::Options;

/// CPU reference. `q` holds `n` rows of `n_heads × head_dim` (row stride `q_stride`);
/// `k`/`v` hold positions `0..start_pos + n` of `n_kv_heads × head_dim`; `out` gets `n`
/// rows of `n_heads × head_dim`. Two-pass softmax in f32.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    start_pos: usize,
    out: &mut [f32],
) {
    let opts = Options::causal(head_dim);
    reference_with(
        q, q_stride, k, v, n_heads, n_kv_heads, head_dim, start_pos, opts, out,
    )
}

/// [`reference`] with a layer's own scale and window.
#[allow(clippy::too_many_arguments)]
pub fn reference_with(
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    start_pos: usize,
    opts: Options,
    out: &mut [f32],
) {
    let kvd = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let sc = opts.scale;
    let n = out.len() / (n_heads * head_dim);
    let mut scores = Vec::new();
    for t in 0..n {
        let pos = start_pos + t;
        for h in 0..n_heads {
            let qh = &q[t * q_stride + h * head_dim..][..head_dim];
            let kvh = h / group;
            scores.clear();
            let first = first_position(pos, opts.window);
            for p in first..=pos {
                let kp = &k[p * kvd + kvh * head_dim..][..head_dim];
                scores.push(qh.iter().zip(kp).map(|(a, b)| a * b).sum::<f32>() * sc);
            }
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - m).exp();
                total += *s;
            }
            let o = &mut out[(t * n_heads + h) * head_dim..][..head_dim];
            o.fill(0.0);
            for (i, s) in scores.iter().enumerate() {
                let p = first + i;
                let vp = &v[p * kvd + kvh * head_dim..][..head_dim];
                for (o, x) in o.iter_mut().zip(vp) {
                    *o += s / total * x;
                }
            }
        }
    }
}

/// The first position a query at `pos` attends in a window of `window` (or from 0).
pub fn first_position(pos: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) if w > 0 => (pos + 1).saturating_sub(w),
        _ => 0,
    }
}
