//! The tokenizer stored in a GGUF's metadata (`tokenizer.ggml.*`, model `gpt2`: byte-level
//! BPE), built on the `tokenizers` crate, plus a streaming decoder that emits text as soon
//! as it is whole UTF-8.

use super::ModelError;
use super::gguf::{GgufFile, GgufMetadata};
use std::collections::HashMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

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

/// Llama 3's pre-tokenizer regex (llama.cpp's `llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A byte-level BPE tokenizer read from GGUF metadata.
pub struct Tokenizer {
    /// Splits control tokens out of the text first (`parse_special == true`).
    special: tokenizers::Tokenizer,
    /// Treats control tokens' text as plain text.
    plain: tokenizers::Tokenizer,
    tokens: Vec<String>,
    /// Bytes each token stands for (control tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    token_types: Vec<i64>,
    bos: Option<u32>,
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    pre: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF model.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        Self::from_metadata(file.metadata())
    }

    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &GgufMetadata) -> Result<Self, ModelError> {
        let model = md.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.model {model:?} is not supported (supported: gpt2, byte-level BPE)"
            )));
        }
        let tokens = md.get_str_array("tokenizer.ggml.tokens")?.to_vec();
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.tokens has {} tokens",
                tokens.len()
            )));
        }
        let token_types = match md.get("tokenizer.ggml.token_type") {
            None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
            Some(_) => {
                let t = md
                    .get_array("tokenizer.ggml.token_type")?
                    .to_i64s()
                    .ok_or_else(|| {
                        ModelError::Tokenizer("tokenizer.ggml.token_type is not integers".into())
                    })?;
                if t.len() != tokens.len() {
                    return Err(ModelError::Tokenizer(format!(
                        "tokenizer.ggml.token_type has {} entries for {} tokens",
                        t.len(),
                        tokens.len()
                    )));
                }
                t
            }
        };
        let merges: Vec<(String, String)> = match md.get("tokenizer.ggml.merges") {
            None => Vec::new(),
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
                .collect::<Result<_, _>>()?,
        };
        let pre = match md.get("tokenizer.ggml.pre") {
            None => "default".to_string(),
            Some(_) => md.get_str("tokenizer.ggml.pre")?.to_string(),
        };
        let id = |key: &str| -> Result<Option<u32>, ModelError> {
            match md.get(key) {
                None => Ok(None),
                Some(_) => {
                    let v = md.get_u32(key)?;
                    if v as usize >= tokens.len() {
                        return Err(ModelError::Tokenizer(format!(
                            "{key} {v} is past the vocabulary ({} tokens)",
                            tokens.len()
                        )));
                    }
                    Ok(Some(v))
                }
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let eom = id("tokenizer.ggml.eom_token_id")?;
        let add_bos = match md.get("tokenizer.ggml.add_bos_token") {
            None => false,
            Some(_) => md.get_bool("tokenizer.ggml.add_bos_token")?,
        };
        if add_bos && bos.is_none() {
            return Err(ModelError::Tokenizer(
                "tokenizer.ggml.add_bos_token is set but there is no bos_token_id".into(),
            ));
        }

        // Byte-level decoding table.
        let alphabet = byte_level_alphabet();
        let byte_of: HashMap<char, u8> = alphabet
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let token_bytes: Vec<Vec<u8>> = tokens
            .iter()
            .zip(&token_types)
            .map(|(t, &ty)| {
                if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                    return t.as_bytes().to_vec();
                }
                t.chars()
                    .map(|c| byte_of.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    // A piece outside the byte alphabet: keep its UTF-8 text.
                    .unwrap_or_else(|| t.as_bytes().to_vec())
            })
            .collect();

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre == "llama-bpe" || pre == "llama3")
            .build()
            .map_err(tok_err)?;
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "default" | "gpt2" | "gpt-2" => byte_level.into(),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama-bpe" | "llama3" => Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(LLAMA3_PATTERN.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(tok_err)?
                .into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer.ggml.pre {other:?} is not supported (supported: default, gpt2, smollm, llama-bpe)"
                )));
            }
        };
        let mut special = tokenizers::Tokenizer::new(bpe);
        special
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_decoder(Some(ByteLevelDecoder::default()));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(t, ty)| {
                (**ty == TOKEN_TYPE_CONTROL || **ty == TOKEN_TYPE_USER_DEFINED) && !t.is_empty()
            })
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        special.add_special_tokens(&added);
        let mut plain = special.clone();
        plain.set_encode_special_tokens(true);

        let mut eos_ids: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        // End-of-generation tokens by their text, as llama.cpp recognises them.
        for (i, (t, &ty)) in tokens.iter().zip(&token_types).enumerate() {
            let eog_text = matches!(
                t.as_str(),
                "<|eot_id|>"
                    | "<|im_end|>"
                    | "<|end|>"
                    | "<end_of_turn>"
                    | "<|endoftext|>"
                    | "<|eom_id|>"
                    | "<EOT>"
            );
            if eog_text && ty == TOKEN_TYPE_CONTROL && !eos_ids.contains(&(i as u32)) {
                eos_ids.push(i as u32);
            }
        }

        Ok(Self {
            special,
            plain,
            tokens,
            token_bytes,
            token_types,
            bos,
            eos,
            eos_ids,
            add_bos,
            pre,
        })
    }

    /// Token ids of `text`. With `parse_special`, the text of control tokens (such as
    /// `<|im_start|>`) becomes their single id; without, it is tokenized as plain text.
    /// No BOS is added (see [`Tokenizer::add_bos`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, ModelError> {
        let tk = if parse_special {
            &self.special
        } else {
            &self.plain
        };
        let enc = tk.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (control tokens as their text; invalid UTF-8 as U+FFFD; unknown
    /// ids skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.token_bytes.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` stands for.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(Vec::as_slice)
    }

    /// The vocabulary entry of `id` as stored (byte-level alphabet: `Ġ` for a space).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry, as stored.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.special.token_to_id(text)
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

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Every token that ends a generation: eos, eot/eom, and control tokens such as
    /// `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Whether prompts start with the BOS token (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The pre-tokenizer name (`tokenizer.ggml.pre`).
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
