//! Writes a tiny llama GGUF (random F32 weights, byte-level tokenizer, ChatML template):
//! `cargo run -p cocoon-shaders --example write_tiny_gguf -- OUT.gguf [--small]`.
//! `--small` writes the 1-block, d=8 model used as the fuzz seed
//! (`shaders/fuzz/seeds/gguf_parse/tiny.gguf`).

use cocoon_shaders::model::gguf_writer::{tiny_llama, tiny_llama_config, tiny_llama_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: write_tiny_gguf OUT.gguf [--small]")?;
    let small = args.next().as_deref() == Some("--small");
    let writer = if small {
        let mut c = tiny_llama_config();
        c.n_blocks = 1;
        c.d_model = 8;
        c.d_ff = 16;
        c.n_heads = 2;
        c.n_kv_heads = 1;
        c.head_dim = 4;
        tiny_llama_with(&c, 3)
    } else {
        tiny_llama(7)
    };
    writer.write(&out)?;
    println!("wrote {out}");
    Ok(())
}
