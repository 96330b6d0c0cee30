//! Fuzz target: arbitrary bytes through the GGUF parser and, when they parse as a llama
//! model, through its config, every tensor view, the tokenizer and the chat template.

#![no_main]

use cocoon_shaders::model::gguf::GgufHeader;
use cocoon_shaders::model::{ChatMessage, ChatTemplate, GgufFile, Tokenizer, WeightSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = GgufHeader::parse(data) {
        for t in &header.tensors {
            assert!(t.offset + t.size <= data.len(), "tensor {} escapes the file", t.name);
        }
    }
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let config = file.config().clone();
    assert!(config.n_blocks > 0 && config.head_dim > 0);
    for t in file.tensor_infos() {
        let view = file.tensor(&t.name).expect("listed tensors have views");
        assert_eq!(view.data.len(), t.size);
    }
    if let Ok(tok) = Tokenizer::from_gguf(&file) {
        if let Ok(ids) = tok.encode("Hello <|im_start|> wörld 42 \u{1F600}", true) {
            let mut dec = tok.stream_decoder();
            for &id in &ids {
                let _ = dec.push(id);
            }
            let _ = dec.finish();
            let _ = tok.decode(&ids);
        }
    }
    if let Ok(t) = ChatTemplate::from_gguf(&file) {
        let _ = t.render(&[ChatMessage::new("user", "hi")], true);
    }
});
