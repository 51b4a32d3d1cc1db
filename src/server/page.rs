//! The status page for people: one server-rendered HTML document, readable without JavaScript,
//! on a phone and on a wall screen.
//!
//! Every value comes from the published [`Status`], much of it from the cloud (tag values, names,
//! error messages), so the page is built with maud, whose `html!` escapes every interpolated
//! value. The Content-Security-Policy sent with it allows only this server's own stylesheet and
//! script: even a value that slipped through could neither run a script nor load anything.
//! The script (`page.js`) only fetches `/` again every few seconds and swaps the `<main>`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Shared;
use crate::backend::Backend;
use crate::status::{
    Change, FleetStatus, FrontendStatus, HealthStatus, LocatorStatus, Outcome, OutputStatus,
    Readiness, ServiceStatus, Status, Timestamp,
};
use crate::value::short;

/// Where the stylesheet is served.
pub(crate) const CSS_PATH: &str = "/static/status.css";
/// Where the refresh script is served.
pub(crate) const JS_PATH: &str = "/static/status.js";
/// Where the icon is served (without one, browsers log a failed `/favicon.ico`).
pub(crate) const ICON_PATH: &str = "/static/favicon.svg";

/// How often the page fetches itself again, in seconds; the script reads it from the page.
const REFRESH_SECONDS: u32 = 5;

/// Nothing but this server's own stylesheet, script and `fetch` of itself; no frames, no forms.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");
const ICON: &str = include_str!("favicon.svg");

/// `GET /`: the page, with the headers that keep it inert.
pub(crate) async fn page(State(shared): State<Arc<Shared>>) -> Response {
    let status = Arc::clone(&shared.status.borrow());
    let body = render(&status, SystemTime::now());
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/status.css`.
pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /static/status.js`.
pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// `GET /static/favicon.svg`.
pub(crate) async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The page for `status` as of `now`.
pub(crate) fn render(status: &Status, now: SystemTime) -> String {
    let ready = status.readiness(now);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Without JavaScript the browser reloads the whole page instead.
                noscript { meta http-equiv="refresh" content=(REFRESH_SECONDS * 2); }
                title { @if ready.ready { "ready" } @else { "NOT READY" } " · elasticd" }
                link rel="icon" href=(ICON_PATH) type="image/svg+xml";
                link rel="stylesheet" href=(CSS_PATH);
                script src=(JS_PATH) defer {}
            }
            body data-refresh=(REFRESH_SECONDS) {
                p.offline role="alert" { "The daemon does not answer; showing the last page it sent." }
                (main_part(status, &ready, now))
            }
        }
    };
    page.into_string()
}

/// `<main>`: everything the refresh script replaces.
fn main_part(status: &Status, ready: &Readiness, now: SystemTime) -> Markup {
    html! {
        main {
            header.top {
                h1 { "elasticd" }
                @if ready.ready {
                    span.pill.ok #readiness { "READY" }
                } @else {
                    span.pill.bad #readiness { "NOT READY" }
                }
                p.meta {
                    "version " (status.version)
                    " · config " code { (status.config.path) }
                    " loaded " (ago(Some(status.config.loaded_at), now))
                    " · started " (ago(Some(status.started_at), now))
                    " · page as of " (time(Timestamp(now), "now"))
                }
            }
            @if !ready.problems.is_empty() {
                section.problems #problems {
                    h2 { "Not ready" }
                    ul {
                        @for p in &ready.problems {
                            li { strong { (p.kind) " " (p.name) } " · " code { (p.reason) } ": " (p.message) }
                        }
                    }
                }
            }
            @if let Some(e) = &status.config.last_reload_error {
                section.problems {
                    h2 { "Config reload failed" }
                    p { (e.message) " (" (ago(Some(e.at), now)) "; the previous config still runs)" }
                }
            }
            section #services {
                h2 { "Services " span.count { (status.services.len()) } }
                @for s in &status.services { (service(s, now)) }
                @if status.services.is_empty() { p.none { "No services." } }
            }
            @if !status.fleet.is_empty() {
                section #fleet {
                    h2 { "Fleet " span.count { (status.fleet.len()) } }
                    (fleet(&status.fleet))
                }
            }
            section #frontends {
                h2 { "Frontends " span.count { (status.frontends.len()) } }
                (frontends(&status.frontends, now))
            }
            section #outputs {
                h2 { "Outputs " span.count { (status.outputs.len()) } }
                (outputs(&status.outputs, now))
            }
            section #changes {
                h2 { "Recent changes" }
                (changes(status.changes.iter(), now))
            }
        }
    }
}

/// The one word summing up a service, and its colour class.
fn service_state(s: &ServiceStatus) -> (&'static str, &'static str) {
    if !s.has_good_set {
        ("no data", "bad")
    } else if s.guard.holding {
        ("guard holding", "warn")
    } else if s.consecutive_failures > 0 {
        ("failing", "warn")
    } else {
        ("ok", "ok")
    }
}

fn service(s: &ServiceStatus, now: SystemTime) -> Markup {
    let (word, class) = service_state(s);
    html! {
        article.service data-service=(s.name) {
            header {
                h3 { (s.name) }
                span class={ "pill " (class) } { (word) }
                span.count { (crate::value::count(s.backends.len(), "backend")) }
            }
            dl.facts {
                div { dt { "last success" } dd { (ago(s.last_success_at, now)) } }
                div { dt { "changed" } dd { (ago(s.changed_at, now)) } }
                div { dt { "next refresh" } dd { (until(s.next_refresh_at, now)) } }
                div { dt { "refresh every" } dd { (seconds(s.refresh_seconds)) } }
                div { dt { "failures in a row" } dd { (s.consecutive_failures) } }
                div { dt { "guard" } dd {
                    @if s.guard.holding {
                        span.bad-text { "holding: " (s.guard.reason.as_deref().unwrap_or("no reason given")) }
                    } @else { "accepting" }
                    " (" (s.guard.held_total) " held so far)"
                } }
            }
            @if let Some(e) = &s.last_error {
                p.error { "Last error " (ago(Some(e.at), now)) ": " (e.message) }
            }
            @if let Some(h) = &s.health { (health(h)) }
            (locators(&s.locators, now))
            (backends(&s.backends))
        }
    }
}

/// The service's health checks: counts, failing open and why, each failing probe.
fn health(h: &HealthStatus) -> Markup {
    html! {
        div.health {
            p {
                "Health checks (" code { (h.probe) } "): "
                strong { (h.healthy) } " healthy, " strong { (h.unhealthy) } " unhealthy"
                @if h.fail_open {
                    " · " span.bad-text {
                        "failing open: every backend kept"
                        @if let Some(why) = &h.fail_open_reason { " (" (why) ")" }
                    }
                }
            }
            @if !h.failing.is_empty() {
                ul.failing {
                    @for f in &h.failing {
                        li { code.endpoint { (f.backend) } ": " (f.reason) }
                    }
                }
            }
        }
    }
}

fn locators(locators: &[LocatorStatus], now: SystemTime) -> Markup {
    html! {
        table.locators {
            caption { "Locators" }
            thead { tr { th { "locator" } th { "asks" } th { "last success" } th { "found" } th { "took" } th { "failures" } th { "last error" } } }
            tbody {
                @for l in locators {
                    tr class=[(l.consecutive_failures > 0).then_some("failing")] {
                        td data-label="locator" { code { (l.id) } }
                        td data-label="asks" { (l.describe) }
                        td data-label="last success" { (ago(l.last_success_at, now)) }
                        td data-label="found" { (l.last_count) }
                        td.nowrap data-label="took" { (seconds(l.last_duration_seconds)) }
                        td data-label="failures" { (l.consecutive_failures) }
                        td data-label="last error" {
                            @match &l.last_error {
                                Some(e) => { span.bad-text { (e.message) } " (" (ago(Some(e.at), now)) ")" }
                                None => { "-" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn backends(backends: &[Backend]) -> Markup {
    html! {
        table.backends {
            caption { "Backends" }
            thead { tr { th { "endpoint" } th { "weight" } th { "health" } th { "from" } th { "name" } th { "zone" } th { "tags" } } }
            tbody {
                @for b in backends {
                    tr class=[(b.healthy == Some(false)).then_some("failing")] {
                        td data-label="endpoint" { code.endpoint { (b.endpoint()) } }
                        td data-label="weight" { (b.weight) }
                        td data-label="health" {
                            @match b.healthy {
                                Some(true) => { "healthy" }
                                Some(false) => { span.bad-text { "unhealthy" } }
                                None => { "-" }
                            }
                        }
                        td data-label="from" {
                            @if &*b.source == crate::registry::SOURCE {
                                "registered"
                                @if let Some(id) = &b.id { " as " code { (id) } }
                                @if b.meta.get("state").is_some_and(|s| s == "draining") { " (draining)" }
                            } @else if b.source.is_empty() { "-" } @else { (b.source) }
                        }
                        td data-label="name" { (b.name.as_deref().unwrap_or("-")) }
                        td data-label="zone" { (b.zone.as_deref().unwrap_or("-")) }
                        td data-label="tags" {
                            @for (k, v) in &b.tags { span.tag { (k) "=" (v) } " " }
                        }
                    }
                }
                @if backends.is_empty() { tr { td colspan="7" { "none" } } }
            }
        }
    }
}

/// Who leads each shared locator (fleet mode), and whether its data can be trusted.
fn fleet(fleet: &[FleetStatus]) -> Markup {
    html! {
        table.fleet {
            thead { tr { th { "service" } th { "locator" } th { "leader" } th { "this member" } th { "revision" } th { "data" } } }
            tbody {
                @for f in fleet {
                    tr class=[f.degraded.is_some().then_some("failing")] data-key=(f.key) {
                        td data-label="service" { strong { (f.service) } }
                        td data-label="locator" { code { (f.locator) } }
                        td.leader data-label="leader" { (f.leader.as_deref().unwrap_or("none")) }
                        td.role data-label="this member" { (f.role) }
                        td data-label="revision" { @match f.revision { Some(r) => { (r) } None => { "-" } } }
                        td data-label="data" {
                            @match &f.degraded {
                                Some(why) => {
                                    span.bad-text { "degraded: " (why) }
                                    " (unconfirmed for " (seconds(f.data_age_seconds)) ")"
                                }
                                None => { "current" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn outcome(o: Option<&Outcome>, now: SystemTime) -> Markup {
    html! {
        @match o {
            Some(o) => {
                span class=(if o.ok { "ok-text" } else { "bad-text" }) { (o.message) }
                " (" (ago(Some(o.at), now)) ")"
            }
            None => { "-" }
        }
    }
}

fn frontends(frontends: &[FrontendStatus], now: SystemTime) -> Markup {
    html! {
        table {
            thead { tr { th { "frontend" } th { "reload" } th { "last check" } th { "last reload" } th { "owed" } th { "failures" } th { "retry" } } }
            tbody {
                @for f in frontends {
                    tr class=[(f.reload_owed || f.consecutive_failures > 0).then_some("failing")] {
                        td data-label="frontend" { strong { (f.name) } }
                        td data-label="reload" { (f.reload_method) }
                        td data-label="last check" { (outcome(f.last_check.as_ref(), now)) }
                        td data-label="last reload" { (outcome(f.last_reload.as_ref(), now)) }
                        td data-label="owed" { @if f.reload_owed { span.bad-text { "reload owed" } } @else { "no" } }
                        td data-label="failures" { (f.consecutive_failures) }
                        td data-label="retry" { (until(f.retry_at, now)) }
                    }
                }
                @if frontends.is_empty() { tr { td colspan="7" { "none" } } }
            }
        }
    }
}

fn outputs(outputs: &[OutputStatus], now: SystemTime) -> Markup {
    html! {
        table {
            thead { tr { th { "file" } th { "frontend" } th { "services" } th { "sha256" } th { "written" } th { "last apply" } } }
            tbody {
                @for o in outputs {
                    tr {
                        td data-label="file" { code { (o.path) } }
                        td data-label="frontend" { (o.frontend.as_deref().unwrap_or("-")) }
                        td data-label="services" { (o.services.join(", ")) }
                        td data-label="sha256" {
                            @match &o.sha256 {
                                Some(h) => { code title=(h) { (h.get(..12).unwrap_or(h)) } }
                                None => { "-" }
                            }
                        }
                        td data-label="written" { (ago(o.written_at, now)) }
                        td data-label="last apply" { (o.last_result.as_deref().unwrap_or("-")) }
                    }
                }
                @if outputs.is_empty() { tr { td colspan="6" { "none" } } }
            }
        }
    }
}

fn changes<'a>(changes: impl ExactSizeIterator<Item = &'a Change>, now: SystemTime) -> Markup {
    html! {
        @if changes.len() == 0 {
            p.none { "No change applied since the daemon started." }
        } @else {
            ol.changes {
                @for c in changes {
                    li {
                        (ago(Some(c.at), now)) " · " strong { (c.service) } " → " (crate::value::count(c.backends, "backend")) " "
                        @for a in &c.added { span.added { "+" (a) } " " }
                        @if let Some(more) = c.added_count.checked_sub(c.added.len()).filter(|n| *n > 0) {
                            span.added { "and " (more) " more added" } " "
                        }
                        @for r in &c.removed { span.removed { "-" (r) } " " }
                        @if let Some(more) = c.removed_count.checked_sub(c.removed.len()).filter(|n| *n > 0) {
                            span.removed { "and " (more) " more removed" } " "
                        }
                    }
                }
            }
        }
    }
}

/// `<time>` with the exact instant in `datetime` and `title`, showing `text`.
fn time(t: Timestamp, text: &str) -> Markup {
    let exact: chrono::DateTime<chrono::Utc> = t.0.into();
    let exact = exact.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    html! { time datetime=(exact) title=(exact) { (text) } }
}

/// "12s ago", or "never".
fn ago(t: Option<Timestamp>, now: SystemTime) -> Markup {
    match t {
        Some(t) => time(t, &format!("{} ago", short(t.age(now)))),
        None => html! { "never" },
    }
}

/// "in 7s", "due" when it has passed, or "-".
fn until(t: Option<Timestamp>, now: SystemTime) -> Markup {
    match t {
        Some(t) => match t.0.duration_since(now) {
            Ok(left) if left >= Duration::from_secs(1) => time(t, &format!("in {}", short(left))),
            _ => time(t, "due"),
        },
        None => html! { "-" },
    }
}

fn seconds(s: f64) -> String {
    if (0.0..1.0).contains(&s) {
        format!("{:.0} ms", s * 1000.0)
    } else if s.is_finite() && s >= 1.0 {
        short(Duration::from_secs_f64(s.min(1e9)))
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ConfigStatus;

    fn status() -> Status {
        let mut b = Backend::new("10.0.0.1".parse().unwrap(), 80);
        b.tags.insert("evil", "<script>alert(1)</script>");
        b.name = Some("\"><img src=x onerror=alert(1)>".into());
        Status {
            version: "0".into(),
            started_at: Timestamp::now(),
            config: ConfigStatus {
                path: "c.yaml".into(),
                loaded_at: Timestamp::now(),
                last_reload_error: None,
            },
            services: vec![ServiceStatus {
                backends: std::sync::Arc::new(vec![b]),
                ..ServiceStatus::sample("web<b>")
            }],
            frontends: Vec::new(),
            outputs: Vec::new(),
            changes: Default::default(),
            fleet: Vec::new(),
        }
    }

    #[test]
    fn every_value_is_escaped() {
        let page = render(&status(), SystemTime::now());
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("web<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{page}"
        );
    }

    #[test]
    fn the_only_script_is_the_served_one() {
        let page = render(&status(), SystemTime::now());
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(page.contains(&format!("<script src=\"{JS_PATH}\" defer>")));
        assert!(
            !page.contains("style="),
            "inline styles would need the CSP to allow them"
        );
    }

    #[test]
    fn health_and_registrations_are_shown() {
        let mut s = status();
        let svc = &mut s.services[0];
        let mut registered = Backend::new("10.0.0.2".parse().unwrap(), 80);
        registered.source = crate::registry::SOURCE.into();
        registered.id = Some("box<1>".into());
        registered.healthy = Some(false);
        let mut found = svc.backends[0].clone();
        found.healthy = Some(true);
        svc.backends = std::sync::Arc::new(vec![found, registered]);
        svc.health = Some(HealthStatus {
            probe: "http".into(),
            healthy: 1,
            unhealthy: 1,
            fail_open: true,
            fail_open_reason: Some("1 of 2 <unhealthy>".into()),
            failing: vec![crate::status::ProbeFailure {
                backend: "10.0.0.2:80".into(),
                reason: "answered 503".into(),
            }],
        });
        let page = render(&s, SystemTime::now());
        assert!(
            page.contains("<code>http</code>): <strong>1</strong> healthy"),
            "{page}"
        );
        assert!(
            page.contains("failing open: every backend kept (1 of 2 &lt;unhealthy&gt;)"),
            "{page}"
        );
        assert!(page.contains("10.0.0.2:80</code>: answered 503"), "{page}");
        assert!(
            page.contains("registered as <code>box&lt;1&gt;</code>"),
            "{page}"
        );
        assert!(
            page.contains("<span class=\"bad-text\">unhealthy</span>"),
            "{page}"
        );
        assert!(page.contains(">healthy</td>"), "{page}");
    }

    #[test]
    fn the_leader_of_each_shared_locator_is_shown() {
        let mut s = status();
        let fleet = |leader: Option<&str>, role: &str, degraded: Option<&str>| FleetStatus {
            service: "web".into(),
            locator: "0:ec2".into(),
            key: "/elasticd/fleets/edge/prod/abc".into(),
            role: role.into(),
            leader: leader.map(Into::into),
            revision: Some(7),
            degraded: degraded.map(Into::into),
            data_age_seconds: 12.0,
        };
        s.fleet = vec![
            fleet(Some("edge-<7>"), "follower", None),
            fleet(None, "electing", Some("etcd did not answer <in time>")),
        ];
        let page = render(&s, SystemTime::now());
        assert!(page.contains("<section id=\"fleet\">"), "{page}");
        assert!(
            page.contains("<td class=\"leader\" data-label=\"leader\">edge-&lt;7&gt;</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td class=\"role\" data-label=\"this member\">follower</td>"),
            "{page}"
        );
        assert!(page.contains(">none</td>"), "{page}");
        assert!(
            page.contains(
                "degraded: etcd did not answer &lt;in time&gt;</span> (unconfirmed for 12s)"
            ),
            "{page}"
        );
        s.fleet.clear();
        let page = render(&s, SystemTime::now());
        assert!(
            !page.contains("id=\"fleet\""),
            "no fleet section without fleet mode"
        );
    }

    #[test]
    fn a_large_change_names_its_first_endpoints_and_counts_the_rest() {
        let mut s = status();
        s.changes.push_front(crate::status::Change {
            at: Timestamp::now(),
            service: "web".into(),
            added: vec!["10.0.0.1:80".into(), "10.0.0.2:80".into()],
            removed: vec!["10.0.9.9:80".into()],
            added_count: 9_980,
            removed_count: 1,
            backends: 9_980,
        });
        let page = render(&s, SystemTime::now());
        assert!(
            page.contains("+10.0.0.2:80</span> <span class=\"added\">and 9978 more added</span>"),
            "{page}"
        );
        assert!(page.contains("-10.0.9.9:80</span>"), "{page}");
        assert!(!page.contains("more removed"), "{page}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(185)), "3m 5s");
        assert_eq!(short(Duration::from_secs(7800)), "2h 10m");
        assert_eq!(short(Duration::from_secs(90000)), "1d 1h");
        assert_eq!(seconds(0.25), "250 ms");
        assert_eq!(seconds(f64::NAN), "-");
    }
}
