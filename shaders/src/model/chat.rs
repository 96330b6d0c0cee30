//! Chat templates: the Jinja template in a GGUF's `tokenizer.chat_template` (ChatML when
//! absent), rendered with `minijinja` the way Hugging Face renders it (`trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, Python string methods).

use super::ModelError;
use super::gguf::{GgufFile, GgufMetadata};
use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

/// The ChatML template used when a model has none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Instructions one render may execute: far above what a chat template needs for a long
/// conversation (tens per message), far below what a nested-loop bomb needs.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the model's BOS and EOS token texts.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn template_err(e: Error) -> ModelError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    ModelError::ChatTemplate(msg)
}

impl ChatTemplate {
    /// The template of a GGUF model (ChatML when it has none).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        Self::from_metadata(file.metadata())
    }

    /// The template in `tokenizer.chat_template` (ChatML when absent), with the BOS/EOS
    /// texts from `tokenizer.ggml.{bos,eos}_token_id`.
    pub fn from_metadata(md: &GgufMetadata) -> Result<Self, ModelError> {
        let source = match md.get("tokenizer.chat_template") {
            None => CHATML_TEMPLATE,
            Some(_) => md.get_str("tokenizer.chat_template")?,
        };
        let token = |key: &str| -> String {
            let tokens = md.get_str_array("tokenizer.ggml.tokens").ok();
            md.get_u64(key)
                .ok()
                .and_then(|id| tokens?.get(usize::try_from(id).ok()?).cloned())
                .unwrap_or_default()
        };
        Self::new(
            source,
            &token("tokenizer.ggml.bos_token_id"),
            &token("tokenizer.ggml.eos_token_id"),
        )
    }

    /// Compiles `source` (Hugging Face chat-template Jinja).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // A template comes from the model file: bound its work so a hostile one cannot
        // loop for ever (`range` alone is capped at 100 000 items, but loops nest).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(template_err)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The default ChatML template.
    pub fn chatml() -> Self {
        Self::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("the ChatML template compiles")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt`, ends with the opening of the
    /// assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let tmpl = self.env.get_template("chat").map_err(template_err)?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_err)
    }
}
