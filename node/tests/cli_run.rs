//! `cocoon run` and `cocoon model` end to end: the binary on the default model, and its
//! answers to bad input (a clear message and a non-zero exit, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cocoon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("cocoon runs")
}

fn default_model() -> PathBuf {
    let path = cocoon_shaders::model::default_model_path();
    assert!(
        path.exists(),
        "{} missing: run scripts/setup",
        path.display()
    );
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failure: non-zero exit, an `error:` line that contains `needle`, and no panic.
fn assert_clear_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(
        err.contains("error:") && err.contains(needle),
        "expected {needle:?} in: {err}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cocoon-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_prefix(model: &Path, len: usize, to: &Path) {
    let bytes = std::fs::read(model).expect("model bytes");
    std::fs::write(to, &bytes[..len]).expect("write");
}

#[test]
fn run_prints_the_reference_continuation_greedily() {
    let model = default_model();
    let out = cocoon(&[
        "run",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "32",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    let expected = ", the city of Nova Haven was a thriving metropolis, with towering \
                    skyscrapers and bustling streets. But as the years went by, the city began \
                    to lose its original";
    assert_eq!(report["text"], expected);
    assert_eq!(
        report["prompt_token_ids"],
        serde_json::json!([6403, 1980, 253, 655])
    );
    assert_eq!(report["token_ids"].as_array().expect("ids").len(), 32);
    assert!(report["tokens_per_second"].as_f64().expect("tps") > 0.0);
    assert!(
        stdout.starts_with(expected),
        "text is streamed before the JSON: {stdout}"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let model = default_model();
    let out = cocoon(&[
        "run",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        "hello",
        "--max-tokens",
        "100000",
    ]);
    assert_clear_failure(&out, "longer than the model's context");
}

#[test]
fn a_truncated_model_is_a_clear_error() {
    let dir = scratch("truncated");
    let truncated = dir.join("truncated.gguf");
    write_prefix(&default_model(), 5_000_000, &truncated);
    for args in [
        vec!["model", "info", truncated.to_str().expect("utf-8")],
        vec![
            "run",
            "--model",
            truncated.to_str().expect("utf-8"),
            "--prompt",
            "hi",
        ],
    ] {
        assert_clear_failure(&cocoon(&args), "past the end of the file");
    }
}

#[test]
fn a_file_that_is_not_gguf_is_a_clear_error() {
    let dir = scratch("magic");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"NOPE this is not a model file at all....").expect("write");
    assert_clear_failure(
        &cocoon(&["model", "info", bad.to_str().expect("utf-8")]),
        "magic",
    );
}

#[test]
fn a_missing_model_names_the_path() {
    let out = cocoon(&["model", "info", "/nonexistent/model.gguf"]);
    assert_clear_failure(&out, "/nonexistent/model.gguf");
}

#[test]
fn model_info_describes_the_default_model() {
    let model = default_model();
    let out = cocoon(&["model", "info", model.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["config"]["n_blocks"], 30);
    assert_eq!(info["config"]["architecture"], "llama");
    assert_eq!(info["types"]["Q4_1"]["tensors"], 210);
    assert_eq!(info["types"]["Q8_0"]["tensors"], 1);
}
