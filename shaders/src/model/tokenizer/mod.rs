//! The tokenizer stored in a GGUF's metadata (`tokenizer.ggml.*`) and a streaming decoder
//! that emits text as soon as it is whole UTF-8.
//!
//! This module owns what both vocabulary kinds share, following llama.cpp's
//! `llama_vocab`: reading tokens, types, scores and flags; splitting special tokens out of
//! the prompt (longest text first; user-defined tokens always, control and unknown tokens
//! only when asked to parse them); BOS/EOS; end-of-generation ids; and decoding ids to
//! bytes. The merging itself is per kind:
//! - `gpt2` (byte-level BPE): [`bpe`], on the `tokenizers` crate (its `BPE` model with the
//!   file's ranked merges, and one `Split` per llama.cpp pre-tokenizer regex);
//! - `llama` (SentencePiece-style, as in Llama 2, Mistral, Gemma): [`spm`], hand-written;
//!   its module doc says why `tokenizers` cannot express it exactly.
//!
//! Special tokens are split out here rather than by `tokenizers`' added-token matcher
//! because llama.cpp's rule (longest first, user-defined tokens even in plain text) is
//! not the latter's leftmost-longest scan, and the SentencePiece path needs it as well.
//! Decoding keeps every byte (no `clean_spaces` pass), so `decode(encode(t)) == t`.

mod bpe;
mod spm;

pub use bpe::{GPT2_PATTERN, LLAMA3_PATTERN, PreTokenizer, QWEN2_PATTERN, pre_tokenizer};

use super::ModelError;
use super::gguf::{GgufFile, GgufMetadata, MetaArray};
use std::collections::HashMap;

/// ggml token types (`tokenizer.ggml.token_type`).
pub const TOKEN_TYPE_NORMAL: i64 = 1;
pub const TOKEN_TYPE_UNKNOWN: i64 = 2;
pub const TOKEN_TYPE_CONTROL: i64 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;
pub const TOKEN_TYPE_UNUSED: i64 = 5;
pub const TOKEN_TYPE_BYTE: i64 = 6;

/// GPT-2's byte-to-unicode map: the character that stands for each byte in byte-level
/// BPE vocabularies (printable Latin-1 bytes map to themselves; the rest to U+0100..).
pub fn byte_level_alphabet() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        out[b as usize] = char::from_u32(c).expect("code points below 0x144 are valid");
    }
    out
}

/// Which merge algorithm a vocabulary uses (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// `gpt2`: byte-level BPE with ranked merges and a regex pre-tokenizer.
    Bpe,
    /// `llama`: SentencePiece pieces merged by score, `▁` for spaces, `<0xNN>` byte
    /// fallback.
    Spm,
}

enum Model {
    Bpe(Box<tokenizers::Tokenizer>),
    Spm {
        scores: Vec<f32>,
        byte_tokens: Box<[Option<u32>; 256]>,
    },
}

/// A piece of prompt text after special tokens are split out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A tokenizer read from GGUF metadata: byte-level BPE or SentencePiece-style.
pub struct Tokenizer {
    model: Model,
    kind: VocabKind,
    tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// Bytes each token stands for (control and user-defined tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    token_types: Vec<i64>,
    /// Control, user-defined and unknown tokens, longest text first: matched in prompt
    /// text before it is tokenized.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    pre: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish()
    }
}

/// Texts llama.cpp treats as ending a generation, whatever their token type.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// The byte a `<0xNN>` token stands for.
fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn optional_bool(md: &GgufMetadata, key: &str, default: bool) -> Result<bool, ModelError> {
    match md.get(key) {
        None => Ok(default),
        Some(_) => md.get_bool(key),
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF model.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        Self::from_metadata(file.metadata())
    }

    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &GgufMetadata) -> Result<Self, ModelError> {
        let model = md.get_str("tokenizer.ggml.model")?;
        let kind = match model {
            "gpt2" => VocabKind::Bpe,
            "llama" => VocabKind::Spm,
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer.ggml.model {other:?} is not supported (supported: gpt2, byte-level BPE; llama, SentencePiece-style)"
                )));
            }
        };
        let tokens = md.get_str_array("tokenizer.ggml.tokens")?.to_vec();
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.tokens has {} tokens",
                tokens.len()
            )));
        }
        let n = tokens.len();
        let token_types = match md.get("tokenizer.ggml.token_type") {
            None => vec![TOKEN_TYPE_NORMAL; n],
            Some(_) => {
                let t = md
                    .get_array("tokenizer.ggml.token_type")?
                    .to_i64s()
                    .ok_or_else(|| {
                        ModelError::Tokenizer("tokenizer.ggml.token_type is not integers".into())
                    })?;
                if t.len() != n {
                    return Err(ModelError::Tokenizer(format!(
                        "tokenizer.ggml.token_type has {} entries for {n} tokens",
                        t.len()
                    )));
                }
                t
            }
        };
        let mut token_to_id: HashMap<String, u32> = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty entries so they never match text.
            let key = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            };
            if let Some(first) = token_to_id.insert(key, i as u32) {
                return Err(ModelError::Tokenizer(format!(
                    "duplicate token in vocabulary: {t:?} has ids {first} and {i}"
                )));
            }
        }
        let pre = match md.get("tokenizer.ggml.pre") {
            None => "default".to_string(),
            Some(_) => md.get_str("tokenizer.ggml.pre")?.to_string(),
        };
        let id = |key: &str, default: Option<u32>| -> Result<Option<u32>, ModelError> {
            match md.get(key) {
                None => Ok(default.filter(|&d| (d as usize) < n)),
                Some(_) => {
                    let v = md.get_u32(key)?;
                    if v as usize >= n {
                        return Err(ModelError::Tokenizer(format!(
                            "{key} {v} is past the vocabulary ({n} tokens)"
                        )));
                    }
                    Ok(Some(v))
                }
            }
        };
        // llama.cpp's defaults: SentencePiece vocabularies are Llama 2's (<unk> <s> </s>).
        let spm = kind == VocabKind::Spm;
        let bos = id("tokenizer.ggml.bos_token_id", spm.then_some(1))?;
        let eos = id("tokenizer.ggml.eos_token_id", spm.then_some(2))?;
        let unk = id("tokenizer.ggml.unknown_token_id", spm.then_some(0))?;
        let eot = id("tokenizer.ggml.eot_token_id", None)?;
        let eom = id("tokenizer.ggml.eom_token_id", None)?;

        let (model, add_bos_default) = match kind {
            VocabKind::Bpe => {
                let pre_tok = bpe::pre_tokenizer(&pre).ok_or_else(|| {
                    ModelError::Tokenizer(format!(
                        "tokenizer.ggml.pre {pre:?} is not supported (supported: {})",
                        bpe::SUPPORTED_PRE
                    ))
                })?;
                let merges = Self::read_merges(md)?;
                let tk = bpe::build(&tokens, merges, pre_tok)?;
                (Model::Bpe(Box::new(tk)), pre_tok.add_bos_default)
            }
            VocabKind::Spm => {
                let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
                    None => vec![0.0; n],
                    Some(_) => match md.get_array("tokenizer.ggml.scores")? {
                        MetaArray::F32(v) => v.clone(),
                        MetaArray::I32(v) => v.iter().map(|&x| x as f32).collect(),
                        _ => {
                            return Err(ModelError::Tokenizer(
                                "tokenizer.ggml.scores is not an f32 or i32 array".into(),
                            ));
                        }
                    },
                };
                if scores.len() < n {
                    return Err(ModelError::Tokenizer(format!(
                        "tokenizer.ggml.scores has {} entries for {n} tokens",
                        scores.len()
                    )));
                }
                let scores = scores
                    .into_iter()
                    .take(n)
                    .map(|s| if s.is_nan() { f32::NEG_INFINITY } else { s })
                    .collect();
                let mut byte_tokens = Box::new([None; 256]);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    let hex = format!("<0x{b:02X}>");
                    *slot = token_to_id.get(&hex).copied().or_else(|| {
                        // llama.cpp falls back to the byte itself as an entry.
                        char::from_u32(b as u32)
                            .filter(char::is_ascii)
                            .and_then(|c| token_to_id.get(c.encode_utf8(&mut [0; 4]) as &str))
                            .copied()
                    });
                }
                (
                    Model::Spm {
                        scores,
                        byte_tokens,
                    },
                    true,
                )
            }
        };
        let add_bos = optional_bool(md, "tokenizer.ggml.add_bos_token", add_bos_default)?;
        let add_eos = optional_bool(md, "tokenizer.ggml.add_eos_token", false)?;
        let add_space_prefix = spm && optional_bool(md, "tokenizer.ggml.add_space_prefix", true)?;
        if add_bos && bos.is_none() {
            return Err(ModelError::Tokenizer(
                "tokenizer.ggml.add_bos_token is set but there is no bos_token_id".into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(ModelError::Tokenizer(
                "tokenizer.ggml.add_eos_token is set but there is no eos_token_id".into(),
            ));
        }

        let token_bytes = match kind {
            VocabKind::Bpe => bpe_token_bytes(&tokens, &token_types),
            VocabKind::Spm => spm_token_bytes(&tokens, &token_types),
        };

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                let ty = token_types[i as usize];
                !tokens[i as usize].is_empty()
                    && matches!(
                        ty,
                        TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
                    )
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));

        let mut eos_ids: Vec<u32> = Vec::new();
        for i in [eos, eot, eom].into_iter().flatten() {
            if !eos_ids.contains(&i) {
                eos_ids.push(i);
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) && !eos_ids.contains(&(i as u32)) {
                eos_ids.push(i as u32);
            }
        }

        Ok(Self {
            model,
            kind,
            tokens,
            token_to_id,
            token_bytes,
            token_types,
            specials,
            bos,
            eos,
            unk,
            eos_ids,
            add_bos,
            add_eos,
            add_space_prefix,
            pre,
        })
    }

    fn read_merges(md: &GgufMetadata) -> Result<Vec<(String, String)>, ModelError> {
        match md.get("tokenizer.ggml.merges") {
            None => Ok(Vec::new()),
            Some(_) => md
                .get_str_array("tokenizer.ggml.merges")?
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| {
                            ModelError::Tokenizer(format!(
                                "merge {i} {m:?} is not two tokens separated by a space"
                            ))
                        })
                })
                .collect(),
        }
    }

    /// Splits the text of special tokens out of `text`, as llama.cpp does: longest token
    /// text first, every occurrence left to right. User-defined tokens are always split
    /// out; control and unknown tokens only with `parse_special`.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.specials {
            if !parse_special && self.token_types[id as usize] != TOKEN_TYPE_USER_DEFINED {
                continue;
            }
            let special = self.tokens[id as usize].as_str();
            if !text.contains(special) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(s) = f else {
                    next.push(f);
                    continue;
                };
                let mut rest = 0;
                for (at, _) in s.match_indices(special) {
                    if at > rest {
                        next.push(Fragment::Text(&s[rest..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = at + special.len();
                }
                if rest < s.len() {
                    next.push(Fragment::Text(&s[rest..]));
                }
            }
            frags = next;
        }
        frags
    }

    /// Token ids of `text`. With `parse_special`, the text of control tokens (such as
    /// `<|im_start|>`) becomes their single id; without, it is tokenized as plain text.
    /// User-defined tokens are matched either way, as in llama.cpp. No BOS or EOS is added
    /// (see [`Tokenizer::tokenize`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::new();
        // SentencePiece: a space before the text and after each special token.
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(s) => {
                    match &self.model {
                        Model::Bpe(tk) => {
                            let enc = tk.encode(s, false).map_err(tok_err)?;
                            out.extend_from_slice(enc.get_ids());
                        }
                        Model::Spm {
                            scores,
                            byte_tokens,
                        } => {
                            let mut escaped = String::with_capacity(s.len() + 4);
                            if self.add_space_prefix && prev_special {
                                escaped.push(SPM_SPACE);
                            }
                            escaped.extend(s.chars().map(|c| if c == ' ' { SPM_SPACE } else { c }));
                            spm::SpmVocab {
                                token_to_id: &self.token_to_id,
                                scores,
                                byte_tokens,
                            }
                            .encode(&escaped, &mut out)?;
                        }
                    }
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// llama.cpp's `llama_tokenize`: [`Tokenizer::encode`], and with `add_special` the BOS
    /// and EOS tokens the model asks for (`add_bos_token`, `add_eos_token`).
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        out.extend(self.encode(text, parse_special)?);
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// The text of `ids` (control tokens as their text; invalid UTF-8 as U+FFFD; unknown
    /// ids skipped). With `add_space_prefix`, the space the encoder put before the text is
    /// removed from the first token, as llama.cpp's detokenizer does.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if let Some(b) = self.token_bytes.get(id as usize) {
                let b = if i == 0 && self.add_space_prefix {
                    b.strip_prefix(b" ").unwrap_or(b)
                } else {
                    b
                };
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` stands for.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(Vec::as_slice)
    }

    /// The vocabulary entry of `id` as stored (byte-level BPE: `Ġ` for a space;
    /// SentencePiece: `▁`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry, as stored.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// ggml token type of `id` (1 normal, 3 control, ...).
    pub fn token_type(&self, id: u32) -> Option<i64> {
        self.token_types.get(id as usize).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == Some(TOKEN_TYPE_CONTROL)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Byte-level BPE or SentencePiece-style.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// `tokenizer.ggml.unknown_token_id` (SentencePiece default: 0).
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Every token that ends a generation: eos, eot/eom, and tokens such as
    /// `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<end_of_turn>`.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Whether prompts start with the BOS token (`tokenizer.ggml.add_bos_token`; when
    /// absent, llama.cpp's default: SentencePiece and `llama-bpe` yes, others no).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether prompts end with the EOS token (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SentencePiece text gets a leading space (`tokenizer.ggml.add_space_prefix`,
    /// default true; always false for BPE).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// The pre-tokenizer name (`tokenizer.ggml.pre`; `default` when absent).
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// A decoder that turns ids into text piece by piece.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            pending: Vec::new(),
        }
    }
}

/// SentencePiece's stand-in for a space.
const SPM_SPACE: char = '\u{2581}';

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// Byte-level BPE: each entry's characters mapped back through GPT-2's alphabet (control
/// and user-defined tokens, and entries outside the alphabet: their UTF-8 text).
fn bpe_token_bytes(tokens: &[String], types: &[i64]) -> Vec<Vec<u8>> {
    let alphabet = byte_level_alphabet();
    let byte_of: HashMap<char, u8> = alphabet
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| {
            if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                return t.as_bytes().to_vec();
            }
            t.chars()
                .map(|c| byte_of.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| t.as_bytes().to_vec())
        })
        .collect()
}

/// SentencePiece, as llama.cpp's `token_to_piece`: normal entries with `▁` as a space,
/// `<0xNN>` byte tokens as their byte, control, user-defined and unknown tokens as their
/// text, unused entries as nothing.
fn spm_token_bytes(tokens: &[String], types: &[i64]) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| match ty {
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN => {
                t.as_bytes().to_vec()
            }
            TOKEN_TYPE_BYTE => match parse_byte_token(t) {
                Some(b) => vec![b],
                None => t.as_bytes().to_vec(),
            },
            TOKEN_TYPE_UNUSED => Vec::new(),
            _ => t.replace(SPM_SPACE, " ").into_bytes(),
        })
        .collect()
}

/// Turns a stream of token ids into text, emitting each piece as soon as its bytes are
/// whole UTF-8 (a byte-level token may end inside a multi-byte character).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder<'_> {
    /// Adds one token; returns the text that became complete, if any. Bytes that can
    /// never be valid UTF-8 come out as U+FFFD, as in [`Tokenizer::decode`].
    pub fn push(&mut self, id: u32) -> Option<String> {
        if let Some(b) = self.tokenizer.token_bytes(id) {
            self.pending.extend_from_slice(b);
        }
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid])
                            .expect("valid_up_to bytes are valid UTF-8"),
                    );
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Ends the stream: bytes of an unfinished character come out as U+FFFD.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::{GgufHeader, MetaValue};
    use crate::model::gguf_writer::GgufWriter;

    fn build(w: &GgufWriter) -> Result<Tokenizer, ModelError> {
        let header = GgufHeader::parse(&w.to_bytes()).expect("metadata-only GGUF parses");
        Tokenizer::from_metadata(&header.metadata)
    }

    fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| tok.token_text(i).expect("id in vocab").to_string())
            .collect()
    }

    /// A small SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte tokens, a few
    /// pieces with chosen scores, a control token and a user-defined one.
    fn spm_writer(pieces: &[(&str, f32)]) -> GgufWriter {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0f32; 3];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for &(p, s) in pieces {
            tokens.push(p.to_string());
            types.push(1);
            scores.push(s);
        }
        tokens.push("<ctl>".into());
        types.push(3);
        scores.push(0.0);
        tokens.push("\n\n".into());
        types.push(4);
        scores.push(0.0);
        let mut w = GgufWriter::new();
        w.meta_str("general.architecture", "llama")
            .meta_str("tokenizer.ggml.model", "llama")
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(tokens)),
            )
            .meta(
                "tokenizer.ggml.token_type",
                MetaValue::Array(MetaArray::I32(types)),
            )
            .meta(
                "tokenizer.ggml.scores",
                MetaValue::Array(MetaArray::F32(scores)),
            );
        w
    }

    const PIECES: &[(&str, f32)] = &[
        ("▁", -10.0),
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("ab", -5.0),
        ("bc", -2.0),
        ("▁a", -3.0),
        ("▁b", -3.0),
    ];

    #[test]
    fn spm_merges_the_best_scored_pair_first() {
        let tok = build(&spm_writer(PIECES)).expect("builds");
        assert_eq!(tok.kind(), VocabKind::Spm);
        // Defaults when the file does not say: llama.cpp's Llama 2 ones.
        assert!(tok.add_bos() && tok.add_space_prefix() && !tok.add_eos());
        assert_eq!(
            (tok.unk_id(), tok.bos_id(), tok.eos_id()),
            (Some(0), Some(1), Some(2))
        );
        // "▁abc": of ▁a (-3), ab (-5) and bc (-2), bc merges first; then ▁a.
        let ids = tok.encode("abc", false).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["▁a", "bc"]);
        assert_eq!(tok.decode(&ids), "abc");

        let mut w = spm_writer(&[
            ("▁", -10.0),
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -2.0),
            ("bc", -2.0),
        ]);
        w.meta_bool("tokenizer.ggml.add_space_prefix", false);
        let tok = build(&w).expect("builds");
        // Equal scores: the leftmost pair merges first.
        assert_eq!(
            texts(&tok, &tok.encode("abc", false).expect("encodes")),
            ["ab", "c"]
        );
        assert_eq!(
            texts(&tok, &tok.encode("bcab", false).expect("encodes")),
            ["bc", "ab"]
        );
    }

    #[test]
    fn spm_byte_fallback_spaces_and_specials() {
        let tok = build(&spm_writer(PIECES)).expect("builds");
        // "é" is not in the vocabulary: its two UTF-8 bytes become <0xC3> <0xA9>.
        let ids = tok.encode("a é", false).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["▁a", "▁", "<0xC3>", "<0xA9>"]);
        assert_eq!(tok.decode(&ids), "a é");
        let mut dec = tok.stream_decoder();
        let pieces: Vec<Option<String>> = ids.iter().map(|&i| dec.push(i)).collect();
        assert_eq!(
            pieces,
            [Some(" a".into()), Some(" ".into()), None, Some("é".into())]
        );

        // Control tokens only when parsing specials; a space prefix after each.
        let ids = tok.encode("<ctl>b", true).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["<ctl>", "▁b"]);
        let plain = tok.encode("<ctl>b", false).expect("encodes");
        assert!(plain.len() > 2, "{:?}", texts(&tok, &plain));
        assert_eq!(tok.decode(&plain), "<ctl>b");
        // User-defined tokens are split out even in plain text.
        let ids = tok.encode("a\n\nb", false).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["▁a", "\n\n", "▁b"]);

        let ids = tok.tokenize("ab", true, false).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["<s>", "▁a", "b"]);
        let mut w = spm_writer(PIECES);
        w.meta_bool("tokenizer.ggml.add_eos_token", true)
            .meta_bool("tokenizer.ggml.add_bos_token", false);
        let tok = build(&w).expect("builds");
        let ids = tok.tokenize("ab", true, false).expect("encodes");
        assert_eq!(texts(&tok, &ids), ["▁a", "b", "</s>"]);
    }

    #[test]
    fn spm_errors_name_the_problem() {
        let mut w = spm_writer(PIECES);
        w.meta(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vec![0.0; 3])),
        );
        let err = build(&w).unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.scores has 3 entries"), "{err}");

        let mut w = spm_writer(&[("a", 0.0), ("a", -1.0)]);
        w.remove_meta("tokenizer.ggml.scores");
        let err = build(&w).unwrap_err().to_string();
        assert!(
            err.contains("duplicate token in vocabulary: \"a\""),
            "{err}"
        );

        // Without byte tokens, a character outside the vocabulary cannot be encoded.
        let mut w = GgufWriter::new();
        w.meta_str("tokenizer.ggml.model", "llama").meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(vec![
                "<unk>".into(),
                "<s>".into(),
                "</s>".into(),
                "▁".into(),
            ])),
        );
        let tok = build(&w).expect("builds");
        let err = tok.encode("x", false).unwrap_err().to_string();
        assert!(err.contains("0x78"), "{err}");
    }

    /// Byte-level vocabulary: the 256 alphabet characters, the results of `merges`, and
    /// `xyz` (an entry no merge reaches).
    fn bpe_writer(pre: &str) -> GgufWriter {
        let merges = ["1 2", "12 3", "4 5", "123 45", "Ġ !", "' S"];
        let mut tokens: Vec<String> = byte_level_alphabet().iter().map(char::to_string).collect();
        tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
        tokens.push("xyz".into());
        let mut w = GgufWriter::new();
        w.meta_str("tokenizer.ggml.model", "gpt2")
            .meta_str("tokenizer.ggml.pre", pre)
            .meta_u32("tokenizer.ggml.bos_token_id", 0)
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(tokens)),
            )
            .meta(
                "tokenizer.ggml.merges",
                MetaValue::Array(MetaArray::String(
                    merges.iter().map(|m| m.to_string()).collect(),
                )),
            );
        w
    }

    #[test]
    fn bpe_pre_tokenizers_split_as_llama_cpp() {
        // (pre, text, expected token strings)
        let cases: &[(&str, &str, &[&str])] = &[
            // default: punctuation runs isolated first, then GPT-2, then digit runs and
            // groups of three.
            ("default", "12345", &["123", "45"]),
            ("default", "a !!", &["a", "Ġ", "!", "!"]),
            ("default", "IT'S", &["I", "T", "'", "S"]),
            ("default", "xyz", &["x", "y", "z"]),
            ("gpt-2", "12345", &["12345"]),
            ("gpt-2", "a !!", &["a", "Ġ!", "!"]),
            ("gpt-2", "IT'S", &["I", "T", "'", "S"]),
            ("gpt2", "12345", &["12345"]),
            ("llama-bpe", "12345", &["123", "45"]),
            ("llama-bpe", "a !!", &["a", "Ġ!", "!"]),
            ("llama-bpe", "IT'S", &["I", "T", "'S"]),
            // ignore_merges: a piece that is an entry is that entry.
            ("llama-bpe", "xyz", &["xyz"]),
            ("qwen2", "12345", &["1", "2", "3", "4", "5"]),
            ("qwen2", "IT'S", &["I", "T", "'S"]),
            ("qwen2", "xyz", &["x", "y", "z"]),
            ("smollm", "12345", &["1", "2", "3", "4", "5"]),
            ("smollm", "a !!", &["a", "Ġ!", "!"]),
            ("smollm", "IT'S", &["I", "T", "'", "S"]),
        ];
        for &(pre, text, want) in cases {
            let tok = build(&bpe_writer(pre)).expect("builds");
            let ids = tok.encode(text, false).expect("encodes");
            assert_eq!(texts(&tok, &ids), want, "pre {pre:?}, text {text:?}");
            assert_eq!(tok.decode(&ids), text);
        }
        // llama.cpp's add_bos default: on for llama-bpe, off for the others.
        assert!(build(&bpe_writer("llama-bpe")).expect("builds").add_bos());
        assert!(!build(&bpe_writer("qwen2")).expect("builds").add_bos());
        let mut w = bpe_writer("default");
        w.remove_meta("tokenizer.ggml.pre");
        let tok = build(&w).expect("builds");
        assert_eq!(tok.pre(), "default");
        let err = build(&bpe_writer("deepseek-coder"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.ggml.pre \"deepseek-coder\""),
            "{err}"
        );
    }
}
