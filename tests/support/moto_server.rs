//! `moto_server` (a local AWS API emulator) for tests that need no AWS SDK in Rust: the server
//! on a free loopback port, and the Python beside it (the same virtualenv has boto3) to seed it
//! with `tests/support/aws_seed.py`. `support/moto.rs` adds seeding through the Rust SDK, behind
//! the `aws` feature.
//!
//! Nothing here connects to the 10.x addresses moto hands out: they are only read as data.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Group, free_port};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// Where `moto_server` is: `$ELASTICD_MOTO_SERVER`, else `moto_server` on PATH. A missing
/// emulator fails the test (it is never skipped).
pub fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ELASTICD_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ELASTICD_MOTO_SERVER={} does not exist; run scripts/test.sh, which installs \
             moto[server] into a virtualenv",
            path.display()
        );
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found: set ELASTICD_MOTO_SERVER to its path or put it on PATH. \
                 scripts/test.sh installs it: python3 -m venv DIR && DIR/bin/pip install \
                 'moto[server]'"
            )
        })
}

/// The virtualenv's `bin` directory (moto_server's): its `python` has boto3.
pub fn venv_bin() -> PathBuf {
    moto_server_path()
        .parent()
        .expect("moto_server has a parent directory")
        .to_path_buf()
}

/// AWS settings that keep a client (elasticd, a plugin) off every real AWS source: dummy
/// credentials, config and credentials files that do not exist (in `dir`), and no instance
/// metadata (so nothing is ever sent to 169.254.169.254).
pub fn offline_aws_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        (
            "AWS_CONFIG_FILE",
            dir.join("no-aws-config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials").display().to_string(),
        ),
    ]
}

/// A running `moto_server` in its own process group, killed when dropped.
pub struct MotoServer {
    group: Option<Group>,
    /// The loopback port it listens on.
    pub port: u16,
}

impl MotoServer {
    /// Starts moto on a free port, logging into `log_dir`, and waits until it answers.
    pub fn start(log_dir: &Path) -> MotoServer {
        MotoServer::start_on(free_port(), log_dir)
    }

    /// Starts moto on `port` (a restart after [`MotoServer::kill`] reuses the port).
    pub fn start_on(port: u16, log_dir: &Path) -> MotoServer {
        let mut cmd = Command::new(moto_server_path());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let log = log_dir.join(format!("moto-{port}.log"));
        let mut group = Group::spawn("moto_server", cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = group.exited() {
                panic!(
                    "moto_server exited ({status}) before answering; its log:\n{}",
                    group.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on 127.0.0.1:{port} within 60s; its log:\n{}",
                group.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        MotoServer {
            group: Some(group),
            port,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL to its process group) and reaps it.
    pub fn kill(&mut self) {
        self.group.take();
    }

    /// Runs `tests/support/aws_seed.py COMMAND` against this server with `args` as JSON on
    /// stdin, and returns the JSON it prints.
    pub fn seed(&self, command: &str, args: &Value) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/aws_seed.py");
        let mut child = Command::new(venv_bin().join("python"))
            .arg(script)
            .arg(self.url())
            .arg(command)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run aws_seed.py with the virtualenv's python");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(args.to_string().as_bytes())
                .expect("write seed args");
        }
        let out = child.wait_with_output().expect("wait for aws_seed.py");
        assert!(
            out.status.success(),
            "aws_seed.py {command} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "aws_seed.py {command} printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}
