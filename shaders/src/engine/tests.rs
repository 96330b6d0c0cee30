//! Backend tests on synthetic weights: GPU vs CPU, prefill vs decode, split ranges,
//! rewinding, and the errors a caller can provoke.

use std::sync::Arc;

use super::synthetic::{SyntheticWeights, tiny_config};
use super::*;
use crate::model::{GgmlType, RopeStyle, WeightSource};
use crate::ops::linear::Shape;
use crate::ops::pseudo_random;
use crate::ops::testing::{assert_close, ctx};

fn weights(block: GgmlType, embd: GgmlType, style: RopeStyle) -> Arc<SyntheticWeights> {
    let mut c = tiny_config();
    c.rope_style = style;
    if matches!(block, GgmlType::Q4_K | GgmlType::Q6_K) {
        // K-quants need rows of 256.
        c.d_model = 256;
        c.d_ff = 256;
        c.head_dim = 64;
    }
    Arc::new(SyntheticWeights::llama(c, block, embd, 42).expect("synthetic weights"))
}

fn hidden(n: usize, seed: u64) -> Vec<f32> {
    pseudo_random(n * tiny_config().d_model, seed, 1.0)
}

/// Prefill of 5 rows then 3 single-row decodes: returns every output row.
fn run(b: &mut dyn BlockBackend, x: &[f32]) -> Vec<f32> {
    let d = b.config().d_model;
    let id = SessionId(7);
    b.open_session(id, 64).expect("open");
    let mut out = x[..5 * d].to_vec();
    b.forward(id, 0, &mut out).expect("prefill");
    for t in 5..x.len() / d {
        let mut row = x[t * d..(t + 1) * d].to_vec();
        b.forward(id, t, &mut row).expect("decode");
        out.extend_from_slice(&row);
    }
    b.close_session(id);
    out
}

/// GPU blocks agree with the CPU reference within 1e-3·(1+|x|) (f32 sums in another
/// order through 3 blocks), for Q4_1 and Q8_0 blocks and both RoPE styles.
#[test]
fn gpu_blocks_match_cpu() {
    for (ty, style) in [
        (GgmlType::Q4_1, RopeStyle::Adjacent),
        (GgmlType::Q8_0, RopeStyle::NeoX),
        (GgmlType::Q4_K, RopeStyle::Adjacent),
        (GgmlType::Q6_K, RopeStyle::NeoX),
    ] {
        let w = weights(ty, GgmlType::Q8_0, style);
        let x = pseudo_random(8 * w.config().d_model, 3, 1.0);
        let mut cpu = CpuBlocks::new(&*w, 0..3).expect("cpu");
        let want = run(&mut cpu, &x);
        assert!(
            want.iter().zip(&x).any(|(a, b)| (a - b).abs() > 0.1),
            "blocks changed nothing"
        );
        // Every kernel shape: one row per invocation with separate norms (CPU adapters),
        // workgroup reduction with norms fused into the linears (GPUs), and the subgroup
        // shape where the adapter has subgroups.
        let shapes = [Shape::ROW_PER_INVOCATION, Shape::WORKGROUP_REDUCE]
            .into_iter()
            .chain(Shape::subgroup_for(&ctx()));
        for shape in shapes {
            let mut gpu = GpuBlocks::with_shape(ctx(), &*w, 0..3, shape).expect("gpu");
            let got = run(&mut gpu, &x);
            assert_close(
                &format!("{} {style:?} {shape:?}", ty.name()),
                &got,
                &want,
                1e-3,
            );
        }
    }
}

/// Prefill of N rows equals N single-row decodes, on both backends.
#[test]
fn prefill_equals_decodes() {
    let w = weights(GgmlType::Q4_1, GgmlType::Q8_0, RopeStyle::Adjacent);
    let d = w.config().d_model;
    let x = hidden(6, 4);
    let backends: Vec<Box<dyn BlockBackend>> = vec![
        Box::new(CpuBlocks::new(&*w, 0..3).expect("cpu")),
        Box::new(GpuBlocks::new(ctx(), &*w, 0..3).expect("gpu")),
    ];
    for mut b in backends {
        b.open_session(SessionId(1), 16).expect("open");
        b.open_session(SessionId(2), 16).expect("open");
        let mut pre = x.clone();
        b.forward(SessionId(1), 0, &mut pre).expect("prefill");
        let mut dec = Vec::new();
        for t in 0..6 {
            let mut row = x[t * d..(t + 1) * d].to_vec();
            b.forward(SessionId(2), t, &mut row).expect("decode");
            dec.extend_from_slice(&row);
        }
        assert_close("prefill vs decode", &pre, &dec, 1e-4);
    }
}

/// Blocks split into 1, 2 and 3 ranges run in sequence equal one range (CPU bit-exact,
/// GPU within 1e-5), and the GPU supports prefill longer than one batch.
#[test]
fn split_ranges_equal_one_range() {
    let w = weights(GgmlType::Q4_1, GgmlType::Q8_0, RopeStyle::Adjacent);
    let x = hidden(gpu::MAX_BATCH + 5, 5);
    for use_gpu in [false, true] {
        let make = |r: std::ops::Range<usize>| -> Box<dyn BlockBackend> {
            if use_gpu {
                Box::new(GpuBlocks::new(ctx(), &*w, r).expect("gpu"))
            } else {
                Box::new(CpuBlocks::new(&*w, r).expect("cpu"))
            }
        };
        let mut outs = Vec::new();
        let splits: [&[(usize, usize)]; 3] =
            [&[(0, 3)], &[(0, 1), (1, 3)], &[(0, 1), (1, 2), (2, 3)]];
        for split in splits {
            let mut y = x.clone();
            for &(start, end) in split {
                let mut b = make(start..end);
                b.open_session(SessionId(3), 64).expect("open");
                b.forward(SessionId(3), 0, &mut y).expect("forward");
            }
            outs.push(y);
        }
        let tol = if use_gpu { 1e-5 } else { 0.0 };
        assert_close("two ranges", &outs[1], &outs[0], tol);
        assert_close("three ranges", &outs[2], &outs[0], tol);
    }
}

/// Sub-spans of one backend, each its own session, in sequence equal the whole range
/// (exactly on the CPU, within 1e-5 on the GPU); a span outside the range is refused.
#[test]
fn spans_of_one_backend_equal_the_whole_range() {
    let w = weights(GgmlType::Q4_1, GgmlType::Q8_0, RopeStyle::Adjacent);
    let x = hidden(6, 9);
    for use_gpu in [false, true] {
        let mut b: Box<dyn BlockBackend> = if use_gpu {
            Box::new(GpuBlocks::new(ctx(), &*w, 0..3).expect("gpu"))
        } else {
            Box::new(CpuBlocks::new(&*w, 0..3).expect("cpu"))
        };
        let whole = run(b.as_mut(), &x);
        let mut y = x.clone();
        for (i, span) in [0..1, 1..3].into_iter().enumerate() {
            let id = SessionId(100 + i as u64);
            b.open_session(id, 64).expect("open");
            b.forward_span(id, 0, &mut y, span).expect("span");
        }
        let tol = if use_gpu { 1e-5 } else { 0.0 };
        // `run` prefills 5 rows then decodes one: compare the prefill rows.
        let d = b.config().d_model;
        assert_close("spans", &y[..5 * d], &whole[..5 * d], tol);
        b.open_session(SessionId(9), 8).expect("open");
        let err = b
            .forward_span(SessionId(9), 0, &mut x[..d].to_vec(), 2..4)
            .expect_err("outside the range");
        assert!(
            matches!(
                err,
                EngineError::BadBlockRange {
                    start: 2,
                    end: 4,
                    ..
                }
            ),
            "{err}"
        );
    }
}

/// A forward at a position before the cached end rewinds: replaying positions 2.. gives
/// the same rows as the first time, even after different tokens were written there.
#[test]
fn rewind_replays() {
    let w = weights(GgmlType::Q8_0, GgmlType::Q8_0, RopeStyle::Adjacent);
    let d = w.config().d_model;
    for mut b in [
        Box::new(CpuBlocks::new(&*w, 1..3).expect("cpu")) as Box<dyn BlockBackend>,
        Box::new(GpuBlocks::new(ctx(), &*w, 1..3).expect("gpu")),
    ] {
        let id = SessionId(9);
        b.open_session(id, 16).expect("open");
        let x = hidden(4, 6);
        let mut first = x.clone();
        b.forward(id, 0, &mut first).expect("forward");
        let mut other = hidden(2, 99);
        b.forward(id, 2, &mut other).expect("diverge");
        let mut replay = x[2 * d..].to_vec();
        b.forward(id, 2, &mut replay).expect("rewind");
        assert_close("replay", &replay, &first[2 * d..], 1e-6);
    }
}

/// Misuse is reported as the matching error, not a panic.
#[test]
fn errors_name_the_problem() {
    let w = weights(GgmlType::Q8_0, GgmlType::Q8_0, RopeStyle::Adjacent);
    let d = w.config().d_model;
    assert!(matches!(
        CpuBlocks::new(&*w, 2..4),
        Err(EngineError::BadBlockRange { .. })
    ));
    assert!(matches!(
        GpuBlocks::new(ctx(), &*w, 0..9),
        Err(EngineError::BadBlockRange { .. })
    ));
    for mut b in [
        Box::new(CpuBlocks::new(&*w, 0..1).expect("cpu")) as Box<dyn BlockBackend>,
        Box::new(GpuBlocks::new(ctx(), &*w, 0..1).expect("gpu")),
    ] {
        let mut row = vec![0.5f32; d];
        assert!(matches!(
            b.forward(SessionId(1), 0, &mut row),
            Err(EngineError::UnknownSession(_))
        ));
        b.open_session(SessionId(1), 4).expect("open");
        assert!(matches!(
            b.open_session(SessionId(1), 4),
            Err(EngineError::SessionExists(_))
        ));
        assert!(matches!(
            b.open_session(SessionId(2), 100_000),
            Err(EngineError::ContextFull { .. })
        ));
        assert!(matches!(
            b.forward(SessionId(1), 1, &mut row),
            Err(EngineError::PositionGap { .. })
        ));
        let mut bad = vec![0.0; d + 1];
        assert!(matches!(
            b.forward(SessionId(1), 0, &mut bad),
            Err(EngineError::BadHiddenShape { .. })
        ));
        let mut five = vec![0.1; 5 * d];
        assert!(matches!(
            b.forward(SessionId(1), 0, &mut five),
            Err(EngineError::ContextFull { .. })
        ));
    }
}

/// GPU head equals the CPU head: embeddings (1e-6), logits (1e-4), argmax equal to the
/// CPU argmax of the CPU logits, sampling equal to the reference; bad ids rejected.
#[test]
fn gpu_head_matches_cpu() {
    for embd in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let w = weights(GgmlType::Q4_1, embd, RopeStyle::Adjacent);
        let c = w.config().clone();
        let mut cpu = CpuHead::new(&*w).expect("cpu head");
        let mut gpu = GpuHead::new(ctx(), &*w).expect("gpu head");
        let tokens = [0u32, 5, 255, 5, 17];
        let mut a = vec![0f32; tokens.len() * c.d_model];
        let mut b = a.clone();
        cpu.embed(&tokens, &mut a).expect("cpu embed");
        gpu.embed(&tokens, &mut b).expect("gpu embed");
        assert_close("embed", &b, &a, 1e-6);
        let h = hidden(1, 8);
        let mut la = vec![0f32; c.vocab_size];
        let mut lb = la.clone();
        cpu.logits(&h, &mut la).expect("cpu logits");
        gpu.logits(&h, &mut lb).expect("gpu logits");
        assert_close("logits", &lb, &la, 1e-4);
        assert_eq!(
            gpu.argmax(&h).expect("argmax"),
            crate::ops::argmax::reference(&la)
        );
        let p = crate::ops::sample::SamplingParams {
            temperature: 3.0,
            top_k: 20,
            top_p: 0.9,
        };
        for u in [0.1f32, 0.5, 0.9] {
            assert_eq!(
                gpu.sample(&h, &p, u).expect("sample"),
                crate::ops::sample::reference(&lb, &p, u)
            );
        }
        assert!(matches!(
            gpu.embed(&[256], &mut vec![0.0; c.d_model]),
            Err(EngineError::BadToken { .. })
        ));
        assert!(matches!(
            cpu.embed(&[999], &mut vec![0.0; c.d_model]),
            Err(EngineError::BadToken { .. })
        ));
    }
}
