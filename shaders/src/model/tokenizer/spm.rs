//! SentencePiece-style merging (`tokenizer.ggml.model = "llama"`): llama.cpp's
//! `llm_tokenizer_spm`, written by hand.
//!
//! The text (spaces already escaped as `▁`) starts as one symbol per character. While any
//! two adjacent symbols concatenate to a vocabulary entry, the pair whose entry has the
//! highest score is merged; between equal scores the leftmost pair goes first. Symbols
//! left that are no vocabulary entry become their bytes' `<0xNN>` tokens.
//!
//! Why not the `tokenizers` crate: its `Unigram` model is a Viterbi search over the
//! scores (it maximises the sum of piece scores over the whole text), a different
//! algorithm that gives other ids where a greedy merge and the best segmentation differ.
//! Its `BPE` model reproduces the merge order only approximately: it needs one merge
//! rule for every way of splitting every entry into two entries (514 847 rules for
//! Gemma 3's 262 144 tokens), and it breaks ties by rule rank where llama.cpp breaks them
//! by position, while Gemma 3 gives 6 415 entries the score -1000 and 257 the score 0.
//! The merge loop below is some sixty lines and matches llama.cpp by construction.

use super::super::ModelError;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// One symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Bytes of the merged text when the candidate was made: a merge that changed
    /// either side since makes the candidate stale.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    /// Higher score first, then the leftmost (scores are never NaN: see [`SpmVocab::new`]).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// What the merge loop needs of the vocabulary.
pub(super) struct SpmVocab<'a> {
    pub token_to_id: &'a HashMap<String, u32>,
    /// Score per id (NaN already replaced by -inf).
    pub scores: &'a [f32],
    /// The token of each byte: `<0xNN>`, else the one-byte entry.
    pub byte_tokens: &'a [Option<u32>; 256],
}

impl SpmVocab<'_> {
    /// Appends the tokens of `text` (whitespace already escaped) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), ModelError> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        let n_chars = text.chars().count();
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n_chars).then_some(i + 1),
            });
        }
        if symbols.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        let candidate = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (left, right) = (left?, right?);
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..l.start + l.len + r.len];
            let id = *self.token_to_id.get(piece)?;
            Some(Bigram {
                left,
                right,
                score: self.scores.get(id as usize).copied()?,
                size: piece.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(candidate(&symbols, Some(i - 1), Some(i)));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.left].next = r.next;
            symbols[b.right].len = 0;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            queue.extend(candidate(&symbols, symbols[b.left].prev, Some(b.left)));
            queue.extend(candidate(&symbols, Some(b.left), symbols[b.left].next));
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let id = self.byte_tokens[b as usize].ok_or_else(|| {
                            ModelError::Tokenizer(format!(
                                "{piece:?} is not in the vocabulary and byte 0x{b:02X} has no <0x{b:02X}> token"
                            ))
                        })?;
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }
}
