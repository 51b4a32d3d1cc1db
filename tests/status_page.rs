//! The status page (`GET /`) in a real browser: a headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven through WebDriver against a real `elasticd run` with a `file`
//! locator the test rewrites. The page must load without console errors (JavaScript errors and
//! CSP violations land there), list services and backends with their health checks, follow a
//! change on its own, show hostile tag values as text, and fit a phone's screen.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};
use support::browser::Browser;
use support::{Group, Test, free_port, http_get, poll_until};

const SCRIPT_TAG: &str = "<script>alert(1)</script>";
const IMG_TAG: &str = "\"><img src=x onerror=alert(1)>";

/// `web` from a file with hostile labels; `api` from a file that is missing at first.
fn start(t: &Test) -> (Group, u16) {
    let port = free_port();
    t.write(
        "config.yaml",
        &format!(
            r#"daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0 }}
server: {{ listen: ["127.0.0.1:{port}"] }}
services:
  web:
    refresh: 1s
    port: 8080
    locators: [file: {{ path: web.json }}]
    # Nothing listens on 8080: every probe fails, so the service fails open.
    health: {{ tcp: {{}}, interval: 200ms, timeout: 100ms }}
  api:
    refresh: 1s
    port: 9000
    locators: [file: {{ path: api.json }}]
frontends:
  fe:
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: web.conf, frontend: fe, vars: {{ service: web }} }}
  - {{ template: "builtin:haproxy", path: api.cfg, vars: {{ service: api }} }}
"#
        ),
    );
    write_web(t, &["127.0.0.1", "127.0.0.2"]);
    let daemon = t
        .elasticd(["run", "--config", "config.yaml", "--log", "debug"])
        .daemon();
    daemon.wait_for("the page to list web", Duration::from_secs(15), || {
        http_get(port).is_ok_and(|page| page.contains("127.0.0.2:8080"))
    });
    (daemon, port)
}

fn write_web(t: &Test, targets: &[&str]) {
    let doc = json!([{
        "targets": targets,
        "labels": { "note": SCRIPT_TAG, "html": IMG_TAG, "team": "payments" },
    }]);
    t.write("web.json", &doc.to_string());
}

/// Evaluates `script` (a function body) in the page.
async fn eval(browser: &Browser, script: &str) -> Value {
    browser
        .client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
}

async fn text(browser: &Browser) -> String {
    eval(browser, "return document.body.innerText;")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for `want` in the page's text, without reloading the page.
async fn wait_for_text(browser: &Browser, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let page = text(browser).await;
        if page.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {want:?}; it shows:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every console message that is an error or a warning.
async fn console_problems(browser: &Browser) -> Vec<(String, String)> {
    let all = browser.console().await;
    all.into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect()
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// The response head of `GET path`, lower-cased header names.
fn headers(port: u16, path: &str) -> Vec<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let mut buf = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut buf);
    response.parse(&bytes).unwrap();
    assert_eq!(response.code, Some(200), "GET {path}");
    response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_page_lists_services_follows_changes_and_shows_hostile_tags_as_text() {
    let t = Test::new();
    let (mut daemon, port) = start(&t);
    let browser = Browser::start(t.path(), 1280, 1900).await;
    let url = format!("http://127.0.0.1:{port}/");
    browser.client.goto(&url).await.unwrap();

    // `api` has no data yet: the page says so at the top.
    assert_eq!(
        browser.client.title().await.unwrap(),
        "NOT READY · elasticd"
    );
    let problems = browser
        .client
        .find(Locator::Css("#problems"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(problems.contains("service api"), "{problems}");
    assert!(problems.contains("no_data"), "{problems}");

    let web = browser
        .client
        .find(Locator::Css("article[data-service='web']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in ["127.0.0.1:8080", "127.0.0.2:8080", "2 backends", "0:file"] {
        assert!(web.contains(want), "no {want:?} in web:\n{web}");
    }
    // The health checks, readable: the probe, the counts, failing open and why.
    wait_for_text(&browser, "0 healthy, 2 unhealthy", Duration::from_secs(10)).await;
    let web = browser
        .client
        .find(Locator::Css("article[data-service='web'] .health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(web.contains("Health checks (tcp)"), "{web}");
    assert!(
        web.contains("failing open: every backend kept (2 of 2"),
        "{web}"
    );
    assert!(web.contains("127.0.0.2:8080: "), "{web}");

    // Hostile tag values are text: visible as written, nothing injected, nothing run.
    let mut tags = Vec::new();
    for tag in browser.client.find_all(Locator::Css(".tag")).await.unwrap() {
        tags.push(tag.text().await.unwrap());
    }
    assert!(tags.contains(&format!("note={SCRIPT_TAG}")), "{tags:?}");
    assert!(tags.contains(&format!("html={IMG_TAG}")), "{tags:?}");
    assert_eq!(eval(&browser, "return document.images.length;").await, 0);
    assert_eq!(
        eval(
            &browser,
            "return [...document.scripts].map(s => s.getAttribute('src'));"
        )
        .await,
        json!(["/static/status.js"])
    );
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "an alert is open"
    );

    // A change reaches the open page by itself (the same document: the marker survives).
    eval(&browser, "window.samePage = 42; return null;").await;
    write_web(&t, &["127.0.0.1", "127.0.0.2", "127.0.0.9"]);
    wait_for_text(&browser, "127.0.0.9:8080", Duration::from_secs(20)).await;
    let changes = browser
        .client
        .find(Locator::Css("#changes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(changes.contains("+127.0.0.9:8080"), "{changes}");
    assert_eq!(eval(&browser, "return window.samePage;").await, 42);

    let shot = browser.client.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(artifact("status-page.png"), &shot).unwrap();
    // `ELASTICD_DOCS_SCREENSHOT=1` refreshes the picture in the docs.
    if std::env::var_os("ELASTICD_DOCS_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::write(docs, &shot).unwrap();
    }

    // `api` gets its backends: the page turns ready, still without a reload.
    t.write("api.json", &support::targets_json(&["127.0.0.5"]));
    wait_for_text(&browser, "127.0.0.5:9000", Duration::from_secs(20)).await;
    let ready = poll_until(Duration::from_secs(10), || {
        http_get(port).is_ok_and(|p| p.contains(">READY<"))
    });
    assert!(ready, "the daemon never became ready:\n{}", daemon.log());
    wait_for_text(&browser, "READY", Duration::from_secs(10)).await;
    assert_eq!(browser.client.title().await.unwrap(), "ready · elasticd");
    assert_eq!(eval(&browser, "return window.samePage;").await, 42);
    assert_eq!(eval(&browser, "return document.images.length;").await, 0);

    let problems = console_problems(&browser).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    browser.close().await;
    daemon.assert_running("after the browser test");
}

#[tokio::test]
async fn the_page_fits_a_phone_and_forbids_inline_code() {
    let t = Test::new();
    let (_daemon, port) = start(&t);
    let browser = Browser::phone(t.path(), 390, 844).await;
    browser
        .client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let width = eval(&browser, "return window.innerWidth;").await;
    assert!(
        width.as_u64().is_some_and(|w| w <= 400),
        "the window is not phone-sized: {width}"
    );
    let scroll = eval(
        &browser,
        "return document.documentElement.scrollWidth - window.innerWidth;",
    )
    .await;
    assert!(
        scroll.as_i64().is_some_and(|s| s <= 0),
        "the page scrolls sideways by {scroll} px"
    );
    // Tables become cards: the column heads give way to per-cell labels.
    let head = eval(
        &browser,
        "return getComputedStyle(document.querySelector('table.backends thead')).display;",
    )
    .await;
    assert_eq!(head, "none");
    std::fs::write(
        artifact("status-page-phone.png"),
        browser.client.screenshot().await.unwrap(),
    )
    .unwrap();
    let problems = console_problems(&browser).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    // The console check can fail: a page that loads something missing is caught.
    browser
        .client
        .goto(&format!("http://127.0.0.1:{port}/no-such-page"))
        .await
        .unwrap();
    let problems = console_problems(&browser).await;
    assert!(
        problems.iter().any(|(_, m)| m.contains("404")),
        "a failed load did not reach the console log: {problems:#?}"
    );
    browser.close().await;

    let page = headers(port, "/");
    let csp = page
        .iter()
        .find(|(name, _)| name == "content-security-policy")
        .map(|(_, v)| v.clone())
        .expect("a Content-Security-Policy header");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(page.contains(&("x-content-type-options".into(), "nosniff".into())));
    let css = headers(port, "/static/status.css");
    assert!(css.contains(&("content-type".into(), "text/css; charset=utf-8".into())));
}
