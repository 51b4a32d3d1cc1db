//! The operations server's tests (`tests/server.rs`, `tests/server_tls.rs`, and any test that
//! needs a daemon with its server): a daemon with a `file`-located service and a server on a
//! free loopback port, real HTTP clients (ureq over TCP, hyper's client over a Unix socket), and
//! the schemas of `docs/openapi.yaml` to check answers against.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::{Group, Test, free_port};

pub const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];
pub const TOKEN: &str = "s3cret-token";

/// A daemon with one `file`-located service `web`, a frontend whose reload counts itself, and
/// `server` (the lines given) on a free loopback port.
pub fn config(port: u16, refresh: &str, server: &str) -> String {
    format!(
        r#"daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0, backoff_max: 1s }}
services:
  web:
    refresh: {refresh}
    port: 8080
    locators: [file: {{ path: backends.json }}]
frontends:
  fe:
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
server:
  listen: ["127.0.0.1:{port}"]
{server}
"#
    )
}

/// A started daemon with its server's base URL.
pub struct Running {
    pub t: Test,
    pub daemon: Group,
    pub base: String,
}

pub fn start(refresh: &str, server: &str, setup: impl FnOnce(&Test)) -> Running {
    let port = free_port();
    let t = Test::new().config(&config(port, refresh, server));
    setup(&t);
    let daemon = t.elasticd(RUN).daemon();
    let base = format!("http://127.0.0.1:{port}");
    let running = Running { t, daemon, base };
    running.wait("the server to answer", || {
        running.get("/healthz").is_ok_and(|(code, _)| code == 200)
    });
    running
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        call(agent().get(&self.url(path)))
    }

    pub fn json(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (code, value)
    }

    pub fn refresh(&self, query: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = agent().post(&self.url(&format!("/api/v1/refresh{query}")));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.send_empty().expect("POST /api/v1/refresh");
        json_of(response)
    }

    pub fn wait(&self, what: &str, cond: impl FnMut() -> bool) {
        self.daemon.wait_for(what, Duration::from_secs(20), cond);
    }

    pub fn ready(&self) -> bool {
        self.json("/readyz").0 == 200
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn call(
    request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
) -> Result<(u16, String), ureq::Error> {
    let mut response = request.call()?;
    let code = response.status().as_u16();
    Ok((code, response.body_mut().read_to_string()?))
}

pub fn json_of(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("read body");
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// Validates `value` against `#/components/schemas/{name}` of `docs/openapi.yaml`.
pub fn assert_schema(name: &str, value: &Value) {
    let errors = schema_errors(name, value);
    assert!(
        errors.is_empty(),
        "{name} does not match docs/openapi.yaml:\n{}\n{value:#}",
        errors.join("\n")
    );
}

/// What is wrong with `value` as a `name` of `docs/openapi.yaml`.
pub fn schema_errors(name: &str, value: &Value) -> Vec<String> {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = fs::read_to_string(path).expect("read docs/openapi.yaml");
        serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML")
    });
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "docs/openapi.yaml has no schema {name}"
    );
    // The whole document is the root, so that its `#/components/...` references resolve; the
    // OpenAPI keys around them are not schema keywords and are ignored.
    let mut schema = doc.clone();
    schema["$ref"] = Value::String(format!("#/components/schemas/{name}"));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// GET over a Unix socket with hyper's client: (status, body).
pub fn unix_request(path: &std::path::Path, method: &str, uri: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    })
}
