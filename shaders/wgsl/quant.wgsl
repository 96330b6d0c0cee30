// Dequantization of one 32-element group of a weight row, prepended to the kernels that
// read quantized weights (linear, embed). The including kernel declares `quad(i)`, the
// i-th 16 bytes of the quants (every format's group starts on a 16-byte boundary),
// `ws_word(i)`, the i-th 32-bit word of the scales, and `ws_pair(i)`, words 2i, 2i + 1. Upload layouts (see ops/linear.rs, `pack`):
//   FMT 0 F32: 32 f32 per group          FMT 1 F16: 16 words of two f16
//   FMT 2 i8 quants + f16 scale (Q8_0, Q5_0)
//   FMT 3 nibbles + f16 (d, m) (Q4_1)
//   FMT 4 nibbles + f32 (d, m) (Q4_0, Q4_K)
//   FMT 5 i8 quants + two f32 scales, one per 16 elements (Q6_K, Q3_K)
//   FMT 6 i8 quants + f32 (d, m) (Q5_1, Q5_K)
//   FMT 7 nibbles + f32 (d, m) per 16 elements: (d0, m0, d1, m1) a group (Q2_K)
// Nibble groups: word w holds elements 4w..4w+3 in its low nibbles, 16+4w.. in its high.
// An element is d * w + m (FMTs 5 and 7 fold their half-group scales into w).
override FMT: u32 = 3u;
override K: u32 = 32u;
override NG: u32 = K / 32u;
// Groups per span of the linear kernels' group loops: 2 where a row has an even number
// of groups, so that both groups' scales come from one load (linear.wgsl, span_scales).
override GS: u32 = 2u - NG % 2u;
// Rows per tile of the packed layout (PackedWeight::tiled), 0 for row-major.
override TILE: u32 = 0u;

// Index (in groups) of group g of row `row` in the packed quants and scales: row-major,
// or in tiles of TILE rows stored span by span (each row's GS groups of a span kept
// together, so a span's quants and scales stay adjacent): a linear kernel's workgroup,
// reading its TILE rows span by span, then streams through one contiguous run of memory
// instead of TILE runs a row apart.
fn gidx(row: u32, g: u32) -> u32 {
    if TILE == 0u {
        return row * NG + g;
    }
    // max(): naga rejects a modulo by the constant 0 even on the branch not taken.
    let r = row % max(TILE, 1u);
    return (row - r) * NG + (g - g % GS) * TILE + r * GS + g % GS;
}

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
    let gi = gidx(row, g);
    switch FMT {
        case 0u: {
            for (var i = 0u; i < 8u; i++) {
                r.w[i] = bitcast<vec4<f32>>(quad(gi * 8u + i));
            }
        }
        case 1u: {
            for (var i = 0u; i < 4u; i++) {
                let q = quad(gi * 4u + i);
                r.w[2u * i] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
                r.w[2u * i + 1u] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
            }
        }
        case 2u: {
            for (var j = 0u; j < 2u; j++) {
                let q = quad(gi * 2u + j);
                r.w[4u * j] = i8x4(q.x);
                r.w[4u * j + 1u] = i8x4(q.y);
                r.w[4u * j + 2u] = i8x4(q.z);
                r.w[4u * j + 3u] = i8x4(q.w);
            }
            r.d = unpack2x16float(ws_word(gi >> 1u))[gi & 1u];
        }
        case 3u, 4u: {
            let q = quad(gi);
            r.w[0] = nib_lo(q.x);
            r.w[1] = nib_lo(q.y);
            r.w[2] = nib_lo(q.z);
            r.w[3] = nib_lo(q.w);
            r.w[4] = nib_hi(q.x);
            r.w[5] = nib_hi(q.y);
            r.w[6] = nib_hi(q.z);
            r.w[7] = nib_hi(q.w);
            if FMT == 3u {
                let dm = unpack2x16float(ws_word(gi));
                r.d = dm.x;
                r.m = dm.y;
            } else {
                let dm = bitcast<vec2<f32>>(ws_pair(gi));
                r.d = dm.x;
                r.m = dm.y;
            }
        }
        case 6u: {
            for (var j = 0u; j < 2u; j++) {
                let q = quad(gi * 2u + j);
                r.w[4u * j] = i8x4(q.x);
                r.w[4u * j + 1u] = i8x4(q.y);
                r.w[4u * j + 2u] = i8x4(q.z);
                r.w[4u * j + 3u] = i8x4(q.w);
            }
            let dm = bitcast<vec2<f32>>(ws_pair(gi));
            r.d = dm.x;
            r.m = dm.y;
        }
        case 7u: {
            // n * d + m is the CPU's d * n - dmin * m: n * d is exact (small integers
            // times an f32 with a short mantissa), so one rounding either way.
            let q = quad(gi);
            let a = bitcast<vec2<f32>>(ws_pair(2u * gi));
            let b = bitcast<vec2<f32>>(ws_pair(2u * gi + 1u));
            r.w[0] = nib_lo(q.x) * a.x + a.y;
            r.w[1] = nib_lo(q.y) * a.x + a.y;
            r.w[2] = nib_lo(q.z) * a.x + a.y;
            r.w[3] = nib_lo(q.w) * a.x + a.y;
            r.w[4] = nib_hi(q.x) * b.x + b.y;
            r.w[5] = nib_hi(q.y) * b.x + b.y;
            r.w[6] = nib_hi(q.z) * b.x + b.y;
            r.w[7] = nib_hi(q.w) * b.x + b.y;
        }
        case 5u: {
            let sc = bitcast<vec2<f32>>(ws_pair(gi));
            let s0 = sc.x;
            let s1 = sc.y;
            let q0 = quad(gi * 2u);
            let q1 = quad(gi * 2u + 1u);
            r.w[0] = i8x4(q0.x) * s0;
            r.w[1] = i8x4(q0.y) * s0;
            r.w[2] = i8x4(q0.z) * s0;
            r.w[3] = i8x4(q0.w) * s0;
            r.w[4] = i8x4(q1.x) * s1;
            r.w[5] = i8x4(q1.y) * s1;
            r.w[6] = i8x4(q1.z) * s1;
            r.w[7] = i8x4(q1.w) * s1;
        }
        default: {}
    }
    return r;
}
