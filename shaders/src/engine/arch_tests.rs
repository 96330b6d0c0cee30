//! Every architecture's block on both backends: tiny GGUFs of `llama` (with Llama 3.1
//! RoPE factors), `qwen2`, `qwen3` and `gemma3` written with their real metadata layout,
//! read back through the loader (the config must come back as written), then the wgpu
//! blocks against the CPU reference, and split block ranges against one range.

use super::tests::run;
use super::*;
use crate::model::gguf_writer::{tiny_llama_config, tiny_llama_with, with_architecture};
use crate::model::{GgufFile, ModelConfig, RopeScaling, WeightSource};
use crate::ops::linear::Shape;
use crate::ops::pseudo_random;
use crate::ops::testing::{assert_close, ctx};

/// The tiny config of `arch` with its features: 3 blocks, heads of 16 (q 64 wide against
/// d 32, as `attention.key_length` allows) but for llama, 7 blocks for gemma3 so that
/// block 5 is global.
pub(crate) fn tiny_arch_config(arch: &str) -> ModelConfig {
    let mut c = tiny_llama_config();
    c.n_blocks = if arch == "gemma3" { 7 } else { 3 };
    if arch != "llama" {
        c.head_dim = 16;
        c.features.attention_scale = 0.25;
    }
    let mut c = with_architecture(c, arch, 3).expect("a known architecture");
    match arch {
        "llama" => {
            c.features.rope_scaling = RopeScaling::FreqFactors(vec![4.0, 2.0, 1.0, 8.0]);
        }
        "gemma3" => c.rope_theta = 1_000_000.0,
        _ => {}
    }
    c
}

pub(crate) const ARCHS: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

fn tiny_file(arch: &str, seed: u64) -> GgufFile {
    let c = tiny_arch_config(arch);
    let bytes = tiny_llama_with(&c, seed).to_bytes();
    let file = GgufFile::from_bytes(bytes).expect("tiny file loads");
    let mut want = c.clone();
    want.name = file.config().name.clone();
    assert_eq!(file.config(), &want, "{arch}: config read back as written");
    file
}

/// The wgpu blocks of every architecture equal the CPU reference within 1e-3·(1+|x|), in
/// both kernel shapes (CPU adapters' and GPUs').
#[test]
fn every_architecture_gpu_matches_cpu() {
    for arch in ARCHS {
        let file = tiny_file(arch, 3);
        let c = file.config().clone();
        let x = pseudo_random(8 * c.d_model, 11, 1.0);
        let mut cpu = CpuBlocks::new(&file, 0..c.n_blocks).expect("cpu");
        let want = run(&mut cpu, &x);
        assert!(
            want.iter().zip(&x).any(|(a, b)| (a - b).abs() > 0.05),
            "{arch}: blocks changed nothing"
        );
        for shape in [Shape::ROW_PER_INVOCATION, Shape::WORKGROUP_REDUCE] {
            let mut gpu = GpuBlocks::with_shape(ctx(), &file, 0..c.n_blocks, shape).expect("gpu");
            let got = run(&mut gpu, &x);
            assert_close(&format!("{arch} {shape:?}"), &got, &want, 1e-3);
        }
    }
}

/// Each feature changes the result: the same weights computed as a plain Llama block
/// differ (so a backend that ignored a feature would fail the test above).
#[test]
fn every_feature_changes_the_output() {
    for arch in ARCHS {
        let file = tiny_file(arch, 5);
        let c = file.config().clone();
        let x = pseudo_random(8 * c.d_model, 12, 1.0);
        let want = run(&mut CpuBlocks::new(&file, 0..c.n_blocks).expect("cpu"), &x);
        let plain = PlainView {
            inner: &file,
            config: ModelConfig {
                features: crate::model::BlockFeatures {
                    attention_scale: c.features.attention_scale,
                    ..crate::model::BlockFeatures::llama(c.head_dim)
                },
                ..c.clone()
            },
        };
        let got = run(&mut CpuBlocks::new(&plain, 0..c.n_blocks).expect("cpu"), &x);
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff > 1e-3, "{arch}: its features change nothing ({diff})");
    }
}

/// The same tensors under another config.
struct PlainView<'a> {
    inner: &'a GgufFile,
    config: ModelConfig,
}

impl WeightSource for PlainView<'_> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn tensor(&self, name: &str) -> Result<crate::model::TensorRef<'_>, crate::model::ModelError> {
        self.inner.tensor(name)
    }
    fn shared_tensor(
        &self,
        name: &str,
    ) -> Result<crate::model::SharedTensor, crate::model::ModelError> {
        self.inner.shared_tensor(name)
    }
}

/// 1, 2 and 3 block ranges in sequence equal one range for every architecture (CPU
/// exactly, GPU within 1e-5).
#[test]
fn every_architecture_split_ranges_equal_one_range() {
    for arch in ARCHS {
        let file = tiny_file(arch, 7);
        let c = file.config().clone();
        let n = c.n_blocks;
        let x = pseudo_random(6 * c.d_model, 13, 1.0);
        let (a, b) = (n / 3, 2 * n / 3);
        let splits: [&[(usize, usize)]; 3] =
            [&[(0, n)], &[(0, b), (b, n)], &[(0, a), (a, b), (b, n)]];
        for use_gpu in [false, true] {
            let mut outs = Vec::new();
            for split in splits {
                let mut y = x.clone();
                for &(start, end) in split {
                    let r = start..end;
                    let mut be: Box<dyn BlockBackend> = if use_gpu {
                        Box::new(GpuBlocks::new(ctx(), &file, r.clone()).expect("gpu"))
                    } else {
                        Box::new(CpuBlocks::new(&file, r.clone()).expect("cpu"))
                    };
                    be.open_session(SessionId(3), 16).expect("open");
                    be.forward(SessionId(3), 0, &mut y).expect("forward");
                }
                outs.push(y);
            }
            let tol = if use_gpu { 1e-5 } else { 0.0 };
            assert_close(&format!("{arch} two ranges"), &outs[1], &outs[0], tol);
            assert_close(&format!("{arch} three ranges"), &outs[2], &outs[0], tol);
        }
    }
}

/// A plain Llama file whose q/k/v and gate/up come in different formats (as a Q4_K_M
/// file's `attn_v` in Q6_K beside `attn_q` in Q4_K), which the fused path cannot stack:
/// the wgpu blocks (the general path, with q/k/v written into one row at their offsets
/// and gate/up apart) equal the CPU reference, in both kernel shapes.
#[test]
fn mixed_formats_in_a_block_match_cpu() {
    use crate::model::GgmlType;
    use crate::model::quant::quantize;
    let mut c = tiny_llama_config();
    c.n_blocks = 3;
    let mut w = tiny_llama_with(&c, 9);
    for b in 0..c.n_blocks {
        for (what, dims, ty) in [
            ("attn_v", [c.d_model, c.kv_dim()], GgmlType::Q8_0),
            ("ffn_up", [c.d_model, c.d_ff], GgmlType::Q4_1),
        ] {
            let n = dims[0] * dims[1];
            let values = pseudo_random(n, 20 + b as u64, 0.1);
            let data = quantize(ty, &values).expect("whole blocks");
            let name = format!("blk.{b}.{what}.weight");
            w.remove_tensor(&name);
            w.tensor(&name, ty, &dims, data).expect("tensor");
        }
    }
    let file = GgufFile::from_bytes(w.to_bytes()).expect("loads");
    assert!(file.config().features.is_plain_llama(c.head_dim));
    let x = pseudo_random(8 * c.d_model, 21, 1.0);
    let want = run(&mut CpuBlocks::new(&file, 0..3).expect("cpu"), &x);
    for shape in [Shape::ROW_PER_INVOCATION, Shape::WORKGROUP_REDUCE] {
        let mut gpu = GpuBlocks::with_shape(ctx(), &file, 0..3, shape).expect("gpu");
        let got = run(&mut gpu, &x);
        assert_close(&format!("mixed formats {shape:?}"), &got, &want, 1e-3);
    }
}

/// RoPE tables start short and grow with the longest session: a session past the first
/// table's 256 positions (opened after a short one, which keeps its own table) equals the
/// CPU reference, on the fused Llama path and the general one.
#[test]
fn rope_tables_grow_with_sessions() {
    for arch in ["llama", "gemma3"] {
        let mut c = tiny_arch_config(arch);
        c.context_length = 1024;
        if arch == "llama" {
            // The plain block (the fused path).
            c.features = crate::model::BlockFeatures::llama(c.head_dim);
        }
        let file = GgufFile::from_bytes(tiny_llama_with(&c, 4).to_bytes()).expect("loads");
        let n = 300;
        let x = pseudo_random(n * c.d_model, 31, 1.0);
        let mut gpu = GpuBlocks::new(ctx(), &file, 0..c.n_blocks).expect("gpu");
        let mut cpu = CpuBlocks::new(&file, 0..c.n_blocks).expect("cpu");
        gpu.open_session(SessionId(1), 8).expect("short session");
        let mut short = x[..4 * c.d_model].to_vec();
        gpu.forward(SessionId(1), 0, &mut short)
            .expect("short forward");
        let mut got = x.clone();
        gpu.open_session(SessionId(2), n).expect("long session");
        gpu.forward(SessionId(2), 0, &mut got)
            .expect("long forward");
        let mut want = x.clone();
        cpu.open_session(SessionId(2), n).expect("cpu session");
        cpu.forward(SessionId(2), 0, &mut want)
            .expect("cpu forward");
        let tail = (n - 8) * c.d_model;
        assert_close(
            &format!("{arch} rows past 256"),
            &got[tail..],
            &want[tail..],
            1e-3,
        );
        let mut again = x[..4 * c.d_model].to_vec();
        gpu.forward(SessionId(1), 0, &mut again)
            .expect("short session again");
        assert_close(&format!("{arch} short session"), &again, &short, 1e-6);
    }
}
