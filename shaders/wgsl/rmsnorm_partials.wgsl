// The first half of an RMSNorm, for linear kernels that apply 1/rms themselves
// (linear.wgsl's NORM_IN): y = x * g, and the row's sum of squares written as NP
// partials (the total in the first, zeros after it), the layout the residual kernels'
// NORM_OUT epilogue leaves for the next block. A workgroup of 8 per token row, as in
// rmsnorm.wgsl.
override D: u32 = 64u;
override NP: u32 = 1u;
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
        ss = fma(v, v, ss);
        y[b + i] = v * g[i];
    }
    part[lane] = ss;
    workgroupBarrier();
    var total = 0.0;
    for (var l = 0u; l < LANES; l++) {
        total += part[l];
    }
    for (var p = lane; p < NP; p += LANES) {
        ssq[t * NP + p] = select(0.0, total, p == 0u);
    }
}
