//! The worker's compute: one thread that owns a `BlockRange` (wgpu, or the CPU reference)
//! and runs jobs from any number of sessions in arrival order. Async code talks to it
//! through an [`EngineHandle`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use cocoon_shaders::engine::{BlockRange, EngineError, SessionId};
use cocoon_shaders::model::WeightSource;
use cocoon_shaders::model::gguf::GgufFile;
use tokio::sync::oneshot;

use crate::cmd::run::Backend;

enum Job {
    Open {
        id: SessionId,
        max_positions: usize,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Forward {
        id: SessionId,
        start_pos: usize,
        hidden: Vec<f32>,
        span: std::ops::Range<usize>,
        reply: oneshot::Sender<Result<Vec<f32>, EngineError>>,
    },
    Close {
        id: SessionId,
    },
}

/// What the loaded range is and how fast it ran at start-up.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub blocks: std::ops::Range<usize>,
    pub d_model: usize,
    /// KV-cache bytes one position takes in this range.
    pub kv_bytes_per_position: usize,
    /// Single-token decode speed through the whole range, measured at start-up.
    pub decode_tokens_per_second: f64,
    pub device: String,
}

/// A cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: std::sync::mpsc::Sender<Job>,
    info: Arc<EngineInfo>,
    free_kv_bytes: Arc<AtomicU64>,
}

impl EngineHandle {
    /// Loads blocks `blocks` of the GGUF model at `path`, warms the kernels up (llvmpipe
    /// compiles them at the first dispatch) while measuring decode speed, and starts the
    /// engine thread.
    pub fn start(
        path: &Path,
        blocks: std::ops::Range<usize>,
        kv_budget_bytes: usize,
        backend: Backend,
    ) -> anyhow::Result<Self> {
        let file = GgufFile::open(path)
            .with_context(|| format!("loading the model {}", path.display()))?;
        let config = file.config().clone();
        anyhow::ensure!(
            blocks.start < blocks.end && blocks.end <= config.n_blocks,
            "blocks {}..{} are not inside the model's {} blocks",
            blocks.start,
            blocks.end,
            config.n_blocks
        );
        let (backend, device): (Box<dyn cocoon_shaders::engine::BlockBackend>, String) =
            match backend {
                Backend::Cpu => (
                    Box::new(cocoon_shaders::engine::CpuBlocks::new(
                        &file,
                        blocks.clone(),
                    )?),
                    "cpu (float32 reference)".into(),
                ),
                Backend::Wgpu => {
                    let ctx =
                        cocoon_shaders::gpu::GpuContext::new().context("opening a wgpu device")?;
                    let device = ctx.info();
                    (
                        Box::new(cocoon_shaders::engine::GpuBlocks::new(
                            ctx,
                            &file,
                            blocks.clone(),
                        )?),
                        device,
                    )
                }
            };
        let mut range = BlockRange::new(backend, kv_budget_bytes);
        let decode_tokens_per_second = warm_up(&mut range, config.d_model)?;
        let info = Arc::new(EngineInfo {
            blocks: blocks.clone(),
            d_model: config.d_model,
            kv_bytes_per_position: range.kv_bytes_for(1),
            decode_tokens_per_second,
            device,
        });
        let free_kv_bytes = Arc::new(AtomicU64::new(range.free_kv_bytes() as u64));
        let (jobs, rx) = std::sync::mpsc::channel();
        let free = free_kv_bytes.clone();
        std::thread::Builder::new()
            .name("cocoon-engine".into())
            .spawn(move || run_jobs(range, rx, free))
            .context("starting the engine thread")?;
        Ok(Self {
            jobs,
            info,
            free_kv_bytes,
        })
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// KV capacity left, in positions.
    pub fn free_kv_positions(&self) -> u64 {
        self.free_kv_bytes.load(Ordering::Relaxed) / self.info.kv_bytes_per_position.max(1) as u64
    }

    pub async fn open(&self, id: SessionId, max_positions: usize) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Open {
            id,
            max_positions,
            reply,
        })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs blocks `span` (within the loaded range) of session `id`.
    pub async fn forward(
        &self,
        id: SessionId,
        start_pos: usize,
        hidden: Vec<f32>,
        span: std::ops::Range<usize>,
    ) -> Result<Vec<f32>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Forward {
            id,
            start_pos,
            hidden,
            span,
            reply,
        })?;
        rx.await.map_err(|_| stopped())?
    }

    pub fn close(&self, id: SessionId) {
        let _ = self.jobs.send(Job::Close { id });
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.jobs.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> EngineError {
    EngineError::Gpu("the engine thread stopped".into())
}

fn run_jobs(mut range: BlockRange, rx: std::sync::mpsc::Receiver<Job>, free: Arc<AtomicU64>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Open {
                id,
                max_positions,
                reply,
            } => {
                let _ = reply.send(range.open_session(id, max_positions));
            }
            Job::Forward {
                id,
                start_pos,
                mut hidden,
                span,
                reply,
            } => {
                let r = range
                    .forward_span(id, start_pos, &mut hidden, span)
                    .map(|()| hidden);
                let _ = reply.send(r);
            }
            Job::Close { id } => range.close_session(id),
        }
        free.store(range.free_kv_bytes() as u64, Ordering::Relaxed);
    }
}

/// Runs a short prefill and a few single-token decodes on a scratch session; returns the
/// decode speed in tokens per second, from the fastest step. Interference only slows a
/// step (the other workers of a devnet warm up on the same cores, a build runs beside
/// it), and a worker serving a chain computes one token at a time with its neighbours
/// idle, so the best step is the closest estimate of what it will serve at.
fn warm_up(range: &mut BlockRange, d_model: usize) -> anyhow::Result<f64> {
    const PROMPT: usize = 4;
    const DECODES: usize = 12;
    let id = SessionId(u64::MAX);
    range.open_session(id, PROMPT + DECODES + 1)?;
    let result = (|| {
        let mut hidden: Vec<f32> = (0..PROMPT * d_model)
            .map(|i| ((i % 97) as f32 - 48.0) / 480.0)
            .collect();
        range.forward(id, 0, &mut hidden)?;
        let mut row = hidden[(PROMPT - 1) * d_model..].to_vec();
        // The first decode compiles its kernels: not timed.
        range.forward(id, PROMPT, &mut row)?;
        let mut best = f64::INFINITY;
        for i in 1..=DECODES {
            let started = Instant::now();
            range.forward(id, PROMPT + i, &mut row)?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        Ok::<_, EngineError>(1.0 / best.max(1e-9))
    })();
    range.close_session(id);
    Ok(result?)
}
