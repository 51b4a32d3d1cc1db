//! A real etcd cluster for the fleet tests: Debian's `etcd-server` (`etcd` on PATH), 1 or 3
//! members on free loopback ports, each with its own data directory in a temp dir. Every member
//! runs as a [`Group`], so that it is killed when the guard is dropped, pass or fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::{Group, free_port, poll_until};

/// A running (or partly stopped) etcd cluster.
pub struct Etcd {
    dir: TempDir,
    names: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    members: Vec<Option<Group>>,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("elasticd-etcd-")
            .tempdir()
            .expect("temp dir");
        let mut etcd = Etcd {
            dir,
            names: (0..n).map(|i| format!("m{i}")).collect(),
            client_ports: (0..n).map(|_| free_port()).collect(),
            peer_ports: (0..n).map(|_| free_port()).collect(),
            members: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            etcd.start_member(i);
        }
        etcd.wait_healthy();
        etcd
    }

    /// The client URLs, as a YAML flow list.
    pub fn endpoints_yaml(&self) -> String {
        let urls: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.names[i])
    }

    /// Starts member `i` (again: its data directory is kept across a stop).
    pub fn start_member(&mut self, i: usize) {
        let cluster: Vec<String> = self
            .names
            .iter()
            .zip(&self.peer_ports)
            .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
            .collect();
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.names[i])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "elasticd-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        let log = self.dir.path().join(format!("{}.log", self.names[i]));
        self.members[i] = Some(Group::spawn(&format!("etcd {}", self.names[i]), cmd, &log));
    }

    /// Kills member `i` (SIGKILL, like a crash).
    pub fn stop_member(&mut self, i: usize) {
        self.members[i] = None;
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            *m = None;
        }
    }

    /// Starts every stopped member and waits until the cluster answers.
    pub fn start_stopped(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy();
    }

    /// Waits until every running member reports itself healthy (it has a leader).
    pub fn wait_healthy(&self) {
        let ok = poll_until(Duration::from_secs(30), || {
            self.members
                .iter()
                .zip(&self.client_ports)
                .filter(|(m, _)| m.is_some())
                .all(|(_, port)| get(*port, "/health").is_ok_and(|(_, b)| b.contains("true")))
        });
        if !ok {
            let logs: Vec<String> = self
                .members
                .iter()
                .flatten()
                .map(|m| format!("{}:\n{}", m.what, m.log()))
                .collect();
            panic!("etcd did not become healthy:\n{}", logs.join("\n"));
        }
    }
}

impl Etcd {
    /// The mod revision of `key` (read through etcd's JSON gateway from a running member), or
    /// `None` when the key doesn't exist.
    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        let (port, _) = self
            .client_ports
            .iter()
            .zip(&self.members)
            .find(|(_, m)| m.is_some())?;
        let body = format!(r#"{{"key": "{}"}}"#, base64(key.as_bytes()));
        let (_, answer) = request(*port, "POST", "/v3/kv/range", &body).ok()?;
        let answer: serde_json::Value = serde_json::from_str(&answer).ok()?;
        answer["kvs"][0]["mod_revision"].as_str()?.parse().ok()
    }
}

impl Etcd {
    /// The port of a running member, for the JSON gateway.
    fn any_port(&self) -> u16 {
        self.client_ports
            .iter()
            .zip(&self.members)
            .find(|(_, m)| m.is_some())
            .map(|(p, _)| *p)
            .expect("a running etcd member")
    }

    /// Grants a lease of `ttl` seconds (as another etcd client would), returning its id.
    pub fn grant(&self, ttl: u64) -> String {
        let (code, answer) = request(
            self.any_port(),
            "POST",
            "/v3/lease/grant",
            &format!(r#"{{"TTL": {ttl}}}"#),
        )
        .expect("lease grant");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect(&answer);
        assert_eq!(code, 200, "{answer}");
        answer["ID"].as_str().expect("a lease id").to_string()
    }

    /// Writes `key` = `value` on `lease` (`None`: no lease), as another writer would.
    pub fn put(&self, key: &str, value: &str, lease: Option<&str>) {
        let lease = lease.map_or(String::new(), |l| format!(r#", "lease": "{l}""#));
        let body = format!(
            r#"{{"key": "{}", "value": "{}"{lease}}}"#,
            base64(key.as_bytes()),
            base64(value.as_bytes())
        );
        let (code, answer) = request(self.any_port(), "POST", "/v3/kv/put", &body).expect("kv put");
        assert_eq!(code, 200, "{answer}");
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use base64::Engine;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            r#"{{"key": "{}", "range_end": "{}", "keys_only": true}}"#,
            base64(prefix.as_bytes()),
            base64(&end)
        );
        let (code, answer) =
            request(self.any_port(), "POST", "/v3/kv/range", &body).expect("kv range");
        assert_eq!(code, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect(&answer);
        let mut keys: Vec<String> = answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| kv["key"].as_str())
            .map(|k| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .expect(k);
                String::from_utf8_lossy(&raw).into_owned()
            })
            .collect();
        keys.sort();
        keys
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One `GET path` on loopback `port`: the status code and the body.
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    request(port, "GET", path, "")
}

/// One request on loopback `port`: the status code and the body.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
}
