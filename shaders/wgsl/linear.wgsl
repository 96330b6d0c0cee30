// Linear layer over token rows, W dequantized group by group in registers:
//   MODE 0: y = W x          MODE 1: y += W x (the residual add, fused)
//   MODE 2: y = silu(W[r] x) * (W[r + ROWS] x) over a [gate; up] matrix (SwiGLU, fused)
//   MODE 3: fused q/k/v: rows are [q heads; k heads; v heads]; an invocation computes a
//           RoPE pair of rows ((2i, 2i+1), or (i, i + HD/2) when NEOX), rotates q and k
//           with the host's (cos, sin) table, writes q to y and k, v into the KV cache.
// NORM: the input is RMSNorm(x) * nw, the norm computed by each invocation (saves a
// dispatch; the sum of squares is cheap next to a row of weights).
// TPR = 1: one invocation per output row (pair), no barriers: fastest on CPU adapters.
// TPR > 1: TPR invocations share a row and reduce through workgroup memory (GPUs).
// Tokens are looped outermost: a prefill re-reads each row's weights from cache, not
// from memory, and nothing needs a per-token array.
// ROWS counts invocations' rows: output rows (MODEs 0, 1, 2) or RoPE pairs (MODE 3).
override ROWS: u32 = 64u;
override MODE: u32 = 0u;
override TT: u32 = 1u;
override TPR: u32 = 1u;
override WG: u32 = 64u;
override NORM: bool = false;
override EPS: f32 = 1e-5;
override HD: u32 = 64u;
override NH: u32 = 4u;
override NKV: u32 = 2u;
override NEOX: bool = false;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ws: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> nw: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> kc: array<f32>;
@group(0) @binding(8) var<storage, read_write> vc: array<f32>;

fn xv(xi: u32, ni: u32) -> vec4<f32> {
    if NORM {
        return x[xi] * nw[ni];
    }
    return x[xi];
}

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The dot product of group g of row `row` with the 32 inputs at x[xb .. xb + 8] (vec4s,
// times the norm weight when NORM), decoding straight into the products: no arrays, so
// everything stays in registers.
fn group_dot(row: u32, g: u32, xb: u32) -> f32 {
    let gi = row * NG + g;
    let nb = g * 8u;
    var s = vec4<f32>(0.0);
    switch FMT {
        case 0u: {
            let b = gi * 32u;
            for (var i = 0u; i < 8u; i++) {
                let o = b + 4u * i;
                s += vec4<f32>(bitcast<f32>(wq[o]), bitcast<f32>(wq[o + 1u]), bitcast<f32>(wq[o + 2u]), bitcast<f32>(wq[o + 3u])) * xv(xb + i, nb + i);
            }
            return hsum(s);
        }
        case 1u: {
            let b = gi * 16u;
            for (var i = 0u; i < 8u; i++) {
                s += vec4<f32>(unpack2x16float(wq[b + 2u * i]), unpack2x16float(wq[b + 2u * i + 1u])) * xv(xb + i, nb + i);
            }
            return hsum(s);
        }
        case 2u: {
            let b = gi * 8u;
            for (var i = 0u; i < 8u; i++) {
                s += i8x4(wq[b + i]) * xv(xb + i, nb + i);
            }
            return unpack2x16float(ws[gi >> 1u])[gi & 1u] * hsum(s);
        }
        case 3u, 4u: {
            let b = gi * 4u;
            var sx = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                let q = wq[b + i];
                let x0 = xv(xb + i, nb + i);
                let x1 = xv(xb + 4u + i, nb + 4u + i);
                s += nib_lo(q) * x0 + nib_hi(q) * x1;
                sx += x0 + x1;
            }
            var dm: vec2<f32>;
            if FMT == 3u {
                dm = unpack2x16float(ws[gi]);
            } else {
                dm = vec2<f32>(bitcast<f32>(ws[2u * gi]), bitcast<f32>(ws[2u * gi + 1u]));
            }
            return dm.x * hsum(s) + dm.y * hsum(sx);
        }
        case 5u: {
            let b = gi * 8u;
            var s1 = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                s += i8x4(wq[b + i]) * xv(xb + i, nb + i);
                s1 += i8x4(wq[b + 4u + i]) * xv(xb + 4u + i, nb + 4u + i);
            }
            return bitcast<f32>(ws[2u * gi]) * hsum(s) + bitcast<f32>(ws[2u * gi + 1u]) * hsum(s1);
        }
        default: {
            return 0.0;
        }
    }
}

var<workgroup> partial: array<vec2<f32>, 256>;

// Row `row`'s share (groups lane, lane + TPR, ...) of W x for token t.
fn row_dot(row: u32, lane: u32, t: u32) -> f32 {
    var acc = 0.0;
    let xt = t * (K / 4u);
    for (var g = lane; g < NG; g += TPR) {
        acc += group_dot(row, g, xt + g * 8u);
    }
    return acc;
}

// 1 / rms of token t's input (1 when not NORM).
fn inv_rms(t: u32) -> f32 {
    if !NORM {
        return 1.0;
    }
    let xt = t * (K / 4u);
    var ss = vec4<f32>(0.0);
    for (var i = 0u; i < K / 4u; i++) {
        let v = x[xt + i];
        ss += v * v;
    }
    return 1.0 / sqrt(hsum(ss) / f32(K) + EPS);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = wid.x * (WG / TPR) + lid.x / TPR;
    let lane = lid.x % TPR;
    let t0 = wid.y * TT;
    let n = st.n_tokens;
    let nt = select(0u, min(TT, n - t0), t0 < n);
    let live = j < ROWS;
    // The rows this invocation computes: a always, b in MODEs 2 and 3.
    var ra = j;
    var rb = j + ROWS;
    let hh = HD / 2u;
    let head = j / hh;
    let i = j % hh;
    var ia = 2u * i;
    var ib = 2u * i + 1u;
    if NEOX {
        ia = i;
        ib = i + hh;
    }
    if MODE == 3u {
        ra = head * HD + ia;
        rb = head * HD + ib;
    }
    for (var t = t0; t < t0 + nt; t++) {
        var a = 0.0;
        var b = 0.0;
        if live {
            a = row_dot(ra, lane, t);
            if MODE >= 2u {
                b = row_dot(rb, lane, t);
            }
        }
        if TPR > 1u {
            partial[lid.x] = vec2<f32>(a, b);
            workgroupBarrier();
            if lane == 0u {
                for (var l = 1u; l < TPR; l++) {
                    let p = partial[lid.x + l];
                    a += p.x;
                    b += p.y;
                }
            }
            workgroupBarrier();
        }
        if live && lane == 0u {
            let inv = inv_rms(t);
            a *= inv;
            b *= inv;
            if MODE == 0u {
                y[t * ROWS + j] = a;
            } else if MODE == 1u {
                y[t * ROWS + j] += a;
            } else if MODE == 2u {
                y[t * ROWS + j] = a / (1.0 + exp(-a)) * b;
            } else {
                let pos = st.start_pos + t;
                let kvd = NKV * HD;
                if head < NH + NKV {
                    let c = cs[pos * hh + i];
                    let r0 = a * c.x - b * c.y;
                    let r1 = a * c.y + b * c.x;
                    a = r0;
                    b = r1;
                }
                if head < NH {
                    let o = t * (NH + 2u * NKV) * HD + head * HD;
                    y[o + ia] = a;
                    y[o + ib] = b;
                } else if head < NH + NKV {
                    let o = pos * kvd + (head - NH) * HD;
                    kc[o + ia] = a;
                    kc[o + ib] = b;
                } else {
                    let o = pos * kvd + (head - NH - NKV) * HD;
                    vc[o + ia] = a;
                    vc[o + ib] = b;
                }
            }
        }
    }
}
