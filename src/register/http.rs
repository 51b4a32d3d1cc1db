//! Just enough HTTP/1.1 for the register client: one request per connection over TCP or a Unix
//! socket, and the WebSocket handshake over the same.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The largest answer read.
const MAX_REPLY: u64 = 1024 * 1024;

/// Where the server listens: `http://HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT`.
    Tcp(String),
    /// A Unix socket.
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = s.strip_prefix("http://").ok_or_else(|| {
            format!("`{s}` is not a server: write http://HOST:PORT or unix:PATH (https is not supported yet)")
        })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{s}` is not a server: write http://HOST:PORT"));
        }
        Ok(Endpoint::Tcp(host.to_string()))
    }
}

/// A connection to the server, whichever kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn open(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    Ok(match endpoint {
        Endpoint::Tcp(host) => Box::new(TcpStream::connect(host.as_str()).await?),
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
    })
}

fn host(endpoint: &Endpoint) -> &str {
    match endpoint {
        Endpoint::Tcp(h) => h,
        Endpoint::Unix(_) => "localhost",
    }
}

/// A server's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The `error` of a JSON error body, or the body itself.
    pub fn error(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| self.body.trim().chars().take(200).collect())
    }
}

/// Sends one request and reads the whole answer.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<Reply> {
    let mut stream = open(endpoint).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        host(endpoint),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut bytes = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut bytes).await?;
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> std::io::Result<Reply> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or_default());
        body = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The server answered the upgrade with an error.
    #[error("{}: {}", .0.status, .0.error())]
    Refused(Reply),
    /// No connection, or a broken handshake.
    #[error("{0}")]
    Failed(String),
}

/// Opens the registration WebSocket at `path`.
pub async fn websocket(
    endpoint: &Endpoint,
    path: &str,
    token: &str,
) -> Result<WebSocketStream<Box<dyn Io>>, WsError> {
    let failed = |e: &dyn std::fmt::Display| WsError::Failed(e.to_string());
    let stream = open(endpoint).await.map_err(|e| failed(&e))?;
    let mut request = format!("ws://{}{path}", host(endpoint))
        .into_client_request()
        .map_err(|e| failed(&e))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| WsError::Failed("the token is not a valid header value".into()))?;
    request.headers_mut().insert("Authorization", auth);
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(WsError::Refused(Reply { status, body }))
        }
        Err(e) => Err(failed(&e)),
    }
}

/// Percent-encodes everything but unreserved characters, for paths and query strings.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_answers_parse() {
        assert_eq!(
            "http://127.0.0.1:9797/".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:9797".into()))
        );
        assert_eq!(
            "unix:/run/e.sock".parse(),
            Ok(Endpoint::Unix("/run/e.sock".into()))
        );
        assert!("https://x".parse::<Endpoint>().is_err());
        let r = parse(b"HTTP/1.1 409 Conflict\r\ncontent-length: 15\r\n\r\n{\"error\":\"env\"}")
            .unwrap();
        assert_eq!((r.status, r.error()), (409, "env".to_string()));
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
