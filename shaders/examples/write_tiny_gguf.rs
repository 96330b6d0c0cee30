//! Writes a tiny GGUF (random F32 weights, byte-level tokenizer, ChatML template):
//! `cargo run -p cocoon-shaders --example write_tiny_gguf -- OUT.gguf [--small] [--arch A]`.
//! `--small` writes the 1-block, d=8 model used as the fuzz seeds
//! (`shaders/fuzz/seeds/gguf_parse/tiny.gguf`, and `tiny-<arch>.gguf` with `--arch`
//! qwen2, qwen3 or gemma3, whose blocks carry that architecture's extra tensors and
//! metadata).

use cocoon_shaders::model::gguf_writer::{tiny_llama, tiny_llama_config, tiny_llama_with};
use cocoon_shaders::model::{FfnActivation, RopeStyle, SlidingWindow};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .ok_or("usage: write_tiny_gguf OUT.gguf [--small] [--arch A]")?;
    let small = args.iter().any(|a| a == "--small");
    let arch = args
        .iter()
        .position(|a| a == "--arch")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("llama");
    let mut c = tiny_llama_config();
    if small {
        c.n_blocks = 1;
        c.d_model = 8;
        c.d_ff = 16;
        c.n_heads = 2;
        c.n_kv_heads = 1;
        c.head_dim = 4;
    }
    c.architecture = arch.to_string();
    let f = &mut c.features;
    match arch {
        "llama" => {}
        "qwen2" => f.qkv_bias = true,
        "qwen3" => f.qk_norm = true,
        "gemma3" => {
            f.qk_norm = true;
            f.post_norms = true;
            f.ffn_activation = FfnActivation::GeluTanh;
            f.embed_scale = Some((c.d_model as f32).sqrt());
            f.sliding_window = Some(SlidingWindow {
                window: 4,
                pattern: 6,
                local_rope_theta: 10_000.0,
            });
        }
        other => return Err(format!("no tiny config for architecture {other:?}").into()),
    }
    if arch != "llama" {
        c.rope_style = RopeStyle::NeoX;
    }
    let writer = if small || arch != "llama" {
        tiny_llama_with(&c, 3)
    } else {
        tiny_llama(7)
    };
    writer.write(out)?;
    println!("wrote {out}");
    Ok(())
}
