//! `Head`: the client's part of a model — tokenizer, chat template, embedding, final
//! norm, LM head — and the generation loop over any [`BlockChain`].
//! The prompt's token ids never leave it: only hidden states go to the blocks.

use std::sync::Arc;

use super::generate::{self, BlockChain, GenerateOptions, Generation};
use super::sampler::Sampler;
use super::{EngineError, HeadBackend};
use crate::model::chat::{ChatMessage, ChatTemplate};
use crate::model::gguf::GgufFile;
use crate::model::tokenizer::Tokenizer;
use crate::model::{ModelConfig, ModelError};

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
