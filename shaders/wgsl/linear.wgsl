// Linear layer over TT token rows per invocation: y = W x (MODE 0), y += W x (MODE 1,
// the residual add fused), or y = silu(W[r] x) * (W[r + ROWS] x) (MODE 2, SwiGLU over a
// [gate; up] matrix). W stays quantized; groups are dequantized in registers (quant.wgsl).
// TPR = 1: one invocation per output row, no barriers (fastest on CPU adapters).
// TPR > 1: TPR invocations share a row and reduce through workgroup memory (GPUs).
override ROWS: u32 = 64u;
override MODE: u32 = 0u;
override TT: u32 = 1u;
override TPR: u32 = 1u;
override WG: u32 = 64u;

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

var<workgroup> partial: array<vec4<f32>, 512>;

fn row_dot(row: u32, lane: u32, t0: u32, nt: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var g = lane; g < NG; g += TPR) {
        let grp = load_group(row, g);
        for (var t = 0u; t < nt; t++) {
            let xb = (t0 + t) * (K / 4u) + g * 8u;
            var s = vec4<f32>(0.0);
            var sx = vec4<f32>(0.0);
            for (var i = 0u; i < 8u; i++) {
                let xv = x[xb + i];
                s += grp.w[i] * xv;
                sx += xv;
            }
            acc[t] += grp.d * (s.x + s.y + s.z + s.w) + grp.m * (sx.x + sx.y + sx.z + sx.w);
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x * (WG / TPR) + lid.x / TPR;
    let lane = lid.x % TPR;
    let t0 = wid.y * TT;
    let n = st.n_tokens;
    let nt = select(0u, min(TT, n - t0), t0 < n);
    let live = row < ROWS;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    if live {
        a = row_dot(row, lane, t0, nt);
        if MODE == 2u {
            b = row_dot(row + ROWS, lane, t0, nt);
        }
    }
    if TPR > 1u {
        partial[2u * lid.x] = a;
        partial[2u * lid.x + 1u] = b;
        workgroupBarrier();
        if lane == 0u {
            for (var l = 1u; l < TPR; l++) {
                a += partial[2u * (lid.x + l)];
                b += partial[2u * (lid.x + l) + 1u];
            }
        }
    }
    if live && lane == 0u {
        for (var t = 0u; t < nt; t++) {
            let o = (t0 + t) * ROWS + row;
            if MODE == 0u {
                y[o] = a[t];
            } else if MODE == 1u {
                y[o] += a[t];
            } else {
                let g = a[t];
                y[o] = g / (1.0 + exp(-g)) * b[t];
            }
        }
    }
}
