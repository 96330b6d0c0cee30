// Argmax of N logits, lowest index on ties, NaN never chosen (0 if all are NaN).
// One workgroup of 64: strided scans, then lane 0 merges.
override N: u32 = 64u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> res: array<u32>;

var<workgroup> best_v: array<f32, 64>;
var<workgroup> best_i: array<u32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    var bv = -3.4e38;
    var bi = N;
    for (var i = lid.x; i < N; i += 64u) {
        let v = logits[i];
        if v > bv || (bi == N && v == v) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid.x] = bv;
    best_i[lid.x] = bi;
    workgroupBarrier();
    if lid.x == 0u {
        for (var l = 1u; l < 64u; l++) {
            let v = best_v[l];
            let i = best_i[l];
            if i < N && (bi == N || v > bv || (v == bv && i < bi)) {
                bv = v;
                bi = i;
            }
        }
        res[0] = select(bi, 0u, bi == N);
    }
}
