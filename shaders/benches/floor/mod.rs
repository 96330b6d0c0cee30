//! Floors under a decode token on this adapter, shared by the benches: the time to read
//! the model's bytes with the cheapest load found (`kernels -- loads`), and the time of
//! the Q4_1 group arithmetic alone (linear.wgsl's `group_dot` on quants made in
//! registers). A kernel that reads and multiplies those weights costs at least their sum.

use cocoon_shaders::gpu::{Binding, GpuContext, KernelSpec};

/// Each lane XORs `vec2<u64>`s, lane l of a workgroup reading words 8i + l of the
/// workgroup's run of N * 8.
const READ: KernelSpec = KernelSpec {
    name: "read floor",
    source: "override N: u32 = 512u;\n\
        @group(0) @binding(0) var<storage, read> w: array<vec2<u64>>;\n\
        @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
        @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
            @builtin(workgroup_id) wid: vec3<u32>) {\n\
          let base = wid.x * N * 8u + l;\n\
          var s = vec2<u64>(0lu);\n\
          for (var i = 0u; i < N; i += 8u) {\n\
            let b = base + i * 8u;\n\
            s ^= w[b] ^ w[b + 8u] ^ w[b + 16u] ^ w[b + 24u] ^ w[b + 32u] ^ w[b + 40u]\n\
              ^ w[b + 48u] ^ w[b + 56u];\n\
          }\n\
          let t = s.x ^ s.y;\n\
          o[wid.x * 8u + l] = u32(t) ^ u32(t >> 32u);\n\
        }",
    bindings: &[Binding::Read, Binding::ReadWrite],
};
const READ_PER_WORKGROUP: usize = 512 * 8 * 16;

/// N groups a lane: the masked nibbles, converts and fmas of `group_dot` (FMT 3) and the
/// scales' fma, on quants from a 32-bit LCG step per word (8 of the ~100 vector ops).
pub const Q4_1_ARITH: KernelSpec = KernelSpec {
    name: "Q4_1 arithmetic floor",
    source: "override N: u32 = 1024u;\n\
        @group(0) @binding(0) var<storage, read_write> o: array<f32>;\n\
        const M = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);\n\
        fn nib(q: u32) -> vec4<f32> { return vec4<f32>(vec4<u32>(q) & M); }\n\
        fn hsum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }\n\
        @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
            @builtin(workgroup_id) wid: vec3<u32>) {\n\
          var x: array<vec4<f32>, 8>;\n\
          for (var i = 0u; i < 8u; i++) { x[i] = vec4<f32>(f32(l + i), 0.5, 0.25, 0.125); }\n\
          var q = vec4<u32>(l * 0x9e3779b9u + wid.x, l, l ^ 0x55u, l + 7u);\n\
          var acc = 0.0;\n\
          for (var i = 0u; i < N; i++) {\n\
            q = q * 1664525u + vec4<u32>(1013904223u);\n\
            let s = fma(nib(q.x), x[0], fma(nib(q.y), x[1], fma(nib(q.z), x[2], nib(q.w) * x[3])));\n\
            let t = fma(nib(q.x >> 4u), x[4], fma(nib(q.y >> 4u), x[5], fma(nib(q.z >> 4u), x[6], nib(q.w >> 4u) * x[7])));\n\
            acc += fma(0.01, hsum(s + t), 0.02 * x[0].x);\n\
          }\n\
          o[wid.x * 8u + l] = acc;\n\
        }",
    bindings: &[Binding::ReadWrite],
};
/// Groups a lane of [`Q4_1_ARITH`] computes.
pub const ARITH_GROUPS_PER_LANE: u32 = 1024;

/// Median seconds of 9 runs of `run` (and a wait for the device) after one warm-up
/// (llvmpipe compiles a kernel at its first dispatch).
pub fn median_seconds(ctx: &GpuContext, run: impl Fn()) -> f64 {
    let timed = || {
        let t = std::time::Instant::now();
        run();
        ctx.wait().expect("device wait");
        t.elapsed().as_secs_f64()
    };
    timed();
    let mut times: Vec<f64> = (0..9).map(|_| timed()).collect();
    times.sort_by(f64::total_cmp);
    times[4]
}

/// The floors of one model: seconds to read its tensor bytes, seconds of its Q4_1
/// arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Floors {
    pub read: f64,
    pub arith: f64,
}

impl Floors {
    /// Both floors for a model of `bytes` of tensors and `q4_1_groups` Q4_1 groups; `None`
    /// where the adapter lacks 64-bit integers.
    pub fn measure(ctx: &GpuContext, bytes: &[u8], q4_1_groups: usize) -> Option<Floors> {
        let read = read_seconds(ctx, bytes)?;
        Some(Floors {
            read,
            arith: q4_1_arith_seconds(ctx, q4_1_groups),
        })
    }

    /// Tokens per second if a token only read the weights.
    pub fn read_tps(&self) -> f64 {
        1.0 / self.read
    }

    /// Tokens per second if a token only read the weights and did the Q4_1 arithmetic.
    pub fn read_arith_tps(&self) -> f64 {
        1.0 / (self.read + self.arith)
    }
}

/// Seconds to read `bytes` once (whole 64 KiB runs of it), one dispatch. `None` where the
/// adapter lacks 64-bit integers.
fn read_seconds(ctx: &GpuContext, bytes: &[u8]) -> Option<f64> {
    if !ctx.has_int64() {
        return None;
    }
    let groups = bytes.len() / READ_PER_WORKGROUP;
    let w = ctx
        .storage_init("read floor", &bytes[..groups * READ_PER_WORKGROUP])
        .expect("weights-sized buffer");
    let o = ctx
        .storage("read floor out", (groups * 8 * 4) as u64)
        .expect("out");
    let k = ctx.kernel(&READ, &[]).expect("read kernel");
    let bg = ctx.bind_group(&k, &[&w, &o]);
    Some(median_seconds(ctx, || {
        cocoon_shaders::ops::run_bound(ctx, &[(&k, &bg, (groups as u32, 1, 1))]);
    }))
}

/// Seconds of the arithmetic of `groups` Q4_1 groups (rounded up to whole workgroups of
/// 8 lanes), one dispatch.
fn q4_1_arith_seconds(ctx: &GpuContext, groups: usize) -> f64 {
    let per_workgroup = 8 * ARITH_GROUPS_PER_LANE as usize;
    let workgroups = groups.div_ceil(per_workgroup).max(1);
    let o = ctx
        .storage("arith out", (workgroups * 8 * 4) as u64)
        .expect("out");
    let k = ctx
        .kernel(&Q4_1_ARITH, &[("N", f64::from(ARITH_GROUPS_PER_LANE))])
        .expect("arithmetic kernel");
    let bg = ctx.bind_group(&k, &[&o]);
    median_seconds(ctx, || {
        cocoon_shaders::ops::run_bound(ctx, &[(&k, &bg, (workgroups as u32, 1, 1))]);
    })
}
