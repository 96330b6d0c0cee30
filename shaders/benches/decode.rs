//! Decode and prefill speed of the default model on one node: wgpu (lavapipe where there
//! is no GPU) against the CPU reference, and against llama.cpp's `llama-bench` on the same
//! GGUF when it is on PATH. Prints a table; `cargo bench -p cocoon-shaders --bench decode`.
//! Two more rows give floors under a token on this adapter (floor/mod.rs): the decode
//! rate if a token did nothing but read the model's weights, and if it also did the
//! arithmetic of its Q4_1 groups.

use std::process::Command;
use std::sync::Arc;

use cocoon_shaders::engine::cpu::{CpuBlocks, CpuHead};
use cocoon_shaders::engine::gpu::{GpuBlocks, GpuHead};
use cocoon_shaders::engine::{
    BlockBackend, BlockRange, GenerateOptions, HeadBackend, LocalChain, Sampler, SamplingParams,
    SessionId, generate,
};
use cocoon_shaders::gpu::GpuContext;
use cocoon_shaders::model::gguf::GgufFile;
use cocoon_shaders::model::tokenizer::Tokenizer;
use cocoon_shaders::model::{GgmlType, WeightSource, default_model_path};

mod cpu_time;
mod floor;

const PREFILL_TOKENS: usize = 128;

struct Speed {
    prefill_tps: f64,
    decode_tps: f64,
    /// CPU seconds the whole process spent per decoded token (all threads: llvmpipe's
    /// workers, the driver's queue thread, the host), after the first token; not known
    /// for llama-bench.
    decode_cpu_per_token: Option<f64>,
}

fn measure(
    head: &mut dyn HeadBackend,
    blocks: Box<dyn BlockBackend>,
    prompt: &[u32],
    decode_tokens: usize,
) -> Speed {
    let mut ranges = [BlockRange::new(blocks, 1 << 30)];
    // Warm up: llvmpipe compiles each kernel at its first dispatch.
    {
        let mut chain = LocalChain::open(&mut ranges, SessionId(0), 16).expect("session");
        let mut sampler = Sampler::new(SamplingParams::default());
        let options = GenerateOptions {
            max_new_tokens: 4,
            stop_ids: &[],
        };
        generate(
            head,
            &mut chain,
            &mut sampler,
            &prompt[..4],
            &options,
            |_| true,
        )
        .expect("warm up");
    }
    let mut chain =
        LocalChain::open(&mut ranges, SessionId(1), prompt.len() + decode_tokens).expect("session");
    let mut sampler = Sampler::new(SamplingParams::default());
    let options = GenerateOptions {
        max_new_tokens: decode_tokens,
        stop_ids: &[],
    };
    // The CPU clock read as the first token arrives (decode_tokens_per_second's span
    // starts there too) and at the end.
    let mut first_token_cpu = None;
    let g = generate(head, &mut chain, &mut sampler, prompt, &options, |_| {
        first_token_cpu.get_or_insert_with(cpu_time::cpu_seconds);
        true
    })
    .expect("generate");
    let decoded = g.token_ids.len().saturating_sub(1).max(1) as f64;
    Speed {
        prefill_tps: g.prefill_tokens_per_second(),
        decode_tps: g.decode_tokens_per_second(),
        decode_cpu_per_token: first_token_cpu.map(|c0| (cpu_time::cpu_seconds() - c0) / decoded),
    }
}

/// Peak resident memory of this process, MiB (Linux: VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// llama.cpp's prefill and decode tok/s on the same file with 2 threads, when
/// `llama-bench` is on PATH.
fn llama_bench(model: &std::path::Path, decode_tokens: usize) -> Option<Speed> {
    let out = Command::new("llama-bench")
        .args([
            "-m",
            &model.to_string_lossy(),
            "-t",
            "2",
            "-o",
            "json",
            "-r",
            "2",
        ])
        .args([
            "-p",
            &PREFILL_TOKENS.to_string(),
            "-n",
            &decode_tokens.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut speed = Speed {
        prefill_tps: 0.0,
        decode_tps: 0.0,
        decode_cpu_per_token: None,
    };
    for run in runs.as_array()? {
        let tps = run["avg_ts"].as_f64()?;
        if run["n_prompt"].as_u64()? > 0 {
            speed.prefill_tps = tps;
        } else {
            speed.decode_tps = tps;
        }
    }
    Some(speed)
}

fn main() {
    // `cargo bench` passes --bench; nothing here takes arguments.
    let path = default_model_path();
    let model = Arc::new(GgufFile::open(&path).unwrap_or_else(|e| {
        panic!(
            "the default model at {} does not load ({e}): run scripts/setup",
            path.display()
        )
    }));
    let n_blocks = model.config().n_blocks;
    let tokenizer = Tokenizer::from_gguf(&model).expect("tokenizer");
    let text = "The history of the mesh begins with small machines in many homes, each lending \
                a little of its time to strangers who ask questions in private. ";
    let mut prompt = Vec::new();
    while prompt.len() < PREFILL_TOKENS {
        prompt.extend(tokenizer.encode(text, false).expect("encode"));
    }
    prompt.truncate(PREFILL_TOKENS);
    let decode_tokens = 64;

    let ctx = GpuContext::new().expect("wgpu device");
    let mut gpu_head = GpuHead::new(ctx.clone(), model.as_ref()).expect("gpu head");
    let gpu_blocks = GpuBlocks::new(ctx.clone(), model.as_ref(), 0..n_blocks).expect("gpu blocks");
    let gpu = measure(&mut gpu_head, Box::new(gpu_blocks), &prompt, decode_tokens);
    let rss_after_gpu = peak_rss_mib();

    let mut cpu_head = CpuHead::new(model.as_ref()).expect("cpu head");
    let cpu_blocks = CpuBlocks::new(model.as_ref(), 0..n_blocks).expect("cpu blocks");
    let cpu = measure(&mut cpu_head, Box::new(cpu_blocks), &prompt[..32], 8);

    let tensor_start = model.tensor_infos().iter().map(|t| t.offset).min();
    let tensor_bytes = &model.bytes()[tensor_start.unwrap_or(0)..];
    let q4_1_groups: usize = model
        .tensor_infos()
        .iter()
        .filter(|t| t.ty == GgmlType::Q4_1)
        .map(|t| t.dims.iter().product::<usize>() / 32)
        .sum();
    let floors = floor::Floors::measure(&ctx, tensor_bytes, q4_1_groups);

    let llama = llama_bench(&path, decode_tokens);

    println!("\ndefault model {} on {}", path.display(), ctx.info());
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "backend", "prefill t/s", "decode t/s", "vs wgpu"
    );
    let row = |name: &str, s: &Speed| {
        println!(
            "{name:<28} {:>12.1} {:>12.1} {:>9.2}x",
            s.prefill_tps,
            s.decode_tps,
            s.decode_tps / gpu.decode_tps
        );
    };
    row("wgpu", &gpu);
    // What the decode costs the machine: were every core busy for all of that CPU time
    // (no dispatch hand-offs, no core idle), decode could go no faster than this.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let all_cores_tps = gpu.decode_cpu_per_token.map(|c| cores / c);
    if let (Some(c), Some(ceiling)) = (gpu.decode_cpu_per_token, all_cores_tps) {
        println!(
            "  (wgpu decode: {:.1} CPU-ms a token, {:.2} of {cores} cores busy on average; \
             with all {cores} busy: {ceiling:.1} tok/s)",
            c * 1e3,
            c * gpu.decode_tps
        );
    }
    row("cpu reference (f32)", &cpu);
    // Not backends: the decode rate if a token cost only the reading of its weights, and
    // only that plus the arithmetic of its Q4_1 groups (floor/mod.rs; the LM head's
    // Q8_0 arithmetic, attention and dispatches left out, so an upper bound on any
    // kernel).
    if let Some(f) = floors {
        let floor_row = |name: &str, tps: f64| {
            println!(
                "{name:<28} {:>12} {:>12.1} {:>9.2}x",
                "-",
                tps,
                tps / gpu.decode_tps
            );
        };
        floor_row("floor: weights read", f.read_tps());
        floor_row("floor: read + Q4_1 arith", f.read_arith_tps());
        println!(
            "  (the model's {:.1} MiB of tensors read once in {:.1} ms, {:.2} GB/s; the \
             arithmetic of its {q4_1_groups} Q4_1 groups {:.1} ms)",
            tensor_bytes.len() as f64 / (1 << 20) as f64,
            f.read * 1e3,
            tensor_bytes.len() as f64 / f.read / 1e9,
            f.arith * 1e3
        );
    }
    match &llama {
        Some(l) => {
            row("llama.cpp (2 threads)", l);
            println!(
                "wgpu decode is {:.0}% of llama.cpp's, prefill {:.0}%",
                100.0 * gpu.decode_tps / l.decode_tps,
                100.0 * gpu.prefill_tps / l.prefill_tps
            );
            if let Some(ceiling) = all_cores_tps {
                println!(
                    "wgpu decode with every core busy would be {:.0}% of llama.cpp's",
                    100.0 * ceiling / l.decode_tps
                );
            }
            if let Some(f) = floors {
                println!(
                    "the floors are {:.0}% (read) and {:.0}% (read + Q4_1 arith) of \
                     llama.cpp's decode",
                    100.0 * f.read_tps() / l.decode_tps,
                    100.0 * f.read_arith_tps() / l.decode_tps
                );
            }
        }
        None => {
            println!("llama.cpp: llama-bench not on PATH (scripts/build-llama-bench builds it)")
        }
    }
    println!(
        "prefill {PREFILL_TOKENS} tokens, decode {decode_tokens} tokens (cpu: 32 and 8); \
         peak RSS after wgpu runs {:.0} MiB, overall {:.0} MiB",
        rss_after_gpu.unwrap_or(f64::NAN),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}
