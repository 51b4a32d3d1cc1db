//! `elasticd status`: asks a running daemon for `/api/v1/status` (over TCP or its Unix socket)
//! and prints a table, or the JSON document with `--json`, so that an operator on the host needs
//! no curl. The address comes from `--url`, `--socket`, or the config's `server:` section.
//!
//! Exit status: 0 ready, 1 not ready, 2 the config names no server, 3 the daemon can't be
//! reached or gave no status.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri, header};
use serde::Deserialize;

use super::{ConfigArg, EXIT_BAD_CONFIG, EXIT_OK, EXIT_PASS_FAILED, EXIT_UNREACHABLE};
use crate::http_client::{self, Call, ClientError, Endpoint};
use crate::status::{Outcome, Readiness, Status, Timestamp};
use crate::value::short;

/// The longest `status` waits for the daemon, connecting and answering.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read; the document of 10,000 backends is a few megabytes.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// The path asked for.
const STATUS_PATH: &str = "/api/v1/status";

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Print the daemon's JSON document (`/api/v1/status`, one line) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The daemon's address (`http://127.0.0.1:9797`) instead of the config's `server.listen`.
    #[arg(long, conflicts_with = "socket")]
    pub url: Option<String>,
    /// The daemon's Unix socket instead of the config's `server.socket`.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// Where the daemon answers.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// `host:port` over TCP.
    Tcp { host: String, port: u16 },
    /// A Unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "http://[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "http://{host}:{port}"),
            Target::Unix(path) => write!(f, "socket {}", path.display()),
        }
    }
}

/// Why `status` has nothing to show.
#[derive(Debug, thiserror::Error)]
enum StatusError {
    /// `--url` is not a plain `http://HOST[:PORT]` address.
    #[error("--url `{0}`: {1}")]
    BadUrl(String, &'static str),
    /// The config has no `server:` section.
    #[error(
        "{0} has no `server:` section, so the daemon serves no status; add `server: {{ listen: [127.0.0.1:9797] }}` (and restart it), or pass --url or --socket"
    )]
    NoServer(String),
    /// The server speaks only HTTPS on TCP and there is no socket.
    #[error(
        "the server in {0} uses TLS, which `elasticd status` does not speak; add `server.socket` or pass --socket"
    )]
    Tls(String),
    /// Connecting failed.
    #[error(
        "cannot reach the daemon at {target}: {source} (is `elasticd run` running with this config?)"
    )]
    Connect {
        /// Where.
        target: Target,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed after connecting.
    #[error("the daemon at {target} did not answer: {reason}")]
    Exchange {
        /// Where.
        target: Target,
        /// What went wrong.
        reason: String,
    },
    /// Nothing within [`TIMEOUT`].
    #[error(
        "the daemon at {target} did not answer within {}",
        humantime::format_duration(TIMEOUT)
    )]
    Timeout {
        /// Where.
        target: Target,
    },
    /// An answer other than 200.
    #[error("the daemon at {target} answered {code} to {STATUS_PATH}: {body}")]
    Refused {
        /// Where.
        target: Target,
        /// The status code.
        code: StatusCode,
        /// The start of its body.
        body: String,
    },
    /// The body is not a status document.
    #[error("the answer of {target} is not elasticd's status document: {reason}")]
    NotStatus {
        /// Where.
        target: Target,
        /// The JSON error.
        reason: String,
    },
}

impl StatusError {
    fn exit_code(&self) -> u8 {
        match self {
            StatusError::BadUrl(..) | StatusError::NoServer(_) | StatusError::Tls(_) => {
                EXIT_BAD_CONFIG
            }
            _ => EXIT_UNREACHABLE,
        }
    }
}

/// The document as `/api/v1/status` sends it: the status with its readiness.
#[derive(Deserialize)]
struct Document {
    #[serde(flatten)]
    status: Status,
    ready: Readiness,
}

/// Runs `elasticd status`.
pub async fn status(args: StatusArgs) -> u8 {
    match show(&args).await {
        Ok(code) => code,
        Err(e) => {
            super::print_error(&e);
            e.exit_code()
        }
    }
}

async fn show(args: &StatusArgs) -> Result<u8, StatusError> {
    let target = match target(args) {
        Ok(t) => t,
        Err(Some(e)) => return Err(e),
        // The config could not be loaded; that error is already printed.
        Err(None) => return Ok(EXIT_BAD_CONFIG),
    };
    let body = fetch(&target).await?;
    let doc: Document = serde_json::from_slice(&body).map_err(|e| StatusError::NotStatus {
        target: target.clone(),
        reason: e.to_string(),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        // Exactly what the daemon sent, so that fields of a newer daemon are kept.
        let _ = out.write_all(&body);
        let _ = out.write_all(b"\n");
    } else {
        let _ = out.write_all(table(&doc, &target, SystemTime::now()).as_bytes());
    }
    Ok(if doc.ready.ready {
        EXIT_OK
    } else {
        EXIT_PASS_FAILED
    })
}

/// The target from the options or the config; `Err(None)` when the config failed to load.
fn target(args: &StatusArgs) -> Result<Target, Option<StatusError>> {
    if let Some(url) = &args.url {
        return parse_url(url).map_err(Some);
    }
    if let Some(path) = &args.socket {
        return Ok(Target::Unix(path.clone()));
    }
    let config = super::load_config(&args.config.config).map_err(|_| None)?;
    let name = config.path.display().to_string();
    let server = config.server.ok_or(StatusError::NoServer(name.clone()))?;
    if let Some(socket) = &server.socket {
        return Ok(Target::Unix(socket.path.clone()));
    }
    if server.tls.is_some() {
        return Err(Some(StatusError::Tls(name)));
    }
    let addr = server
        .tcp_addresses()
        .first()
        .copied()
        .ok_or(StatusError::NoServer(name))?;
    Ok(tcp(loopback_for(addr)))
}

/// A daemon listening on every address (`0.0.0.0`, `::`) is asked on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn tcp(addr: SocketAddr) -> Target {
    Target::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

fn parse_url(url: &str) -> Result<Target, StatusError> {
    let bad = |why| StatusError::BadUrl(url.to_string(), why);
    let uri: Uri = url
        .parse()
        .map_err(|_| bad("expected http://HOST[:PORT]"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("HTTPS is not supported; use http:// or --socket")),
        _ => return Err(bad("expected http://HOST[:PORT]")),
    }
    let host = uri.host().ok_or_else(|| bad("it names no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Target::Tcp {
        host: host.to_string(),
        port: uri.port_u16().unwrap_or(80),
    })
}

impl Target {
    fn endpoint(&self) -> Endpoint {
        match self {
            Target::Tcp { host, port } if host.contains(':') => {
                Endpoint::Tcp(format!("[{host}]:{port}"))
            }
            Target::Tcp { host, port } => Endpoint::Tcp(format!("{host}:{port}")),
            Target::Unix(path) => Endpoint::Unix(path.clone()),
        }
    }
}

/// `GET /api/v1/status` on a fresh connection; the body of a 200.
async fn fetch(target: &Target) -> Result<Bytes, StatusError> {
    let call = Call {
        method: Method::GET,
        path: STATUS_PATH,
        headers: vec![(header::ACCEPT, "application/json".into())],
        body: Bytes::new(),
        max_answer: MAX_ANSWER,
    };
    let answer = tokio::time::timeout(TIMEOUT, http_client::send(&target.endpoint(), call))
        .await
        .map_err(|_| StatusError::Timeout {
            target: target.clone(),
        })?
        .map_err(|e| match e {
            ClientError::Connect(source) => StatusError::Connect {
                target: target.clone(),
                source,
            },
            ClientError::Exchange(reason) => StatusError::Exchange {
                target: target.clone(),
                reason,
            },
        })?;
    if answer.status != StatusCode::OK {
        let text = String::from_utf8_lossy(&answer.body);
        return Err(StatusError::Refused {
            target: target.clone(),
            code: answer.status,
            body: text.chars().take(200).collect(),
        });
    }
    Ok(answer.body)
}

/// The table `status` prints.
fn table(doc: &Document, target: &Target, now: SystemTime) -> String {
    let s = &doc.status;
    let mut text = format!(
        "elasticd {} at {target}: {}\nconfig {} (loaded {}), started {}\n",
        cell(&s.version),
        if doc.ready.ready {
            "ready"
        } else {
            "NOT READY"
        },
        cell(&s.config.path),
        ago(Some(s.config.loaded_at), now),
        ago(Some(s.started_at), now),
    );
    for p in &doc.ready.problems {
        text.push_str(&format!(
            "  not ready: {} {}: {}\n",
            cell(&p.kind),
            cell(&p.name),
            cell(&p.message)
        ));
    }
    if let Some(e) = &s.config.last_reload_error {
        text.push_str(&format!(
            "  config reload failed {}: {}\n",
            ago(Some(e.at), now),
            cell(&e.message)
        ));
    }
    let mut rows = vec![row(&[
        "SERVICE",
        "STATE",
        "BACKENDS",
        "LAST SUCCESS",
        "NEXT REFRESH",
        "FAILURES",
        "LAST ERROR",
    ])];
    for svc in &s.services {
        let state = if !svc.has_good_set {
            "no data".to_string()
        } else if svc.guard.holding {
            format!(
                "guard holding: {}",
                svc.guard.reason.as_deref().unwrap_or("-")
            )
        } else if svc.consecutive_failures > 0 {
            "failing".into()
        } else {
            "ok".into()
        };
        rows.push(vec![
            cell(&svc.name),
            cell(&state),
            svc.backends.len().to_string(),
            ago(svc.last_success_at, now),
            until(svc.next_refresh_at, now),
            svc.consecutive_failures.to_string(),
            svc.last_error
                .as_ref()
                .map_or("-".into(), |e| cell(&e.message)),
        ]);
    }
    text.push('\n');
    text.push_str(&columns(&rows));
    if !s.frontends.is_empty() {
        let mut rows = vec![row(&[
            "FRONTEND",
            "RELOAD",
            "LAST CHECK",
            "LAST RELOAD",
            "OWED",
            "FAILURES",
        ])];
        for f in &s.frontends {
            rows.push(vec![
                cell(&f.name),
                cell(&f.reload_method),
                outcome(f.last_check.as_ref(), now),
                outcome(f.last_reload.as_ref(), now),
                (if f.reload_owed { "yes" } else { "no" }).into(),
                f.consecutive_failures.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&columns(&rows));
    }
    if !s.outputs.is_empty() {
        let mut rows = vec![row(&["OUTPUT", "LAST APPLY", "SHA256", "WRITTEN"])];
        for o in &s.outputs {
            let hash = o.sha256.as_deref().unwrap_or("-");
            rows.push(vec![
                cell(&o.path),
                cell(o.last_result.as_deref().unwrap_or("-")),
                cell(hash.get(..12).unwrap_or(hash)),
                ago(o.written_at, now),
            ]);
        }
        text.push('\n');
        text.push_str(&columns(&rows));
    }
    text
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows padded into columns two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            let n = c.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// A value from the daemon (much of it from the cloud) made safe for a terminal: control
/// characters and line breaks escaped.
fn cell(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn outcome(o: Option<&Outcome>, now: SystemTime) -> String {
    match o {
        Some(o) if o.ok => format!("ok {}", ago(Some(o.at), now)),
        Some(o) => format!("FAILED {}: {}", ago(Some(o.at), now), cell(&o.message)),
        None => "-".into(),
    }
}

fn ago(t: Option<Timestamp>, now: SystemTime) -> String {
    t.map_or("never".into(), |t| format!("{} ago", short(t.age(now))))
}

fn until(t: Option<Timestamp>, now: SystemTime) -> String {
    match t.map(|t| t.0.duration_since(now)) {
        None => "-".into(),
        Some(Ok(left)) if left >= Duration::from_secs(1) => format!("in {}", short(left)),
        Some(_) => "due".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_plain_http_host_and_port() {
        assert_eq!(
            parse_url("http://127.0.0.1:9797").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 9797
            }
        );
        assert_eq!(
            parse_url("http://[::1]:80/").unwrap().to_string(),
            "http://[::1]:80"
        );
        assert!(matches!(
            parse_url("https://x"),
            Err(StatusError::BadUrl(..))
        ));
        assert!(parse_url("127.0.0.1:9797").is_err());
    }

    #[test]
    fn every_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9797".parse().unwrap();
        assert_eq!(loopback_for(any).to_string(), "127.0.0.1:9797");
        let any6: SocketAddr = "[::]:9797".parse().unwrap();
        assert_eq!(loopback_for(any6).to_string(), "[::1]:9797");
    }

    #[test]
    fn cells_escape_control_characters() {
        assert_eq!(cell("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
    }
}
