// The subgroup shape of the linear kernel (after quant.wgsl and linear.wgsl), for
// adapters with the SUBGROUP feature. A subgroup owns one row slot at a time: lane l
// takes the row's spans of GS groups (linear.wgsl) l, l + S, ... (S the subgroup size),
// so consecutive lanes read consecutive words of the same row (coalesced on GPUs; on
// llvmpipe the 8 lanes of a CPU thread's SIMD vector share cache lines instead of
// touching 8 rows), and subgroupAdd sums the lanes. A workgroup owns RPW consecutive slots, which its
// subgroups take in turn. Every subgroupAdd is reached by the whole subgroup: the slot
// loop's bounds are the same for all its lanes, an out-of-range slot computes the last
// row again and only skips the store, and the lane-dependent group loop closes before
// the reduction.

override RPW: u32 = 8u;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_size) sgs: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let nsg = max(WG / sgs, 1u);
    let sg = li / sgs;
    let t0 = wid.y * TT;
    let n = st.n_tokens;
    let nt = select(0u, min(TT, n - t0), t0 < n);
    for (var s = sg; s < RPW; s += nsg) {
        let j0 = wid.x * RPW + s;
        let j = min(j0, ROWS - 1u);
        let r = slot_rows(j);
        for (var t = t0; t < t0 + nt; t++) {
            let xt = t * (K / 4u);
            var a = 0.0;
            var b = 0.0;
            for (var g = lane * GS; g < NG; g += sgs * GS) {
                let x0 = x_group(xt, g);
                let x1 = x_group2(xt, g, x0);
                a = span_dot(a, r.x, g, x0, x1);
                if MODE >= 2u {
                    b = span_dot(b, r.y, g, x0, x1);
                }
            }
            a = subgroupAdd(a);
            b = subgroupAdd(b);
            var inv = 1.0;
            if NORM {
                inv = inv_rms_of(subgroupAdd(sum_sq(t, lane, sgs)));
            }
            if j0 < ROWS && lane == 0u {
                store(j, t, a * inv, b * inv);
            }
        }
    }
}
