//! `Head`: the client's part of a model — tokenizer, chat template, embedding, final
//! norm, LM head — and the generation loop over any [`BlockChain`].
//! The prompt's token ids never leave it: only hidden states go to the blocks.
//!
//! [`Embedding`] is the lookup both head backends share: on the CPU, from the weight
//! source's own storage.

use std::sync::Arc;

use super::cpu::{check_len, check_tokens};
use super::generate::{self, BlockChain, GenerateOptions, Generation};
use super::sampler::Sampler;
use super::{EngineError, HeadBackend};
use crate::model::chat::{ChatMessage, ChatTemplate};
use crate::model::gguf::GgufFile;
use crate::model::tokenizer::Tokenizer;
use crate::model::{ModelConfig, ModelError, SharedTensor, WeightSource};
use crate::ops::embed;

/// The token embedding of [`super::CpuHead`] and [`super::GpuHead`], looked up on the CPU:
/// a few rows a call, so only those rows are read from the source's storage (the
/// memory-mapped file: the table is neither copied into process memory nor uploaded) and
/// dequantized, then multiplied by the architecture's embedding scale in f32
/// (`row[i] * scale` after dequantization, as llama.cpp does).
pub(crate) struct Embedding {
    table: SharedTensor,
    d_model: usize,
    vocab: usize,
    scale: Option<f32>,
}

impl Embedding {
    /// `token_embd.weight` of `src`, checked to be `vocab × d_model`.
    pub(crate) fn new(src: &dyn WeightSource, c: &ModelConfig) -> Result<Self, EngineError> {
        let table = src.shared_tensor("token_embd.weight")?;
        table.view().expect_dims(&[c.d_model, c.vocab_size])?;
        Ok(Self {
            table,
            d_model: c.d_model,
            vocab: c.vocab_size,
            scale: c.features.embed_scale,
        })
    }

    /// The table, as the file holds it (a tied LM head reads it too).
    pub(crate) fn table(&self) -> &SharedTensor {
        &self.table
    }

    /// Rows `tokens` into `out` (`tokens.len() × d_model`).
    pub(crate) fn lookup(&self, tokens: &[u32], out: &mut [f32]) -> Result<(), EngineError> {
        let d = self.d_model;
        check_tokens(tokens, self.vocab)?;
        check_len(out.len(), tokens.len() * d, d)?;
        embed::reference(self.table.ty, self.table.data(), d, tokens, out)?;
        if let Some(s) = self.scale {
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }
}

pub struct Head {
    backend: Box<dyn HeadBackend>,
    /// Shared so a caller can decode the stream while the head generates.
    tokenizer: Arc<Tokenizer>,
    chat: ChatTemplate,
}

impl Head {
    pub fn new(backend: Box<dyn HeadBackend>, tokenizer: Tokenizer, chat: ChatTemplate) -> Self {
        Self {
            backend,
            tokenizer: Arc::new(tokenizer),
            chat,
        }
    }

    /// Tokenizer and chat template from the GGUF's metadata around `backend`.
    pub fn from_gguf(file: &GgufFile, backend: Box<dyn HeadBackend>) -> Result<Self, ModelError> {
        Ok(Self::new(
            backend,
            Tokenizer::from_gguf(file)?,
            ChatTemplate::from_gguf(file)?,
        ))
    }

    pub fn config(&self) -> &ModelConfig {
        self.backend.config()
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Token ids of a plain-text prompt (special-token text is not parsed as such).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut ids = Vec::new();
        if self.tokenizer.add_bos() {
            ids.extend(self.tokenizer.bos_id());
        }
        ids.extend(self.tokenizer.encode(text, false)?);
        Ok(ids)
    }

    /// Token ids of a conversation rendered by the chat template, ready for the
    /// assistant's reply.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ModelError> {
        let text = self.chat.render(messages, true)?;
        self.tokenizer.encode(&text, true)
    }

    /// Token ids that end a reply.
    pub fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.eos_ids().to_vec()
    }

    /// Generates through `chain`, which must hold blocks `[0, n_blocks)`.
    pub fn generate(
        &mut self,
        chain: &mut dyn BlockChain,
        sampler: &mut Sampler,
        prompt: &[u32],
        options: &GenerateOptions<'_>,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation, EngineError> {
        generate::generate(
            self.backend.as_mut(),
            chain,
            sampler,
            prompt,
            options,
            on_token,
        )
    }
}
