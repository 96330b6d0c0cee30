// The linear kernel's input and quants read as 32-bit words (adapters without 64-bit
// integers): quants 16 bytes per vec4<u32> load, through quant_words32.wgsl.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;

// Input vec4 i.
fn xq(i: u32) -> vec4<f32> {
    return x[i];
}
