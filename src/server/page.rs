//! The status page for people: one server-rendered HTML document.

use std::time::SystemTime;

use crate::status::Status;

/// The page for `status` as of `now`.
pub(crate) fn render(status: &Status, now: SystemTime) -> String {
    let ready = status.readiness(now);
    let mut out = String::from("<!doctype html><title>elasticd</title><ul>");
    for s in &status.services {
        out.push_str(&format!(
            "<li>{} ({} backends)</li>",
            escape(&s.name),
            s.backends.len()
        ));
    }
    out.push_str(&format!("</ul><p>ready: {}</p>", ready.ready));
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
