// RMSNorm of each token row: y = x / sqrt(mean(x^2) + EPS) * g. A workgroup of 8 per
// row, lane l over elements l, l + 8, ...: on llvmpipe the 8 lanes are one SIMD vector,
// so the row costs D / 8 load instructions instead of D in a single lane. The partial
// sums meet in workgroup memory after one barrier; every lane adds them in the same
// order, so all get the same 1 / rms.
// NP > 0: only the first half, for linear kernels that apply 1/rms themselves
// (linear.wgsl's NORM_IN): y = x * g, and the row's sum of squares written to `ssq` as
// NP partials (the total first, zeros after it), the layout the residual kernels'
// NORM_OUT epilogue leaves for the next block.
// ADD: y += x / rms * g (Gemma's post-norms: the normed block output added to the
// residual stream in one dispatch).
override D: u32 = 64u;
override ADD: bool = false;
override EPS: f32 = 1e-5;
override NP: u32 = 0u;
const LANES: u32 = 8u;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> ssq: array<f32>;

var<workgroup> part: array<f32, LANES>;

@compute @workgroup_size(8)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.x;
    if t >= st.n_tokens {
        return;
    }
    let b = t * D;
    var ss = 0.0;
    for (var i = lane; i < D; i += LANES) {
        let v = x[b + i];
        ss += v * v;
    }
    part[lane] = ss;
    workgroupBarrier();
    var total = 0.0;
    for (var l = 0u; l < LANES; l++) {
        total += part[l];
    }
    let inv = select(1.0 / sqrt(total / f32(D) + EPS), 1.0, NP > 0u);
    for (var i = lane; i < D; i += LANES) {
        let v = x[b + i] * inv * g[i];
        if ADD {
            y[b + i] += v;
        } else {
            y[b + i] = v;
        }
    }
    for (var p = lane; p < NP; p += LANES) {
        ssq[t * NP + p] = select(0.0, total, p == 0u);
    }
}
