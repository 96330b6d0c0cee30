// Embedding lookup: rows `tokens[t]` of a (quantized) table, one invocation per
// 32-element group of one token's row. Dequantization comes from quant.wgsl, the
// table's bindings (wq, ws: 2 and 3) and accessors from quant_words32.wgsl.
struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x;
    let t = gid.y;
    if g >= NG || t >= st.n_tokens {
        return;
    }
    let grp = load_group(tokens[t], g);
    let o = t * (K / 4u) + g * 8u;
    for (var i = 0u; i < 8u; i++) {
        y[o + i] = grp.w[i] * grp.d + vec4<f32>(grp.m);
    }
}
