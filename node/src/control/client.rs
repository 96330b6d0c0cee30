//! The CLI's side of the control API: finds the node through the data directory
//! (`control.addr`, `control.cookie`) and makes one HTTP/1.1 request per call.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use crate::config::files;

/// A connection to the node at one data directory.
pub struct ControlClient {
    addr: SocketAddr,
    cookie: String,
    pub timeout: Duration,
}

/// No node answers at this data directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "no cocoon node is running with data dir {dir} ({why}).\nStart one with: cocoon node --data-dir {dir}"
)]
pub struct NoNode {
    pub dir: String,
    pub why: String,
}

impl ControlClient {
    /// Reads the address and cookie a running node wrote into `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> anyhow::Result<Self> {
        let no_node = |why: String| NoNode {
            dir: data_dir.display().to_string(),
            why,
        };
        let addr_path: PathBuf = data_dir.join(files::CONTROL_ADDR);
        let addr = std::fs::read_to_string(&addr_path)
            .map_err(|_| no_node(format!("{} not found", addr_path.display())))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| no_node(format!("{} is not an address", addr_path.display())))?;
        let cookie = std::fs::read_to_string(data_dir.join(files::COOKIE))
            .map_err(|e| no_node(format!("cannot read the control cookie: {e}")))?;
        let client = ControlClient {
            addr,
            cookie: cookie.trim().to_owned(),
            timeout: Duration::from_secs(10),
        };
        TcpStream::connect_timeout(&client.addr, Duration::from_secs(2))
            .map_err(|e| no_node(format!("nothing answers at {addr}: {e}")))?;
        Ok(client)
    }

    /// `GET path`, decoding a JSON body.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path)
    }

    /// `POST path` with no body, decoding a JSON body.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("POST", path)
    }

    fn call<T: DeserializeOwned>(&self, method: &str, path: &str) -> anyhow::Result<T> {
        let (status, body) = request(self.addr, method, path, Some(&self.cookie), self.timeout)?;
        check_status(status, &body)?;
        serde_json::from_slice(&body)
            .with_context(|| format!("decoding the reply to {method} {path}"))
    }
}

fn check_status(status: u16, body: &[u8]) -> anyhow::Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(body);
    bail!("node answered {status}: {}", text.trim())
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))
        .context("socket timeout")?;
    let auth = cookie
        .map(|c| format!("Authorization: Bearer {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).context("sending request")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading reply")?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("reply has no header end")?;
    let head = std::str::from_utf8(&raw[..split]).context("reply header is not text")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .context("reply has no status")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&rest[..eol]).context("bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        anyhow::ensure!(rest.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_replies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(
            parse_response(plain).expect("parses"),
            (200, b"[]".to_vec())
        );
        let chunked = b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).expect("parses"),
            (401, b"abcde".to_vec())
        );
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn a_missing_node_is_reported_plainly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ControlClient::for_data_dir(dir.path())
            .err()
            .expect("no node");
        assert!(
            err.to_string().contains("no cocoon node is running"),
            "{err}"
        );
    }
}
