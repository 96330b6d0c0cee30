// Dequantization of one 32-element group of a weight row, prepended to the kernels that
// read quantized weights (linear, embed). The including kernel declares `wq` (quants,
// array<u32>) and `ws` (scales, array<u32>). Upload layouts (see ops/linear.rs, `pack`):
//   FMT 0 F32: 32 f32 per group          FMT 1 F16: 16 words of two f16
//   FMT 2 i8 quants + f16 scale (Q8_0)   FMT 3 nibbles + f16 (d, m) (Q4_1)
//   FMT 4 nibbles + f32 (d, m) (Q4_0, Q4_K)
//   FMT 5 i8 quants + two f32 scales, one per 16 elements (Q6_K)
// Nibble groups: word w holds elements 4w..4w+3 in its low nibbles, 16+4w.. in its high.
// An element is d * w + m.
override FMT: u32 = 3u;
override K: u32 = 32u;
override NG: u32 = K / 32u;

struct Group {
    w: array<vec4<f32>, 8>,
    d: f32,
    m: f32,
}

fn nib_lo(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(15u));
}

fn nib_hi(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q >> 4u, q >> 12u, q >> 20u, q >> 28u) & vec4<u32>(15u));
}

fn i8x4(q: u32) -> vec4<f32> {
    let v = vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q));
    return vec4<f32>(v >> vec4<u32>(24u));
}

fn load_group(row: u32, g: u32) -> Group {
    var r: Group;
    r.d = 1.0;
    r.m = 0.0;
    let gi = row * NG + g;
    switch FMT {
        case 0u: {
            let b = gi * 32u;
            for (var i = 0u; i < 8u; i++) {
                let o = b + 4u * i;
                r.w[i] = vec4<f32>(bitcast<f32>(wq[o]), bitcast<f32>(wq[o + 1u]), bitcast<f32>(wq[o + 2u]), bitcast<f32>(wq[o + 3u]));
            }
        }
        case 1u: {
            let b = gi * 16u;
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = vec4<f32>(unpack2x16float(wq[b + 2u * i]), unpack2x16float(wq[b + 2u * i + 1u]));
            }
        }
        case 2u: {
            let b = gi * 8u;
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = i8x4(wq[b + i]);
            }
            r.d = unpack2x16float(ws[gi >> 1u])[gi & 1u];
        }
        case 3u, 4u: {
            let b = gi * 4u;
            for (var i = 0u; i < 4u; i++) {
                let q = wq[b + i];
                r.w[i] = nib_lo(q);
                r.w[i + 4u] = nib_hi(q);
            }
            if FMT == 3u {
                let dm = unpack2x16float(ws[gi]);
                r.d = dm.x;
                r.m = dm.y;
            } else {
                r.d = bitcast<f32>(ws[2u * gi]);
                r.m = bitcast<f32>(ws[2u * gi + 1u]);
            }
        }
        case 5u: {
            let b = gi * 8u;
            let s0 = bitcast<f32>(ws[2u * gi]);
            let s1 = bitcast<f32>(ws[2u * gi + 1u]);
            for (var i = 0u; i < 4u; i++) {
                r.w[i] = i8x4(wq[b + i]) * s0;
                r.w[i + 4u] = i8x4(wq[b + 4u + i]) * s1;
            }
        }
        default: {}
    }
    return r;
}
