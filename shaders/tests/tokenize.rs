//! Tokenizers of real vocabularies against llama.cpp: the `llama-tokenize` fixtures in
//! `tests/fixtures/tokenize/` (one JSON file per vocabulary, written by
//! `scripts/oracle/make_tokenize_fixtures.py`), and properties of the Gemma 3 270M
//! SentencePiece vocabulary.
//!
//! Only the metadata of a model file is read (its tensor list is dropped before parsing),
//! so these tests do not depend on which tensor types the loader supports.

use cocoon_shaders::model::tokenizer::VocabKind;
use cocoon_shaders::model::{GgufHeader, Tokenizer, default_model_path, gemma3_270m_path};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The header and metadata of a GGUF file with its tensor list dropped (tensor count 0).
fn metadata_only(bytes: &[u8]) -> Vec<u8> {
    fn u64_at(bytes: &[u8], at: usize) -> usize {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize
    }
    fn skip(bytes: &[u8], at: &mut usize, ty: u32) {
        match ty {
            0 | 1 | 7 => *at += 1,
            2 | 3 => *at += 2,
            4..=6 => *at += 4,
            10..=12 => *at += 8,
            8 => *at += 8 + u64_at(bytes, *at),
            9 => {
                let elem = u32::from_le_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes"));
                let n = u64_at(bytes, *at + 4);
                *at += 12;
                for _ in 0..n {
                    skip(bytes, at, elem);
                }
            }
            other => panic!("GGUF value type {other}"),
        }
    }
    assert_eq!(&bytes[..4], b"GGUF", "not a GGUF file");
    let n_kv = u64_at(bytes, 16);
    let mut at = 24;
    for _ in 0..n_kv {
        skip(bytes, &mut at, 8);
        let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        at += 4;
        skip(bytes, &mut at, ty);
    }
    let mut out = bytes[..at].to_vec();
    out[8..16].copy_from_slice(&0u64.to_le_bytes());
    out
}

fn load(path: &Path) -> Tokenizer {
    let file = std::fs::File::open(path).expect("model file opens");
    // SAFETY: read-only map of a file nothing rewrites during the test.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("maps");
    let header = GgufHeader::parse(&metadata_only(&map)).expect("metadata parses");
    Tokenizer::from_metadata(&header.metadata).expect("tokenizer builds")
}

fn gemma() -> Option<&'static Tokenizer> {
    static TOK: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = gemma3_270m_path();
        if path.exists() {
            Some(load(&path))
        } else {
            eprintln!("{} absent (scripts/setup fetches it)", path.display());
            None
        }
    })
    .as_ref()
}

#[derive(Deserialize)]
struct Fixture {
    model: String,
    add_special: bool,
    parse_special: bool,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// A fixture's model: a path inside the repository, or a file name in the model cache.
fn model_path(model: &str) -> PathBuf {
    if model.contains('/') {
        repo_root().join(model)
    } else {
        default_model_path().with_file_name(model)
    }
}

#[test]
fn llama_cpp_fixtures_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenize");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut checked, mut failures) = (0usize, Vec::new());
    for json in &files {
        let fx: Fixture = serde_json::from_slice(&std::fs::read(json).expect("reads"))
            .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        let path = model_path(&fx.model);
        if !path.exists() {
            eprintln!("{}: {} absent, skipped", json.display(), path.display());
            continue;
        }
        let tok = load(&path);
        for case in &fx.cases {
            let ids = tok
                .tokenize(&case.text, fx.add_special, fx.parse_special)
                .expect("encodes");
            checked += 1;
            if ids != case.ids {
                failures.push(format!(
                    "{}: {:?}\n  llama.cpp {:?}\n  ours      {:?}",
                    json.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
                    case.text,
                    case.ids,
                    ids
                ));
            }
        }
        eprintln!("{}: {} cases", json.display(), fx.cases.len());
    }
    eprintln!("{checked} cases checked, {} differ", failures.len());
    // The derived SmolLM2 vocabularies are committed beside the fixtures.
    assert!(checked > 0, "no fixture had its model file");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const TEXTS: &[&str] = &[
    "Hello world",
    " leading space",
    "   three leading, and     five inside",
    "line one\nline two\n\n\nline five\r\n",
    "\ttabs\t\tand trailing  ",
    "12345 3.14159 1,000,000",
    "naïve café 日本語 Привет 👍🏽🚀",
    "fn main() { println!(\"hi\"); }",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<0x41> is text, not a byte token",
    "",
];

#[test]
fn gemma_is_sentencepiece_with_the_files_flags() {
    let Some(tok) = gemma() else { return };
    assert_eq!(tok.kind(), VocabKind::Spm);
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.pre(), "default");
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id()),
        (Some(2), Some(1), Some(3))
    );
    assert!(tok.add_bos() && !tok.add_eos() && !tok.add_space_prefix());
    let eot = tok
        .token_id("<end_of_turn>")
        .expect("Gemma has <end_of_turn>");
    assert!(tok.is_eos(1) && tok.is_eos(eot));
}

#[test]
fn gemma_hello_world() {
    let Some(tok) = gemma() else { return };
    let ids = tok.encode("Hello world", false).expect("encodes");
    let texts: Vec<&str> = ids
        .iter()
        .map(|&i| tok.token_text(i).expect("id"))
        .collect();
    assert_eq!(texts, ["Hello", "▁world"]);
    assert_eq!(
        tok.tokenize("Hello world", true, false).expect("encodes")[0],
        2
    );
}

#[test]
fn gemma_round_trips() {
    let Some(tok) = gemma() else { return };
    for &text in TEXTS {
        for parse_special in [false, true] {
            let ids = tok.encode(text, parse_special).expect("encodes");
            assert_eq!(tok.decode(&ids), text, "{ids:?}");
            let mut dec = tok.stream_decoder();
            let mut streamed = String::new();
            for &id in &ids {
                streamed.extend(dec.push(id));
            }
            streamed.extend(dec.finish());
            assert_eq!(streamed, text);
        }
    }
}

#[test]
fn gemma_special_and_user_defined_tokens() {
    let Some(tok) = gemma() else { return };
    let start = tok.token_id("<start_of_turn>").expect("control token");
    let end = tok.token_id("<end_of_turn>").expect("control token");
    let ids = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>\n", true)
        .expect("encodes");
    assert_eq!(ids.first(), Some(&start));
    assert!(ids.contains(&end));
    // Not parsed: the control tokens' text is ordinary text.
    let plain = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>\n", false)
        .expect("encodes");
    assert!(
        !plain.contains(&start) && !plain.contains(&end),
        "{plain:?}"
    );
    // "\n" and runs of spaces are user-defined entries: matched even in plain text.
    let nl = tok.token_id("\n").expect("user-defined newline");
    let two = tok.token_id("  ").expect("user-defined double space");
    assert_eq!(
        tok.encode("a\nb", false).expect("encodes"),
        [
            tok.token_id("a").expect("a"),
            nl,
            tok.token_id("b").expect("b")
        ]
    );
    assert!(tok.encode("a  b", false).expect("encodes").contains(&two));
}

#[test]
fn gemma_byte_fallback() {
    let Some(tok) = gemma() else { return };
    // A private-use character of plane 16 is in no vocabulary: four byte tokens.
    let ids = tok.encode("\u{10FFFD}", false).expect("encodes");
    let texts: Vec<&str> = ids
        .iter()
        .map(|&i| tok.token_text(i).expect("id"))
        .collect();
    assert_eq!(texts, ["<0xF4>", "<0x8F>", "<0xBF>", "<0xBD>"]);
    assert_eq!(tok.decode(&ids), "\u{10FFFD}");
}
