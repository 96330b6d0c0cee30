// Linear layer over token rows, W dequantized group by group in registers: what every
// kernel shape shares (constants, bindings, the group dot product, the epilogue). One of
// linear_threads.wgsl or linear_subgroup.wgsl follows with the entry point.
//   MODE 0: y = W x          MODE 1: y += W x (the residual add, fused)
//   MODE 2: y = silu(W[r] x) * (W[r + ROWS] x) over a [gate; up] matrix (SwiGLU, fused)
//   MODE 3: fused q/k/v: rows are [q heads; k heads; v heads]; a slot computes a RoPE
//           pair of rows ((2i, 2i+1), or (i, i + HD/2) when NEOX), rotates q and k with
//           the host's (cos, sin) table, writes q to y and k, v into the KV cache.
//   MODE 4: y = gelu_tanh(W[r] x) * (W[r + ROWS] x) (GeGLU, fused; pairs as MODE 2)
// NORM: the input is RMSNorm(x) * nw, the norm computed in the kernel (saves a dispatch).
// NORM_IN (> 0): the input is already x * nw (rmsnorm.wgsl with NP > 0, or the previous
//   residual kernel's NORM_OUT); 1/rms comes from its sum of squares, NORM_IN partials
//   per token in `ssq`.
// NORM_OUT (MODE 1): also writes the new residual times the next norm's weight (`nw`)
//   to `xn` and each invocation's sum of squares of its rows to `ssq` (partial
//   j0 / RPI): the next normed kernel's input, with no RMSNorm dispatch between them.
// Tokens are looped inside a row: a prefill re-reads each row's weights from cache, not
// from memory, and nothing needs a per-token array.
// ROWS counts row slots: output rows (MODEs 0, 1, 2, 4) or RoPE pairs (MODE 3).
override ROWS: u32 = 64u;
override MODE: u32 = 0u;
override TT: u32 = 1u;
override WG: u32 = 64u;
override NORM: bool = false;
override NORM_IN: u32 = 0u;
override NORM_OUT: bool = false;
override EPS: f32 = 1e-5;
override HD: u32 = 64u;
override NH: u32 = 4u;
override NKV: u32 = 2u;
override NEOX: bool = false;
// MODE 0 with Y_STRIDE > 0: token t's output row starts at t * Y_STRIDE + Y_OFFSET (one
// matrix's rows written into a wider row, as q, k and v of different formats into one
// q/k/v row).
override Y_STRIDE: u32 = 0u;
override Y_OFFSET: u32 = 0u;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
// Bindings 1 (x), 2 (wq) and 3 (ws) and their accessors xq, quad, ws_word, ws_pair:
// linear_words32.wgsl or linear_words64.wgsl. The input loads x_raw: linear_x_each.wgsl
// or linear_x_shared.wgsl.
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> nw: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> kc: array<f32>;
@group(0) @binding(8) var<storage, read_write> vc: array<f32>;
@group(0) @binding(9) var<storage, read_write> ssq: array<f32>;
@group(0) @binding(10) var<storage, read_write> xn: array<f32>;

fn xv(xi: u32, ni: u32) -> vec4<f32> {
    if NORM {
        return xq(xi) * nw[ni];
    }
    return xq(xi);
}

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The 32 inputs of group g of token row xt (vec4 index of its first element), times
// the norm weight when NORM: loaded once, dotted with several weight rows. For the
// nibble formats (FMT 3, 4, 7) `v` is pre-scaled by NIB_SCALE; `s` is the inputs' sum
// (the m term) for FMTs 3, 4 and 6, `h` the sums of its halves (elements 0..16,
// 16..32) for FMT 7, whose mins are per 16 elements; see group_dot.
struct XGroup {
    v: array<vec4<f32>, 8>,
    s: f32,
    h: vec2<f32>,
}

// Element j of a nibble word's four bytes is masked in place (q & (15 << 8j), no shift)
// and converted as n * 2^8j; its input is scaled by 2^-8j once per group so that the
// product is n * x exactly (powers of two), one shift per byte fewer for every row.
const NIB_SCALE = vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);
const NIB_MASK = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);

// This invocation's lane in its subgroup, modulo 8 (set by the thread shape's entry
// point; linear_x_shared.wgsl loads the input vec4 of this index).
var<private> x_lane: u32;

fn x_group(xt: u32, g: u32) -> XGroup {
    var r: XGroup;
    r.v = x_raw(xt, g);
    let v = r.v;
    if FMT == 3u || FMT == 4u || FMT == 6u {
        r.s = hsum((v[0] + v[1]) + (v[2] + v[3]) + ((v[4] + v[5]) + (v[6] + v[7])));
    }
    if FMT == 7u {
        r.h = vec2<f32>(hsum((v[0] + v[1]) + (v[2] + v[3])), hsum((v[4] + v[5]) + (v[6] + v[7])));
    }
    if FMT == 3u || FMT == 4u || FMT == 7u {
        for (var i = 0u; i < 8u; i++) {
            r.v[i] = v[i] * NIB_SCALE;
        }
    }
    return r;
}

// The nibbles of q masked in place (see NIB_SCALE): byte j's low nibble times 2^8j.
fn nib_scaled(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q) & NIB_MASK);
}


// The scales of group gi: (d, m) for FMTs 2 to 4 and 6 (m = 0 for FMT 2), the two
// half-group scales for FMT 5, (1, 0) for the float formats and for FMT 7 (whose four
// scales group_dot loads itself).
fn group_scales(gi: u32) -> vec2<f32> {
    switch FMT {
        case 2u: {
            return vec2<f32>(unpack2x16float(ws_word(gi >> 1u))[gi & 1u], 0.0);
        }
        case 3u: {
            return unpack2x16float(ws_word(gi));
        }
        case 4u, 5u, 6u: {
            return bitcast<vec2<f32>>(ws_pair(gi));
        }
        default: {
            return vec2<f32>(1.0, 0.0);
        }
    }
}

// The scales of groups gi and gi + 1 (xy, zw) when GS is 2 (gi even: the pair shares a
// word of f16 scales for FMT 2, a 64-bit word for FMT 3), else of group gi (xy).
fn span_scales(gi: u32) -> vec4<f32> {
    if GS == 1u {
        return vec4<f32>(group_scales(gi), 0.0, 0.0);
    }
    switch FMT {
        case 2u: {
            let d = unpack2x16float(ws_word(gi >> 1u));
            return vec4<f32>(d.x, 0.0, d.y, 0.0);
        }
        case 3u: {
            let p = ws_pair(gi >> 1u);
            return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
        }
        default: {
            return vec4<f32>(group_scales(gi), group_scales(gi + 1u));
        }
    }
}

// The dot product of group gi (gidx(row, g)) with the group's inputs xg, its scales sc
// (group_scales), decoding straight into the products (constant indices only, so
// everything stays in registers). Quants are read 16 bytes at a time: on llvmpipe a
// load instruction costs about the same whatever its width, so a vec4 load of a
// group's quants beats four word loads.
fn group_dot(gi: u32, x: XGroup, sc: vec2<f32>) -> f32 {
    let xg = x.v;
    // fma(): one instruction on GPUs; llvmpipe (Mesa 25.0) lowers it to a multiply and an
    // add anyway (NIR's lower_ffma32). Two chains (elements 0-15, 16-31) keep the adds'
    // latency off the critical path.
    var s = vec4<f32>(0.0);
    var t = vec4<f32>(0.0);
    switch FMT {
        case 0u: {
            let b = gi * 8u;
            for (var i = 0u; i < 4u; i++) {
                s = fma(bitcast<vec4<f32>>(quad(b + i)), xg[i], s);
                t = fma(bitcast<vec4<f32>>(quad(b + 4u + i)), xg[4u + i], t);
            }
            return hsum(s + t);
        }
        case 1u: {
            let b = gi * 4u;
            for (var i = 0u; i < 2u; i++) {
                let q = quad(b + i);
                s = fma(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xg[2u * i], s);
                s = fma(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xg[2u * i + 1u], s);
                let r = quad(b + 2u + i);
                t = fma(vec4<f32>(unpack2x16float(r.x), unpack2x16float(r.y)), xg[4u + 2u * i], t);
                t = fma(vec4<f32>(unpack2x16float(r.z), unpack2x16float(r.w)), xg[5u + 2u * i], t);
            }
            return hsum(s + t);
        }
        case 2u: {
            let q0 = quad(gi * 2u);
            let q1 = quad(gi * 2u + 1u);
            s = fma(i8x4(q0.x), xg[0], fma(i8x4(q0.y), xg[1], fma(i8x4(q0.z), xg[2], i8x4(q0.w) * xg[3])));
            t = fma(i8x4(q1.x), xg[4], fma(i8x4(q1.y), xg[5], fma(i8x4(q1.z), xg[6], i8x4(q1.w) * xg[7])));
            return sc.x * hsum(s + t);
        }
        case 3u, 4u: {
            let q = quad(gi);
            s = fma(nib_scaled(q.x), xg[0], fma(nib_scaled(q.y), xg[1], fma(nib_scaled(q.z), xg[2], nib_scaled(q.w) * xg[3])));
            t = fma(nib_scaled(q.x >> 4u), xg[4], fma(nib_scaled(q.y >> 4u), xg[5], fma(nib_scaled(q.z >> 4u), xg[6], nib_scaled(q.w >> 4u) * xg[7])));
            return fma(sc.x, hsum(s + t), sc.y * x.s);
        }
        case 5u: {
            let q0 = quad(gi * 2u);
            let q1 = quad(gi * 2u + 1u);
            s = fma(i8x4(q0.x), xg[0], fma(i8x4(q0.y), xg[1], fma(i8x4(q0.z), xg[2], i8x4(q0.w) * xg[3])));
            t = fma(i8x4(q1.x), xg[4], fma(i8x4(q1.y), xg[5], fma(i8x4(q1.z), xg[6], i8x4(q1.w) * xg[7])));
            return fma(sc.x, hsum(s), sc.y * hsum(t));
        }
        case 6u: {
            let q0 = quad(gi * 2u);
            let q1 = quad(gi * 2u + 1u);
            s = fma(i8x4(q0.x), xg[0], fma(i8x4(q0.y), xg[1], fma(i8x4(q0.z), xg[2], i8x4(q0.w) * xg[3])));
            t = fma(i8x4(q1.x), xg[4], fma(i8x4(q1.y), xg[5], fma(i8x4(q1.z), xg[6], i8x4(q1.w) * xg[7])));
            return fma(sc.x, hsum(s + t), sc.y * x.s);
        }
        case 7u: {
            let q = quad(gi);
            let a = bitcast<vec2<f32>>(ws_pair(2u * gi));
            let b = bitcast<vec2<f32>>(ws_pair(2u * gi + 1u));
            s = fma(nib_scaled(q.x), xg[0], fma(nib_scaled(q.y), xg[1], fma(nib_scaled(q.z), xg[2], nib_scaled(q.w) * xg[3])));
            t = fma(nib_scaled(q.x >> 4u), xg[4], fma(nib_scaled(q.y >> 4u), xg[5], fma(nib_scaled(q.z >> 4u), xg[6], nib_scaled(q.w >> 4u) * xg[7])));
            return fma(a.x, hsum(s), a.y * x.h.x) + fma(b.x, hsum(t), b.y * x.h.y);
        }
        default: {
            return 0.0;
        }
    }
}

// acc plus the dot products of groups g .. g + GS - 1 of row `row` with their inputs x0
// (and x1), added one group at a time (the order of a loop over single groups).
fn span_dot(acc: f32, row: u32, g: u32, x0: XGroup, x1: XGroup) -> f32 {
    let gi = gidx(row, g);
    let sc = span_scales(gi);
    var a = acc + group_dot(gi, x0, sc.xy);
    if GS == 2u {
        a += group_dot(gi + 1u, x1, sc.zw);
    }
    return a;
}

// The inputs of the second group of the span at g (x0 again when GS is 1).
fn x_group2(xt: u32, g: u32, x0: XGroup) -> XGroup {
    if GS == 2u {
        return x_group(xt, g + 1u);
    }
    return x0;
}


// 1 / rms of token t's input (1 when not NORM), from the vec4s i0, i0 + step, ... of
// the row (one invocation: i0 = 0, step = 1; a subgroup's lanes split it and add up).
fn sum_sq(t: u32, i0: u32, step: u32) -> f32 {
    let xt = t * (K / 4u);
    var ss = vec4<f32>(0.0);
    for (var i = i0; i < K / 4u; i += step) {
        let v = xq(xt + i);
        ss += v * v;
    }
    return hsum(ss);
}

fn inv_rms_of(ss: f32) -> f32 {
    return 1.0 / sqrt(ss / f32(K) + EPS);
}

// Token t's sum of squares from its NORM_IN partials.
fn partials_sum(t: u32) -> f32 {
    var s = 0.0;
    for (var p = 0u; p < NORM_IN; p++) {
        s += ssq[t * NORM_IN + p];
    }
    return s;
}

// NORM_OUT's per-row part: the residual v times the next norm's weight into xn; returns
// v² for the invocation's partial.
fn norm_out_row(j: u32, t: u32, v: f32) -> f32 {
    xn[t * ROWS + j] = v * nw[j >> 2u][j & 3u];
    return v * v;
}

// The weight rows of slot j: (a, b); b is read in MODEs 2, 3 and 4 only (MODE >= 2).
fn slot_rows(j: u32) -> vec2<u32> {
    if MODE == 3u {
        let hh = HD / 2u;
        let base = (j / hh) * HD;
        let i = j % hh;
        if NEOX {
            return vec2<u32>(base + i, base + i + hh);
        }
        return vec2<u32>(base + 2u * i, base + 2u * i + 1u);
    }
    return vec2<u32>(j, j + ROWS);
}

// Writes slot j's results for token t: a = W[ra] x, b = W[rb] x (already normed).
// Returns the value now at y[t * ROWS + j] in MODEs 0 and 1 (NORM_OUT's residual).
fn store(j: u32, t: u32, a_in: f32, b_in: f32) -> f32 {
    var a = a_in;
    var b = b_in;
    if MODE == 0u {
        y[select(t * ROWS, t * Y_STRIDE + Y_OFFSET, Y_STRIDE > 0u) + j] = a;
        return a;
    } else if MODE == 1u {
        let v = y[t * ROWS + j] + a;
        y[t * ROWS + j] = v;
        return v;
    } else if MODE == 2u {
        y[t * ROWS + j] = a / (1.0 + exp(-a)) * b;
    } else if MODE == 4u {
        y[t * ROWS + j] = 0.5 * a * (1.0 + tanh(0.7978846 * (a + 0.044715 * a * a * a))) * b;
    } else {
        let hh = HD / 2u;
        let head = j / hh;
        let i = j % hh;
        let r = slot_rows(j) - vec2<u32>(head * HD);
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
            y[o + r.x] = a;
            y[o + r.y] = b;
        } else if head < NH + NKV {
            let o = pos * kvd + (head - NH) * HD;
            kc[o + r.x] = a;
            kc[o + r.y] = b;
        } else {
            let o = pos * kvd + (head - NH - NKV) * HD;
            vc[o + r.x] = a;
            vc[o + r.y] = b;
        }
    }
    return 0.0;
}
