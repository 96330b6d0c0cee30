//! Writes a tiny GGUF (random F32 weights, byte-level tokenizer, ChatML template):
//! `cargo run -p cocoon-shaders --example write_tiny_gguf -- OUT.gguf [--small] [--arch A]`.
//! `--small` writes the 1-block, d=8 model used as the fuzz seeds
//! (`shaders/fuzz/seeds/gguf_parse/tiny.gguf`, and `tiny-<arch>.gguf` with `--arch`
//! qwen2, qwen3 or gemma3, whose blocks carry that architecture's extra tensors and
//! metadata).

use cocoon_shaders::model::gguf_writer::{
    tiny_llama, tiny_llama_config, tiny_llama_with, with_architecture,
};

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
    let c = with_architecture(c, arch, 4)
        .ok_or_else(|| format!("no tiny config for architecture {arch:?}"))?;
    let writer = if small || arch != "llama" {
        tiny_llama_with(&c, 3)
    } else {
        tiny_llama(7)
    };
    writer.write(out)?;
    println!("wrote {out}");
    Ok(())
}
