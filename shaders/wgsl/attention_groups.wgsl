// A KV head's query heads per workgroup (CPU adapters, where a workgroup of 8 is one
// SIMD vector and every load instruction costs about the same whether its lanes share
// an address or gather 8): a workgroup of 8 per (KV head, GC of its query heads, token);
// lane j takes positions j, j + 8, ... and each K and V row it loads serves all GC query
// heads (on GPUs the same work takes one workgroup per query head). Online softmax per
// (lane, head) in registers (attention_softmax.wgsl), merged through workgroup memory after one barrier.
// GC * HD / 4 <= 64 and GC <= 8 (the host checks).
override GC: u32 = 1u;
const LANES: u32 = 8u;
const MAXQ: u32 = 64u;

var<workgroup> sh_ml: array<vec2<f32>, 64>;
var<workgroup> sh_acc: array<vec4<f32>, 512>;

@compute @workgroup_size(8)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    if t >= st.n_tokens {
        return;
    }
    let heads = grouped_heads(wid.x, GC);
    let kvh = heads.x;
    let h0 = heads.y;
    let hv = HD / 4u;
    let pos = st.start_pos + t;
    let qb = (t * (NH + 2u * NKV) * HD + h0 * HD) / 4u;
    var q: array<vec4<f32>, MAXQ>;
    var acc: array<vec4<f32>, MAXQ>;
    for (var j = 0u; j < GC * hv; j++) {
        q[j] = qkv[qb + j] * SCALE;
        acc[j] = vec4<f32>(0.0);
    }
    var ml: array<vec2<f32>, 8>;
    for (var hq = 0u; hq < GC; hq++) {
        ml[hq] = softmax_start();
    }
    for (var p = first_position(pos) + lane; p <= pos; p += LANES) {
        let kb = (p * NKV + kvh) * hv;
        var s: array<vec4<f32>, 8>;
        for (var i = 0u; i < hv; i++) {
            let k = kq(kb + i);
            for (var hq = 0u; hq < GC; hq++) {
                s[hq] += q[hq * hv + i] * k;
            }
        }
        var w: array<vec2<f32>, 8>;
        for (var hq = 0u; hq < GC; hq++) {
            let sc = (s[hq].x + s[hq].y) + (s[hq].z + s[hq].w);
            w[hq] = softmax_weights(ml[hq].x, sc);
            ml[hq] = softmax_add(ml[hq], sc, w[hq]);
        }
        for (var i = 0u; i < hv; i++) {
            let v = vq(kb + i);
            for (var hq = 0u; hq < GC; hq++) {
                acc[hq * hv + i] = softmax_accumulate(acc[hq * hv + i], w[hq], v);
            }
        }
    }
    for (var hq = 0u; hq < GC; hq++) {
        sh_ml[lane * GC + hq] = ml[hq];
    }
    for (var j = 0u; j < GC * hv; j++) {
        sh_acc[lane * MAXQ + j] = acc[j];
    }
    workgroupBarrier();
    // Lane j writes output vec4s j, j + 8, ... of the GC heads.
    for (var j = lane; j < GC * hv; j += LANES) {
        let hq = j / hv;
        var mm = -3.0e38;
        for (var k = 0u; k < LANES; k++) {
            mm = max(mm, sh_ml[k * GC + hq].x);
        }
        var total = 0.0;
        var a = vec4<f32>(0.0);
        for (var k = 0u; k < LANES; k++) {
            let part = sh_ml[k * GC + hq];
            let w = softmax_merge_weight(part.x, mm);
            total += part.y * w;
            a += sh_acc[k * MAXQ + j] * w;
        }
        dst[(t * NH + h0) * hv + j] = a / total;
    }
}
