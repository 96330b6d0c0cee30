//! The linear kernels against the CPU reference, in every format, mode and shape; the
//! subgroup facts the subgroup shape relies on; packing and tiling.

use super::*;
use crate::gpu::{Binding, KernelSpec};
use crate::model::GgmlType;
use crate::model::quant::quantize;
use crate::ops::pseudo_random;
use crate::ops::testing::{assert_close, ctx, step, upload_f32};

fn run(ty: GgmlType, rows: usize, cols: usize, n: usize, mode: Mode, tt: u32, shape: Shape) {
    run_norm(ty, rows, cols, n, mode, tt, shape, false)
}

#[allow(clippy::too_many_arguments)]
fn run_norm(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n: usize,
    mode: Mode,
    tt: u32,
    shape: Shape,
    norm: bool,
) {
    let ctx = ctx();
    let wf = pseudo_random(rows * cols, 7 + rows as u64, 1.0);
    let w = quantize(ty, &wf).expect("whole blocks");
    let x = pseudo_random(n * cols, 11, 1.0);
    let g = pseudo_random(cols, 12, 2.0);
    let out_rows = invocation_rows(rows, mode);
    let y0 = pseudo_random(n * out_rows, 13, 1.0);
    let mut want = y0.clone();
    let mut xin = x.clone();
    if norm {
        crate::ops::rmsnorm::reference(&x, &g, 1e-5, &mut xin);
    }
    reference(ty, &w, rows, cols, mode, &xin, &mut want).expect("reference");
    let gw = pack(ty, &w, rows, cols)
        .expect("pack")
        .upload(&ctx, "w")
        .expect("upload");
    // Both word sizes, forced, where the device has 64-bit integers (on CPU adapters the
    // 64-bit words are the default), for the shapes the backends use (the other shapes
    // once: each variant is a pipeline that lavapipe compiles, and compiling dominates
    // these tests' time).
    let primary = shape == Shape::ROW_PER_INVOCATION || Shape::subgroup_for(&ctx) == Some(shape);
    let words: &[Words] = if ctx.has_int64() && primary {
        &[Words::Wide, Words::Narrow]
    } else {
        &[Words::Widest]
    };
    for &words in words {
        let v = Variant {
            tokens_per_invocation: tt,
            norm_eps: norm.then_some(1e-5),
            words,
            ..Variant::new(mode, shape)
        };
        let k = kernel(&ctx, &gw, &v).expect("kernel");
        let xb = upload_f32(&ctx, &x);
        let gb = upload_f32(&ctx, &g);
        let yb = upload_f32(&ctx, &y0);
        let st = step(&ctx, n as u32, 0);
        let extras = Extras {
            norm: norm.then_some(&gb),
            ..Default::default()
        };
        let bg = bind(&ctx, &k, &st, &xb, &gw, &yb, extras);
        crate::ops::run_bound(&ctx, &[(&k, &bg, groups(rows, n, &v))]);
        let got = ctx.read_f32(&yb, n * out_rows).expect("readback");
        let what = format!(
            "{} {mode:?} n={n} tt={tt} norm={norm} {shape:?} {words:?}",
            ty.name()
        );
        assert_close(&what, &got, &want, 2e-4);
    }
}

/// Every shape the tests cover: the two thread shapes, a thread shape with 4
/// threads per row, and where the adapter has subgroups the adapter's subgroup shape
/// plus subgroup shapes with several subgroups per workgroup taking slots in turn
/// (slot counts that do not divide the rows, and more slots than rows).
fn all_shapes() -> Vec<Shape> {
    let ctx = ctx();
    let mut v = vec![
        Shape::ROW_PER_INVOCATION,
        Shape::WORKGROUP_REDUCE,
        Shape::Threads {
            threads_per_row: 4,
            workgroup: 64,
            rows_per_thread: 3,
        },
        Shape::Threads {
            threads_per_row: 1,
            workgroup: 8,
            rows_per_thread: 1,
        },
        Shape::ROW_PER_INVOCATION.fitted(48),
    ];
    if let Some((_, max)) = ctx.subgroup_sizes() {
        v.extend(Shape::subgroup_for(&ctx));
        for (subgroups, rows) in [(1, 3), (4, 7), (2, 64)] {
            v.push(Shape::Subgroup {
                workgroup: max * subgroups,
                rows_per_workgroup: rows,
            });
        }
    }
    v
}

/// The fused RMSNorm input (norm weight at binding 5) matches norm-then-linear.
#[test]
fn fused_norm_matches() {
    for shape in all_shapes() {
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            run_norm(ty, 64, 576, 1, Mode::Store, 1, shape, true);
            run_norm(ty, 64, 128, 3, Mode::SwiGlu, 4, shape, true);
        }
    }
}

/// The norm chain: a residual kernel with `norm_out` (576 rows over inputs of 1536,
/// as the down projection) leaves the new residual, its product with the next norm's
/// weight and partial sums of squares; a SwiGLU kernel with `norm_partials` reads
/// them. Against the CPU composition (residual add, RMSNorm, SwiGLU), for decode and
/// a prefill of 5 tokens (4 a thread, a partial run), both word sizes.
#[test]
fn norm_chain_matches_residual_then_rmsnorm_then_linear() {
    let ctx = ctx();
    let (d, f, ty) = (576, 1536, GgmlType::Q4_1);
    let down = quantize(ty, &pseudo_random(d * f, 21, 1.0)).expect("blocks");
    let gate_up = quantize(ty, &pseudo_random(2 * f * d, 22, 0.25)).expect("blocks");
    let g = pseudo_random(d, 23, 2.0);
    let down_w = pack(ty, &down, d, f)
        .expect("pack")
        .upload(&ctx, "down")
        .expect("up");
    let gu_w = pack(ty, &gate_up, 2 * f, d)
        .expect("pack")
        .upload(&ctx, "gu")
        .expect("up");
    let words: &[Words] = if ctx.has_int64() {
        &[Words::Wide, Words::Narrow]
    } else {
        &[Words::Widest]
    };
    for (n, tt) in [(1, 1), (5, 4)] {
        let h = pseudo_random(n * f, 24, 1.0);
        let x0 = pseudo_random(n * d, 25, 3.0);
        let mut x1 = x0.clone();
        reference(ty, &down, d, f, Mode::Accumulate, &h, &mut x1).expect("reference");
        let mut normed = vec![0f32; n * d];
        crate::ops::rmsnorm::reference(&x1, &g, 1e-5, &mut normed);
        let mut want = vec![0f32; n * f];
        reference(ty, &gate_up, 2 * f, d, Mode::SwiGlu, &normed, &mut want).expect("ref");
        for &words in words {
            let residual = Variant {
                tokens_per_invocation: tt,
                norm_out: true,
                words,
                ..Variant::new(Mode::Accumulate, Shape::ROW_PER_INVOCATION.fitted(d))
            };
            let partials = norm_out_partials(d, &residual);
            let normed_v = Variant {
                tokens_per_invocation: tt,
                norm_eps: Some(1e-5),
                norm_partials: partials,
                words,
                ..Variant::new(Mode::SwiGlu, Shape::ROW_PER_INVOCATION.fitted(f))
            };
            let (hb, xb, gb) = (
                upload_f32(&ctx, &h),
                upload_f32(&ctx, &x0),
                upload_f32(&ctx, &g),
            );
            let xn = upload_f32(&ctx, &vec![0.0; n * d]);
            let ssq = upload_f32(&ctx, &vec![0.0; n * partials as usize]);
            let yb = upload_f32(&ctx, &vec![0.0; n * f]);
            let st = step(&ctx, n as u32, 0);
            let k1 = kernel(&ctx, &down_w, &residual).expect("kernel");
            let k2 = kernel(&ctx, &gu_w, &normed_v).expect("kernel");
            let chain = Extras {
                norm: Some(&gb),
                partials: Some(&ssq),
                norm_out: Some(&xn),
                ..Default::default()
            };
            let reads = Extras {
                partials: Some(&ssq),
                ..Default::default()
            };
            let bg1 = bind(&ctx, &k1, &st, &hb, &down_w, &xb, chain);
            let bg2 = bind(&ctx, &k2, &st, &xn, &gu_w, &yb, reads);
            crate::ops::run_bound(
                &ctx,
                &[
                    (&k1, &bg1, groups(d, n, &residual)),
                    (&k2, &bg2, groups(2 * f, n, &normed_v)),
                ],
            );
            let what = format!("norm chain n={n} {words:?}");
            let got_x = ctx.read_f32(&xb, n * d).expect("readback");
            assert_close(&format!("{what} residual"), &got_x, &x1, 2e-4);
            let want_xn: Vec<f32> = x1
                .chunks(d)
                .flat_map(|r| r.iter().zip(&g).map(|(a, b)| a * b))
                .collect();
            let got_xn = ctx.read_f32(&xn, n * d).expect("readback");
            assert_close(&format!("{what} x * weight"), &got_xn, &want_xn, 2e-4);
            let got_ss = ctx.read_f32(&ssq, n * partials as usize).expect("readback");
            for (t, row) in x1.chunks(d).enumerate() {
                let ss: f32 = row.iter().map(|v| v * v).sum();
                let p: f32 = got_ss[t * partials as usize..][..partials as usize]
                    .iter()
                    .sum();
                assert!((p - ss).abs() <= 1e-4 * ss, "{what} token {t}: {p} vs {ss}");
            }
            let got = ctx.read_f32(&yb, n * f).expect("readback");
            assert_close(&format!("{what} swiglu"), &got, &want, 2e-4);
        }
    }
}

/// Every weight format in every shape, decode (n=1) and prefill (n=5, 4 tokens per
/// invocation), GPU within 2e-4·(1+|y|) of the CPU reference. 40 rows of 288: 9
/// groups, so a subgroup's lanes get unequal numbers of groups.
#[test]
fn gpu_matches_cpu_for_every_format() {
    for shape in all_shapes() {
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q5_K,
        ] {
            let cols = if ty.block_elems() == 256 { 512 } else { 288 };
            run(ty, 40, cols, 1, Mode::Store, 1, shape);
            run(ty, 40, cols, 5, Mode::Store, 4, shape);
        }
    }
}

/// The fused residual add, SwiGLU and GeGLU modes, in every shape.
#[test]
fn fused_modes_and_shapes() {
    for shape in all_shapes() {
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            run(ty, 48, 96, 1, Mode::Accumulate, 1, shape);
            run(ty, 48, 96, 3, Mode::SwiGlu, 2, shape);
            run(ty, 48, 96, 3, Mode::GeGlu, 2, shape);
            run(ty, 200, 576, 6, Mode::Store, 4, shape);
            run(ty, 1536, 576, 1, Mode::Store, 1, shape);
        }
    }
}

/// The subgroup facts [`Shape::Subgroup`] relies on, checked on the adapter itself
/// (a probe kernel, 18 values over subgroups of S lanes, as a 576-wide row's 18
/// groups): `subgroup_size` lies in the adapter's range and subgroups are runs of S
/// consecutive invocations; `subgroupAdd` after a loop whose trip count differs
/// between lanes sums every lane (what the kernel does); inside such a loop, or
/// under `if lane == 0`, it sums only the lanes still active there, so lanes that
/// left the loop early get partial sums. That last form is how a probe of this
/// shape read wrong sums for some rows: llvmpipe is right, the probe was not.
#[test]
fn subgroup_add_sums_the_active_lanes() {
    const PROBE: KernelSpec = KernelSpec {
        name: "subgroup probe",
        source: r#"
override WG: u32 = 8u;
override N: u32 = 18u;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32, @builtin(subgroup_size) sgs: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let o = li * 5u;
    out[o] = sgs;
    out[o + 1u] = subgroupBroadcastFirst(li);
    var after = 0u;
    for (var g = lane; g < N; g += sgs) {
        after += g + 1u;
    }
    out[o + 2u] = subgroupAdd(after);
    var inside = 0u;
    for (var g = lane; g < N; g += sgs) {
        inside += subgroupAdd(g + 1u);
    }
    out[o + 3u] = inside;
    var branch = 0u;
    if lane == 0u {
        branch = subgroupAdd(1u);
    }
    out[o + 4u] = branch;
}
"#,
        bindings: &[Binding::ReadWrite],
    };
    let ctx = ctx();
    let Some((min, max)) = ctx.subgroup_sizes() else {
        assert!(Shape::subgroup_for(&ctx).is_none());
        return;
    };
    let n = 18u32;
    for wg in [max, 4 * max] {
        let k = ctx
            .kernel(&PROBE, &[("WG", wg as f64), ("N", n as f64)])
            .expect("probe kernel");
        let out = ctx
            .storage("probe", (wg * 5 * 4) as u64)
            .expect("probe buffer");
        crate::ops::run_once(&ctx, &k, &[&out], (1, 1, 1));
        let bytes = ctx.read_back(&out, (wg * 5 * 4) as u64).expect("readback");
        let v: Vec<u32> = bytemuck::cast_slice(&bytes).to_vec();
        let full = n * (n + 1) / 2;
        for li in 0..wg {
            let r = &v[(li * 5) as usize..(li * 5 + 5) as usize];
            let (s, lane) = (r[0], li % r[0].max(1));
            assert!(
                (min..=max).contains(&s),
                "subgroup size {s} not in {min}..={max}"
            );
            assert_eq!(
                r[1],
                li - lane,
                "invocation {li}: subgroups are consecutive runs"
            );
            assert_eq!(r[2], full, "invocation {li}: add after the loop");
            // Inside the loop: iteration k adds the lanes m with m + kS < N.
            let inside: u32 = (0..)
                .map(|k| k * s)
                .take_while(|&base| lane + base < n)
                .map(|base| {
                    (0..s)
                        .filter(|m| m + base < n)
                        .map(|m| m + base + 1)
                        .sum::<u32>()
                })
                .sum();
            assert_eq!(r[3], inside, "invocation {li}: add inside the loop");
            assert_eq!(
                r[4],
                u32::from(lane == 0),
                "invocation {li}: add under a branch"
            );
        }
        // Lanes past N mod S leave the loop one iteration early: their in-loop sums
        // are short, the after-loop ones are not.
        if !n.is_multiple_of(max) {
            assert!(v[(max - 1) as usize * 5 + 3] < full);
        }
    }
}

/// The rows per invocation fitted to the default model's matrices: whole workgroups
/// in even numbers, as many rows per invocation as allowed; other shapes, and row
/// counts with no such split, unchanged.
#[test]
fn fitted_shapes_split_rows_evenly() {
    let rpi = |slots| match Shape::ROW_PER_INVOCATION.fitted(slots) {
        Shape::Threads {
            rows_per_thread, ..
        } => rows_per_thread,
        s => panic!("{s:?}"),
    };
    assert_eq!(rpi(576), 18);
    assert_eq!(rpi(1536), 24);
    assert_eq!(rpi(480), 15);
    assert_eq!(rpi(49152), 24);
    assert_eq!(rpi(40), 24);
    assert_eq!(Shape::WORKGROUP_REDUCE.fitted(576), Shape::WORKGROUP_REDUCE);
    for slots in [576, 1536, 480, 49152] {
        let v = Variant::new(Mode::Store, Shape::ROW_PER_INVOCATION.fitted(slots));
        let (wgs, ..) = groups(slots, 1, &v);
        assert_eq!(wgs as usize * v.shape.rows_per_workgroup() as usize, slots);
        assert!(wgs.is_multiple_of(2));
    }
}

/// Tiled weights ([`PackedWeight::tiled`] by [`tile_rows`]) give the row-major
/// results: Q4_1 rows of 576 (spans of 2 groups), Q8_0 rows of 288 (9 groups,
/// spans of 1) and Q2_K rows of 512 (16 bytes of scales a group), storing, SwiGLU
/// and prefill, both word sizes; tiling moves every
/// group exactly once, and what cannot be tiled is refused.
#[test]
fn tiled_weights_match_row_major() {
    let ctx = ctx();
    let words: &[Words] = if ctx.has_int64() {
        &[Words::Wide, Words::Narrow]
    } else {
        &[Words::Widest]
    };
    let shape = Shape::ROW_PER_INVOCATION;
    for (ty, rows, cols, mode, n, tt) in [
        (GgmlType::Q4_1, 384, 576, Mode::Store, 1, 1),
        (GgmlType::Q8_0, 2 * 192, 288, Mode::SwiGlu, 5, 4),
        // Four f32 scales a group.
        (GgmlType::Q2_K, 384, 512, Mode::Store, 5, 4),
    ] {
        let w = quantize(ty, &pseudo_random(rows * cols, 31, 1.0)).expect("blocks");
        let x = pseudo_random(n * cols, 32, 1.0);
        let out_rows = invocation_rows(rows, mode);
        let mut want = vec![0f32; n * out_rows];
        reference(ty, &w, rows, cols, mode, &x, &mut want).expect("reference");
        for &words in words {
            let v = Variant {
                tokens_per_invocation: tt,
                words,
                ..Variant::new(mode, shape.fitted(out_rows))
            };
            let tile = tile_rows(rows, &v);
            assert!(tile > 0, "{rows} rows tile for {v:?}");
            let packed = pack(ty, &w, rows, cols).expect("pack");
            let tiled = packed.clone().tiled(tile).expect("whole tiles");
            let mut q = tiled.quants.clone();
            q.sort_unstable();
            let mut q0 = packed.quants.clone();
            q0.sort_unstable();
            assert_eq!(q, q0, "a permutation of the quants");
            assert!(packed.clone().tiled(tile + 1).is_err());
            assert!(tiled.clone().tiled(tile).is_err());
            assert!(PackedWeight::concat(std::slice::from_ref(&tiled)).is_err());
            let gw = tiled.upload(&ctx, "w").expect("upload");
            let k = kernel(&ctx, &gw, &v).expect("kernel");
            let (xb, yb) = (
                upload_f32(&ctx, &x),
                upload_f32(&ctx, &vec![0.0; n * out_rows]),
            );
            let st = step(&ctx, n as u32, 0);
            let bg = bind(&ctx, &k, &st, &xb, &gw, &yb, Extras::default());
            crate::ops::run_bound(&ctx, &[(&k, &bg, groups(rows, n, &v))]);
            let got = ctx.read_f32(&yb, n * out_rows).expect("readback");
            assert_close(
                &format!("tiled {} {mode:?} {words:?}", ty.name()),
                &got,
                &want,
                2e-4,
            );
        }
    }
}

/// Q8_0 and Q4_1 keep their on-disk size on the GPU; stacking concatenates rows.
#[test]
fn packing_sizes_and_concat() {
    let w = quantize(GgmlType::Q8_0, &pseudo_random(64 * 3, 1, 1.0)).expect("q8");
    let p = pack(GgmlType::Q8_0, &w, 3, 64).expect("pack");
    assert_eq!(p.gpu_bytes(), w.len());
    let w1 = quantize(GgmlType::Q4_1, &pseudo_random(64 * 2, 2, 1.0)).expect("q4");
    let p1 = pack(GgmlType::Q4_1, &w1, 2, 64).expect("pack");
    assert_eq!(p1.gpu_bytes(), w1.len());
    assert!(PackedWeight::concat(&[p.clone(), p1.clone()]).is_err());
    let both = PackedWeight::concat(&[p.clone(), p]).expect("same format");
    assert_eq!(both.rows, 6);
    assert!(pack(GgmlType::Q8_0, &w[..30], 3, 64).is_err());
}

/// GPU bytes per 32-element group of the types whose quants are widened (file bytes
/// per group in the comments): what a model in these types costs in GPU memory.
#[test]
fn widened_formats_bytes_per_group() {
    for (ty, fmt, bytes) in [
        (GgmlType::Q5_0, 2, 34), // 22
        (GgmlType::Q5_1, 6, 40), // 24
        (GgmlType::Q5_K, 6, 40), // 22
        (GgmlType::Q3_K, 5, 40), // 13.75
        (GgmlType::Q2_K, 7, 32), // 10.5
    ] {
        let (rows, cols) = (3, 512);
        let w = quantize(ty, &pseudo_random(rows * cols, 3, 1.0)).expect("blocks");
        let p = pack(ty, &w, rows, cols).expect("pack");
        assert_eq!(p.fmt, fmt, "{}", ty.name());
        assert_eq!(p.gpu_bytes(), rows * cols / 32 * bytes, "{}", ty.name());
        assert!(
            pack(ty, &w, rows, 256).is_err(),
            "{}: wrong shape",
            ty.name()
        );
    }
}
