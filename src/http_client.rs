//! The client side of the operations server, shared by `elasticd status` and `elasticd register`:
//! one HTTP/1.1 request per connection with hyper's client, and the WebSocket handshake with
//! tokio-tungstenite, over TCP or a Unix socket.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Where a server listens: `http://HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT` (an IPv6 host in brackets).
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

/// A connection to a server, whichever kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Endpoint {
    /// Opens a connection.
    pub async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Endpoint::Tcp(host) => Box::new(TcpStream::connect(host.as_str()).await?),
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
        })
    }

    /// The `Host` header: `HOST:PORT`, or `localhost` on a Unix socket.
    pub fn authority(&self) -> &str {
        match self {
            Endpoint::Tcp(host) => host,
            Endpoint::Unix(_) => "localhost",
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The connection opened, but the exchange failed (or the answer was too large).
    #[error("{0}")]
    Exchange(String),
}

/// A server's answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The path and query, from `/`.
    pub path: &'a str,
    /// Extra headers (`Host` and `User-Agent` are set here).
    pub headers: Vec<(HeaderName, String)>,
    /// The body; empty for none.
    pub body: Bytes,
    /// The largest body read from the answer.
    pub max_answer: usize,
}

/// Sends `call` on a fresh connection to `endpoint` and reads the whole answer.
pub async fn send(endpoint: &Endpoint, call: Call<'_>) -> Result<Answer, ClientError> {
    let stream = endpoint.connect().await.map_err(ClientError::Connect)?;
    let fail = |e: &dyn std::fmt::Display| ClientError::Exchange(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(header::HOST, endpoint.authority())
        .header(
            header::USER_AGENT,
            concat!("elasticd/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in call.headers {
        let value = HeaderValue::try_from(value)
            .map_err(|_| ClientError::Exchange(format!("the {name} header is not valid")))?;
        request = request.header(name, value);
    }
    let request = request.body(Full::new(call.body)).map_err(|e| fail(&e))?;
    let answer = async {
        let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), call.max_answer)
            .collect()
            .await
            .map_err(|e| fail(&e))?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    // One request per connection: whatever the outcome, the connection is done.
    driver.abort();
    answer
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The server answered the upgrade with something else.
    #[error("{status}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The body, if any.
        body: Bytes,
    },
    /// No connection, or a broken handshake.
    #[error("{0}")]
    Failed(String),
}

/// Opens a WebSocket at `path` (and query) of `endpoint`, sending `headers` with the upgrade.
pub async fn websocket(
    endpoint: &Endpoint,
    path: &str,
    headers: Vec<(HeaderName, String)>,
) -> Result<WebSocketStream<Box<dyn Io>>, WsError> {
    let failed = |e: &dyn std::fmt::Display| WsError::Failed(e.to_string());
    let stream = endpoint.connect().await.map_err(|e| failed(&e))?;
    let mut request = format!("ws://{}{path}", endpoint.authority())
        .into_client_request()
        .map_err(|e| failed(&e))?;
    for (name, value) in headers {
        let value = HeaderValue::try_from(value)
            .map_err(|_| WsError::Failed(format!("the {name} header is not valid")))?;
        request.headers_mut().insert(name, value);
    }
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(WsError::Refused {
            status: response.status(),
            body: response.body().clone().map(Bytes::from).unwrap_or_default(),
        }),
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
    fn endpoints_parse() {
        assert_eq!(
            "http://127.0.0.1:9797/".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:9797".into()))
        );
        assert_eq!(
            "unix:/run/e.sock".parse(),
            Ok(Endpoint::Unix("/run/e.sock".into()))
        );
        assert!("https://x".parse::<Endpoint>().is_err());
        assert!("http://h/p".parse::<Endpoint>().is_err());
        assert_eq!(Endpoint::Unix("/s".into()).authority(), "localhost");
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(encode("A-z.0_~"), "A-z.0_~");
    }

    #[tokio::test]
    async fn a_request_gets_its_answer_over_a_unix_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            // Chunked, so that hyper (not this test) has to put the body together.
            conn.write_all(b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let answer = send(
            &Endpoint::Unix(path),
            Call {
                method: Method::PUT,
                path: "/x?y=1",
                headers: vec![(header::AUTHORIZATION, "Bearer t".into())],
                body: Bytes::from_static(b"{}"),
                max_answer: 100,
            },
        )
        .await
        .unwrap();
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert_eq!(&answer.body[..], b"abcde");
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("put /x?y=1 http/1.1\r\n"), "{head}");
        assert!(head.contains("host: localhost\r\n"), "{head}");
        assert!(head.contains("authorization: bearer t\r\n"), "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
    }
}
