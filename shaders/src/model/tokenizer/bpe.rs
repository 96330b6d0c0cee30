//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) on the `tokenizers` crate: the
//! pre-tokenizer named by `tokenizer.ggml.pre` and the merges.
//!
//! llama.cpp pre-tokenizes with a list of regexes applied in turn: each one splits every
//! piece left by the previous into its matches and the text between them, and both become
//! pieces. `tokenizers`' `Split` with `Isolated` behaviour does exactly that, so each
//! regex becomes one `Split`, followed by the byte-to-unicode `ByteLevel` step without
//! its own regex. The regexes are llama.cpp's (`src/llama-vocab.cpp`,
//! `llm_tokenizer_bpe`), which spell case-insensitive contractions as `'[sS]` rather than
//! `(?i:'s)` (the latter also matches `'ſ`). An unknown `pre` is an error naming it, as in
//! llama.cpp; a file without the key gets `default`, as llama.cpp does (with a warning).

use super::super::ModelError;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's regex (llama.cpp's `gpt-2`, and the second step of `default` and `smollm`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex (llama.cpp's `llama-bpe`): numbers in groups of up to three.
pub const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's regex (llama.cpp's `qwen2`): Llama 3's with single digits.
pub const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreTokenizer {
    /// The regexes, applied in turn.
    pub regexes: &'static [&'static str],
    /// A piece that is itself a vocabulary entry is that token, merges or not.
    pub ignore_merges: bool,
    /// `add_bos_token` when the file does not say.
    pub add_bos_default: bool,
}

const DEFAULT: PreTokenizer = PreTokenizer {
    regexes: &[
        r"[\p{P}\$\+<=>\^~\|]+",
        GPT2_PATTERN,
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ],
    ignore_merges: false,
    add_bos_default: false,
};

const GPT2: PreTokenizer = PreTokenizer {
    regexes: &[GPT2_PATTERN],
    ignore_merges: false,
    add_bos_default: false,
};

const LLAMA3: PreTokenizer = PreTokenizer {
    regexes: &[LLAMA3_PATTERN],
    ignore_merges: true,
    add_bos_default: true,
};

const QWEN2: PreTokenizer = PreTokenizer {
    regexes: &[QWEN2_PATTERN],
    ignore_merges: false,
    add_bos_default: false,
};

const SMOLLM: PreTokenizer = PreTokenizer {
    regexes: &[r"\p{N}", GPT2_PATTERN],
    ignore_merges: false,
    add_bos_default: false,
};

/// The `pre` names this module knows (for error messages).
pub const SUPPORTED_PRE: &str = "default, gpt-2 (gpt2), llama-bpe (llama3, llama-v3), qwen2 (deepseek-r1-qwen), smollm (starcoder, refact, command-r, codeshell)";

/// llama.cpp's pre-tokenizer for `pre`; `None` for a name it is not taught here. Names
/// are grouped as llama.cpp groups them; `gpt2` is accepted as well as llama.cpp's `gpt-2`.
pub fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    Some(match pre {
        "default" => DEFAULT,
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" => GPT2,
        "llama3" | "llama-v3" | "llama-bpe" => LLAMA3,
        "qwen2" | "deepseek-r1-qwen" => QWEN2,
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => SMOLLM,
        _ => return None,
    })
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// A `tokenizers` BPE tokenizer (no added tokens: special tokens are split out before it)
/// over `tokens` (in the byte-level alphabet) and `merges`.
pub fn build(
    tokens: &[String],
    merges: Vec<(String, String)>,
    pre: PreTokenizer,
) -> Result<tokenizers::Tokenizer, ModelError> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    // A merge whose parts or result the vocabulary lacks can never produce a token:
    // llama.cpp keeps it and falls back to bytes, the `tokenizers` crate refuses the whole
    // vocabulary; dropping it gives llama.cpp's ids without refusing the file.
    let known = |t: &str| vocab.contains_key(t);
    let before = merges.len();
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .filter(|(a, b)| known(a) && known(b) && known(&format!("{a}{b}")))
        .collect();
    if merges.len() < before {
        tracing::debug!(
            "{} merges name tokens outside the vocabulary: skipped",
            before - merges.len()
        );
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(tok_err)?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(pre.regexes.len() + 1);
    for re in pre.regexes {
        steps.push(
            Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?
            .into(),
        );
    }
    steps.push(ByteLevel::new(false, true, false).into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(tk)
}
