// RoPE on the q and k heads of a fused qkv row, writing rotated k and plain v into the
// KV cache at the token's position. Pairs are (2i, 2i+1) (NEOX 0) or (i, i + HD/2)
// (NEOX 1); `cs` holds (cos, sin) per position and pair, computed on the host.
// Before rotating, as the architecture asks: BIAS adds q/k/v biases (`bias`, laid out as
// a qkv row); QK_NORM applies RMSNorm (EPS) to each q and k head with the weights in
// `qkn` (q's HD, then k's HD). Unused bindings take placeholder buffers.
// One invocation per (head among NH q heads then NKV k heads, token); a k head's
// invocation also stores its v head.
override HD: u32 = 64u;
override NH: u32 = 4u;
override NKV: u32 = 2u;
override NEOX: u32 = 0u;
override BIAS: bool = false;
override QK_NORM: bool = false;
override EPS: f32 = 1e-6;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> kc: array<f32>;
@group(0) @binding(4) var<storage, read_write> vc: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> qkn: array<f32>;

@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    let t = gid.y;
    if h >= NH + NKV || t >= st.n_tokens {
        return;
    }
    let pos = st.start_pos + t;
    let row = t * (NH + 2u * NKV) * HD;
    let base = row + h * HD;
    let hh = HD / 2u;
    let kvd = NKV * HD;
    let kbase = pos * kvd + (h - min(h, NH)) * HD;
    if BIAS || QK_NORM {
        var ss = 0.0;
        for (var i = 0u; i < HD; i++) {
            var v = qkv[base + i];
            if BIAS {
                v += bias[h * HD + i];
            }
            qkv[base + i] = v;
            ss += v * v;
        }
        if QK_NORM {
            let inv = 1.0 / sqrt(ss / f32(HD) + EPS);
            let w = select(0u, HD, h >= NH);
            for (var i = 0u; i < HD; i++) {
                qkv[base + i] = qkv[base + i] * inv * qkn[w + i];
            }
        }
    }
    for (var i = 0u; i < hh; i++) {
        var ia = 2u * i;
        var ib = 2u * i + 1u;
        if NEOX == 1u {
            ia = i;
            ib = i + hh;
        }
        let c = cs[pos * hh + i];
        let a = qkv[base + ia];
        let b = qkv[base + ib];
        let ra = a * c.x - b * c.y;
        let rb = a * c.y + b * c.x;
        if h < NH {
            qkv[base + ia] = ra;
            qkv[base + ib] = rb;
        } else {
            kc[kbase + ia] = ra;
            kc[kbase + ib] = rb;
        }
    }
    if h >= NH {
        let vbase = base + NKV * HD;
        for (var i = 0u; i < HD; i++) {
            var v = qkv[vbase + i];
            if BIAS {
                v += bias[(h + NKV) * HD + i];
            }
            vc[kbase + i] = v;
        }
    }
}
