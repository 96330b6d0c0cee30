// The thread shape of the linear kernel (after quant.wgsl and linear.wgsl): TPR
// invocations per group of RPI consecutive row slots, a workgroup of WG invocations owns
// WG / TPR * RPI slots.
// TPR = 1: one invocation per RPI slots, no barriers (llvmpipe): each group of inputs
// is loaded once for all the invocation's rows (2 RPI of them in MODEs 2 and 3).
// TPR > 1: the TPR invocations split the rows' groups and reduce through workgroup
// memory (GPUs without subgroups).
override TPR: u32 = 1u;
override RPI: u32 = 1u;

var<workgroup> partial: array<vec2<f32>, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    x_lane = lid.x % 8u;
    let j0 = (wid.x * (WG / TPR) + lid.x / TPR) * RPI;
    let lane = lid.x % TPR;
    let t0 = wid.y * TT;
    let n = st.n_tokens;
    let nt = select(0u, min(TT, n - t0), t0 < n);
    for (var t = t0; t < t0 + nt; t++) {
        let xt = t * (K / 4u);
        // Slots past the end compute the last row again and skip the store: no branch
        // around the loads.
        var acc: array<vec2<f32>, 32>;
        for (var g = lane * GS; g < NG; g += TPR * GS) {
            let x0 = x_group(xt, g);
            let x1 = x_group2(xt, g, x0);
            for (var s = 0u; s < RPI; s++) {
                let r = slot_rows(min(j0 + s, ROWS - 1u));
                acc[s].x = span_dot(acc[s].x, r.x, g, x0, x1);
                if MODE >= 2u {
                    acc[s].y = span_dot(acc[s].y, r.y, g, x0, x1);
                }
            }
        }
        var inv = 1.0;
        if NORM {
            inv = inv_rms_of(sum_sq(t, 0u, 1u));
        } else if NORM_IN > 0u {
            inv = inv_rms_of(partials_sum(t));
        }
        var ss = 0.0;
        for (var s = 0u; s < RPI; s++) {
            var a = acc[s].x;
            var b = acc[s].y;
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
            if j0 + s < ROWS && lane == 0u {
                let v = store(j0 + s, t, a * inv, b * inv);
                if NORM_OUT {
                    ss += norm_out_row(j0 + s, t, v);
                }
            }
        }
        // One partial per invocation's run of RPI slots: (ROWS + RPI - 1) / RPI a token.
        if NORM_OUT && lane == 0u && j0 < ROWS {
            ssq[t * ((ROWS + RPI - 1u) / RPI) + j0 / RPI] = ss;
        }
    }
}
