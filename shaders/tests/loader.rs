//! Model loading end to end: tiny GGUFs written by the tests (round trips, every kind of
//! corruption), the real default model (shape, tokenizer against the reference ids, chat
//! template).

use cocoon_shaders::model::gguf::{GgufHeader, MetaArray, MetaValue, llama_tensor_shapes};
use cocoon_shaders::model::gguf_writer::{tiny_llama, tiny_llama_config};
use cocoon_shaders::model::{
    ChatMessage, ChatTemplate, GgmlType, GgufFile, GgufWriter, ModelError, RopeStyle, Tokenizer,
    WeightSource, default_model_path,
};
use proptest::prelude::*;
use std::sync::OnceLock;

fn tiny_bytes() -> Vec<u8> {
    tiny_llama(7).to_bytes()
}

fn open_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tiny_gguf_round_trips() {
    let w = tiny_llama(7);
    let file = GgufFile::from_bytes(w.to_bytes()).expect("tiny model opens");
    assert_eq!(file.version(), 3);
    assert_eq!(file.config(), &tiny_llama_config());
    assert_eq!(file.alignment(), 32);
    let shapes = llama_tensor_shapes(&tiny_llama_config());
    assert_eq!(file.tensor_infos().len(), shapes.len());
    for (name, dims) in shapes {
        let t = file.tensor(&name).expect("tensor present");
        assert_eq!(t.dims, dims.as_slice(), "{name}");
        assert_eq!(t.ty, GgmlType::F32);
        assert_eq!(t.data.len(), dims.iter().product::<usize>() * 4);
        assert_eq!(
            t.data.as_ptr() as usize % 32,
            file.bytes().as_ptr() as usize % 32
        );
    }
    // Norms are 1.0, matrices in [-0.1, 0.1).
    let norm = file.tensor("blk.1.ffn_norm.weight").expect("norm");
    assert!(norm.data.chunks(4).all(|b| b == 1.0f32.to_le_bytes()));
    let q = file.tensor("blk.0.attn_q.weight").expect("q");
    let first = f32::from_le_bytes([q.data[0], q.data[1], q.data[2], q.data[3]]);
    assert!(first.abs() < 0.1 && first != 0.0);
    assert!(matches!(
        file.tensor("blk.9.attn_q.weight"),
        Err(ModelError::MissingTensor(_))
    ));
}

#[test]
fn version_2_and_other_alignments_parse() {
    let mut w = tiny_llama(1);
    w.version(2);
    w.alignment(64).expect("power of two");
    let bytes = w.to_bytes();
    let file = GgufFile::from_bytes(bytes).expect("v2 file opens");
    assert_eq!(file.version(), 2);
    assert_eq!(file.alignment(), 64);
    for t in file.tensor_infos() {
        assert_eq!(t.offset % 64, 0, "{} at {:x}", t.name, t.offset);
    }
    let mut w = tiny_llama(1);
    w.version(4);
    assert!(open_err(w.to_bytes()).contains("unsupported GGUF version 4"));
    let mut w = tiny_llama(1);
    w.meta_u32("general.alignment", 48);
    assert!(open_err(w.to_bytes()).contains("general.alignment"));
}

#[test]
fn every_metadata_type_round_trips_including_nested_arrays() {
    let mut w = GgufWriter::new();
    let values = vec![
        ("a.u8", MetaValue::U8(200)),
        ("a.i8", MetaValue::I8(-100)),
        ("a.u16", MetaValue::U16(60000)),
        ("a.i16", MetaValue::I16(-30000)),
        ("a.u32", MetaValue::U32(4_000_000_000)),
        ("a.i32", MetaValue::I32(-2_000_000_000)),
        ("a.f32", MetaValue::F32(1.5)),
        ("a.bool", MetaValue::Bool(true)),
        ("a.str", MetaValue::String("héllo".into())),
        ("a.u64", MetaValue::U64(u64::MAX)),
        ("a.i64", MetaValue::I64(i64::MIN)),
        ("a.f64", MetaValue::F64(-2.25)),
        (
            "a.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, -2, 3]),
                MetaArray::String(vec!["x".into(), "".into()]),
                MetaArray::Array(vec![MetaArray::Bool(vec![true, false])]),
                MetaArray::F64(vec![]),
            ])),
        ),
        (
            "a.u16s",
            MetaValue::Array(MetaArray::U16(vec![1, 2, 65535])),
        ),
    ];
    for (k, v) in &values {
        w.meta(k, v.clone());
    }
    let bytes = w.to_bytes();
    let header = GgufHeader::parse(&bytes).expect("parses");
    assert_eq!(header.metadata.len(), values.len());
    for (k, v) in &values {
        assert_eq!(header.metadata.get(k), Some(v), "{k}");
    }
    assert_eq!(header.metadata.get_u64("a.u32").ok(), Some(4_000_000_000));
    assert!(header.metadata.get_u64("a.i32").is_err());
    assert_eq!(header.metadata.get_f32("a.f64").ok(), Some(-2.25));
    assert_eq!(header.metadata.get_str("a.str").ok(), Some("héllo"));
    let missing = header.metadata.get_str("a.u8").unwrap_err().to_string();
    assert!(missing.contains("a.u8"), "{missing}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny_bytes();
    // Every length inside the header and around each tensor boundary, and a stride
    // through the data: each must be an error, never a panic.
    let header = GgufHeader::parse(&bytes).expect("parses");
    let mut lengths: Vec<usize> = (0..header.data_offset + 64).collect();
    for t in &header.tensors {
        lengths.extend(t.offset.saturating_sub(2)..(t.offset + 3).min(bytes.len()));
        lengths.extend((t.offset + t.size).saturating_sub(2)..(t.offset + t.size).min(bytes.len()));
    }
    lengths.extend((0..bytes.len()).step_by(61));
    for len in lengths {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(
            r.is_err(),
            "truncated to {len} of {} bytes opened",
            bytes.len()
        );
    }
    // The small seed-sized model: every single length.
    let small =
        cocoon_shaders::model::gguf_writer::tiny_llama_with(&fuzz_seed_config(), 3).to_bytes();
    GgufFile::from_bytes(small.clone()).expect("small model opens");
    for len in 0..small.len() {
        assert!(
            GgufFile::from_bytes(small[..len].to_vec()).is_err(),
            "{len}"
        );
    }
}

fn fuzz_seed_config() -> cocoon_shaders::model::ModelConfig {
    let mut c = tiny_llama_config();
    c.n_blocks = 1;
    c.d_model = 8;
    c.d_ff = 16;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 4;
    c
}

#[test]
fn truncated_data_names_the_tensor_and_the_range() {
    let bytes = tiny_bytes();
    let cut = bytes[..bytes.len() - 4].to_vec();
    let msg = open_err(cut);
    let header = GgufHeader::parse(&bytes).expect("parses");
    let last = header
        .tensors
        .iter()
        .max_by_key(|t| t.offset)
        .expect("has tensors");
    assert!(msg.contains(&format!("tensor {}", last.name)), "{msg}");
    assert!(msg.contains("past the end of the file"), "{msg}");
    assert!(
        msg.contains(&format!(
            "0x{:x}..0x{:x}",
            last.offset,
            last.offset + last.size
        )),
        "{msg}"
    );
}

#[test]
fn bad_magic_is_named() {
    let mut bytes = tiny_bytes();
    bytes[0..4].copy_from_slice(b"GGML");
    let msg = open_err(bytes);
    assert!(msg.contains("bad magic"), "{msg}");
    assert!(msg.contains("not a GGUF file"), "{msg}");
}

#[test]
fn lying_counts_are_rejected_without_allocating() {
    // Header claiming 2^60 tensors and 2^60 metadata entries.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let msg = open_err(bytes);
    assert!(msg.contains("metadata count"), "{msg}");
    assert!(msg.contains("cannot fit"), "{msg}");

    // An array of strings claiming 2^62 elements.
    let mut w = GgufWriter::new();
    w.meta("x", MetaValue::Array(MetaArray::String(vec!["ab".into()])));
    let mut bytes = w.to_bytes();
    let count_at = bytes.len() - 8 - 2 - 8;
    bytes[count_at..count_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let err = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("metadata \"x\"") && err.contains("cannot fit"),
        "{err}"
    );

    // A string claiming u64::MAX bytes.
    let mut w = GgufWriter::new();
    w.meta_str("name", "abc");
    let mut bytes = w.to_bytes();
    let len_at = bytes.len() - 3 - 8;
    bytes[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("metadata \"name\""), "{err}");
}

#[test]
fn tensor_offset_past_the_end_is_named() {
    let mut w = GgufWriter::new();
    w.tensor_f32("x.weight", &[4], &[1.0, 2.0, 3.0, 4.0])
        .expect("sizes match");
    let mut bytes = w.to_bytes();
    GgufHeader::parse(&bytes).expect("parses");
    // name length, name, n_dims, dims[0], type, then the offset.
    let name_at = bytes
        .windows(8)
        .position(|w| w == b"x.weight")
        .expect("name in header");
    let offset_at = name_at + 8 + 4 + 8 + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("tensor x.weight"), "{err}");
    assert!(err.contains("past the end of the file"), "{err}");
    // Overflowing offsets are errors too.
    bytes[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let err = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("tensor x.weight"), "{err}");
    // A misaligned offset.
    bytes[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    let err = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("not a multiple of the alignment"), "{err}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let mut w = tiny_llama(2);
    let c = tiny_llama_config();
    let wrong = vec![0.0f32; c.d_model * (c.q_dim() - 8)];
    w.tensor_f32("blk.1.attn_q.weight", &[c.d_model, c.q_dim() - 8], &wrong)
        .expect("sizes match");
    match GgufFile::from_bytes(w.to_bytes()) {
        Err(ModelError::ShapeMismatch {
            name,
            found,
            expected,
        }) => {
            assert_eq!(name, "blk.1.attn_q.weight");
            assert_eq!(found, vec![32, 24]);
            assert_eq!(expected, vec![32, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let mut w = tiny_llama(2);
    w.remove_tensor("blk.0.ffn_down.weight");
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("blk.0.ffn_down.weight") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn unknown_architecture_is_named() {
    let mut w = tiny_llama(2);
    w.meta_str("general.architecture", "mamba");
    match GgufFile::from_bytes(w.to_bytes()) {
        Err(ModelError::UnsupportedArchitecture(a)) => assert_eq!(a, "mamba"),
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
    // A mixture of experts is refused by name, by architecture or by its expert count.
    let mut w = tiny_llama(2);
    w.meta_str("general.architecture", "qwen3moe");
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("qwen3moe") && msg.contains("mixture of experts"),
        "{msg}"
    );
    let mut w = tiny_llama(2);
    w.meta_u32("llama.expert_count", 8);
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("llama.expert_count") && msg.contains("mixture of experts"),
        "{msg}"
    );
    // A known architecture reads its own prefix: llama keys in a qwen2 file are missing.
    let mut w = tiny_llama(2);
    w.meta_str("general.architecture", "qwen2");
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("qwen2.block_count"), "{msg}");
    let mut w = tiny_llama(2);
    w.remove_meta("llama.attention.head_count");
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("llama.attention.head_count"), "{msg}");
}

/// Lying metadata and missing or mis-shaped tensors of the other architectures: each a
/// clear error naming what is wrong, never a panic.
#[test]
fn architecture_bad_input_is_named() {
    use cocoon_shaders::model::ModelConfig;
    use cocoon_shaders::model::gguf_writer::{tiny_llama_with, with_architecture};
    let arch = |name: &str| -> ModelConfig {
        let mut c = tiny_llama_config();
        c.head_dim = 16;
        c.features.attention_scale = 0.25;
        with_architecture(c, name, 4).expect("a known architecture")
    };
    for name in ["qwen2", "qwen3", "gemma3"] {
        let c = arch(name);
        GgufFile::from_bytes(tiny_llama_with(&c, 1).to_bytes()).expect("the good file loads");
        // Heads that do not divide.
        let mut w = tiny_llama_with(&c, 1);
        w.meta_u32(&format!("{name}.attention.head_count_kv"), 3);
        let msg = open_err(w.to_bytes());
        assert!(
            msg.contains("not a multiple of head_count_kv 3"),
            "{name}: {msg}"
        );
        // key_length inconsistent with the tensors.
        let mut w = tiny_llama_with(&c, 1);
        w.meta_u32(&format!("{name}.attention.key_length"), 8);
        w.meta_u32(&format!("{name}.attention.value_length"), 8);
        w.meta_u32(&format!("{name}.rope.dimension_count"), 8);
        let msg = open_err(w.to_bytes());
        assert!(
            msg.contains("attn_q") && msg.contains("shape"),
            "{name}: {msg}"
        );
        // The architecture's own tensors, missing and mis-shaped.
        let extra = match name {
            "qwen2" => "blk.0.attn_k.bias",
            "qwen3" => "blk.0.attn_q_norm.weight",
            _ => "blk.0.post_ffw_norm.weight",
        };
        let mut w = tiny_llama_with(&c, 1);
        w.remove_tensor(extra);
        let msg = open_err(w.to_bytes());
        assert!(
            msg.contains(extra) && msg.contains("not found"),
            "{name}: {msg}"
        );
        let mut w = tiny_llama_with(&c, 1);
        w.remove_tensor(extra);
        w.tensor_f32(extra, &[3], &[1.0, 1.0, 1.0]).expect("tensor");
        let msg = open_err(w.to_bytes());
        assert!(
            msg.contains(extra) && msg.contains("shape"),
            "{name}: {msg}"
        );
    }
    // Gemma 3's window: 0 or absent.
    let c = arch("gemma3");
    let mut w = tiny_llama_with(&c, 1);
    w.meta_u32("gemma3.attention.sliding_window", 0);
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("gemma3.attention.sliding_window is 0"),
        "{msg}"
    );
    let mut w = tiny_llama_with(&c, 1);
    w.remove_meta("gemma3.attention.sliding_window");
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("gemma3.attention.sliding_window"), "{msg}");
    // An odd head dimension, and RoPE scaling nobody implemented.
    let mut w = tiny_llama_with(&arch("qwen3"), 1);
    w.meta_u32("qwen3.attention.key_length", 15);
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("head_dim 15 is odd"), "{msg}");
    let mut w = tiny_llama(2);
    w.meta_str("llama.rope.scaling.type", "yarn");
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("yarn") && msg.contains("not supported"),
        "{msg}"
    );
    let mut w = tiny_llama(2);
    w.tensor_f32("rope_freqs.weight", &[4], &[1.0, 0.0, 1.0, 1.0])
        .expect("tensor");
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("rope_freqs.weight"), "{msg}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    let mut w = tiny_llama(2);
    // IQ4_NL (ggml type 20): 18 bytes per 32 elements.
    w.tensor_raw_type("extra.weight", 20, &[32], vec![0; 18]);
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("IQ4_NL"), "{msg}");
    assert!(msg.contains("extra.weight"), "{msg}");
    // A quantized row length that is not a whole number of blocks.
    let mut w = tiny_llama(2);
    w.tensor_raw_type("odd.weight", GgmlType::Q4_1 as u32, &[16], vec![0; 20]);
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("odd.weight") && msg.contains("block size"),
        "{msg}"
    );
}

#[test]
fn head_dim_from_key_length_and_untied_output() {
    let mut c = tiny_llama_config();
    c.head_dim = 16;
    c.tied_embeddings = false;
    let mut w = cocoon_shaders::model::gguf_writer::tiny_llama_with(&c, 5);
    w.meta_u32("llama.attention.key_length", 16)
        .meta_u32("llama.rope.dimension_count", 16);
    let file = GgufFile::from_bytes(w.to_bytes()).expect("opens");
    assert_eq!(file.config().head_dim, 16);
    assert_eq!(file.config().q_dim(), 64);
    assert!(!file.config().tied_embeddings);
    assert!(file.tensor("output.weight").is_ok());
}

#[test]
fn manifest_hash_follows_weights_not_layout() {
    let a = GgufFile::from_bytes(tiny_llama(9).to_bytes()).expect("opens");
    let mut w = tiny_llama(9);
    w.meta_str("general.name", "renamed")
        .alignment(128)
        .expect("alignment");
    let b = GgufFile::from_bytes(w.to_bytes()).expect("opens");
    let c = GgufFile::from_bytes(tiny_llama(10).to_bytes()).expect("opens");
    let mut w = tiny_llama(9);
    w.meta_f32("llama.rope.freq_base", 500_000.0);
    let d = GgufFile::from_bytes(w.to_bytes()).expect("opens");
    assert_eq!(a.manifest_hash(), b.manifest_hash());
    assert_ne!(a.manifest_hash(), c.manifest_hash());
    assert_ne!(a.manifest_hash(), d.manifest_hash());
}

#[test]
fn tiny_tokenizer_and_template() {
    let file = GgufFile::from_bytes(tiny_bytes()).expect("opens");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer builds");
    let ids = tok.encode("<|im_start|> the cat", true).expect("encodes");
    assert_eq!(ids[0], 1, "control token is one id");
    let texts: Vec<&str> = ids[1..]
        .iter()
        .map(|&i| tok.token_text(i).expect("id"))
        .collect();
    assert_eq!(
        texts,
        ["Ġthe", "Ġ", "c", "at"],
        "merges applied in rank order"
    );
    assert_eq!(tok.decode(&ids), "<|im_start|> the cat");
    let plain = tok.encode("<|im_start|>", false).expect("encodes");
    assert!(plain.len() > 1, "{plain:?}");
    assert_eq!(tok.decode(&plain), "<|im_start|>");
    assert_eq!(tok.eos_ids(), &[2, 0]);
    let digits = tok.encode("123", false).expect("encodes");
    assert_eq!(digits.len(), 3);
    let t = ChatTemplate::from_gguf(&file).expect("template");
    let out = t
        .render(&[ChatMessage::new("user", "hi")], true)
        .expect("renders");
    assert_eq!(
        out,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn missing_template_falls_back_to_chatml_and_raise_exception_works() {
    let mut w = tiny_llama(2);
    w.remove_meta("tokenizer.chat_template");
    let file = GgufFile::from_bytes(w.to_bytes()).expect("opens");
    let t = ChatTemplate::from_gguf(&file).expect("template");
    let out = t
        .render(&[ChatMessage::new("system", "be brief")], false)
        .expect("renders");
    assert_eq!(out, "<|im_start|>system\nbe brief<|im_end|>\n");

    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip() }}{{ eos_token }}",
        "<s>",
        "</s>",
    )
    .expect("compiles");
    assert_eq!(
        t.render(&[ChatMessage::new("user", "  hi  ")], false)
            .expect("renders"),
        "<s>hi</s>"
    );
    let err = t
        .render(&[ChatMessage::new("assistant", "x")], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("first message must be from the user"), "{err}");
    let err = ChatTemplate::new("{% if %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("chat template:"), "{err}");
}

#[test]
fn stream_decoder_waits_for_whole_characters() {
    let file = GgufFile::from_bytes(tiny_bytes()).expect("opens");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    // "é" is two bytes: each is its own byte token in the tiny vocabulary.
    let ids = tok.encode("aé€", false).expect("encodes");
    assert_eq!(ids.len(), 6);
    let mut dec = tok.stream_decoder();
    let pieces: Vec<Option<String>> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(
        pieces,
        vec![
            Some("a".to_string()),
            None,
            Some("é".to_string()),
            None,
            None,
            Some("€".to_string())
        ]
    );
    assert_eq!(dec.finish(), None);
    // A dangling lead byte comes out as U+FFFD at the end.
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(ids[1]), None);
    assert_eq!(dec.finish().as_deref(), Some("\u{fffd}"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random byte mutations of a valid tiny GGUF never panic: parsing, config, tensor
    /// views, tokenizer and template either work or return an error.
    #[test]
    fn mutated_gguf_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = cocoon_shaders::model::gguf_writer::tiny_llama_with(&fuzz_seed_config(), 3).to_bytes();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if do_cut {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        if let Ok(header) = GgufHeader::parse(&bytes) {
            for t in &header.tensors {
                prop_assert!(t.offset + t.size <= bytes.len());
            }
        }
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            for t in file.tensor_infos() {
                let view = file.tensor(&t.name);
                prop_assert!(view.is_ok());
            }
            if let Ok(tok) = Tokenizer::from_gguf(&file) {
                let ids = tok.encode("Hello <|im_start|> wörld 42", true);
                if let Ok(ids) = ids {
                    let _ = tok.decode(&ids);
                }
            }
            if let Ok(t) = ChatTemplate::from_gguf(&file) {
                let _ = t.render(&[ChatMessage::new("user", "hi")], true);
            }
        }
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cocoon-loader-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ---- the real default model ----

struct Real {
    file: GgufFile,
    tok: Tokenizer,
}

fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        let path = default_model_path();
        assert!(
            path.exists(),
            "the default model is missing at {}: run scripts/setup",
            path.display()
        );
        let file = GgufFile::open(&path).expect("default model opens");
        let tok = Tokenizer::from_gguf(&file).expect("tokenizer builds");
        Real { file, tok }
    })
}

#[derive(serde::Deserialize)]
struct Fixture {
    prompts: Vec<FixturePrompt>,
}
#[derive(serde::Deserialize)]
struct FixturePrompt {
    prompt: String,
    prompt_token_ids: Vec<u32>,
    exact: FixtureRun,
}
#[derive(serde::Deserialize)]
struct FixtureRun {
    generated_token_ids: Vec<u32>,
    generated_text: String,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

#[test]
fn real_model_shape_and_types() {
    let f = &real().file;
    let c = f.config();
    assert_eq!(c.architecture, "llama");
    assert_eq!(c.n_blocks, 30);
    assert_eq!(c.d_model, 576);
    assert_eq!(c.d_ff, 1536);
    assert_eq!(c.n_heads, 9);
    assert_eq!(c.n_kv_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.rope_theta, 1e5);
    assert_eq!(c.rms_eps, 1e-5);
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_style, RopeStyle::Adjacent);
    assert!(c.tied_embeddings);
    assert_eq!(
        f.tensor("token_embd.weight").expect("embd").ty,
        GgmlType::Q8_0
    );
    assert_eq!(
        f.tensor("output_norm.weight").expect("norm").ty,
        GgmlType::F32
    );
    let mut q4_1 = 0;
    for t in f.tensor_infos() {
        if t.name.starts_with("blk.") {
            if t.dims.len() == 2 {
                assert_eq!(t.ty, GgmlType::Q4_1, "{}", t.name);
                q4_1 += 1;
            } else {
                assert_eq!(t.ty, GgmlType::F32, "{}", t.name);
            }
        }
    }
    assert_eq!(q4_1, 210);
    assert_eq!(f.tensor_infos().len(), 30 * 9 + 2);
}

#[test]
fn real_tokenizer_matches_the_reference_ids_and_text() {
    let tok = &real().tok;
    assert_eq!(tok.vocab_size(), 49152);
    assert!(!tok.add_bos());
    assert_eq!(tok.pre(), "smollm");
    for p in fixture().prompts {
        assert_eq!(
            tok.encode(&p.prompt, false).expect("encodes"),
            p.prompt_token_ids,
            "{}",
            p.prompt
        );
        assert_eq!(
            tok.encode(&p.prompt, true).expect("encodes"),
            p.prompt_token_ids
        );
        let text = tok.decode(&p.exact.generated_token_ids);
        assert_eq!(text, p.exact.generated_text);
        let mut dec = tok.stream_decoder();
        let mut streamed = String::new();
        for &id in &p.exact.generated_token_ids {
            if let Some(s) = dec.push(id) {
                streamed.push_str(&s);
            }
        }
        streamed.extend(dec.finish());
        assert_eq!(streamed, p.exact.generated_text);
    }
    assert_eq!(
        tok.encode("Once upon a time", false).expect("encodes"),
        vec![6403, 1980, 253, 655]
    );
    assert_eq!(
        tok.encode("Water boils at", false).expect("encodes"),
        vec![12615, 36411, 418]
    );
}

#[test]
fn real_tokenizer_special_tokens() {
    let tok = &real().tok;
    let im_start = tok.token_id("<|im_start|>").expect("in vocab");
    let im_end = tok.token_id("<|im_end|>").expect("in vocab");
    assert_eq!(
        tok.encode("<|im_start|>", true).expect("encodes"),
        vec![im_start]
    );
    let ids = tok
        .encode("<|im_start|>user\nhi<|im_end|>", true)
        .expect("encodes");
    assert_eq!(ids.first(), Some(&im_start));
    assert_eq!(ids.last(), Some(&im_end));
    assert!(tok.encode("<|im_start|>", false).expect("encodes").len() > 1);
    assert!(tok.is_eos(im_end), "eos ids {:?}", tok.eos_ids());
    assert!(tok.is_control(im_start));
    // Digits split one by one.
    let ids = tok.encode("2024", false).expect("encodes");
    assert_eq!(ids.len(), 4);
    assert_eq!(tok.decode(&ids), "2024");
}

#[test]
fn real_chat_template_renders_chatml() {
    let t = ChatTemplate::from_gguf(&real().file).expect("template");
    let out = t
        .render(
            &[
                ChatMessage::new("system", "You are helpful."),
                ChatMessage::new("user", "Hi!"),
            ],
            true,
        )
        .expect("renders");
    assert_eq!(
        out,
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    let tok = &real().tok;
    let ids = tok.encode(&out, true).expect("encodes");
    assert_eq!(tok.decode(&ids), out);
    assert_eq!(
        ids.iter().filter(|&&i| i == 1).count(),
        3,
        "three <|im_start|> tokens"
    );
    // Without a system message the template adds SmolLM's own.
    let out = t
        .render(&[ChatMessage::new("user", "Hi!")], false)
        .expect("renders");
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    );
}

#[test]
fn real_manifest_hash_is_stable() {
    let f = &real().file;
    let h = f.manifest_hash();
    assert_eq!(h, f.manifest_hash());
    // The mesh's id of the default model: a change here splits the network.
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "ce19703eaa34b7337a45bb7c7e60493358320c4af258c2d17053ec7f21f993e4"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn real_tokenizer_round_trips_ascii(s in "[ -~\n\t]{0,64}") {
        let tok = &real().tok;
        let ids = tok.encode(&s, false).expect("encodes");
        prop_assert_eq!(tok.decode(&ids), s);
    }

    #[test]
    fn real_tokenizer_round_trips_unicode(s in "\\PC{0,32}") {
        let tok = &real().tok;
        let ids = tok.encode(&s, false).expect("encodes");
        prop_assert_eq!(tok.decode(&ids), s.clone());
        let mut dec = tok.stream_decoder();
        let mut streamed = String::new();
        for id in ids {
            streamed.extend(dec.push(id));
        }
        streamed.extend(dec.finish());
        prop_assert_eq!(streamed, s);
    }
}

#[test]
fn tokenizer_variants_and_errors() {
    let open = |w: &GgufWriter| GgufFile::from_bytes(w.to_bytes()).expect("opens");
    let mut w = tiny_llama(4);
    w.meta_str("tokenizer.ggml.pre", "llama-bpe");
    let tok = Tokenizer::from_gguf(&open(&w)).expect("llama-bpe builds");
    let text = "Hello world, it's 12345!\n\n  ok";
    let ids = tok.encode(text, false).expect("encodes");
    assert_eq!(tok.decode(&ids), text);

    w.meta_str("tokenizer.ggml.pre", "deepseek-coder");
    let err = Tokenizer::from_gguf(&open(&w)).unwrap_err().to_string();
    assert!(err.contains("deepseek-coder"), "{err}");

    let mut w = tiny_llama(4);
    w.meta_str("tokenizer.ggml.model", "bert");
    let err = Tokenizer::from_gguf(&open(&w)).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.model \"bert\""), "{err}");

    let mut w = tiny_llama(4);
    w.meta(
        "tokenizer.ggml.merges",
        MetaValue::Array(MetaArray::String(vec!["Ġ".into()])),
    );
    let err = Tokenizer::from_gguf(&open(&w)).unwrap_err().to_string();
    assert!(err.contains("merge 0"), "{err}");

    let mut w = tiny_llama(4);
    w.meta_u32("tokenizer.ggml.eos_token_id", 100_000);
    let err = Tokenizer::from_gguf(&open(&w)).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.eos_token_id 100000"), "{err}");

    let mut w = tiny_llama(4);
    w.meta_bool("tokenizer.ggml.add_bos_token", true);
    let tok = Tokenizer::from_gguf(&open(&w)).expect("builds");
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), Some(1));
}

#[test]
fn open_maps_files_and_names_the_path_in_errors() {
    let dir = temp_dir("open");
    let path = dir.join("tiny.gguf");
    tiny_llama(11).write(&path).expect("writes");
    let mapped = GgufFile::open(&path).expect("opens");
    let owned = GgufFile::from_bytes(std::fs::read(&path).expect("reads")).expect("opens");
    assert_eq!(mapped.config(), owned.config());
    assert_eq!(mapped.manifest_hash(), owned.manifest_hash());
    let t = mapped.tensor("blk.0.attn_v.weight").expect("tensor");
    assert_eq!(
        t.data.as_ptr() as usize % 32,
        0,
        "mapped data keep the file's alignment"
    );

    let bytes = std::fs::read(&path).expect("reads");
    std::fs::write(&path, &bytes[..100]).expect("writes");
    let msg = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("malformed model file: {}", path.display())),
        "{msg}"
    );

    let missing = dir.join("absent.gguf");
    match GgufFile::open(&missing) {
        Err(ModelError::Io { path, .. }) => assert_eq!(path, missing.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loaders_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GgufFile>();
    check::<Tokenizer>();
    check::<ChatTemplate>();
    let boxed: Box<dyn WeightSource> = Box::new(GgufFile::from_bytes(tiny_bytes()).expect("opens"));
    assert_eq!(boxed.config().n_blocks, 2);
}

/// Fuzz regression (gguf_parse timeout): `llama.block_count` mutated to 0x60000001 made the
/// validator list 14 billion tensor names before finding the first missing one.
#[test]
fn fuzz_regression_huge_block_count_fails_fast() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fuzz_gguf_huge_block_count.gguf"
    );
    let bytes = std::fs::read(path).expect("fixture");
    let start = std::time::Instant::now();
    let msg = open_err(bytes);
    assert!(msg.contains("llama.block_count 1610612737"), "{msg}");
    assert!(start.elapsed().as_secs() < 2, "took {:?}", start.elapsed());
}

#[test]
fn overflowing_widths_are_errors_not_panics() {
    let mut w = tiny_llama(3);
    w.remove_meta("llama.rope.dimension_count")
        .meta("llama.attention.key_length", MetaValue::U64(1 << 62));
    let msg = open_err(w.to_bytes());
    assert!(msg.contains("overflow"), "{msg}");
    let mut w = tiny_llama(3);
    w.meta("llama.embedding_length", MetaValue::U64(u64::MAX / 2));
    let msg = open_err(w.to_bytes());
    assert!(
        msg.contains("overflow") || msg.contains("llama.embedding_length"),
        "{msg}"
    );
}

/// Each source's [`WeightSource::shared_tensor`] views the very bytes `tensor` gives (same
/// address: nothing copied) and keeps them alive after the source is dropped (a head
/// holds the memory map this way).
#[test]
fn shared_tensors_view_the_sources_bytes_and_outlive_them() {
    use cocoon_shaders::engine::synthetic::{SyntheticWeights, tiny_config};
    fn check(src: Box<dyn WeightSource>, what: &str) {
        let names = ["token_embd.weight", "blk.1.attn_k.weight"];
        let mut kept = Vec::new();
        for name in names {
            let t = src.tensor(name).expect("tensor");
            let s = src.shared_tensor(name).expect("shared tensor");
            assert_eq!((s.name.as_str(), s.ty, &s.dims[..]), (name, t.ty, t.dims));
            assert_eq!(s.data().as_ptr(), t.data.as_ptr(), "{what} {name}: copied");
            assert_eq!(s.data().len(), t.data.len(), "{what} {name}");
            kept.push((s.clone(), t.data.to_vec()));
        }
        assert!(matches!(
            src.shared_tensor("blk.99.attn_k.weight"),
            Err(ModelError::MissingTensor(_))
        ));
        drop(src);
        for (s, bytes) in kept {
            assert_eq!(s.data(), &bytes[..], "{what} {}: after the source", s.name);
        }
    }
    let dir = temp_dir("shared");
    let path = dir.join("tiny.gguf");
    tiny_llama(3).write(&path).expect("writes");
    check(
        Box::new(GgufFile::open(&path).expect("opens")),
        "mapped GGUF",
    );
    let bytes = std::fs::read(&path).expect("reads");
    check(
        Box::new(GgufFile::from_bytes(bytes).expect("opens")),
        "owned GGUF",
    );
    let synthetic = SyntheticWeights::llama(tiny_config(), GgmlType::Q8_0, GgmlType::Q8_0, 1);
    check(Box::new(synthetic.expect("synthetic")), "synthetic");
    let _ = std::fs::remove_dir_all(&dir);
}
