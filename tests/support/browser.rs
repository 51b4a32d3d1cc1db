//! A real browser for the tests: Debian's `chromium`, headless, driven through WebDriver by
//! `chromedriver` (package `chromium-driver`) with the `fantoccini` client.
//!
//! [`Browser::start`] starts `chromedriver` on a free loopback port as a [`Group`] (killed with
//! its Chromium when the guard drops, pass or fail) and opens one session. Chromium is kept on
//! loopback: every host name resolves to nothing but `127.0.0.1`/`localhost`, any other request
//! goes to a proxy that is not there, and its background services (updates, sync, metrics) are
//! off.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::{Group, free_port, poll_until, program};

/// A browser session and the chromedriver behind it.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Group,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`x`height` window; its profile
    /// and logs go under `dir`.
    pub async fn start(dir: &Path, width: u32, height: u32) -> Browser {
        Browser::launch(dir, width, height, None).await
    }

    /// Like [`Browser::start`], but emulating a phone whose screen is `width`x`height` CSS
    /// pixels at 3 device pixels each (a window can't be made narrower than 500 pixels).
    pub async fn phone(dir: &Path, width: u32, height: u32) -> Browser {
        let device = json!({
            "deviceMetrics": { "width": width, "height": height, "pixelRatio": 3.0, "mobile": true, "touch": true },
        });
        Browser::launch(dir, 800, 1000, Some(device)).await
    }

    async fn launch(dir: &Path, width: u32, height: u32, mobile: Option<Value>) -> Browser {
        let chromium = program("chromium", "chromium");
        let chromedriver = program("chromedriver", "chromium-driver");
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY");
        let driver = Group::spawn("chromedriver", cmd, &dir.join("chromedriver.log"));
        let up = poll_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not listen:\n{}", driver.log());
        let profile = dir.join("chromium-profile");
        let args = vec![
            "--headless=new".to_string(),
            // Root in a container has no user namespaces for Chromium's sandbox.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--metrics-recording-only".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1".into(),
            "--proxy-server=http://127.0.0.1:9".into(),
            "--proxy-bypass-list=127.0.0.1;localhost".into(),
        ];
        let mut options = json!({ "binary": chromium, "args": args });
        if let Some(device) = mobile {
            options["mobileEmulation"] = device;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("start a Chromium session: {e}\n{}", driver.log()));
        Browser { client, driver }
    }

    /// The browser console's messages since the last call (`level`, `message`), through
    /// chromedriver's log endpoint: JavaScript errors, CSP violations, failed loads.
    pub async fn console(&self) -> Vec<(String, String)> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("read the browser log: {e}"));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Ends the session, then chromedriver.
    pub async fn close(self) {
        let _ = self.client.close().await;
        drop(self.driver);
    }
}

/// `POST /session/{id}/se/log {"type": "browser"}`, chromedriver's console log.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}
