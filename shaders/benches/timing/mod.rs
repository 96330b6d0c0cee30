//! Timing shared by the kernel benchmarks (`benches/kernels.rs`) and the lavapipe probes
//! (`probes/main.rs`): wall and CPU seconds per call, dispatches timed in one
//! submission, and small buffers. In `benches/*/` so that cargo does not take it for a
//! bench of its own.

use std::time::{Duration, Instant};

use cocoon_shaders::gpu::{GpuContext, Kernel};
use cocoon_shaders::ops::Step;

use super::cpu_time::cpu_seconds;

thread_local! {
    static LAST_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// Wall seconds per call of `f`; the CPU seconds per call are left in `LAST_CPU`.
pub fn time<F: FnMut()>(min: Duration, mut f: F) -> f64 {
    f();
    let mut iters = 0u32;
    let start = Instant::now();
    let c0 = cpu_seconds();
    while start.elapsed() < min || iters < 2 {
        f();
        iters += 1;
    }
    LAST_CPU.with(|c| c.set((cpu_seconds() - c0) / iters as f64));
    start.elapsed().as_secs_f64() / iters as f64
}

pub fn last_cpu() -> f64 {
    LAST_CPU.with(|c| c.get())
}

/// Runs `reps` dispatches of `kernel` in one submission and waits; seconds per dispatch.
pub fn gpu_time(
    ctx: &GpuContext,
    min: Duration,
    kernel: &Kernel,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
    reps: u32,
) -> f64 {
    gpu_time_bg(
        ctx,
        min,
        kernel,
        &ctx.bind_group(kernel, buffers),
        groups,
        reps,
    )
}

pub fn gpu_time_bg(
    ctx: &GpuContext,
    min: Duration,
    kernel: &Kernel,
    bg: &wgpu::BindGroup,
    groups: (u32, u32, u32),
    reps: u32,
) -> f64 {
    time(min, || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                cocoon_shaders::gpu::pipeline::dispatch(&mut pass, kernel, bg, groups);
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait().expect("device wait");
    }) / reps as f64
}

pub fn step_buffer(ctx: &GpuContext, n: u32, pos: u32) -> wgpu::Buffer {
    let b = ctx.uniform("step", 16);
    let s = Step {
        n_tokens: n,
        start_pos: pos,
        pad: [0; 2],
    };
    ctx.queue.write_buffer(&b, 0, bytemuck::bytes_of(&s));
    b
}

pub fn f32_buf(ctx: &GpuContext, v: &[f32]) -> wgpu::Buffer {
    ctx.storage_init("bench", bytemuck::cast_slice(v))
        .expect("bench buffer")
}

/// A bench's command line: `--quick` (shorter timings) and the sections named (none
/// named: every default section; the opt-in ones run only when named).
pub struct Sections {
    pub quick: bool,
    named: Vec<String>,
}

impl Sections {
    pub fn from_args() -> Self {
        Sections {
            quick: std::env::args().any(|a| a == "--quick"),
            named: std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        }
    }

    /// Whether a default section runs.
    pub fn run(&self, section: &str) -> bool {
        self.named.is_empty() || self.named(section)
    }

    /// Whether an opt-in section was named.
    pub fn named(&self, section: &str) -> bool {
        self.named.iter().any(|o| o == section)
    }

    /// The least time each measurement takes.
    pub fn min_time(&self) -> Duration {
        Duration::from_millis(if self.quick { 150 } else { 600 })
    }
}
