// Causal attention with GQA over the KV cache: query head h of token t (at position
// start_pos + t) attends positions 0..=pos of KV head h / (NH / NKV). Online softmax in
// f32. One invocation per (head, token); HD <= 128.
override HD: u32 = 64u;
override NH: u32 = 4u;
override NKV: u32 = 2u;
override SCALE: f32 = 0.125;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    let t = gid.y;
    if h >= NH || t >= st.n_tokens {
        return;
    }
    let hv = HD / 4u;
    let pos = st.start_pos + t;
    let kvh = h / (NH / NKV);
    let qb = (t * (NH + 2u * NKV) * HD + h * HD) / 4u;
    var q: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    for (var i = 0u; i < hv; i++) {
        q[i] = qkv[qb + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var p = 0u; p <= pos; p++) {
        let kb = (p * NKV * HD + kvh * HD) / 4u;
        var s4 = vec4<f32>(0.0);
        for (var i = 0u; i < hv; i++) {
            s4 += q[i] * kc[kb + i];
        }
        let s = (s4.x + s4.y + s4.z + s4.w) * SCALE;
        let mn = max(m, s);
        let corr = exp(m - mn);
        let e = exp(s - mn);
        l = l * corr + e;
        for (var i = 0u; i < hv; i++) {
            acc[i] = acc[i] * corr + e * vc[kb + i];
        }
        m = mn;
    }
    let ob = (t * NH * HD + h * HD) / 4u;
    for (var i = 0u; i < hv; i++) {
        dst[ob + i] = acc[i] / l;
    }
}
