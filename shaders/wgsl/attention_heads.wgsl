// One query head per workgroup (GPUs): a workgroup of 32 per (head, token); its lanes
// split the positions (lane j takes j, j + 32, ...) with an online softmax each
// (attention_softmax.wgsl), then
// merge through workgroup memory after one barrier, lane i producing elements
// 4i..4i+3 of the output.
const LANES: u32 = 32u;

var<workgroup> sh_acc: array<vec4<f32>, 1024>;
var<workgroup> sh_ml: array<vec2<f32>, 32>;

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    if t >= st.n_tokens {
        return;
    }
    let hv = HD / 4u;
    let pos = st.start_pos + t;
    let kvh = h / (NH / NKV);
    let qb = (t * (NH + 2u * NKV) * HD + h * HD) / 4u;
    var acc: array<vec4<f32>, 32>;
    for (var i = 0u; i < hv; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    var ml = softmax_start();
    for (var p = first_position(pos) + lid.x; p <= pos; p += LANES) {
        let kb = (p * NKV * HD + kvh * HD) / 4u;
        var s4 = vec4<f32>(0.0);
        for (var i = 0u; i < hv; i++) {
            s4 += qkv[qb + i] * kq(kb + i);
        }
        let s = (s4.x + s4.y + s4.z + s4.w) * SCALE;
        let w = softmax_weights(ml.x, s);
        ml = softmax_add(ml, s, w);
        for (var i = 0u; i < hv; i++) {
            acc[i] = softmax_accumulate(acc[i], w, vq(kb + i));
        }
    }
    sh_ml[lid.x] = ml;
    for (var i = 0u; i < hv; i++) {
        sh_acc[lid.x * 32u + i] = acc[i];
    }
    workgroupBarrier();
    if lid.x < hv {
        var mm = -3.0e38;
        for (var k = 0u; k < LANES; k++) {
            mm = max(mm, sh_ml[k].x);
        }
        var total = 0.0;
        var a = vec4<f32>(0.0);
        for (var k = 0u; k < LANES; k++) {
            let w = softmax_merge_weight(sh_ml[k].x, mm);
            total += sh_ml[k].y * w;
            a += sh_acc[k * 32u + lid.x] * w;
        }
        dst[(t * NH * HD + h * HD) / 4u + lid.x] = a / total;
    }
}
