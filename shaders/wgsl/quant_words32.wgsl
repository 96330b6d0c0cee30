// Quantized weights bound as 32-bit words (binding 2: quants, binding 3: scales) and
// their accessors, shared by the kernels that read a packed table that way.
@group(0) @binding(2) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> ws: array<u32>;

// Bytes 16i..16i+15 of the quants as four words.
fn quad(i: u32) -> vec4<u32> {
    return wq[i];
}

// Word i of the scales.
fn ws_word(i: u32) -> u32 {
    return ws[i];
}

// Words 2i and 2i + 1 of the scales.
fn ws_pair(i: u32) -> vec2<u32> {
    return vec2<u32>(ws[2u * i], ws[2u * i + 1u]);
}
