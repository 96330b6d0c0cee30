// The attention kernel's K and V caches read as f32 vec4s.
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<f32>>;

// K cache vec4 i.
fn kq(i: u32) -> vec4<f32> {
    return kc[i];
}

// V cache vec4 i.
fn vq(i: u32) -> vec4<f32> {
    return vc[i];
}
