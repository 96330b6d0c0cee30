// The thread shape of the linear kernel (after quant.wgsl and linear.wgsl): TPR
// invocations per row slot, a workgroup of WG invocations owns WG / TPR slots.
// TPR = 1: one invocation per row slot, no barriers (llvmpipe without subgroups).
// TPR > 1: the TPR invocations split the row's groups and reduce through workgroup
// memory (GPUs without subgroups).
override TPR: u32 = 1u;

var<workgroup> partial: array<vec2<f32>, 256>;

// Row `row`'s share (groups lane, lane + TPR, ...) of W x for token t.
fn row_dot(row: u32, lane: u32, t: u32) -> f32 {
    var acc = 0.0;
    let xt = t * (K / 4u);
    for (var g = lane; g < NG; g += TPR) {
        acc += group_dot(row, g, xt + g * 8u);
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = wid.x * (WG / TPR) + lid.x / TPR;
    let lane = lid.x % TPR;
    let t0 = wid.y * TT;
    let n = st.n_tokens;
    let nt = select(0u, min(TT, n - t0), t0 < n);
    let live = j < ROWS;
    // A slot past the end computes the last row again and skips the store: no branch
    // around the loads (on llvmpipe a load under a divergent branch becomes a masked
    // gather even where every lane reads the same address).
    let r = slot_rows(min(j, ROWS - 1u));
    for (var t = t0; t < t0 + nt; t++) {
        var a = row_dot(r.x, lane, t);
        var b = 0.0;
        if MODE >= 2u {
            b = row_dot(r.y, lane, t);
        }
        if TPR > 1u {
            partial[lid.x] = vec2<f32>(a, b);
            workgroupBarrier();
            if lane == 0u {
                for (var l = 1u; l < TPR; l++) {
                    let p = partial[lid.x + l];
                    a += p.x;
                    b += p.y;
                }
            }
            workgroupBarrier();
        }
        if live && lane == 0u {
            var inv = 1.0;
            if NORM {
                inv = inv_rms_of(sum_sq(t, 0u, 1u));
            }
            store(j, t, a * inv, b * inv);
        }
    }
}
