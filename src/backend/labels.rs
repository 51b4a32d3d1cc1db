//! [`Labels`]: a backend's tags or meta, the string pairs every locator fills and every template
//! reads.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One key and its value; strings of up to 24 bytes are stored inline.
type Pair = (CompactString, CompactString);

/// String pairs sorted by key, each key once (a `BTreeMap<String, String>` in behaviour).
///
/// Stored as one shared slice: no allocation when empty, one per set otherwise, and strings of up
/// to 24 bytes inside it. A fleet's labels are short (`zone`, `rack`, instance names), so a
/// backend's three labels cost one allocation of about 150 bytes where a map cost seven and about
/// 700, and copying a set of 100,000 backends copies reference counts, not strings.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Option<Arc<[Pair]>>);

impl Labels {
    /// No labels.
    pub const fn new() -> Self {
        Labels(None)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// True without any key.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let pairs = self.pairs();
        pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .and_then(|i| pairs.get(i))
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.pairs().iter())
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.pairs().iter().map(|(k, _)| k.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value. Copies the pairs (they may be shared):
    /// meant for the few keys a locator adds, not for building large sets.
    pub fn insert(&mut self, key: impl Into<CompactString>, value: impl Into<CompactString>) {
        let (key, value) = (key.into(), value.into());
        let mut pairs = self.pairs().to_vec();
        match pairs.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                if let Some(pair) = pairs.get_mut(i) {
                    pair.1 = value;
                }
            }
            Err(i) => pairs.insert(i, (key, value)),
        }
        *self = Labels::from_sorted(pairs);
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
        let pairs = self.pairs().iter().chain(other.pairs()).cloned();
        *self = pairs.collect();
    }

    fn pairs(&self) -> &[Pair] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// From pairs already sorted by key with no key twice.
    fn from_sorted(pairs: Vec<Pair>) -> Self {
        if pairs.is_empty() {
            Labels(None)
        } else {
            Labels(Some(Arc::from(pairs)))
        }
    }
}

/// The pairs of [`Labels`] in key order.
#[derive(Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, Pair>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl ExactSizeIterator for Iter<'_> {}

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
        let mut pairs: Vec<Pair> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        if pairs.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
            // Stable, so that equal keys keep their order and the last one can be kept: of two
            // neighbours with one key, the later value moves into the one that stays.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        Labels::from_sorted(pairs)
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
        let mut pairs: Vec<Pair> = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
        while let Some((k, v)) = map.next_entry::<Text, Text>()? {
            pairs.push((k.0, v.0));
        }
        Ok(Labels::from_iter(pairs))
    }
}

/// A string as serde reads a `String` (same errors), kept inline when short.
struct Text(CompactString);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(TextVisitor)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(CompactString::from(v)))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
        Ok(Text(CompactString::from(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Text, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Text(CompactString::from(s))),
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
            let pairs: Vec<(String, String)> = (0..n)
                .map(|_| (rng.u8(b'a'..b'e').to_string(), rng.u32(..).to_string()))
                .collect();
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            let labels: Labels = pairs.iter().cloned().collect();
            let from_map: Vec<(&str, &str)> =
                map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(labels.iter().collect::<Vec<_>>(), from_map);
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
