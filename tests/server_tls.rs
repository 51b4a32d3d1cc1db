//! End-to-end tests of the operations server's TLS (`server.tls`) with certificates made by the
//! test, SIGHUP picking up a new certificate and token, and `check` and the start refusing bad
//! token and TLS files. Every daemon is killed when its test ends.

mod support;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::server::{RUN, TOKEN, agent, config};
use support::{Test, free_port, targets_json};

// ---------------------------------------------------------------------------------------------
// TLS

fn self_signed() -> (String, String, ureq::Agent) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = cert.pem();
    let root = ureq::tls::Certificate::from_pem(pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into();
    (pem, signing_key.serialize_pem(), agent)
}

fn https(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<u16, ureq::Error> {
    let response = match token {
        None => agent.get(url).call()?,
        Some(token) => agent
            .post(url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_empty()?,
    };
    Ok(response.status().as_u16())
}

#[test]
fn tls_serves_https_and_sighup_loads_a_new_certificate_and_token() {
    let (cert, key, old_client) = self_signed();
    let port = free_port();
    let server = "  token_file: token\n  tls: { cert_file: cert.pem, key_file: key.pem }";
    let t = Test::new()
        .config(&config(port, "1s", server))
        .file("cert.pem", &cert)
        .file("key.pem", &key)
        .file("token", "first-token\n")
        .file("backends.json", &targets_json(&["127.0.0.1"]));
    let mut daemon = t.elasticd(RUN).daemon();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    daemon.wait_for("HTTPS to answer", Duration::from_secs(10), || {
        https(&old_client, &url("/healthz"), None).is_ok_and(|c| c == 200)
    });
    assert!(
        daemon.log().contains(&format!("https://127.0.0.1:{port}")),
        "{}",
        daemon.log()
    );
    // Plain HTTP on the TLS port gets no answer: the handshake fails.
    assert!(
        agent()
            .get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_err()
    );
    assert_eq!(
        https(&old_client, &url("/api/v1/refresh"), Some("first-token")).unwrap(),
        202
    );

    // A broken certificate on SIGHUP: the old one stays, and the log names the file.
    t.write("cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("the TLS error", Duration::from_secs(10), |log| {
        log.contains("cert.pem") && log.contains("keeps its old settings")
    });
    assert_eq!(https(&old_client, &url("/healthz"), None).unwrap(), 200);

    let (cert, key, new_client) = self_signed();
    t.write("cert.pem", &cert);
    t.write("key.pem", &key);
    t.write("token", "second-token\n");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("the new certificate", Duration::from_secs(10), || {
        https(&new_client, &url("/healthz"), None).is_ok_and(|c| c == 200)
    });
    assert!(
        https(&old_client, &url("/healthz"), None).is_err(),
        "the old certificate is still served"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        https(&new_client, &url("/api/v1/refresh"), Some("first-token")).unwrap(),
        401
    );
    assert_eq!(
        https(&new_client, &url("/api/v1/refresh"), Some("second-token")).unwrap(),
        202
    );
    daemon.assert_running("after two SIGHUPs");
}

#[test]
fn bad_server_files_stop_the_start_and_fail_check() {
    let port = free_port();
    let server = "  token_file: token\n  tls: { cert_file: cert.pem, key_file: key.pem }";
    let t = Test::new()
        .config(&config(port, "1s", server))
        .file("token", "\n")
        .file("backends.json", &targets_json(&["127.0.0.1"]));
    let out = t
        .elasticd(["check", "--config", "config.yaml"])
        .run_within(Duration::from_secs(20));
    assert_eq!(out.code, 2, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr).replace(t.path_str(), "[dir]");
    assert!(text.contains("token_file [dir]/token: is empty"), "{text}");
    assert!(
        text.contains("tls: [dir]/cert.pem: cannot be read"),
        "{text}"
    );

    let (cert, key, _) = self_signed();
    t.write("token", TOKEN);
    t.write("cert.pem", &cert);
    t.write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
    let out = t.elasticd(RUN).run_within(Duration::from_secs(20));
    assert_ne!(out.code, 0, "{out}");
    let text = out.stderr.replace(t.path_str(), "[dir]");
    assert!(text.contains("[dir]/key.pem"), "{text}");
    t.write("key.pem", &key);
    t.elasticd(["check", "--config", "config.yaml"])
        .run_within(Duration::from_secs(20))
        .success();
}

/// The `server:` section of `config.yaml.example`, commented out there, is a valid section: its
/// only problems are the files it names, which this machine does not have.
#[test]
fn the_example_server_section_is_valid() {
    let example =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml.example")).unwrap();
    let start = example.find("\n# server:\n").expect("a server section") + 1;
    let section: Vec<&str> = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or("").trim_end())
        .collect();
    let t = Test::new().config(&format!(
        "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\n{}\n",
        section.join("\n")
    ));
    let out = t
        .elasticd(["check", "--config", "config.yaml"])
        .run_within(Duration::from_secs(20));
    assert_eq!(out.code, 2, "{out}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 2, "{out}");
    assert!(
        errors[0].contains("token_file /etc/elasticd/api-token: No such file"),
        "{out}"
    );
    assert!(
        errors[1].contains("tls: /etc/elasticd/tls/cert.pem: cannot be read"),
        "{out}"
    );
}
