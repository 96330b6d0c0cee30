//! `cocoon generate` and `cocoon chat`: text from the mesh through a running client
//! node's OpenAI API (its address is in the node's data dir, `api.addr`), streamed as it
//! comes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::config::files;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model name or id as the client node serves it (`default`: its model).
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// End stdout with one JSON object describing the generation (token ids, route,
    /// failovers, speeds).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The API's base URL [default: the client node's, from its data dir].
    #[arg(long)]
    pub api: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The API base URL: `--api`, or the one the node in `data_dir` wrote.
fn base_url(data_dir: &Path, api: &Option<String>) -> Result<String> {
    if let Some(a) = api {
        return Ok(a.trim_end_matches('/').to_owned());
    }
    let path = data_dir.join(files::API_ADDR);
    let addr = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no OpenAI API at data dir {} ({} not found): start a client node with a model, \
             e.g. `cocoon node --role client --model default`, or pass --api URL",
            data_dir.display(),
            path.display()
        )
    })?;
    Ok(format!("http://{}/v1", addr.trim()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Posts a streaming request to `base/endpoint` and hands each piece of text (found by
/// `piece` in each chunk) to `on_text`; returns the `cocoon` summary of the last chunk.
fn stream(
    base: &str,
    endpoint: &str,
    body: &Value,
    piece: fn(&Value) -> Option<&str>,
    mut on_text: impl FnMut(&str) -> Result<()>,
) -> Result<Value> {
    let url = format!("{base}/{endpoint}");
    let mut response = agent()
        .post(&url)
        .send_json(body)
        .with_context(|| format!("asking {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("the API answered {status}: {message}");
    }
    let reader = BufReader::new(response.body_mut().as_reader());
    let mut summary = Value::Null;
    for line in reader.lines() {
        let line = line.context("reading the event stream")?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).context("decoding an event")?;
        if let Some(message) = chunk["error"]["message"].as_str() {
            bail!("generation failed: {message}");
        }
        if let Some(t) = piece(&chunk) {
            on_text(t)?;
        }
        if !chunk["cocoon"].is_null() {
            summary = chunk["cocoon"].clone();
        }
    }
    Ok(summary)
}

fn chat_piece(chunk: &Value) -> Option<&str> {
    chunk["choices"][0]["delta"]["content"].as_str()
}

fn text_piece(chunk: &Value) -> Option<&str> {
    chunk["choices"][0]["text"].as_str()
}

fn request_body(model: &str, messages: Value, s: &SamplingArgs) -> Value {
    json!({
        "model": model,
        "messages": messages,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stream": true,
    })
}

pub fn generate(data_dir: &Path, args: &GenerateArgs) -> Result<()> {
    let base = base_url(data_dir, &args.sampling.api)?;
    let (body, url_kind) = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": args.prompt}));
        (
            request_body(&args.model, Value::Array(messages), &args.sampling),
            "chat",
        )
    } else {
        let s = &args.sampling;
        (
            json!({
                "model": args.model, "prompt": args.prompt, "max_tokens": s.max_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed, "stream": true,
            }),
            "text",
        )
    };
    let mut stdout = std::io::stdout().lock();
    let mut print = |t: &str| -> Result<()> {
        stdout.write_all(t.as_bytes())?;
        stdout.flush()?;
        Ok(())
    };
    let summary = if url_kind == "chat" {
        stream(&base, "chat/completions", &body, chat_piece, &mut print)?
    } else {
        stream(&base, "completions", &body, text_piece, &mut print)?
    };
    writeln!(stdout)?;
    report(&summary);
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
    }
    Ok(())
}

/// A route's hops as `…<peer id tail> [blocks]`.
pub fn route_hops(route: &Value) -> Vec<String> {
    route
        .as_array()
        .map(|r| {
            r.iter()
                .map(|h| {
                    let peer = h["peer"].as_str().unwrap_or("?");
                    let short = &peer[peer.len().saturating_sub(8)..];
                    let blocks = h["blocks"].as_str().unwrap_or("?");
                    format!(
                        "…{short} [{blocks}] {}",
                        h["cipher"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Speeds, route and failovers on stderr.
fn report(summary: &Value) {
    let hops = route_hops(&summary["route"]);
    eprintln!(
        "{} tokens at {:.1} tok/s (first token after {:.0} ms) through {} worker(s): {}",
        summary["token_ids"].as_array().map_or(0, |a| a.len()),
        summary["tokens_per_second"].as_f64().unwrap_or(0.0),
        summary["time_to_first_token_ms"].as_f64().unwrap_or(0.0),
        hops.len(),
        hops.join(" → ")
    );
    if let Some(f) = summary["failovers"].as_array().filter(|f| !f.is_empty()) {
        for x in f {
            eprintln!(
                "failover: worker {} (blocks {}) failed: {}",
                x["peer"].as_str().unwrap_or("?"),
                x["blocks"].as_str().unwrap_or("?"),
                x["reason"].as_str().unwrap_or("?")
            );
        }
    }
}

/// An interactive conversation: one user line in, the streamed reply out; an empty line
/// or end of input ends it.
pub fn chat(data_dir: &Path, args: &ChatArgs) -> Result<()> {
    let base = base_url(data_dir, &args.sampling.api)?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(json!({"role": "user", "content": line.trim_end()}));
        let body = request_body(&args.model, Value::Array(messages.clone()), &args.sampling);
        let mut reply = String::new();
        let summary = stream(&base, "chat/completions", &body, chat_piece, |t| {
            reply.push_str(t);
            stdout.write_all(t.as_bytes())?;
            stdout.flush()?;
            Ok(())
        })?;
        writeln!(stdout)?;
        report(&summary);
        messages.push(json!({"role": "assistant", "content": reply}));
    }
}
