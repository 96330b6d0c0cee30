// RMSNorm of each token row: y = x / sqrt(mean(x^2) + EPS) * g. One invocation per row.
override D: u32 = 64u;
override EPS: f32 = 1e-5;

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

@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if t >= st.n_tokens {
        return;
    }
    let b = t * D;
    var ss = 0.0;
    for (var i = 0u; i < D; i++) {
        let v = x[b + i];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(ss / f32(D) + EPS);
    for (var i = 0u; i < D; i++) {
        y[b + i] = x[b + i] * inv * g[i];
    }
}
