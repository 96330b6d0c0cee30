// Causal attention with GQA over the KV cache: query head h of token t (at position
// start_pos + t) attends positions 0..=pos of KV head h / (NH / NKV) (only the last
// WINDOW of them when WINDOW > 0: a sliding-window layer), scale SCALE, softmax in f32.
// HD <= 128 (256 in the grouped layout). What the layouts share (constants, bindings);
// attention_softmax.wgsl (the online softmax), attention_kv32.wgsl or attention_kv64.wgsl
// (the caches), then one of attention_heads.wgsl (GPUs), attention_groups.wgsl or
// attention_lanes.wgsl (CPU adapters) follow with the entry point.
override HD: u32 = 64u;
override NH: u32 = 4u;
override NKV: u32 = 2u;
override SCALE: f32 = 0.125;
override WINDOW: u32 = 0u;

struct Step {
    n_tokens: u32,
    start_pos: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> st: Step;
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
// Bindings 2 (kc) and 3 (vc), the K and V caches, and their accessors kq, vq:
// attention_kv32.wgsl or attention_kv64.wgsl.
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

// The first position a query at `pos` attends.
fn first_position(pos: u32) -> u32 {
    return select(0u, pos + 1u - WINDOW, WINDOW > 0u && pos + 1u > WINDOW);
}

// The grouped layouts (CPU adapters) run a workgroup per (KV head, `gc` of its query
// heads, token): workgroup `group`'s KV head and the first of its query heads.
fn grouped_heads(group: u32, gc: u32) -> vec2<u32> {
    let g = NH / NKV;
    let chunks = g / gc;
    let kvh = group / chunks;
    return vec2<u32>(kvh, kvh * g + (group % chunks) * gc);
}
