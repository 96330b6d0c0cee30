//! The default model against its exact reference (tests/fixtures/smollm2.json, an
//! independent float64 forward pass): greedy tokens must match exactly and the logits
//! at the first generated position within 1e-2, on the wgpu backend (lavapipe where
//! there is no GPU) and on the CPU reference. Also: prefill equals token-by-token
//! decoding, and splitting the blocks into ranges changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cocoon_shaders::engine::cpu::{CpuBlocks, CpuHead};
use cocoon_shaders::engine::gpu::{GpuBlocks, GpuHead};
use cocoon_shaders::engine::{
    BlockBackend, BlockRange, GenerateOptions, HeadBackend, LocalChain, Sampler, SamplingParams,
    SessionId, generate,
};
use cocoon_shaders::gpu::GpuContext;
use cocoon_shaders::model::gguf::GgufFile;
use cocoon_shaders::model::tokenizer::Tokenizer;
use cocoon_shaders::model::{WeightSource, default_model_path};

const KV_BUDGET: usize = 256 << 20;

struct Reference {
    name: String,
    prompt: String,
    prompt_ids: Vec<u32>,
    exact_ids: Vec<u32>,
    exact_text: String,
    exact_logits: Vec<f32>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn references() -> Vec<Reference> {
    let text = std::fs::read_to_string(fixtures().join("smollm2.json")).expect("fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    json["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            let bytes =
                std::fs::read(fixtures().join(format!("smollm2_exact_logits_{name}.f32le")))
                    .expect("logits fixture");
            Reference {
                prompt: p["prompt"].as_str().expect("prompt").to_string(),
                prompt_ids: ids(&p["prompt_token_ids"]),
                exact_ids: ids(&p["exact"]["generated_token_ids"]),
                exact_text: p["exact"]["generated_text"]
                    .as_str()
                    .expect("text")
                    .to_string(),
                exact_logits: bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                name,
            }
        })
        .collect()
}

fn model() -> Arc<GgufFile> {
    static MODEL: OnceLock<Arc<GgufFile>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = default_model_path();
            assert!(
                path.exists(),
                "the default model is missing at {}: run scripts/setup",
                path.display()
            );
            Arc::new(GgufFile::open(&path).expect("the default model loads"))
        })
        .clone()
}

fn gpu() -> Arc<GpuContext> {
    static GPU: OnceLock<Arc<GpuContext>> = OnceLock::new();
    GPU.get_or_init(|| GpuContext::new().expect("a wgpu device (lavapipe)"))
        .clone()
}

fn n_blocks() -> usize {
    model().config().n_blocks
}

fn gpu_ranges(splits: &[usize]) -> Vec<BlockRange> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(splits);
    bounds.push(n_blocks());
    bounds
        .windows(2)
        .map(|w| {
            let backend: Box<dyn BlockBackend> =
                Box::new(GpuBlocks::new(gpu(), model().as_ref(), w[0]..w[1]).expect("gpu blocks"));
            BlockRange::new(backend, KV_BUDGET)
        })
        .collect()
}

fn greedy(
    head: &mut dyn HeadBackend,
    ranges: &mut [BlockRange],
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut chain = LocalChain::open(ranges, SessionId(7), prompt.len() + n).expect("session");
    let mut sampler = Sampler::new(SamplingParams::default());
    let options = GenerateOptions {
        max_new_tokens: n,
        stop_ids: &[],
    };
    let g = generate(head, &mut chain, &mut sampler, prompt, &options, |_| true).expect("generate");
    (g.token_ids, g.first_logits)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tokenizer_matches_the_reference_ids_and_text() {
    let tokenizer = Tokenizer::from_gguf(&model()).expect("tokenizer");
    for r in references() {
        assert_eq!(
            tokenizer.encode(&r.prompt, false).expect("encode"),
            r.prompt_ids,
            "{}",
            r.name
        );
        assert_eq!(tokenizer.decode(&r.exact_ids), r.exact_text, "{}", r.name);
    }
}

#[test]
fn wgpu_greedy_tokens_and_logits_match_the_exact_reference() {
    let mut head = GpuHead::new(gpu(), model().as_ref()).expect("gpu head");
    for r in references() {
        let mut ranges = gpu_ranges(&[]);
        let (ids, logits) = greedy(&mut head, &mut ranges, &r.prompt_ids, r.exact_ids.len());
        let diff = max_abs_diff(&logits, &r.exact_logits);
        assert!(diff < 1e-2, "{}: first logits differ by {diff}", r.name);
        assert_eq!(ids, r.exact_ids, "{}: tokens differ", r.name);
    }
}

#[test]
fn cpu_reference_logits_match_the_exact_reference() {
    let mut head = CpuHead::new(model().as_ref()).expect("cpu head");
    let backend: Box<dyn BlockBackend> =
        Box::new(CpuBlocks::new(model().as_ref(), 0..n_blocks()).expect("cpu blocks"));
    let mut ranges = vec![BlockRange::new(backend, KV_BUDGET)];
    for r in references() {
        let (ids, logits) = greedy(&mut head, &mut ranges, &r.prompt_ids, 4);
        let diff = max_abs_diff(&logits, &r.exact_logits);
        assert!(diff < 1e-2, "{}: first logits differ by {diff}", r.name);
        assert_eq!(ids, r.exact_ids[..4], "{}", r.name);
    }
}

#[test]
fn one_two_and_three_ranges_give_the_same_tokens() {
    let r = &references()[0];
    let mut head = GpuHead::new(gpu(), model().as_ref()).expect("gpu head");
    let n = 8;
    let (one, _) = greedy(&mut head, &mut gpu_ranges(&[]), &r.prompt_ids, n);
    let (two, _) = greedy(&mut head, &mut gpu_ranges(&[13]), &r.prompt_ids, n);
    let (three, _) = greedy(&mut head, &mut gpu_ranges(&[10, 20]), &r.prompt_ids, n);
    assert_eq!(one, r.exact_ids[..n]);
    assert_eq!(two, one);
    assert_eq!(three, one);
}

#[test]
fn prefill_equals_token_by_token_decoding() {
    let r = &references()[0];
    let config = model().config().clone();
    let d = config.d_model;
    let mut head = GpuHead::new(gpu(), model().as_ref()).expect("gpu head");
    let ids = &r.prompt_ids;
    let mut embedded = vec![0.0; ids.len() * d];
    head.embed(ids, &mut embedded).expect("embed");

    let mut prefill_ranges = gpu_ranges(&[]);
    let mut chain =
        LocalChain::open(&mut prefill_ranges, SessionId(1), ids.len()).expect("session");
    let mut prefilled = embedded.clone();
    cocoon_shaders::engine::BlockChain::forward(&mut chain, 0, &mut prefilled).expect("prefill");

    let mut step_ranges = gpu_ranges(&[]);
    let mut chain = LocalChain::open(&mut step_ranges, SessionId(2), ids.len()).expect("session");
    let mut logits_prefill = vec![0.0; config.vocab_size];
    let mut logits_step = vec![0.0; config.vocab_size];
    for (pos, row) in embedded.chunks(d).enumerate() {
        let mut hidden = row.to_vec();
        cocoon_shaders::engine::BlockChain::forward(&mut chain, pos, &mut hidden).expect("decode");
        let prefill_row = &prefilled[pos * d..(pos + 1) * d];
        let diff = max_abs_diff(&hidden, prefill_row);
        let scale = prefill_row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            diff <= 1e-3 * scale.max(1.0),
            "position {pos}: hidden differs by {diff} (scale {scale})"
        );
        head.logits(prefill_row, &mut logits_prefill)
            .expect("logits");
        head.logits(&hidden, &mut logits_step).expect("logits");
        let diff = max_abs_diff(&logits_prefill, &logits_step);
        assert!(diff < 1e-2, "position {pos}: logits differ by {diff}");
    }
}

#[test]
fn a_kv_budget_too_small_is_a_clear_error() {
    let backend: Box<dyn BlockBackend> =
        Box::new(GpuBlocks::new(gpu(), model().as_ref(), 0..2).expect("gpu blocks"));
    let mut range = BlockRange::new(backend, 1 << 20);
    let err = range
        .open_session(SessionId(1), 2048)
        .expect_err("over budget");
    assert!(
        err.to_string().contains("KV cache budget exceeded"),
        "{err}"
    );
    range
        .open_session(SessionId(2), 64)
        .expect("a small session fits");
}
