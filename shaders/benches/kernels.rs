//! Kernel benchmark: each kernel on the GPU adapter (lavapipe here) against its CPU
//! reference in the same run, on the default model's shapes (SmolLM2-135M: d 576, ffn
//! 1536, vocab 49152, Q4_1 blocks, Q8_0 tied LM head), every linear-kernel shape (the
//! thread shapes, and the subgroup shape where the adapter has subgroups), then a whole
//! decode step (30 blocks + head) on synthetic weights of those shapes.
//! `THREAD_SHAPES=8x8,8x24` (workgroup x rows per invocation, those by default) and `SG_ROWS=16,64` pick
//! the matvec variants compared.
//!
//! `cargo bench -p cocoon-shaders --bench kernels` (add `-- --quick` for fewer repeats).
//! The probes of how lavapipe itself costs (loads, dispatches, grid barriers, a persistent
//! kernel) are `cargo bench -p cocoon-shaders --bench probes` (`probes/main.rs`).

use std::time::{Duration, Instant};

use cocoon_shaders::engine::synthetic::{SyntheticWeights, smollm2_135m_config};
use cocoon_shaders::engine::{BlockBackend, GpuBlocks, GpuHead, HeadBackend, SessionId};
use cocoon_shaders::gpu::GpuContext;
use cocoon_shaders::model::quant::quantize;
use cocoon_shaders::model::{GgmlType, RopeStyle};
use cocoon_shaders::ops::linear::{self, Extras, Mode, Shape, Variant};
use cocoon_shaders::ops::{argmax, attention, pseudo_random, rmsnorm, rope};

// Shared with decode.rs and the probes (in benches/*/ so that cargo does not take them
// for benches of their own).
mod cpu_time;
mod timing;

use cpu_time::cpu_seconds;
use timing::{Sections, f32_buf, gpu_time, gpu_time_bg, last_cpu, step_buffer, time};

struct Row {
    kernel: String,
    unit: &'static str,
    gpu: f64,
    cpu: f64,
    /// The same measures per CPU-second consumed (GB or GFLOP per CPU-second), when the
    /// rows are throughputs.
    per_cpu: Option<(f64, f64)>,
}

/// The linear-kernel shapes compared, with their labels: the thread shapes, then the
/// subgroup shape at several row counts per workgroup where the adapter has subgroups.
fn matvec_shapes(ctx: &GpuContext) -> Vec<(String, Shape)> {
    let mut v = vec![("wg-reduce".to_string(), Shape::WORKGROUP_REDUCE)];
    let threads: Vec<(u32, u32)> = std::env::var("THREAD_SHAPES")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|p| {
                    let (w, r) = p.split_once('x')?;
                    Some((w.parse().ok()?, r.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(8, 8), (8, 24)]);
    for (workgroup, rows) in threads {
        v.push((
            format!("row/inv wg{workgroup} r{rows}"),
            Shape::Threads {
                threads_per_row: 1,
                workgroup,
                rows_per_thread: rows,
            },
        ));
    }
    if let Some(Shape::Subgroup { workgroup, .. }) = Shape::subgroup_for(ctx) {
        let rows: Vec<u32> = std::env::var("SG_ROWS")
            .ok()
            .map(|s| s.split(',').filter_map(|r| r.parse().ok()).collect())
            .unwrap_or_else(|| vec![16]);
        for r in rows {
            v.push((
                format!("subgroup wg{workgroup} r{r}"),
                Shape::Subgroup {
                    workgroup,
                    rows_per_workgroup: r,
                },
            ));
        }
    }
    v
}

fn main() {
    // Other non-flag arguments select sections: matvec, small, breakdown, decode; `rows`
    // and `attention` run only when named.
    let sections = Sections::from_args();
    let (quick, min) = (sections.quick, sections.min_time());
    let run = |section: &str| sections.run(section);
    let ctx = cocoon_shaders::gpu::shared().expect("a Vulkan adapter");
    println!("adapter: {}", ctx.info());
    let mut rows: Vec<Row> = Vec::new();

    // Linear layers: GB/s of packed weights read.
    let shapes: [(&str, GgmlType, usize, usize); 4] = [
        ("q/o 576->576", GgmlType::Q4_1, 576, 576),
        ("up 576->1536", GgmlType::Q4_1, 576, 1536),
        ("down 1536->576", GgmlType::Q4_1, 1536, 576),
        ("lm 576->49152", GgmlType::Q8_0, 576, 49152),
    ];
    for (name, ty, inp, out) in shapes.into_iter().filter(|_| run("matvec")) {
        let w = quantize(ty, &pseudo_random(inp * out, 1, 0.05)).expect("quantize");
        let x = pseudo_random(inp * 32, 2, 1.0);
        let mut y = vec![0f32; out * 32];
        let cpu = time(min, || {
            linear::reference(ty, &w, out, inp, Mode::Store, &x[..inp], &mut y[..out])
                .expect("reference");
        });
        let cpu_c = last_cpu();
        let packed = linear::pack(ty, &w, out, inp).expect("pack");
        let gb = packed.gpu_bytes() as f64 / 1e9;
        let gw = packed.upload(&ctx, name).expect("upload");
        let xb = f32_buf(&ctx, &x);
        let yb = ctx.storage("y", (out * 32 * 4) as u64).expect("y");
        let reps = if out > 10000 { 4 } else { 30 };
        for (sname, shape) in matvec_shapes(&ctx) {
            let v = Variant::new(Mode::Store, shape);
            let k = linear::kernel(&ctx, &gw, &v).expect("kernel");
            let st = step_buffer(&ctx, 1, 0);
            let bg = linear::bind(&ctx, &k, &st, &xb, &gw, &yb, Extras::default());
            let t = gpu_time_bg(&ctx, min, &k, &bg, linear::groups(out, 1, &v), reps);
            let per = Some((gb / (last_cpu() / reps as f64), gb / cpu_c));
            rows.push(Row {
                kernel: format!("matvec {} {name} [{sname}]", ty.name()),
                unit: "GB/s",
                gpu: gb / t,
                cpu: gb / cpu,
                per_cpu: per,
            });
        }
        // Prefill: 32 rows, 4 per invocation; GFLOP/s.
        let flops = 2.0 * (inp * out * 32) as f64 / 1e9;
        let cpu32 = time(min, || {
            linear::reference(ty, &w, out, inp, Mode::Store, &x, &mut y).expect("reference");
        });
        let cpu32_c = last_cpu();
        let v = Variant {
            tokens_per_invocation: 4,
            ..Variant::new(Mode::Store, Shape::for_context(&ctx))
        };
        let k = linear::kernel(&ctx, &gw, &v).expect("kernel");
        let st = step_buffer(&ctx, 32, 0);
        let bg = linear::bind(&ctx, &k, &st, &xb, &gw, &yb, Extras::default());
        let reps = if out > 10000 { 1 } else { 4 };
        let t = gpu_time_bg(&ctx, min, &k, &bg, linear::groups(out, 32, &v), reps);
        let per = Some((flops / (last_cpu() / reps as f64), flops / cpu32_c));
        rows.push(Row {
            kernel: format!("matmul n=32 {} {name}", ty.name()),
            unit: "GFLOP/s",
            gpu: flops / t,
            cpu: flops / cpu32,
            per_cpu: per,
        });
    }

    // RMSNorm, RoPE+KV write, attention at 512 cached positions, argmax over the vocab.
    if run("small") {
        let d = 576;
        let x = pseudo_random(d, 3, 1.0);
        let g = pseudo_random(d, 4, 1.0);
        let mut y = vec![0f32; d];
        let cpu = time(min, || rmsnorm::reference(&x, &g, 1e-5, &mut y));
        let k = rmsnorm::kernel(&ctx, d, 1e-5).expect("kernel");
        let (st, xb, gb, yb) = (
            step_buffer(&ctx, 1, 0),
            f32_buf(&ctx, &x),
            f32_buf(&ctx, &g),
            f32_buf(&ctx, &y),
        );
        let unused = &ctx.unused_buffers()[1];
        let t = gpu_time(
            &ctx,
            min,
            &k,
            &[&st, &xb, &gb, &yb, unused],
            rmsnorm::groups(1),
            50,
        );
        rows.push(Row {
            kernel: "rmsnorm 576".into(),
            unit: "us (lower)",
            gpu: t * 1e6,
            cpu: cpu * 1e6,
            per_cpu: None,
        });

        let (hd, nh, nkv, pos) = (64, 9, 3, 512);
        let tab = rope::table(hd, 1e5, 1024);
        let qkv = pseudo_random((nh + 2 * nkv) * hd, 5, 1.0);
        let mut q = qkv[..nh * hd].to_vec();
        let cpu = time(min, || {
            rope::reference(RopeStyle::Adjacent, hd, &tab, pos, &mut q)
        });
        let k = rope::kernel(&ctx, hd, nh, nkv, RopeStyle::Adjacent).expect("kernel");
        let kc = pseudo_random(1024 * nkv * hd, 6, 1.0);
        let vc = pseudo_random(1024 * nkv * hd, 7, 1.0);
        let (st, qb, cb, kb, vb) = (
            step_buffer(&ctx, 1, pos as u32),
            f32_buf(&ctx, &qkv),
            f32_buf(&ctx, bytemuck::cast_slice(&tab)),
            f32_buf(&ctx, &kc),
            f32_buf(&ctx, &vc),
        );
        let [u0, u1, ..] = ctx.unused_buffers();
        let t = gpu_time(
            &ctx,
            min,
            &k,
            &[&st, &qb, &cb, &kb, &vb, u0, u1],
            rope::groups(nh, nkv, 1),
            50,
        );
        rows.push(Row {
            kernel: "rope+kv 9/3 heads".into(),
            unit: "us (lower)",
            gpu: t * 1e6,
            cpu: cpu * 1e6,
            per_cpu: None,
        });

        let mut out = vec![0f32; nh * hd];
        let cpu = time(min, || {
            attention::reference(&qkv, qkv.len(), &kc, &vc, nh, nkv, hd, pos, &mut out)
        });
        let k = attention::kernel(&ctx, hd, nh, nkv).expect("kernel");
        let ob = f32_buf(&ctx, &out);
        let t = gpu_time(
            &ctx,
            min,
            &k,
            &[&st, &qb, &kb, &vb, &ob],
            attention::groups(attention::Layout::for_context(&ctx), hd, nh, nkv, 1),
            20,
        );
        rows.push(Row {
            kernel: "attention decode @512".into(),
            unit: "us (lower)",
            gpu: t * 1e6,
            cpu: cpu * 1e6,
            per_cpu: None,
        });

        let logits = pseudo_random(49152, 8, 5.0);
        let cpu = time(min, || {
            std::hint::black_box(argmax::reference(&logits));
        });
        let k = argmax::kernel(&ctx, logits.len()).expect("kernel");
        let (lb, ob) = (f32_buf(&ctx, &logits), ctx.storage("id", 4).expect("id"));
        let t = gpu_time(&ctx, min, &k, &[&lb, &ob], argmax::GROUPS, 20);
        rows.push(Row {
            kernel: "argmax 49152".into(),
            unit: "us (lower)",
            gpu: t * 1e6,
            cpu: cpu * 1e6,
            per_cpu: None,
        });
    }

    if sections.named("rows") {
        rows_per_invocation(&ctx);
    }
    if sections.named("attention") {
        attention_layouts(&ctx);
    }
    if run("breakdown") {
        breakdown(&ctx, min);
    }

    println!(
        "\n{:<40} {:>9} {:>9} {:>7}  {:<11} {:>9} {:>9} {:>7}",
        "kernel", "gpu", "cpu ref", "gpu/cpu", "unit", "gpu/cpu-s", "ref/cpu-s", "ratio"
    );
    for r in &rows {
        let ratio = if r.unit.starts_with("us") {
            r.cpu / r.gpu
        } else {
            r.gpu / r.cpu
        };
        let per = match r.per_cpu {
            Some((g, c)) => format!("{g:>9.2} {c:>9.2} {:>7.2}", g / c),
            None => String::new(),
        };
        println!(
            "{:<40} {:>9.2} {:>9.2} {:>7.2}  {:<11} {per}",
            r.kernel, r.gpu, r.cpu, ratio, r.unit
        );
    }
    println!(
        "(gpu/cpu-s, ref/cpu-s: the same throughput per CPU-second the process consumed, fair on a loaded machine)"
    );

    // Whole decode step on synthetic weights of the default model's shapes.
    if !run("decode") {
        return;
    }
    let t0 = Instant::now();
    let w = SyntheticWeights::llama(smollm2_135m_config(), GgmlType::Q4_1, GgmlType::Q8_0, 1)
        .expect("synthetic model");
    let c = smollm2_135m_config();
    println!(
        "\nsynthetic SmolLM2-135M shapes built in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let decode_shapes = [
        ("row/inv", Some(Shape::ROW_PER_INVOCATION)),
        ("wg-reduce", Some(Shape::WORKGROUP_REDUCE)),
        ("subgroup", Shape::subgroup_for(&ctx)),
    ];
    for (sname, shape) in decode_shapes {
        let Some(shape) = shape else { continue };
        let mut blocks =
            GpuBlocks::with_shape(ctx.clone(), &w, 0..c.n_blocks, shape).expect("gpu blocks");
        let mut head = GpuHead::new(ctx.clone(), &w).expect("gpu head");
        let id = SessionId(1);
        blocks.open_session(id, 1024).expect("session");
        let mut h = vec![0f32; c.d_model];
        head.embed(&[1], &mut h).expect("embed");
        let mut tok = 1u32;
        let mut pos = 0;
        let n = if quick { 10 } else { 40 };
        let mut start = Instant::now();
        let mut c0 = cpu_seconds();
        for i in 0..n + 3 {
            if i == 3 {
                start = Instant::now();
                c0 = cpu_seconds();
            }
            head.embed(&[tok], &mut h).expect("embed");
            blocks.forward(id, pos, &mut h).expect("forward");
            tok = head.argmax(&h).expect("argmax");
            pos += 1;
        }
        let dt = start.elapsed().as_secs_f64() / n as f64;
        let dc = (cpu_seconds() - c0) / n as f64;
        // Where the time goes: the blocks alone, the head alone.
        let mut hb = h.clone();
        let mut p2 = pos;
        let tb = time(min, || {
            blocks.forward(id, p2, &mut hb).expect("forward");
            p2 += 1;
        });
        let cb = last_cpu();
        let th = time(min, || {
            std::hint::black_box(head.argmax(&h).expect("argmax"));
        });
        let ch = last_cpu();
        println!(
            "  blocks alone {:.1} ms ({:.1} CPU-ms), head (norm + LM head + argmax) {:.1} ms ({:.1} CPU-ms)",
            tb * 1e3,
            cb * 1e3,
            th * 1e3,
            ch * 1e3
        );
        let bytes = blocks.weight_bytes() + head.table_bytes();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        println!(
            "decode [{sname}]: {:.1} tok/s wall ({:.2} ms/token, {:.0} MB weights/token, {:.2} GB/s); \
             {:.1} CPU-ms/token, so ~{:.0} tok/s on {cores} idle cores",
            1.0 / dt,
            dt * 1e3,
            bytes as f64 / 1e6,
            bytes as f64 / dt / 1e9,
            dc * 1e3,
            cores as f64 / dc
        );
        if quick {
            break;
        }
    }
}

/// Where a decode token's time goes: each dispatch of the decode step (the engine's
/// decode variants on the default model's shapes) timed alone, 30 in one submission, and
/// a submission with its wait (of an empty kernel). What a dispatch itself costs:
/// `--bench probes -- dispatch`.
/// Prints wall and CPU milliseconds per token for each op (times the blocks).
fn breakdown(ctx: &std::sync::Arc<GpuContext>, min: Duration) {
    use cocoon_shaders::gpu::{Binding, KernelSpec};
    const EMPTY: KernelSpec = KernelSpec {
        name: "empty",
        source: "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
                 @compute @workgroup_size(8) fn main(@builtin(global_invocation_id) i: vec3<u32>) {\n\
                 if i.x == 1u { o[0] = 1u; } }",
        bindings: &[Binding::ReadWrite],
    };
    let (d, f, hd, nh, nkv, vocab, blocks) = (576, 1536, 64, 9, 3, 49152, 30.0);
    let pos: u32 = std::env::var("ATT_POS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(256);
    let shape = Shape::for_context(ctx);
    let empty = ctx.kernel(&EMPTY, &[]).expect("empty kernel");
    let eb = ctx.storage("o", 64).expect("o");
    let one = gpu_time(ctx, min, &empty, &[&eb], (1, 1, 1), 1);
    let one_c = last_cpu();

    let st = step_buffer(ctx, 1, pos);
    let x = f32_buf(ctx, &pseudo_random(d.max(f), 2, 1.0));
    let g = f32_buf(ctx, &pseudo_random(d, 3, 1.0));
    let big = ctx.storage("out", (vocab * 4) as u64).expect("out");
    let tab = rope::table(hd, 1e5, 1024);
    let cs = f32_buf(ctx, bytemuck::cast_slice(&tab));
    let kc = f32_buf(ctx, &pseudo_random(1024 * nkv * hd, 6, 1.0));
    let vc = f32_buf(ctx, &pseudo_random(1024 * nkv * hd, 7, 1.0));
    let qkv = f32_buf(ctx, &pseudo_random((nh + 2 * nkv) * hd, 5, 1.0));
    let fuse = shape.fuses_norm();
    let rope_shape = linear::Rope {
        head_dim: hd,
        n_heads: nh,
        n_kv_heads: nkv,
        style: RopeStyle::Adjacent,
    };
    let mut total = (0.0, 0.0);
    let mut line = |name: &str, per_token: f64, t: f64, c: f64| {
        total.0 += per_token * t;
        total.1 += per_token * c;
        println!(
            "  {name:<34} {:>7.1} us {:>7.1} CPU-us  x{per_token:<3} = {:>6.2} ms {:>6.2} CPU-ms per token",
            t * 1e6,
            c * 1e6,
            per_token * t * 1e3,
            per_token * c * 1e3
        );
    };
    let reps = 30;
    // Where norms are not fused the residual kernels (o, down) feed the next normed
    // kernel through partial sums of squares (as the engine's norm chain does): one
    // partials RMSNorm for the first block and the head's own RMSNorm per token.
    let residual = Variant {
        norm_out: !fuse,
        ..Variant::new(Mode::Accumulate, shape.fitted(d))
    };
    let partials = linear::norm_out_partials(d, &residual);
    let ssq = ctx
        .storage("sums of squares", (partials as usize * 4).max(16) as u64)
        .expect("ssq");
    let xn = ctx.storage("normed", (d * 4) as u64).expect("normed");
    if !fuse {
        let k = rmsnorm::kernel(ctx, d, 1e-5).expect("rmsnorm");
        let unused = &ctx.unused_buffers()[1];
        let t = gpu_time(
            ctx,
            min,
            &k,
            &[&st, &x, &g, &big, unused],
            rmsnorm::groups(1),
            reps,
        );
        line("rmsnorm (head)", 1.0, t, last_cpu() / reps as f64);
        let k = rmsnorm::partials_kernel(ctx, d, partials).expect("rmsnorm partials");
        let t = gpu_time(
            ctx,
            min,
            &k,
            &[&st, &x, &g, &xn, &ssq],
            rmsnorm::groups(1),
            reps,
        );
        line(
            "rmsnorm partials (first block)",
            1.0,
            t,
            last_cpu() / reps as f64,
        );
    }
    let linears: [(&str, GgmlType, usize, usize, Mode, f64); 5] = [
        (
            "qkv+rope 576->960 Q4_1",
            GgmlType::Q4_1,
            d,
            (nh + 2 * nkv) * hd,
            Mode::QkvRope,
            blocks,
        ),
        (
            "o 576->576 Q4_1 (+res)",
            GgmlType::Q4_1,
            d,
            d,
            Mode::Accumulate,
            blocks,
        ),
        (
            "gate/up 576->2x1536 Q4_1 swiglu",
            GgmlType::Q4_1,
            d,
            2 * f,
            Mode::SwiGlu,
            blocks,
        ),
        (
            "down 1536->576 Q4_1 (+res)",
            GgmlType::Q4_1,
            f,
            d,
            Mode::Accumulate,
            blocks,
        ),
        (
            "lm head 576->49152 Q8_0",
            GgmlType::Q8_0,
            d,
            vocab,
            Mode::Store,
            1.0,
        ),
    ];
    for (name, ty, inp, out, mode, per_token) in linears {
        let w = quantize(ty, &pseudo_random(inp * out, 1, 0.05)).expect("quantize");
        let normed = matches!(mode, Mode::QkvRope | Mode::SwiGlu);
        let v = Variant {
            norm_eps: normed.then_some(1e-5),
            norm_partials: if normed && !fuse { partials } else { 0 },
            norm_out: mode == Mode::Accumulate && !fuse,
            rope: (mode == Mode::QkvRope).then_some(rope_shape),
            // As the engine does: rows per invocation fitted to the matrix.
            ..Variant::new(mode, shape.fitted(linear::invocation_rows(out, mode)))
        };
        // As the engine does: the groups tiled as the shape reads them.
        let gw = linear::pack(ty, &w, out, inp)
            .and_then(|p| p.tiled(linear::tile_rows(out, &v)))
            .expect("pack")
            .upload(ctx, name)
            .expect("upload");
        let k = linear::kernel(ctx, &gw, &v).expect("kernel");
        let extras = Extras {
            norm: (v.norm_eps.is_some() && fuse || v.norm_out).then_some(&g),
            partials: (v.norm_partials > 0 || v.norm_out).then_some(&ssq),
            norm_out: v.norm_out.then_some(&xn),
            rope_kv: (mode == Mode::QkvRope).then_some((&cs, &kc, &vc)),
        };
        let bg = linear::bind(ctx, &k, &st, &x, &gw, &big, extras);
        let r = if out > 10000 { 4 } else { reps };
        let t = gpu_time_bg(ctx, min, &k, &bg, linear::groups(out, 1, &v), r);
        let c = last_cpu() / r as f64;
        line(name, per_token, t, c);
        println!(
            "  {:<34} {:.2} GB/s wall, {:.2} GB/s per CPU-second",
            "",
            gw.bytes as f64 / t / 1e9,
            gw.bytes as f64 / c / 1e9
        );
    }
    for layout in [
        attention::Layout::HeadPerWorkgroup,
        attention::Layout::GroupPerWorkgroup,
        attention::Layout::LanesOverDims,
    ] {
        if layout == attention::Layout::LanesOverDims && ctx.subgroup_sizes() != Some((8, 8)) {
            continue;
        }
        let k = attention::kernel_in(ctx, layout, hd, nh, nkv).expect("attention");
        let wg = attention::groups(layout, hd, nh, nkv, 1);
        let t = gpu_time(ctx, min, &k, &[&st, &qkv, &kc, &vc, &big], wg, reps);
        let c = last_cpu() / reps as f64;
        if layout == attention::Layout::for_context(ctx) {
            line(&format!("attention @{pos} {layout:?}"), blocks, t, c);
        } else {
            println!(
                "  (attention @{pos} {layout:?}: {:.1} us, {:.1} CPU-us)",
                t * 1e6,
                c * 1e6
            );
        }
    }
    let k = argmax::kernel(ctx, vocab).expect("argmax");
    let lb = f32_buf(ctx, &pseudo_random(vocab, 8, 5.0));
    let ib = ctx.storage("id", 4).expect("id");
    let t = gpu_time(ctx, min, &k, &[&lb, &ib], argmax::GROUPS, reps);
    line("argmax 49152", 1.0, t, last_cpu() / reps as f64);
    // Three submissions with a wait each per token: embed, blocks, head.
    line("submit + wait", 3.0, one, one_c);
    println!(
        "  sum of the parts: {:.2} ms, {:.2} CPU-ms per token (shape {shape:?})",
        total.0 * 1e3,
        total.1 * 1e3
    );
}

/// The decode matvecs of the default model's shapes at several rows per invocation
/// (`RPIS=8,16,24`, workgroups of 8), run in turn round after round and each timed by
/// its best round: on a machine others share, the best of several interleaved rounds
/// says more than one long run. `cargo bench --bench kernels -- rows` (not in the
/// default sections).
fn rows_per_invocation(ctx: &std::sync::Arc<GpuContext>) {
    let rpis: Vec<u32> = std::env::var("RPIS")
        .ok()
        .map(|s| s.split(',').filter_map(|r| r.parse().ok()).collect())
        .unwrap_or_else(|| vec![8, 16, 24]);
    let mats: [(&str, GgmlType, usize, usize, Mode); 5] = [
        ("qkv 576->960 Q4_1", GgmlType::Q4_1, 576, 960, Mode::Store),
        (
            "o 576->576 Q4_1 +res",
            GgmlType::Q4_1,
            576,
            576,
            Mode::Accumulate,
        ),
        (
            "gate/up 576->2x1536 swiglu",
            GgmlType::Q4_1,
            576,
            3072,
            Mode::SwiGlu,
        ),
        (
            "down 1536->576 Q4_1 +res",
            GgmlType::Q4_1,
            1536,
            576,
            Mode::Accumulate,
        ),
        (
            "lm 576->49152 Q8_0",
            GgmlType::Q8_0,
            576,
            49152,
            Mode::Store,
        ),
    ];
    let st = step_buffer(ctx, 1, 0);
    let x = f32_buf(ctx, &pseudo_random(1536, 2, 1.0));
    let y = ctx.storage("y", 49152 * 4).expect("y");
    println!();
    for (name, ty, inp, out, mode) in mats {
        let w = quantize(ty, &pseudo_random(inp * out, 1, 0.05)).expect("quantize");
        let gw = linear::pack(ty, &w, out, inp)
            .expect("pack")
            .upload(ctx, name)
            .expect("upload");
        let variants: Vec<_> = rpis
            .iter()
            .map(|&r| {
                let v = Variant::new(
                    mode,
                    Shape::Threads {
                        threads_per_row: 1,
                        workgroup: 8,
                        rows_per_thread: r,
                    },
                );
                let k = linear::kernel(ctx, &gw, &v).expect("kernel");
                let bg = linear::bind(ctx, &k, &st, &x, &gw, &y, Extras::default());
                (r, v, k, bg)
            })
            .collect();
        let reps = if out > 10000 { 4 } else { 30 };
        let mut best = vec![(f64::MAX, f64::MAX); variants.len()];
        for _ in 0..7 {
            for (i, (_, v, k, bg)) in variants.iter().enumerate() {
                let t = gpu_time_bg(
                    ctx,
                    Duration::from_millis(60),
                    k,
                    bg,
                    linear::groups(out, 1, v),
                    reps,
                );
                let c = last_cpu() / reps as f64;
                best[i] = (best[i].0.min(t), best[i].1.min(c));
            }
        }
        for ((r, v, ..), (t, c)) in variants.iter().zip(best) {
            println!(
                "  {name:<28} r{r:<3} {:>4} workgroups: {:>7.1} us {:>7.1} CPU-us, {:.2} GB/s wall, {:.2} GB/s per CPU-second",
                linear::groups(out, 1, v).0,
                t * 1e6,
                c * 1e6,
                gw.bytes as f64 / t / 1e9,
                gw.bytes as f64 / c / 1e9
            );
        }
    }
}

/// Decode attention of the default model's shape (9/3 heads x 64) at `ATT_POS` cached
/// positions (256 by default) in each layout the adapter runs, interleaved rounds, best
/// of each. `cargo bench --bench kernels -- attention` (not in the default sections).
fn attention_layouts(ctx: &std::sync::Arc<GpuContext>) {
    let (hd, nh, nkv) = (64, 9, 3);
    let pos: u32 = std::env::var("ATT_POS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(256);
    let st = step_buffer(ctx, 1, pos);
    let qkv = f32_buf(ctx, &pseudo_random((nh + 2 * nkv) * hd, 5, 1.0));
    let kc = f32_buf(ctx, &pseudo_random(1024 * nkv * hd, 6, 1.0));
    let vc = f32_buf(ctx, &pseudo_random(1024 * nkv * hd, 7, 1.0));
    let out = ctx.storage("out", (nh * hd * 4) as u64).expect("out");
    let layouts: Vec<_> = [
        attention::Layout::GroupPerWorkgroup,
        attention::Layout::LanesOverDims,
    ]
    .into_iter()
    .filter_map(|l| Some((l, attention::kernel_in(ctx, l, hd, nh, nkv).ok()?)))
    .collect();
    let mut best = vec![(f64::MAX, f64::MAX); layouts.len()];
    for _ in 0..7 {
        for (i, (l, k)) in layouts.iter().enumerate() {
            let wg = attention::groups(*l, hd, nh, nkv, 1);
            let t = gpu_time(
                ctx,
                Duration::from_millis(60),
                k,
                &[&st, &qkv, &kc, &vc, &out],
                wg,
                20,
            );
            let c = last_cpu() / 20.0;
            best[i] = (best[i].0.min(t), best[i].1.min(c));
        }
    }
    println!();
    for ((l, _), (t, c)) in layouts.iter().zip(best) {
        println!(
            "  attention @{pos} {l:?}: {:.1} us, {:.1} CPU-us",
            t * 1e6,
            c * 1e6
        );
    }
}
