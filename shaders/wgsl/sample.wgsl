// Temperature / top-k / top-p sampling of N logits with the uniform number `u` given,
// so the host reference picks the same id. At most KMAX = 64 candidates (top_k 0 means
// 64); temperature <= 0 or top_k == 1 is greedy. One invocation.
override N: u32 = 64u;
const KMAX: u32 = 64u;

struct Params {
    temperature: f32,
    top_p: f32,
    u: f32,
    top_k: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> res: array<u32>;

@compute @workgroup_size(1)
fn main() {
    var k = params.top_k;
    if k == 0u || k > KMAX {
        k = KMAX;
    }
    if params.temperature <= 0.0 {
        k = 1u;
    }
    var vals: array<f32, 64>;
    var ids: array<u32, 64>;
    var cnt = 0u;
    for (var i = 0u; i < N; i++) {
        let v = logits[i];
        if v != v {
            continue;
        }
        if cnt < k || v > vals[k - 1u] {
            var j = min(cnt, k - 1u);
            while j > 0u && vals[j - 1u] < v {
                vals[j] = vals[j - 1u];
                ids[j] = ids[j - 1u];
                j--;
            }
            vals[j] = v;
            ids[j] = i;
            cnt = min(cnt + 1u, k);
        }
    }
    if cnt <= 1u {
        res[0] = select(0u, ids[0], cnt == 1u);
        return;
    }
    var p: array<f32, 64>;
    var total = 0.0;
    for (var j = 0u; j < cnt; j++) {
        p[j] = exp((vals[j] - vals[0]) / params.temperature);
        total += p[j];
    }
    var kept = cnt;
    var cum = 0.0;
    for (var j = 0u; j < cnt; j++) {
        cum += p[j];
        if cum >= params.top_p * total {
            kept = j + 1u;
            break;
        }
    }
    var kept_total = 0.0;
    for (var j = 0u; j < kept; j++) {
        kept_total += p[j];
    }
    let r = params.u * kept_total;
    var c = 0.0;
    var pick = ids[kept - 1u];
    for (var j = 0u; j < kept; j++) {
        c += p[j];
        if c > r {
            pick = ids[j];
            break;
        }
    }
    res[0] = pick;
}
