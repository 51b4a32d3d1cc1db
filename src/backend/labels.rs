//! [`Labels`]: a backend's tags or meta, the string pairs every locator fills and every template
//! reads.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// One key and its value while a set is built; strings of up to 24 bytes are stored inline.
type Pair = (CompactString, CompactString);

/// String pairs sorted by key, each key once (a `BTreeMap<String, String>` in behaviour).
///
/// Stored as one shared text, `len:key` `len:value` for each pair in key order (lengths in
/// bytes, in decimal): no allocation when empty, one per set otherwise. A fleet's labels are short
/// (`zone`, `rack`, instance names), so a backend's three labels take one allocation of about 64
/// bytes where a map took seven and about 700, and copying a set of 100,000 backends copies
/// reference counts, not strings. The text is written only by [`Labels::from_sorted`], so the
/// encoding is canonical: equal sets have equal text.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Option<Arc<str>>);

impl Labels {
    /// No labels.
    pub const fn new() -> Self {
        Labels(None)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True without any key.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.as_deref().unwrap_or(""))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Sets `key` to `value`, replacing an earlier value. Rewrites the set (it may be shared):
    /// meant for the few keys a locator adds, not for building large sets.
    pub fn insert(&mut self, key: impl Into<CompactString>, value: impl Into<CompactString>) {
        let added = (key.into(), value.into());
        let pairs = self
            .iter()
            .map(|(k, v)| (CompactString::from(k), CompactString::from(v)));
        *self = pairs.chain([added]).collect();
    }

    /// Adds every pair of `other`; on a key in both, `other`'s value wins.
    pub fn merge(&mut self, other: Labels) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other;
            return;
        }
        *self = self.iter().chain(other.iter()).collect();
    }

    /// From pairs in any order; of a key given twice the last value wins.
    fn from_pairs<S: AsRef<str>>(pairs: &mut [(S, S)]) -> Self {
        fn key<S: AsRef<str>>(p: &(S, S)) -> &str {
            p.0.as_ref()
        }
        if pairs
            .windows(2)
            .any(|w| matches!(w, [a, b] if key(a) >= key(b)))
        {
            // Stable, so that of equal keys the last one given stays last (a few pairs are
            // sorted in place by insertion, without allocating).
            pairs.sort_by(|a, b| key(a).cmp(key(b)));
        }
        Labels::from_sorted(pairs)
    }

    /// From pairs sorted by key (stably: of a key given twice, the last one is the value).
    fn from_sorted<S: AsRef<str>>(pairs: &[(S, S)]) -> Self {
        if pairs.is_empty() {
            return Labels(None);
        }
        thread_local! {
            // Written in place and copied into the shared text once: one allocation a set,
            // where a `String` of its own is a second one, freed at once.
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let text = &mut *scratch;
            text.clear();
            let mut rest = pairs.iter().peekable();
            while let Some((k, v)) = rest.next() {
                if rest
                    .peek()
                    .is_some_and(|(next, _)| next.as_ref() == k.as_ref())
                {
                    continue;
                }
                for part in [k.as_ref(), v.as_ref()] {
                    push_len(part.len(), text);
                    text.push(':');
                    text.push_str(part);
                }
            }
            let labels = Labels(Some(Arc::from(text.as_str())));
            if text.capacity() > 4096 {
                // A set of long labels does not keep a large buffer for the thread's life.
                *text = String::new();
            }
            labels
        })
    }
}

/// Appends `n` in decimal; labels are short, so one or two digits is the case to be quick at.
fn push_len(n: usize, out: &mut String) {
    // `n % 10` is below 10, so the byte is an ASCII digit.
    let digit = |d: usize| char::from(b'0' + (d % 10) as u8);
    match n {
        0..10 => out.push(digit(n)),
        10..100 => {
            out.push(digit(n / 10));
            out.push(digit(n));
        }
        _ => {
            use std::fmt::Write as _;
            let _ = write!(out, "{n}");
        }
    }
}

/// The pairs of [`Labels`] in key order.
#[derive(Clone)]
pub struct Iter<'a>(&'a str);

impl<'a> Iter<'a> {
    /// The next `len:text` part. The text was written by `from_sorted`, so every length is a
    /// byte length of a `&str` and every slice falls on a character boundary; a malformed text
    /// (which nothing can build) would end the iteration, never panic.
    fn part(&mut self) -> Option<&'a str> {
        let (len, rest) = self.0.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let part = rest.get(..len)?;
        self.0 = rest.get(len..)?;
        Some(part)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        match (self.part(), self.part()) {
            (Some(k), Some(v)) => Some((k, v)),
            _ => {
                self.0 = "";
                None
            }
        }
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> FromIterator<(K, V)> for Labels {
    /// Sorted by key; of a key given twice the last value wins, as when inserting one by one.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: SmallVec<[Pair; 8]> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Labels::from_pairs(&mut pairs)
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> Extend<(K, V)> for Labels {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let more: Labels = iter.into_iter().collect();
        self.merge(more);
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    /// The value of `key`; panics without one, like a map's index (for tests and known keys).
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no label `{key}`"),
        }
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LabelsVisitor)
    }
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        // A backend's few labels are gathered on the stack, not in an allocation of their own.
        let mut pairs: SmallVec<[(Text<'de>, Text<'de>); 8]> = SmallVec::new();
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(Labels::from_pairs(&mut pairs))
    }
}

/// A string as serde reads a `String` (same errors), borrowed from the document when it can be.
struct Text<'de>(Cow<'de, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Text<'de>, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Text(Cow::Owned(s.to_string()))),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut l: Labels = [("b", "2"), ("a", "1"), ("b", "3")].into_iter().collect();
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        l.insert("c", "4");
        l.insert("a", "0");
        let pairs: Vec<_> = l.iter().collect();
        assert_eq!(pairs, [("a", "0"), ("b", "3"), ("c", "4")]);
        assert_eq!(&l["c"], "4");
        l.extend([("a", "9"), ("d", "5")]);
        assert_eq!(l.keys().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(l.get("a"), Some("9"));
        assert!(Labels::new().is_empty());
        assert_eq!(Labels::new(), [("", ""); 0].into_iter().collect());
    }

    #[test]
    fn agrees_with_a_btreemap_on_random_input() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..500 {
            let n = rng.usize(0..8);
            // Colons, digits and lengths in the text itself, multi-byte characters, empty strings:
            // nothing a value holds may confuse the length-prefixed encoding.
            let tricky = [
                "", "a", "b", "1:", "2:x", "10:", ":", "é", "ü:9", "日本", "\u{0}",
            ];
            let mut text = || {
                if rng.bool() {
                    tricky[rng.usize(..tricky.len())].to_string()
                } else {
                    rng.u32(..).to_string().repeat(rng.usize(1..4))
                }
            };
            let pairs: Vec<(String, String)> = (0..n).map(|_| (text(), text())).collect();
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            let labels: Labels = pairs.iter().cloned().collect();
            let from_map: Vec<(&str, &str)> =
                map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(labels.iter().collect::<Vec<_>>(), from_map);
            assert_eq!(labels.len(), map.len());
            for (k, v) in &map {
                assert_eq!(labels.get(k), Some(v.as_str()));
            }
            assert_eq!(
                serde_json::to_string(&labels).ok(),
                serde_json::to_string(&map).ok()
            );
        }
    }

    #[test]
    fn reads_and_writes_json_like_a_map_of_strings() {
        let l: Labels = serde_json::from_str(r#"{"z": "1", "a": "x\"y", "z": "2"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"a":"x\"y","z":"2"}"#
        );
        let bad = serde_json::from_str::<Labels>(r#"{"a": 1}"#).unwrap_err();
        let also = serde_json::from_str::<BTreeMap<String, String>>(r#"{"a": 1}"#).unwrap_err();
        assert_eq!(bad.to_string(), also.to_string());
        let long = "a label value well over twenty-four bytes long";
        let l: Labels = [(long, long)].into_iter().collect();
        assert_eq!(l.get(long), Some(long));
    }
}
