// A KV head's query heads per workgroup, its lanes over the head dimension (CPU adapters
// with subgroups of 8, where the workgroup of 8 is one subgroup and one SIMD vector):
// lane l holds vec4s l, l + 8, ... of q, of each K and V row and of the accumulators,
// so every private array is small and constant-indexed (registers, where the positions
// layout's per-lane q and accumulators of whole heads sit in scratch memory, every
// access a gather or scatter). A position's scores are summed across lanes with
// subgroupAdd; the online softmax (attention_softmax.wgsl) is the same in every lane. Workgroups as in the
// positions layout: (KV head, GC of its query heads, token); GC <= 8, HD <= 128.
override GC: u32 = 1u;
const LANES: u32 = 8u;
// vec4s of a head per lane, at most (HD <= 128).
const MAXD: u32 = 4u;

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
    let dv = (hv + LANES - 1u) / LANES;
    let pos = st.start_pos + t;
    let qb = (t * (NH + 2u * NKV) * HD + h0 * HD) / 4u;
    // Lanes past the head's end (HD < 32) read its last vec4 with q zeroed: no branch
    // around the loads, nothing added to the scores.
    var col: array<u32, MAXD>;
    var q: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    for (var d = 0u; d < dv; d++) {
        let c = lane + d * LANES;
        col[d] = min(c, hv - 1u);
        for (var hq = 0u; hq < GC; hq++) {
            q[hq * MAXD + d] = select(vec4<f32>(0.0), qkv[qb + hq * hv + col[d]] * SCALE, c < hv);
            acc[hq * MAXD + d] = vec4<f32>(0.0);
        }
    }
    var ml: array<vec2<f32>, 8>;
    for (var hq = 0u; hq < GC; hq++) {
        ml[hq] = softmax_start();
    }
    for (var p = first_position(pos); p <= pos; p++) {
        let kb = (p * NKV + kvh) * hv;
        var k: array<vec4<f32>, MAXD>;
        var v: array<vec4<f32>, MAXD>;
        for (var d = 0u; d < dv; d++) {
            k[d] = kq(kb + col[d]);
            v[d] = vq(kb + col[d]);
        }
        for (var hq = 0u; hq < GC; hq++) {
            var s = vec4<f32>(0.0);
            for (var d = 0u; d < dv; d++) {
                s = fma(q[hq * MAXD + d], k[d], s);
            }
            let sc = subgroupAdd((s.x + s.y) + (s.z + s.w));
            let w = softmax_weights(ml[hq].x, sc);
            ml[hq] = softmax_add(ml[hq], sc, w);
            for (var d = 0u; d < dv; d++) {
                acc[hq * MAXD + d] = softmax_accumulate(acc[hq * MAXD + d], w, v[d]);
            }
        }
    }
    for (var d = 0u; d < dv; d++) {
        let c = lane + d * LANES;
        if c < hv {
            for (var hq = 0u; hq < GC; hq++) {
                dst[(t * NH + h0 + hq) * hv + c] = acc[hq * MAXD + d] / ml[hq].y;
            }
        }
    }
}
