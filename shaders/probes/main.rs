//! Research probes of how lavapipe (Mesa's CPU Vulkan driver) costs what it does, the
//! measurements behind the CPU adapters' kernel variants (`docs/perf/lavapipe.md`):
//! what a dispatch and a software grid barrier cost (`dispatch`), what a storage load
//! costs by how its address varies between lanes (`loads`), and the linear kernel
//! dispatched per matvec against one persistent dispatch (`persistent`, only when named).
//! The per-op kernel benchmarks against the CPU references are `benches/kernels.rs`.
//!
//! `cargo bench -p cocoon-shaders --bench probes [-- dispatch|loads|persistent] [--quick]`.

use std::time::{Duration, Instant};

use cocoon_shaders::gpu::GpuContext;
use cocoon_shaders::model::GgmlType;
use cocoon_shaders::model::quant::quantize;
use cocoon_shaders::ops::linear::{self, Extras, Mode, Shape, Variant};
use cocoon_shaders::ops::pseudo_random;

// The benches' shared timing (benches/*/ so that cargo does not take them for benches).
#[path = "../benches/cpu_time/mod.rs"]
mod cpu_time;
#[allow(dead_code)]
#[path = "../benches/floor/mod.rs"]
mod floor;
#[allow(dead_code)]
#[path = "../benches/timing/mod.rs"]
mod timing;

use timing::{Sections, f32_buf, gpu_time, last_cpu, step_buffer, time};

fn main() {
    // Non-flag arguments select sections: dispatch, loads; `persistent` runs only when
    // named.
    let sections = Sections::from_args();
    let min = sections.min_time();
    let run = |section: &str| sections.run(section);
    let ctx = cocoon_shaders::gpu::shared().expect("a Vulkan adapter");
    println!("adapter: {}", ctx.info());
    if run("dispatch") {
        dispatch_cost(&ctx, min);
    }
    if run("loads") {
        load_patterns(&ctx, min);
    }
    if sections.named("persistent") {
        persistent_vs_dispatch(&ctx);
    }
}

/// The fixed cost of a dispatch (an empty kernel, alone, 200 in one pass, of 64
/// workgroups; reading a uniform; with a 1 MiB binding) and of a submission with its
/// wait, then what a software grid barrier costs against it (`grid_barrier_cost`).
fn dispatch_cost(ctx: &std::sync::Arc<GpuContext>, min: Duration) {
    use cocoon_shaders::gpu::{Binding, KernelSpec};
    const EMPTY: KernelSpec = KernelSpec {
        name: "empty",
        source: "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
                 @compute @workgroup_size(8) fn main(@builtin(global_invocation_id) i: vec3<u32>) {\n\
                 if i.x == 1u { o[0] = 1u; } }",
        bindings: &[Binding::ReadWrite],
    };
    const EMPTY_UNIFORM: KernelSpec = KernelSpec {
        name: "empty uniform",
        source: "struct Step { n: u32, p: u32, a: u32, b: u32 }\n\
                 @group(0) @binding(0) var<uniform> st: Step;\n\
                 @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                 @compute @workgroup_size(8) fn main(@builtin(global_invocation_id) i: vec3<u32>) {\n\
                 if i.x == st.n { o[0] = 1u; } }",
        bindings: &[Binding::Uniform, Binding::ReadWrite],
    };
    {
        let k = ctx.kernel(&EMPTY_UNIFORM, &[]).expect("empty uniform");
        let st = step_buffer(ctx, 1, 0);
        let o = ctx.storage("o", 64).expect("o");
        let t = gpu_time(ctx, min, &k, &[&st, &o], (1, 1, 1), 200);
        let c = last_cpu() / 200.0;
        let big = ctx.storage("o", 1 << 20).expect("o");
        let tb = gpu_time(ctx, min, &k, &[&st, &big], (1, 1, 1), 200);
        let cb = last_cpu() / 200.0;
        println!(
            "  empty kernel reading a uniform: {:.1} us ({:.1} CPU-us); with a 1 MiB output binding {:.1} us ({:.1} CPU-us)",
            t * 1e6,
            c * 1e6,
            tb * 1e6,
            cb * 1e6
        );
    }
    let empty = ctx.kernel(&EMPTY, &[]).expect("empty kernel");
    let eb = ctx.storage("o", 64).expect("o");
    let one = gpu_time(ctx, min, &empty, &[&eb], (1, 1, 1), 1);
    let one_c = last_cpu();
    let many = gpu_time(ctx, min, &empty, &[&eb], (1, 1, 1), 200);
    let many_c = last_cpu() / 200.0;
    let wide = gpu_time(ctx, min, &empty, &[&eb], (64, 1, 1), 200);
    let wide_c = last_cpu() / 200.0;
    println!(
        "\ndispatch cost on {}: submit+wait of 1 empty dispatch {:.1} us ({:.1} CPU-us); \
         per empty dispatch in a 200-dispatch pass {:.1} us ({:.1} CPU-us), of 64 workgroups {:.1} us ({:.1} CPU-us)",
        ctx.info(),
        one * 1e6,
        one_c * 1e6,
        many * 1e6,
        many_c * 1e6,
        wide * 1e6,
        wide_c * 1e6
    );
    grid_barrier_cost(ctx);
}

/// The threads llvmpipe runs workgroups on: LP_NUM_THREADS, else one per CPU.
fn llvmpipe_threads() -> u32 {
    std::env::var("LP_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse::<u32>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |c| c.get() as u32))
}

/// WGSL: a software grid barrier over `arrived[0]` (the including kernel declares
/// `arrived: array<atomic<u32>>`): lane 0 of each workgroup arrives and spins until
/// `arrivals` in all, giving up (false) after a bound rather than hang where the
/// workgroups do not all run at once.
macro_rules! grid_barrier_wgsl {
    () => {
        "fn grid_barrier(lane: u32, arrivals: u32) -> bool {
    var ok = true;
    if lane == 0u {
        atomicAdd(&arrived[0], 1u);
        var spins = 0u;
        loop {
            if atomicLoad(&arrived[0]) >= arrivals { break; }
            spins++;
            if spins > 50000000u { ok = false; break; }
        }
    }
    return ok;
}
"
    };
}

/// What a software grid barrier costs on a CPU adapter, against a dispatch: one workgroup
/// per llvmpipe thread (each workgroup is a thread there, so they all run at once), each
/// arriving at an atomic counter and spinning until all have, PHASES times in one
/// dispatch. A block's five dispatches could be one persistent dispatch with barriers
/// between its ops if a barrier is much cheaper than a dispatch. The spin gives up after
/// a bound (reported) rather than hang where workgroups do not all run at once.
fn grid_barrier_cost(ctx: &GpuContext) {
    use cocoon_shaders::gpu::{Binding, KernelSpec};
    const BARRIER: KernelSpec = KernelSpec {
        name: "grid barrier probe",
        source: concat!(
            grid_barrier_wgsl!(),
            "override W: u32 = 2u;
override PHASES: u32 = 1000u;
@group(0) @binding(0) var<storage, read_write> arrived: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,
    @builtin(workgroup_id) wid: vec3<u32>) {
    var gave_up = 0u;
    for (var p = 1u; p <= PHASES; p++) {
        if !grid_barrier(l, p * W) { gave_up = 1u; break; }
    }
    o[wid.x * 8u + l] = gave_up;
}"
        ),
        bindings: &[Binding::ReadWrite, Binding::ReadWrite],
    };
    if !ctx.is_cpu() {
        return;
    }
    let threads = llvmpipe_threads();
    if threads < 2 {
        println!("  grid barrier: one llvmpipe thread, nothing to synchronise");
        return;
    }
    let arrived = ctx.storage("arrived", 16).expect("counter");
    let out = ctx
        .storage("gave up", u64::from(threads) * 32)
        .expect("out");
    let readback = cocoon_shaders::gpu::Readback::new(ctx, "gave up", u64::from(threads) * 32);
    let phases = 20000u32;
    let k = ctx
        .kernel(
            &BARRIER,
            &[("W", f64::from(threads)), ("PHASES", f64::from(phases))],
        )
        .expect("barrier kernel");
    let bg = ctx.bind_group(&k, &[&arrived, &out]);
    let gave_up = std::cell::Cell::new(false);
    let all = floor::median_seconds(ctx, || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&arrived, 0, None);
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            cocoon_shaders::gpu::pipeline::dispatch(&mut pass, &k, &bg, (threads, 1, 1));
        }
        readback.copy_from(&mut enc, &out, u64::from(threads) * 32);
        ctx.queue.submit([enc.finish()]);
        let flags = readback
            .read(ctx, u64::from(threads) * 32)
            .expect("read back");
        if flags.iter().any(|&b| b != 0) {
            gave_up.set(true);
        }
    });
    if gave_up.get() {
        println!("  grid barrier: the workgroups did not all run at once (a spin gave up)");
        return;
    }
    // An upper bound: the dispatch's own submit, wait and read-back are in it too.
    println!(
        "  grid barrier across {threads} persistent workgroups: at most {:.2} us each \
         ({phases} in one dispatch of {:.2} ms), against a dispatch's cost above",
        all / f64::from(phases) * 1e6,
        all * 1e3
    );
}

/// The linear kernel (as the engine specialises it on a CPU adapter) run as a block runs it: 30
/// matvecs one after another, each its own dispatch, against one dispatch of one
/// persistent workgroup per llvmpipe thread that takes the matvecs' workgroups in turn
/// and meets the others at a grid barrier (grid_barrier_cost) after each matvec. The
/// same weights each time (cache-resident, as in the breakdown). What a persistent block
/// kernel would gain on the real kernels; CPU adapters only. Measured on Mesa 25.0.7 (2
/// vCPUs, two machines): q/o 1.0-1.7x, up 0.83-1.1x, down 0.85-1.04x: only the smallest
/// matvec gains; in the larger ones the body run in a loop costs about what the
/// dispatches save, though the barrier alone costs at most 0.08-1.4 us against 22-40 us
/// for an empty dispatch.
fn persistent_vs_dispatch(ctx: &std::sync::Arc<GpuContext>) {
    use cocoon_shaders::gpu::{Binding, KernelSpec};
    const ENTRY: &str = "@compute @workgroup_size(WG)\nfn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {";
    const PERSISTENT: &str = "
override PW: u32 = 2u;
override VWG: u32 = 4u;
override REPS: u32 = 30u;
@group(0) @binding(11) var<storage, read_write> arrived: array<atomic<u32>>;
var<workgroup> next_v: u32;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    for (var rep = 1u; rep <= REPS; rep++) {
        // The matvec's workgroups taken from a counter of this round (arrived[rep]), as
        // llvmpipe's threads take a dispatch's: a thread slowed down takes fewer.
        loop {
            if lid.x == 0u { next_v = atomicAdd(&arrived[rep], 1u); }
            let v = workgroupUniformLoad(&next_v);
            if v >= VWG { break; }
            body(lid, vec3<u32>(v, wid.y, wid.z));
        }
        // A spin that gave up is flagged in the last counter.
        if !grid_barrier(lid.x, rep * PW) { atomicStore(&arrived[REPS + 1u], 1u); }
        workgroupBarrier();
    }
}
";
    if !ctx.is_cpu() {
        println!("persistent: not a CPU adapter");
        return;
    }
    let threads = llvmpipe_threads();
    if threads < 2 {
        println!("persistent: one llvmpipe thread");
        return;
    }
    // The engine's kernel source with its entry point renamed `body`, under PERSISTENT's.
    let persistent_spec = |base: &KernelSpec| -> KernelSpec {
        assert!(
            base.source.contains(ENTRY),
            "linear_threads.wgsl's entry point moved"
        );
        let source = base
            .source
            .replace(ENTRY, "fn body(lid: vec3<u32>, wid: vec3<u32>) {")
            + grid_barrier_wgsl!()
            + PERSISTENT;
        let mut bindings = base.bindings.to_vec();
        bindings.push(Binding::ReadWrite);
        KernelSpec {
            name: "linear persistent",
            source: Box::leak(source.into_boxed_str()),
            bindings: Box::leak(bindings.into_boxed_slice()),
        }
    };
    // Built once: the pipeline cache knows it by its name only, so every matrix below
    // must wrap the same engine source (asserted).
    let mut spec: Option<(&'static str, KernelSpec)> = None;
    let matvecs = 30u32;
    println!(
        "\n{matvecs} matvecs (Q4_1, one token): dispatch each, or {threads} persistent workgroups with grid barriers"
    );
    for (name, inp, out) in [
        ("q/o 576->576", 576, 576),
        ("up 576->1536", 576, 1536),
        ("down 1536->576", 1536, 576),
    ] {
        let w = quantize(GgmlType::Q4_1, &pseudo_random(inp * out, 1, 0.05)).expect("quantize");
        let v = Variant::new(Mode::Store, Shape::for_context(ctx).fitted(out));
        let tile = linear::tile_rows(out, &v);
        let packed = linear::pack(GgmlType::Q4_1, &w, out, inp)
            .and_then(|p| p.tiled(tile))
            .expect("pack");
        let gw = packed.upload(ctx, name).expect("upload");
        let xb = f32_buf(ctx, &pseudo_random(inp, 2, 1.0));
        let yb = ctx.storage("y", (out * 4) as u64).expect("y");
        let st = step_buffer(ctx, 1, 0);
        let k = linear::kernel(ctx, &gw, &v).expect("kernel");
        let bg = linear::bind(ctx, &k, &st, &xb, &gw, &yb, Extras::default());
        let groups = linear::groups(out, 1, &v);
        let Shape::Threads {
            rows_per_thread: rpt,
            ..
        } = v.shape
        else {
            unreachable!("a thread shape fits to a thread shape")
        };
        // The same specialization as the engine's kernel, plus the persistent loop's.
        let (base, mut constants) = linear::specialization(ctx, &gw, &v).expect("specialization");
        let (wrapped, spec) = *spec.get_or_insert_with(|| (base.name, persistent_spec(base)));
        assert_eq!(
            wrapped, base.name,
            "the persistent kernel wraps one engine source"
        );
        constants.extend([
            ("PW", f64::from(threads)),
            ("VWG", f64::from(groups.0)),
            ("REPS", f64::from(matvecs)),
        ]);
        let pk = ctx.kernel(&spec, &constants).expect("persistent kernel");
        // The barrier's counter, one work counter per matvec, the gave-up flag.
        let counters = u64::from(matvecs + 2) * 4;
        let arrived = ctx.storage("arrived", counters).expect("counters");
        let readback = cocoon_shaders::gpu::Readback::new(ctx, "arrived", counters);
        let [ur, uw0, uw1, uw2, uw3] = ctx.unused_buffers();
        let pbg = ctx.bind_group(
            &pk,
            &[
                &st, &xb, &gw.quants, &gw.scales, &yb, ur, ur, uw0, uw1, uw2, uw3, &arrived,
            ],
        );
        let time_one = |persistent: bool| {
            let t = Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            if persistent {
                enc.clear_buffer(&arrived, 0, None);
            }
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if persistent {
                    cocoon_shaders::gpu::pipeline::dispatch(&mut pass, &pk, &pbg, (threads, 1, 1));
                } else {
                    for _ in 0..matvecs {
                        cocoon_shaders::gpu::pipeline::dispatch(&mut pass, &k, &bg, groups);
                    }
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait().expect("device wait");
            t.elapsed().as_secs_f64()
        };
        time_one(false);
        time_one(true);
        let (mut each, mut persist) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            each.push(time_one(false));
            persist.push(time_one(true));
        }
        each.sort_by(f64::total_cmp);
        persist.sort_by(f64::total_cmp);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        readback.copy_from(&mut enc, &arrived, counters);
        ctx.queue.submit([enc.finish()]);
        let flags = readback.read(ctx, counters).expect("read back");
        if flags[(matvecs as usize + 1) * 4..].iter().any(|&b| b != 0) {
            println!("  {name}: the workgroups did not all run at once (a spin gave up)");
            continue;
        }
        let per = |v: &[f64]| v[v.len() / 2] / f64::from(matvecs) * 1e6;
        println!(
            "  {name:<16} rows/thread {rpt:>2}, {} workgroups: a dispatch each {:>7.1} us, persistent {:>7.1} us per matvec ({:.2}x)",
            groups.0,
            per(&each),
            per(&persist),
            per(&each) / per(&persist)
        );
    }
}

/// What a load costs on this adapter by how its address varies between the invocations of
/// a workgroup of 8: the same address in every lane (uniform), consecutive words
/// (lane l reads word 8i + l), and words far apart (lane l reads its own 4 KiB run).
/// Prints 32-bit words delivered per lane per nanosecond of CPU.
fn load_patterns(ctx: &std::sync::Arc<GpuContext>, min: Duration) {
    use cocoon_shaders::gpu::{Binding, KernelSpec};
    const PROBE: KernelSpec = KernelSpec {
        name: "load probe",
        source: "override MODE: u32 = 0u;\n\
            override N: u32 = 1024u;\n\
            @group(0) @binding(0) var<storage, read> w: array<u32>;\n\
            @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
            @group(0) @binding(2) var<storage, read> w4: array<vec4<u32>>;\n\
            @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
                @builtin(workgroup_id) wid: vec3<u32>) {\n\
              let base = wid.x * N * 8u;\n\
              var s = 0u;\n\
              var s4 = vec4<u32>(0u);\n\
              for (var i = 0u; i < N; i += 8u) {\n\
                var a = base + i;\n\
                var d = 1u;\n\
                if MODE == 1u { a = base + i * 8u + l; d = 8u; }\n\
                if MODE == 2u { a = base + l * N + i; }\n\
                if MODE >= 3u {\n\
                  var b = (base + i * 4u) / 4u;\n\
                  if MODE == 4u { b = (base + l * N + i * 4u) / 4u; }\n\
                  s4 += w4[b] ^ w4[b + 1u] ^ w4[b + 2u] ^ w4[b + 3u] ^ w4[b + 4u] ^ w4[b + 5u] ^ w4[b + 6u] ^ w4[b + 7u];\n\
                } else {\n\
                s += w[a] ^ w[a + d] ^ w[a + 2u * d] ^ w[a + 3u * d]\n\
                   ^ w[a + 4u * d] ^ w[a + 5u * d] ^ w[a + 6u * d] ^ w[a + 7u * d];\n\
                }\n\
              }\n\
              o[wid.x * 8u + l] = s + s4.x + s4.y + s4.z + s4.w;\n\
            }",
        bindings: &[Binding::Read, Binding::ReadWrite, Binding::Read],
    };
    let (n, wgs) = (1024u32, 256u32);
    let words = (n * 8 * wgs) as usize;
    let wb = ctx
        .storage_init("words", bytemuck::cast_slice(&vec![3u32; words]))
        .expect("words");
    let ob = ctx.storage("o", (wgs * 8 * 4) as u64).expect("o");
    println!();
    let probe = ProbeRun { ctx, min, n, wgs };
    probe.modes(
        &PROBE,
        &[
            (0, "uniform"),
            (1, "consecutive"),
            (2, "strided"),
            (3, "uniform vec4"),
            (4, "strided vec4"),
        ],
        &[&wb, &ob, &wb],
    );
    // 64-bit components (SHADER_INT64): llvmpipe loads each component of each lane on its
    // own, whatever its width, so a vec4<u64> may bring twice the bytes of a vec4<u32>
    // for the same cost. Each lane its own run, as the weights are read.
    const PROBE_64: KernelSpec = KernelSpec {
        name: "load probe (u64)",
        source: "override MODE: u32 = 0u;\n\
            override N: u32 = 1024u;\n\
            @group(0) @binding(0) var<storage, read> w1: array<u64>;\n\
            @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
            @group(0) @binding(2) var<storage, read> w2: array<vec2<u64>>;\n\
            @group(0) @binding(3) var<storage, read> w4: array<vec4<u64>>;\n\
            @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
                @builtin(workgroup_id) wid: vec3<u32>) {\n\
              let base = wid.x * N * 8u + l * N;\n\
              var s = 0lu;\n\
              var s2 = vec2<u64>(0lu);\n\
              var s4 = vec4<u64>(0lu);\n\
              for (var i = 0u; i < N; i += 8u) {\n\
                if MODE == 0u {\n\
                  let b = (base + i * 2u) / 2u;\n\
                  s ^= w1[b] ^ w1[b + 1u] ^ w1[b + 2u] ^ w1[b + 3u] ^ w1[b + 4u] ^ w1[b + 5u] ^ w1[b + 6u] ^ w1[b + 7u];\n\
                } else if MODE == 1u {\n\
                  let b = (base + i * 4u) / 4u;\n\
                  s2 ^= w2[b] ^ w2[b + 1u] ^ w2[b + 2u] ^ w2[b + 3u] ^ w2[b + 4u] ^ w2[b + 5u] ^ w2[b + 6u] ^ w2[b + 7u];\n\
                } else {\n\
                  let b = (base + i * 8u) / 8u;\n\
                  s4 ^= w4[b] ^ w4[b + 1u] ^ w4[b + 2u] ^ w4[b + 3u] ^ w4[b + 4u] ^ w4[b + 5u] ^ w4[b + 6u] ^ w4[b + 7u];\n\
                }\n\
              }\n\
              let t = s ^ s2.x ^ s2.y ^ s4.x ^ s4.y ^ s4.z ^ s4.w;\n\
              o[wid.x * 8u + l] = u32(t) ^ u32(t >> 32u);\n\
            }",
        bindings: &[
            Binding::Read,
            Binding::ReadWrite,
            Binding::Read,
            Binding::Read,
        ],
    };
    if ctx.has_int64() {
        // Each lane reads up to 8 words per load from a run of N * 8 words.
        let big = ctx
            .storage_init(
                "words64",
                bytemuck::cast_slice(&vec![3u32; (n * 8 * wgs * 2 + 64) as usize]),
            )
            .expect("words64");
        probe.modes(
            &PROBE_64,
            &[
                (0, "strided u64"),
                (1, "strided vec2<u64>"),
                (2, "strided vec4<u64>"),
            ],
            &[&big, &ob, &big, &big],
        );
    } else {
        println!("(no SHADER_INT64 on this adapter: no 64-bit load probe)");
    }
    // The same vec4 loads from a uniform buffer and from workgroup memory (filled once,
    // one barrier): lane-uniform addresses, then each lane its own run.
    const PROBE_U: KernelSpec = KernelSpec {
        name: "load probe (uniform, workgroup)",
        source: "override MODE: u32 = 0u;\n\
            override N: u32 = 1024u;\n\
            @group(0) @binding(0) var<uniform> u: array<vec4<u32>, 1024>;\n\
            @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
            var<workgroup> sh: array<vec4<u32>, 1024>;\n\
            @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
                @builtin(workgroup_id) wid: vec3<u32>) {\n\
              if MODE >= 2u {\n\
                for (var i = l; i < 1024u; i += 8u) { sh[i] = vec4<u32>(i); }\n\
                workgroupBarrier();\n\
              }\n\
              var s4 = vec4<u32>(0u);\n\
              for (var i = 0u; i < N; i += 8u) {\n\
                var b = (i / 8u) % 1000u;\n\
                if MODE == 1u || MODE == 3u { b = (l * 125u + i / 8u) % 1000u; }\n\
                if MODE < 2u {\n\
                  s4 += u[b] ^ u[b + 1u] ^ u[b + 2u] ^ u[b + 3u] ^ u[b + 4u] ^ u[b + 5u] ^ u[b + 6u] ^ u[b + 7u];\n\
                } else {\n\
                  s4 += sh[b] ^ sh[b + 1u] ^ sh[b + 2u] ^ sh[b + 3u] ^ sh[b + 4u] ^ sh[b + 5u] ^ sh[b + 6u] ^ sh[b + 7u];\n\
                }\n\
              }\n\
              o[wid.x * 8u + l] = s4.x + s4.y + s4.z + s4.w;\n\
            }",
        bindings: &[Binding::Uniform, Binding::ReadWrite],
    };
    // Texel loads (rgba32uint, 16 bytes a lane) go through llvmpipe's texture path
    // rather than its per-lane, per-word bounds-checked buffer loads.
    {
        let src = "override MODE: u32 = 0u;\n\
            override N: u32 = 1024u;\n\
            @group(0) @binding(0) var tex: texture_2d<u32>;\n\
            @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
            @compute @workgroup_size(8) fn main(@builtin(local_invocation_index) l: u32,\n\
                @builtin(workgroup_id) wid: vec3<u32>) {\n\
              var s4 = vec4<u32>(0u);\n\
              let row = (wid.x * 8u + l) % 2048u;\n\
              for (var i = 0u; i < N; i += 8u) {\n\
                let x = (i / 8u) % 120u;\n\
                s4 += textureLoad(tex, vec2<u32>(x, row), 0) ^ textureLoad(tex, vec2<u32>(x + 1u, row), 0)\n\
                  ^ textureLoad(tex, vec2<u32>(x + 2u, row), 0) ^ textureLoad(tex, vec2<u32>(x + 3u, row), 0)\n\
                  ^ textureLoad(tex, vec2<u32>(x + 4u, row), 0) ^ textureLoad(tex, vec2<u32>(x + 5u, row), 0)\n\
                  ^ textureLoad(tex, vec2<u32>(x + 6u, row), 0) ^ textureLoad(tex, vec2<u32>(x + 7u, row), 0);\n\
              }\n\
              o[wid.x * 8u + l] = s4.x + s4.y + s4.z + s4.w;\n\
            }";
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("texel probe"),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipe = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("texel probe"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let size = wgpu::Extent3d {
            width: 128,
            height: 2048,
            depth_or_array_layers: 1,
        };
        let tex = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("texels"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        ctx.queue.write_texture(
            tex.as_image_copy(),
            bytemuck::cast_slice(&vec![3u32; 128 * 2048 * 4]),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(128 * 16),
                rows_per_image: None,
            },
            size,
        );
        let view = tex.create_view(&Default::default());
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: ob.as_entire_binding(),
                },
            ],
        });
        let t = time(min, || {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipe);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..4 {
                    pass.dispatch_workgroups(wgs, 1, 1);
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait().expect("device wait");
        }) / 4.0;
        probe.print("texel vec4", t);
    }
    let ub = ctx.uniform("uniform words", 1 << 16);
    ctx.queue
        .write_buffer(&ub, 0, bytemuck::cast_slice(&vec![3u32; 1 << 14]));
    probe.modes(
        &PROBE_U,
        &[
            (0, "ubo uniform vec4"),
            (1, "ubo per-lane vec4"),
            (2, "shared uniform vec4"),
            (3, "shared per-lane vec4"),
        ],
        &[&ub, &ob],
    );
    // The other half of a quantized matvec's cost: its Q4_1 arithmetic without loads
    // (floor/mod.rs). With the vec2<u64> load above (one per group and lane) it bounds what a
    // kernel reading these groups can do.
    let k = ctx
        .kernel(&floor::Q4_1_ARITH, &[("N", f64::from(n))])
        .expect("arithmetic probe");
    let t = gpu_time(ctx, min, &k, &[&ob], (wgs, 1, 1), 4);
    let cpu = last_cpu() / 4.0;
    let groups = f64::from(n * wgs);
    println!(
        "arith Q4_1 group (no loads): {:.2} ns wall, {:.2} CPU-ns per group of a workgroup \
         (8 lanes x 20 bytes: {:.3} CPU-ns per byte)",
        t / groups * 1e9,
        cpu / groups * 1e9,
        cpu / groups * 1e9 / 160.0
    );
}

/// One load-probe set-up: `wgs` workgroups of `n` load instructions each, timed for at
/// least `min`.
struct ProbeRun<'a> {
    ctx: &'a GpuContext,
    min: Duration,
    n: u32,
    wgs: u32,
}

impl ProbeRun<'_> {
    /// Times `spec` compiled with each `MODE` of `modes` over `buffers`, and prints each.
    fn modes(
        &self,
        spec: &cocoon_shaders::gpu::KernelSpec,
        modes: &[(u32, &str)],
        buffers: &[&wgpu::Buffer],
    ) {
        for &(mode, name) in modes {
            let k = self
                .ctx
                .kernel(spec, &[("MODE", f64::from(mode)), ("N", f64::from(self.n))])
                .expect("probe");
            let t = gpu_time(self.ctx, self.min, &k, buffers, (self.wgs, 1, 1), 4);
            self.print(name, t);
        }
    }

    /// Prints the cost per load instruction of a workgroup: `wall` is one dispatch's
    /// time; the CPU time is the last timed run's, over its 4 dispatches.
    fn print(&self, name: &str, wall: f64) {
        let cpu = last_cpu() / 4.0;
        let loads = f64::from(self.n * self.wgs);
        println!(
            "load {name:<12}: {:.2} ns wall, {:.2} CPU-ns per load instruction of a workgroup",
            wall / loads * 1e9,
            cpu / loads * 1e9
        );
    }
}
