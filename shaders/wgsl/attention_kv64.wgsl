// The attention kernel's K and V caches read as 64-bit words (SHADER_INT64), half the
// load instructions of f32 vec4s on llvmpipe (see linear_words64.wgsl); same bytes.
@group(0) @binding(2) var<storage, read> kc: array<vec2<u64>>;
@group(0) @binding(3) var<storage, read> vc: array<vec2<u64>>;

fn f32x4(q: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(q.x), u32(q.x >> 32u), u32(q.y), u32(q.y >> 32u)));
}

// K cache vec4 i.
fn kq(i: u32) -> vec4<f32> {
    return f32x4(kc[i]);
}

// V cache vec4 i.
fn vq(i: u32) -> vec4<f32> {
    return f32x4(vc[i]);
}
