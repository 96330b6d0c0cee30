//! The attention kernels against the CPU reference in every layout and word size, with
//! sliding windows and other scales.

use super::*;
use crate::ops::pseudo_random;
use crate::ops::testing::{assert_close, ctx, step, upload_f32};

/// Prefill (query rows after cached positions) and decode (one row), in every layout:
/// GQA 6/2 heads, contexts shorter and longer than the lanes that split positions;
/// 18/2 x 16 (9 query heads per KV head: workgroups of 3) and 4/4 x 128 (one head
/// fills the accumulators); within 1e-5.
#[test]
fn gpu_matches_cpu_prefill_and_decode() {
    let mut layouts = vec![Layout::HeadPerWorkgroup, Layout::GroupPerWorkgroup];
    if ctx().subgroup_sizes() == Some((8, 8)) {
        layouts.push(Layout::LanesOverDims);
    }
    for layout in layouts {
        for (hd, nh, nkv) in [(32, 6, 2), (16, 18, 2), (128, 4, 4)] {
            check(layout, hd, nh, nkv);
        }
    }
    assert_eq!(heads_per_workgroup(64, 9, 3), 3);
    assert_eq!(heads_per_workgroup(16, 18, 2), 3);
    assert_eq!(heads_per_workgroup(128, 8, 1), 2);
}

fn check(layout: Layout, hd: usize, nh: usize, nkv: usize) {
    let ctx = ctx();
    let qkv_w = (nh + 2 * nkv) * hd;
    let kvd = nkv * hd;
    for (start, n) in [(3usize, 4usize), (9, 1), (0, 1), (70, 3), (100, 1)] {
        let total = start + n;
        let qkv = pseudo_random(n * qkv_w, 5 + start as u64, 2.0);
        let kc = pseudo_random(total * kvd, 6, 2.0);
        let vc = pseudo_random(total * kvd, 7, 1.0);
        let mut want = vec![0f32; n * nh * hd];
        reference(&qkv, qkv_w, &kc, &vc, nh, nkv, hd, start, &mut want);
        let (qb, kb, vb) = (
            upload_f32(&ctx, &qkv),
            upload_f32(&ctx, &kc),
            upload_f32(&ctx, &vc),
        );
        let ob = upload_f32(&ctx, &vec![0.0; n * nh * hd]);
        let st = step(&ctx, n as u32, start as u32);
        // The KV caches read as 64-bit words and as f32 vec4s, where that differs.
        let wide: &[bool] = if layout == Layout::LanesOverDims && ctx.has_int64() {
            &[true, false]
        } else {
            &[false]
        };
        for &wide in wide {
            let opts = Options::causal(hd);
            let k = kernel_words(&ctx, layout, hd, nh, nkv, wide, opts).expect("kernel");
            let wg = groups(layout, hd, nh, nkv, n);
            crate::ops::run_once(&ctx, &k, &[&st, &qb, &kb, &vb, &ob], wg);
            let got = ctx.read_f32(&ob, n * nh * hd).expect("readback");
            let what =
                format!("attention {layout:?} {nh}/{nkv}x{hd} start={start} n={n} wide={wide}");
            assert_close(&what, &got, &want, 1e-5);
        }
    }
}

/// Sliding windows (smaller than, equal to and past the positions) with another
/// scale, in every layout, and Gemma 3's heads of 256 in the grouped layout.
#[test]
fn window_and_scale_match_cpu() {
    let ctx = ctx();
    let mut cases = vec![
        (Layout::HeadPerWorkgroup, 32, 4, 2),
        (Layout::GroupPerWorkgroup, 32, 4, 2),
        (Layout::GroupPerWorkgroup, 256, 4, 1),
    ];
    if ctx.subgroup_sizes() == Some((8, 8)) {
        cases.push((Layout::LanesOverDims, 32, 4, 2));
    }
    assert_eq!(layout_for(&ctx, 256), Layout::GroupPerWorkgroup);
    for (layout, hd, nh, nkv) in cases {
        let qkv_w = (nh + 2 * nkv) * hd;
        let kvd = nkv * hd;
        for (start, n, window) in [(9usize, 3usize, 4usize), (20, 1, 5), (2, 2, 8), (0, 1, 1)] {
            let opts = Options {
                scale: 0.3,
                window: Some(window),
            };
            let total = start + n;
            let qkv = pseudo_random(n * qkv_w, 11 + start as u64, 2.0);
            let kc = pseudo_random(total * kvd, 12, 2.0);
            let vc = pseudo_random(total * kvd, 13, 1.0);
            let mut want = vec![0f32; n * nh * hd];
            reference_with(&qkv, qkv_w, &kc, &vc, nh, nkv, hd, start, opts, &mut want);
            let mut unwindowed = vec![0f32; n * nh * hd];
            let plain = Options {
                window: None,
                ..opts
            };
            reference_with(
                &qkv,
                qkv_w,
                &kc,
                &vc,
                nh,
                nkv,
                hd,
                start,
                plain,
                &mut unwindowed,
            );
            if start + 1 > window {
                assert_ne!(want, unwindowed, "the window changes the result");
            }
            let (qb, kb, vb) = (
                upload_f32(&ctx, &qkv),
                upload_f32(&ctx, &kc),
                upload_f32(&ctx, &vc),
            );
            let ob = upload_f32(&ctx, &vec![0.0; n * nh * hd]);
            let st = step(&ctx, n as u32, start as u32);
            let k = kernel_with(&ctx, layout, hd, nh, nkv, opts).expect("kernel");
            let wg = groups(layout, hd, nh, nkv, n);
            crate::ops::run_once(&ctx, &k, &[&st, &qb, &kb, &vb, &ob], wg);
            let got = ctx.read_f32(&ob, n * nh * hd).expect("readback");
            let what =
                format!("attention {layout:?} {nh}/{nkv}x{hd} start={start} n={n} window={window}");
            assert_close(&what, &got, &want, 1e-5);
        }
    }
}

/// A single position returns its value row unchanged, whatever the query.
#[test]
fn one_position_returns_v() {
    let (hd, nh, nkv) = (4, 2, 1);
    let q = pseudo_random(nh * hd, 1, 3.0);
    let k = pseudo_random(hd, 2, 1.0);
    let v = pseudo_random(hd, 3, 1.0);
    let mut out = vec![0f32; nh * hd];
    reference(&q, nh * hd, &k, &v, nh, nkv, hd, 0, &mut out);
    assert_close("head 0", &out[..hd], &v, 1e-6);
    assert_close("head 1", &out[hd..], &v, 1e-6);
}
