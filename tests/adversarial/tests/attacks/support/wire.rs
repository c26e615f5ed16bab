//! HTTP/1.1 over real sockets, as a client or an attacker meets the server: one request per
//! connection (`Connection: close`), optionally from a chosen loopback address, failures returned
//! as errors so that a flood can count them.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;

use serde_json::Value;

use super::HANG;

/// An answer: status and JSON body (`Null` when the body is not JSON), and the raw body text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// The error kind of an error answer.
    pub fn kind(&self) -> Option<&str> {
        self.json["error"]["kind"].as_str()
    }

    /// `ok`, or the error kind, or the status: what a case counts.
    pub fn outcome(&self) -> String {
        if self.status == 200 {
            "ok".to_owned()
        } else {
            self.kind()
                .map_or_else(|| format!("status {}", self.status), str::to_owned)
        }
    }
}

/// One request on a fresh connection from `from` (any of 127.0.0.0/8), which then closes.
/// Connection and read failures are errors, not panics: a flood counts them.
pub fn http(
    from: Option<Ipv4Addr>,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut stream = match from {
        Some(from) => connect_from(from, addr).map_err(|e| format!("connect: {e}"))?,
        None => TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?,
    };
    stream
        .set_read_timeout(Some(HANG))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: read: {e}"))?;
    if raw.is_empty() {
        return Err(format!("{method} {path}: closed without an answer"));
    }
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let (head, body) = raw.split_at(split);
    let head = String::from_utf8_lossy(head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    Reply {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let data = &rest[eol + 2..];
        out.extend_from_slice(&data[..size.min(data.len())]);
        rest = data.get(size..).unwrap_or_default();
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
    out
}

/// A runtime only to bind client sockets to a chosen loopback address before connecting (std
/// cannot); the sockets are then used blocking.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .unwrap()
    })
}

/// A connection to `addr` from `from`.
pub fn connect_from(from: Ipv4Addr, addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{e}")))?;
    let stream = rt().block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from.into(), 0))?;
        socket.connect(addr).await?.into_std()
    })?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(HANG))?;
    Ok(stream)
}
