// The online softmax every attention layout runs: per (lane, query head) a running max
// m of the scores seen and the sum l of exp(score - m); each new score s moves the max
// to m' = max(m, s), rescales what was accumulated by corr = exp(m - m') and weighs s's
// value row by e = exp(s - m'). Layouts that split the positions between lanes merge
// the lanes' (m, l, acc) at the end (softmax_merge_weight).

// The running (m, l) before any score.
fn softmax_start() -> vec2<f32> {
    return vec2<f32>(-3.0e38, 0.0);
}

// (corr, e) of one more score s against the running max m. One exp, not two: of
// exp(m - m') and exp(s - m') one is exp(0) = 1.
fn softmax_weights(m: f32, s: f32) -> vec2<f32> {
    let below = s <= m;
    let ex = exp(select(m - s, s - m, below));
    return vec2<f32>(select(ex, 1.0, below), select(1.0, ex, below));
}

// The running (m, l) after score s with weights w = softmax_weights(m, s).
fn softmax_add(ml: vec2<f32>, s: f32, w: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(max(ml.x, s), fma(ml.y, w.x, w.y));
}

// An accumulator after score s: acc * corr + e * v.
fn softmax_accumulate(acc: vec4<f32>, w: vec2<f32>, v: vec4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(w.y), v, acc * w.x);
}

// The weight of a lane's partial (m, l, acc) in the merged result whose max is mm.
fn softmax_merge_weight(m: f32, mm: f32) -> f32 {
    return exp(m - mm);
}
