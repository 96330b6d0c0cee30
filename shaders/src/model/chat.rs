//! Chat templates: the Jinja template in a GGUF's `tokenizer.chat_template`, or, where a
//! file has none, a built-in one chosen by architecture as llama.cpp does (Gemma 3,
//! Llama 3, ChatML); rendered with `minijinja` the way Hugging Face renders it
//! (`trim_blocks`, `lstrip_blocks`, `raise_exception`, Python string methods).

use super::ModelError;
use super::gguf::{GgufFile, GgufMetadata};
use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

/// The ChatML template used when a model has none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turns (`<start_of_turn>user` / `model`, each closed by `<end_of_turn>`), after
/// the BOS text. Gemma has no system role: a leading system message is folded into the
/// first turn, followed by a blank line, as Gemma 3's own template does. Contents are
/// trimmed, as llama.cpp's built-in `gemma` template trims them.
pub const GEMMA3_TEMPLATE: &str = r#"{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set first_prefix = messages[0]['content'] | trim + '\n\n' %}{% set turns = messages[1:] %}{% else %}{% set first_prefix = '' %}{% set turns = messages %}{% endif %}{% for message in turns %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + (first_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"#;

/// Llama 3's header-delimited turns, after the BOS text (`<|begin_of_text|>`); contents
/// trimmed as in Meta's template and llama.cpp's built-in `llama3`.
pub const LLAMA3_TEMPLATE: &str = r#"{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#;

/// Where a model's chat template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The file's `tokenizer.chat_template`.
    File,
    /// A built-in template: `gemma3`, `llama3` or `chatml`.
    Builtin(&'static str),
}

impl std::fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File => f.write_str("file"),
            Self::Builtin(name) => write!(f, "builtin:{name}"),
        }
    }
}

/// The built-in template for a model without one, by `general.architecture` and
/// vocabulary: Gemma 3's for `gemma3`, Llama 3's for `llama` with `<|start_header_id|>` in
/// its vocabulary, ChatML otherwise (Qwen 2 and 3 use ChatML).
pub fn builtin_template(md: &GgufMetadata) -> (&'static str, &'static str) {
    let arch = md.get_str("general.architecture").unwrap_or("");
    let has_token = |text: &str| {
        md.get_str_array("tokenizer.ggml.tokens")
            .map(|t| t.iter().any(|s| s == text))
            .unwrap_or(false)
    };
    match arch {
        "gemma3" => ("gemma3", GEMMA3_TEMPLATE),
        "llama" if has_token("<|start_header_id|>") => ("llama3", LLAMA3_TEMPLATE),
        _ => ("chatml", CHATML_TEMPLATE),
    }
}

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
    origin: TemplateOrigin,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
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
    /// The template of a GGUF model (see [`ChatTemplate::for_model`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        Self::for_model(file.metadata())
    }

    /// Same as [`ChatTemplate::for_model`] (kept for existing callers).
    pub fn from_metadata(md: &GgufMetadata) -> Result<Self, ModelError> {
        Self::for_model(md)
    }

    /// The template in `tokenizer.chat_template`, or the built-in one for the model's
    /// architecture ([`builtin_template`]) when absent; with the BOS/EOS texts from
    /// `tokenizer.ggml.{bos,eos}_token_id`. [`ChatTemplate::origin`] says which.
    pub fn for_model(md: &GgufMetadata) -> Result<Self, ModelError> {
        let (source, origin) = match md.get("tokenizer.chat_template") {
            None => {
                let (name, source) = builtin_template(md);
                (source, TemplateOrigin::Builtin(name))
            }
            Some(_) => (md.get_str("tokenizer.chat_template")?, TemplateOrigin::File),
        };
        let token = |key: &str| -> String {
            let tokens = md.get_str_array("tokenizer.ggml.tokens").ok();
            md.get_u64(key)
                .ok()
                .and_then(|id| tokens?.get(usize::try_from(id).ok()?).cloned())
                .unwrap_or_default()
        };
        let mut t = Self::new(
            source,
            &token("tokenizer.ggml.bos_token_id"),
            &token("tokenizer.ggml.eos_token_id"),
        )?;
        t.origin = origin;
        Ok(t)
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
            origin: TemplateOrigin::File,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The default ChatML template.
    pub fn chatml() -> Self {
        let mut t =
            Self::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("the ChatML template compiles");
        t.origin = TemplateOrigin::Builtin("chatml");
        t
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from: the file, or a built-in one (`builtin:gemma3`...).
    /// [`ChatTemplate::new`] counts as the file's.
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::{GgufHeader, MetaArray, MetaValue};
    use crate::model::gguf_writer::GgufWriter;

    fn metadata(arch: &str, tokens: &[&str], template: Option<&str>) -> GgufMetadata {
        let mut w = GgufWriter::new();
        w.meta_str("general.architecture", arch)
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(
                    tokens.iter().map(|t| t.to_string()).collect(),
                )),
            )
            .meta_u32("tokenizer.ggml.bos_token_id", 0)
            .meta_u32("tokenizer.ggml.eos_token_id", 1);
        if let Some(t) = template {
            w.meta_str("tokenizer.chat_template", t);
        }
        GgufHeader::parse(&w.to_bytes())
            .expect("metadata-only GGUF parses")
            .metadata
    }

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", " Be brief. "),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Why?\n"),
        ]
    }

    #[test]
    fn gemma3_builtin_folds_the_system_prompt_into_the_first_turn() {
        let md = metadata("gemma3", &["<bos>", "<eos>"], None);
        let t = ChatTemplate::for_model(&md).expect("template");
        assert_eq!(t.origin().to_string(), "builtin:gemma3");
        assert_eq!(
            t.render(&conversation(), true).expect("renders"),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
        let no_system = &conversation()[1..2];
        assert_eq!(
            t.render(no_system, false).expect("renders"),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
        );
    }

    #[test]
    fn llama3_builtin_needs_the_header_tokens() {
        let md = metadata(
            "llama",
            &["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>"],
            None,
        );
        let t = ChatTemplate::from_metadata(&md).expect("template");
        assert_eq!(t.origin(), TemplateOrigin::Builtin("llama3"));
        assert_eq!(
            t.render(&conversation()[..2], true).expect("renders"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        // A Llama 2 style vocabulary gets ChatML.
        let md = metadata("llama", &["<s>", "</s>"], None);
        let t = ChatTemplate::for_model(&md).expect("template");
        assert_eq!(t.origin().to_string(), "builtin:chatml");
    }

    #[test]
    fn qwen_gets_chatml_and_a_file_template_wins() {
        for arch in ["qwen2", "qwen3"] {
            let md = metadata(arch, &["<|endoftext|>", "<|im_end|>"], None);
            let t = ChatTemplate::for_model(&md).expect("template");
            assert_eq!(t.origin(), TemplateOrigin::Builtin("chatml"));
            assert_eq!(
                t.render(&conversation()[1..2], true).expect("renders"),
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            );
        }
        let md = metadata("gemma3", &["<bos>", "<eos>"], Some("{{ eos_token }}"));
        let t = ChatTemplate::for_model(&md).expect("template");
        assert_eq!(t.origin(), TemplateOrigin::File);
        assert_eq!(t.origin().to_string(), "file");
        assert_eq!(t.render(&[], false).expect("renders"), "<eos>");
    }
}
