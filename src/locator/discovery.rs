//! The backend list format shared by `file` and `exec`: Prometheus file_sd groups
//! (`{"targets": [...], "labels": {...}}`) or richer backend objects (`{"address": ...}`).

use serde::Deserialize;
use smallvec::SmallVec;

use super::{BackendMeta, LocateContext, LocateError, backend_from_target};
use crate::backend::{self, Backend, CompactString, Labels};
use crate::yaml;

/// How a document is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    /// JSON (fast path for large lists).
    Json,
    /// YAML.
    Yaml,
}

/// One list entry: a file_sd group, or a single backend object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
    #[serde(default, borrow)]
    // Most groups hold one target: it is stored in the entry, not in an allocation of its own.
    targets: Option<SmallVec<[Target<'a>; 1]>>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    id: Option<CompactString>,
    #[serde(default)]
    name: Option<CompactString>,
    #[serde(default)]
    zone: Option<CompactString>,
    #[serde(default)]
    tags: Labels,
    #[serde(default)]
    meta: Labels,
}

/// A target string, borrowed from the document when it has no escapes (they are only parsed).
#[derive(Debug)]
struct Target<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Target<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Target<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Target<'a>, E> {
                Ok(Target(s.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Target<'a>, E> {
                Ok(Target(s.to_string().into()))
            }
            fn visit_string<E>(self, s: String) -> Result<Target<'a>, E> {
                Ok(Target(s.into()))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// Parses a backend list document into backends, sorted by endpoint and without repeats (the
/// first one wins), as the engine merges them: sorted here, where the list is still owned, a
/// service with this one locator takes the answer as it is instead of copying every backend to
/// sort them.
pub fn parse_document(
    bytes: &[u8],
    format: DocumentFormat,
    locator: &str,
    ctx: &LocateContext,
) -> Result<Vec<Backend>, LocateError> {
    let parse_err = |message: String| LocateError::Parse {
        locator: locator.to_string(),
        message,
    };
    let mut list = List {
        locator,
        ctx,
        backends: Vec::new(),
        first_error: None,
        entries: 0,
    };
    match format {
        // Each entry becomes backends as soon as it is read: a large document is never held as
        // a list of entries beside the backends made from it.
        DocumentFormat::Json => {
            // Checked once as a whole, the document's strings need no UTF-8 check each; a
            // document that is not UTF-8 is read as bytes, whose error names the place.
            let read = match std::str::from_utf8(bytes) {
                Ok(text) => read_json(&mut serde_json::Deserializer::from_str(text), &mut list),
                Err(_) => read_json(&mut serde_json::Deserializer::from_slice(bytes), &mut list),
            };
            read.map_err(|e| {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    parse_err("empty output (expected a JSON list, `[]` for no backends)".into())
                } else {
                    parse_err(e.to_string())
                }
            })?;
        }
        DocumentFormat::Yaml => {
            let text = std::str::from_utf8(bytes).map_err(|e| parse_err(e.to_string()))?;
            let node = yaml::parse(text)
                .map_err(|e| parse_err(format!("line {}: {}", e.loc, e.message)))?;
            let entries: Vec<Entry> = node.deserialize().map_err(|e| parse_err(e.to_string()))?;
            for entry in entries {
                list.add(entry);
            }
        }
    }
    // A syntax error anywhere in the document is reported before a bad entry, as when the
    // whole document was read first.
    match list.first_error {
        Some(e) => Err(e),
        None => {
            let mut backends = list.backends;
            backend::normalize(&mut backends);
            Ok(backends)
        }
    }
}

/// Reads a whole JSON document into `list`.
fn read_json<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    list: &mut List<'_>,
) -> serde_json::Result<()> {
    serde::de::DeserializeSeed::deserialize(&mut *list, &mut *de)?;
    de.end()
}

/// The backends made so far from a document's entries, and the first entry that failed.
struct List<'a> {
    locator: &'a str,
    ctx: &'a LocateContext,
    backends: Vec<Backend>,
    first_error: Option<LocateError>,
    entries: usize,
}

impl List<'_> {
    /// Adds the backends of entry number `self.entries`; after a failure the rest are only
    /// counted.
    fn add(&mut self, entry: Entry<'_>) {
        let i = self.entries;
        self.entries += 1;
        if self.first_error.is_none()
            && let Err(e) = add_entry(i, entry, self.locator, self.ctx, &mut self.backends)
        {
            self.first_error = Some(e);
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut List<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut List<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.backends.reserve(hint);
        }
        while let Some(entry) = seq.next_element::<Entry<'de>>()? {
            self.add(entry);
        }
        Ok(())
    }
}

/// Turns entry number `i` into backends, appended to `backends`.
fn add_entry(
    i: usize,
    entry: Entry<'_>,
    locator: &str,
    ctx: &LocateContext,
    backends: &mut Vec<Backend>,
) -> Result<(), LocateError> {
    let parse_err = |message: String| LocateError::Parse {
        locator: locator.to_string(),
        message,
    };
    match (entry.targets, entry.address) {
        (Some(targets), None) => {
            if entry.port.is_some()
                || entry.weight.is_some()
                || !entry.tags.is_empty()
                || !entry.meta.is_empty()
            {
                return Err(parse_err(format!(
                    "entry {i}: a `targets` group takes only `labels`; use one object per backend for port, weight, tags or meta"
                )));
            }
            backends.reserve(targets.len());
            for target in targets {
                // Every target of the group shares the group's one label set.
                let tags = entry.labels.clone();
                let meta = BackendMeta {
                    weight: None,
                    id: entry.id.clone(),
                    name: entry.name.clone(),
                    zone: entry.zone.clone(),
                    tags,
                    meta: Labels::new(),
                };
                let backend = backend_from_target(&target.0, None, meta, locator, ctx)?;
                backends.push(validated(backend, &target.0, locator)?);
            }
        }
        (None, Some(address)) => {
            let mut tags = entry.tags;
            tags.merge(entry.labels);
            let meta = BackendMeta {
                weight: entry.weight,
                id: entry.id,
                name: entry.name,
                zone: entry.zone,
                tags,
                meta: entry.meta,
            };
            let backend = backend_from_target(&address, entry.port, meta, locator, ctx)?;
            backends.push(validated(backend, &address, locator)?);
        }
        _ => {
            return Err(parse_err(format!(
                "entry {i}: needs either `targets` (a file_sd group) or `address` (one backend)"
            )));
        }
    }
    Ok(())
}

// `"port": 0` in an object gets past the target parser (which only sees the address), so every
// backend built here is checked as a whole before it can reach a template.
fn validated(backend: Backend, value: &str, locator: &str) -> Result<Backend, LocateError> {
    match backend.validate() {
        Ok(()) => Ok(backend),
        Err(e) => Err(LocateError::BadBackend {
            locator: locator.to_string(),
            value: value.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(port: Option<u16>) -> LocateContext {
        LocateContext {
            service: "web".into(),
            environment: None,
            default_port: port,
            base_dir: ".".into(),
        }
    }

    #[test]
    fn file_sd_groups_and_objects() {
        let doc = br#"[{"targets": ["10.0.0.1:80", "10.0.0.2"], "labels": {"zone": "a"}},
                      {"address": "::1", "port": 81, "weight": 3, "name": "six"}]"#;
        let b = parse_document(doc, DocumentFormat::Json, "file x", &ctx(Some(8080))).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].endpoint(), "10.0.0.2:8080");
        assert_eq!(b[0].tags.get("zone"), Some("a"));
        assert_eq!(b[2].endpoint(), "[::1]:81");
        assert_eq!(b[2].weight, 3);
    }

    #[test]
    fn the_answer_is_sorted_by_endpoint_and_the_first_of_a_repeat_wins() {
        let doc = br#"[{"targets": ["10.0.0.9:80", "10.0.0.1:80"], "labels": {"n": "first"}},
                      {"address": "10.0.0.9", "port": 80, "weight": 5},
                      {"address": "10.0.0.1", "port": 79}]"#;
        for format in [DocumentFormat::Json, DocumentFormat::Yaml] {
            let b = parse_document(doc, format, "file x", &ctx(None)).unwrap();
            let endpoints: Vec<String> = b.iter().map(Backend::endpoint).collect();
            assert_eq!(endpoints, ["10.0.0.1:79", "10.0.0.1:80", "10.0.0.9:80"]);
            assert_eq!(b[2].weight, 1, "the group's 10.0.0.9:80 came first");
            assert_eq!(b[2].tags.get("n"), Some("first"));
        }
    }

    #[test]
    fn backend_objects_carry_meta_apart_from_tags() {
        let doc = br#"[{"address": "127.0.0.2", "port": 80, "tags": {"team": "a"},
                        "meta": {"health": "healthy", "target_group": "tg-1"}}]"#;
        let b = parse_document(doc, DocumentFormat::Json, "file x", &ctx(None)).unwrap();
        assert_eq!(b[0].tags.len(), 1);
        assert_eq!(b[0].meta.get("health"), Some("healthy"));
        let group = br#"[{"targets": ["127.0.0.2:80"], "meta": {"x": "y"}}]"#;
        let err = parse_document(group, DocumentFormat::Json, "file x", &ctx(None)).unwrap_err();
        assert!(err.to_string().contains("meta"), "{err}");
    }

    #[test]
    fn yaml_documents_work_too() {
        let doc = b"- targets: ['127.0.0.1:9000']\n  labels: {rack: 7}\n";
        let b = parse_document(doc, DocumentFormat::Yaml, "file x", &ctx(None)).unwrap();
        assert_eq!(b[0].tags.get("rack"), Some("7"));
    }

    #[test]
    fn bad_values_name_the_locator_and_value() {
        let doc = br#"[{"targets": ["10.0.0.1:80; evil"]}]"#;
        let err = parse_document(doc, DocumentFormat::Json, "file x.json", &ctx(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file x.json"), "{err}");
        assert!(err.contains("10.0.0.1:80; evil"), "{err}");
    }

    #[test]
    fn missing_port_is_an_error() {
        let doc = br#"[{"targets": ["10.0.0.1"]}]"#;
        let err = parse_document(doc, DocumentFormat::Json, "file x", &ctx(None)).unwrap_err();
        assert!(matches!(err, LocateError::NoPort { .. }), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for doc in [&b"not json"[..], b"", b"{\"targets\": []}", b"[{}]"] {
            let err = parse_document(doc, DocumentFormat::Json, "exec x", &ctx(None)).unwrap_err();
            assert!(matches!(err, LocateError::Parse { .. }), "{err}");
        }
    }

    #[test]
    fn port_zero_in_an_object_is_rejected_like_in_a_target() {
        let json = br#"[{"address": "127.0.0.1", "port": 0}]"#;
        let yaml = b"- address: 127.0.0.1\n  port: 0\n";
        for (doc, format) in [
            (&json[..], DocumentFormat::Json),
            (&yaml[..], DocumentFormat::Yaml),
        ] {
            let err = parse_document(doc, format, "file x", &ctx(Some(8080))).unwrap_err();
            assert_eq!(
                err.to_string(),
                "file x: bad backend `127.0.0.1`: `0` is not a port number (1-65535)"
            );
        }
        // The same as a target string, and as the fallback to the service's port.
        let target = br#"[{"targets": ["127.0.0.1:0"]}]"#;
        let err = parse_document(target, DocumentFormat::Json, "file x", &ctx(None)).unwrap_err();
        assert!(err.to_string().contains("not a port number"), "{err}");
        let zero_default = br#"[{"targets": ["127.0.0.1"]}]"#;
        let err = parse_document(zero_default, DocumentFormat::Json, "file x", &ctx(Some(0)))
            .unwrap_err();
        assert!(err.to_string().contains("not a port number"), "{err}");
    }

    #[test]
    fn deep_yaml_documents_are_a_parse_error() {
        let doc = format!("{}x\n", "- ".repeat(11_000));
        let err = parse_document(
            doc.as_bytes(),
            DocumentFormat::Yaml,
            "file x.yaml",
            &ctx(None),
        )
        .unwrap_err();
        assert!(matches!(err, LocateError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("line 1:511"), "{err}");
        assert!(err.to_string().contains("nested more than 255"), "{err}");
        let doc = format!("{}{}", "[".repeat(11_000), "]".repeat(11_000));
        let err = parse_document(
            doc.as_bytes(),
            DocumentFormat::Json,
            "file x.json",
            &ctx(None),
        )
        .unwrap_err();
        assert!(matches!(err, LocateError::Parse { .. }), "{err}");
    }
}
