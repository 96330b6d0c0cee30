// The linear kernel's input and quants read as 64-bit words (SHADER_INT64): llvmpipe
// loads every component of every lane on its own, at about the same cost whatever its
// width, so a vec2<u64> brings the 16 bytes of a vec4<u32> in half the loads
// (`cargo bench --bench kernels -- loads`). The words are split back into u32 in
// registers. Same buffers, same bytes as linear_words32.wgsl.
@group(0) @binding(1) var<storage, read> x: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read> wq: array<vec2<u64>>;
// Padded to whole 64-bit words at upload (PackedWeight::upload).
@group(0) @binding(3) var<storage, read> ws: array<u64>;

fn split(q: vec2<u64>) -> vec4<u32> {
    return vec4<u32>(u32(q.x), u32(q.x >> 32u), u32(q.y), u32(q.y >> 32u));
}

// Input vec4 i.
fn xq(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(split(x[i]));
}

// Bytes 16i..16i+15 of the quants as four words.
fn quad(i: u32) -> vec4<u32> {
    return split(wq[i]);
}

// Word i of the scales.
fn ws_word(i: u32) -> u32 {
    return u32(ws[i >> 1u] >> ((i & 1u) * 32u));
}

// Words 2i and 2i + 1 of the scales, one load.
fn ws_pair(i: u32) -> vec2<u32> {
    let q = ws[i];
    return vec2<u32>(u32(q), u32(q >> 32u));
}
