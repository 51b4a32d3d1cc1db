//! A YAML tree that remembers where every node came from, and a serde `Deserializer` over it.
//!
//! serde's own YAML front ends stop at the first problem. Deserializing each section of the config
//! separately from this tree lets `config::load` report every problem in a file at once, each with
//! the line and column of the node that caused it.

use std::collections::HashMap;
use std::fmt;

use saphyr::{MarkedYamlOwned, ScalarOwned, ScanError, YamlDataOwned, YamlLoader};
use saphyr_parser::{BufferedInput, Event, Parser, ScalarStyle, SpannedEventReceiver};
use serde::de::{self, Error as _, IntoDeserializer, Visitor};

/// A 1-based line and column in a YAML source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML node with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub loc: Location,
    /// What the node holds.
    pub kind: NodeKind,
    /// An integer's text as written, when YAML did not write it in decimal digits: `0o644` for
    /// the integer 420. Such a number is refused where text is wanted (see `deserialize_str`).
    pub written: Option<String>,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Any other scalar, or a quoted one.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error (the file is not YAML at all).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub loc: Location,
    /// What the parser said.
    pub message: String,
}

/// How deeply lists and mappings may nest. YAML's flow style (`[[[...]]]`) is capped at this
/// depth by the parser already; block style (`- - - ...`) is capped here, because the tree and
/// everything that walks it recurse once per level: 11,000 levels overflow the stack.
pub const MAX_DEPTH: usize = 255;

/// Parses one YAML document. An empty document is a `Null` node.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let scan_error = |e: ScanError| SyntaxError {
        loc: Location {
            line: e.marker().line(),
            column: e.marker().col() + 1,
        },
        message: e.info().to_string(),
    };
    // The events are fed to saphyr's loader one at a time instead of through `Parser::load`,
    // which recurses once per nesting level before any limit could apply.
    let mut parser = Parser::new(BufferedInput::new(text.chars()));
    let mut loader = YamlLoader::<MarkedYamlOwned>::default();
    let mut depth = Depth::default();
    // Plain scalars that YAML may read as non-decimal integers (`0o644`, `0x1A4`), by where they
    // start: the loaded tree keeps only their value.
    // An alias of one is a copy placed where the alias is.
    let mut plain = HashMap::new();
    let mut anchored = HashMap::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(scan_error)?;
        match &event {
            Event::Scalar(text, ScalarStyle::Plain, anchor, _)
                if !is_decimal(text)
                    && text.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') =>
            {
                plain.insert(span.start.index(), text.to_string());
                if *anchor != 0 {
                    anchored.insert(*anchor, text.to_string());
                }
            }
            Event::Alias(anchor) => {
                if let Some(text) = anchored.get(anchor) {
                    plain.insert(span.start.index(), text.clone());
                }
            }
            _ => {}
        }
        if let Err(message) = depth.on(&event) {
            return Err(SyntaxError {
                loc: Location {
                    line: span.start.line(),
                    column: span.start.col() + 1,
                },
                message,
            });
        }
        loader.on_event(event, span);
        if let Some(e) = loader.error() {
            return Err(scan_error(e.clone()));
        }
    }
    let docs = loader.into_documents();
    let mut docs = docs.into_iter();
    let first = docs.next();
    if let Some(second) = docs.next() {
        return Err(SyntaxError {
            loc: location_of(&second),
            message: "only one YAML document is allowed here (found a second `---`)".into(),
        });
    }
    match first {
        Some(doc) => convert(doc, &plain),
        None => Ok(Node {
            loc: Location { line: 1, column: 1 },
            kind: NodeKind::Null,
            written: None,
        }),
    }
}

/// Counts how deeply the tree being loaded nests, aliases included: an alias is replaced by a
/// copy of its anchor's value, so `*a` inside 250 levels reaches 250 levels deeper than `&a`'s
/// own value does, and a chain of such anchors would build an arbitrarily deep tree.
#[derive(Default)]
struct Depth {
    /// Lists and mappings open around the current event.
    open: usize,
    /// For each open list or mapping: its anchor, its depth, and the deepest level inside it.
    frames: Vec<(usize, usize, usize)>,
    /// For each anchored list or mapping: how many levels deep its value goes.
    heights: HashMap<usize, usize>,
}

impl Depth {
    fn on(&mut self, event: &Event<'_>) -> Result<(), String> {
        let too_deep =
            || format!("lists and mappings are nested more than {MAX_DEPTH} levels deep here");
        match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open = self.open.saturating_add(1);
                if self.open > MAX_DEPTH {
                    return Err(too_deep());
                }
                self.frames.push((*anchor, self.open, self.open));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.open = self.open.saturating_sub(1);
                if let Some((anchor, start, deepest)) = self.frames.pop() {
                    if anchor != 0 {
                        let height = deepest.saturating_sub(start).saturating_add(1);
                        self.heights.insert(anchor, height);
                    }
                    self.reach(deepest);
                }
            }
            Event::Alias(anchor) => {
                let height = self.heights.get(anchor).copied().unwrap_or(0);
                let reach = self.open.saturating_add(height);
                if reach > MAX_DEPTH {
                    return Err(format!(
                        "{} (counting the value the alias stands for)",
                        too_deep()
                    ));
                }
                self.reach(reach);
            }
            _ => {}
        }
        Ok(())
    }

    fn reach(&mut self, level: usize) {
        if let Some(frame) = self.frames.last_mut() {
            frame.2 = frame.2.max(level);
        }
    }
}

fn location_of(node: &MarkedYamlOwned) -> Location {
    Location {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

/// `644`, `-1`, `+0644`: an integer as YAML's core schema writes it in decimal.
fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn convert(node: MarkedYamlOwned, plain: &HashMap<usize, String>) -> Result<Node, SyntaxError> {
    let loc = location_of(&node);
    let start = node.span.start.index();
    let kind = match node.data {
        YamlDataOwned::Value(scalar) => scalar_kind(scalar),
        YamlDataOwned::Representation(text, _, _) => NodeKind::Str(text),
        YamlDataOwned::Sequence(items) => NodeKind::Seq(
            items
                .into_iter()
                .map(|n| convert(n, plain))
                .collect::<Result<_, _>>()?,
        ),
        YamlDataOwned::Mapping(map) => NodeKind::Map(
            map.into_iter()
                .map(|(k, v)| Ok((convert(k, plain)?, convert(v, plain)?)))
                .collect::<Result<_, SyntaxError>>()?,
        ),
        YamlDataOwned::Tagged(_, inner) => {
            return convert(*inner, plain).map(|n| Node { loc, ..n });
        }
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
            return Err(SyntaxError {
                loc,
                message: "this value could not be read (merge keys `<<:` and unresolved aliases are not supported)"
                    .into(),
            });
        }
    };
    let written = match kind {
        NodeKind::Int(_) => plain.get(&start).cloned(),
        _ => None,
    };
    Ok(Node { loc, kind, written })
}

fn scalar_kind(scalar: ScalarOwned) -> NodeKind {
    match scalar {
        ScalarOwned::Null => NodeKind::Null,
        ScalarOwned::Boolean(b) => NodeKind::Bool(b),
        ScalarOwned::Integer(i) => NodeKind::Int(i),
        ScalarOwned::FloatingPoint(f) => NodeKind::Float(f.into_inner()),
        ScalarOwned::String(s) => NodeKind::Str(s),
    }
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node for `key` when this node is a mapping (to point errors at the key).
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(k, _)| k)
    }

    /// The node at the path `keys` below this one, or this node when part of the path is
    /// missing: where a problem with that setting is pointed at.
    pub fn at_or_here(&self, keys: &[&str]) -> &Node {
        keys.iter()
            .try_fold(self, |node, key| node.get(key))
            .unwrap_or(self)
    }

    fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == key)),
            _ => None,
        }
    }

    /// The item at `index` when this node is a sequence.
    pub fn item(&self, index: usize) -> Option<&Node> {
        match &self.kind {
            NodeKind::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// The node's text when it is a scalar (for naming it in messages).
    pub fn as_scalar_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Str(s) => Some(s.clone()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            NodeKind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Deserializes this node into `T`; the error carries the location of the deepest bad node.
    pub fn deserialize<'de, T: serde::Deserialize<'de>>(&'de self) -> Result<T, DeError> {
        T::deserialize(self)
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// A deserialization error with the location of the node that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// What went wrong, in serde's words.
    pub message: String,
    /// Where, once known.
    pub loc: Option<Location>,
}

impl DeError {
    fn at(mut self, loc: Location) -> Self {
        self.loc.get_or_insert(loc);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.loc {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            loc: None,
        }
    }

    // serde words these for Rust programmers (`invalid type: string "x", expected u16`); the
    // config's readers get what the value should be, in plain words.
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::custom(format_args!(
            "expected {}, found {}",
            plain_expected(&exp.to_string()),
            plain_unexpected(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::custom(format_args!(
            "{} is not {}",
            plain_unexpected(&unexp),
            plain_expected(&exp.to_string())
        ))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        let expected = exp.to_string();
        // A struct given a list is read field by field from the list; what is wrong is the list.
        if expected.starts_with("struct ") {
            return DeError::custom("expected a mapping of settings, found a list");
        }
        let s = if len == 1 { "" } else { "s" };
        DeError::custom(format_args!(
            "expected {}, found {len} item{s}",
            plain_expected(&expected)
        ))
    }
}

/// What serde calls the expected value (`u16`, `f64`, `struct RawReload`), in a config reader's
/// words. In the config every `u16` is a port and every float a ratio (`jitter`,
/// `max_removed_ratio`); the others are counts, sizes and limits.
fn plain_expected(expected: &str) -> String {
    let plain = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a port number (1-65535)",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number ≥ 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a ratio between 0 and 1 (0.5, not 50%)",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "text",
        "path string" => "a file path",
        "a character" => "a single character",
        "a sequence" => "a list",
        "a map" => "a mapping",
        "option" => "a value",
        "unit" => "nothing",
        other if other.starts_with("struct ") || other.starts_with("struct variant ") => {
            "a mapping of settings"
        }
        other if other.starts_with("enum ") => "a kind: its name, or `kind: {...}`",
        other if other.starts_with("a tuple of size ") => {
            return format!("a list of {}", other.trim_start_matches("a tuple of size "));
        }
        other => return other.to_string(),
    };
    plain.to_string()
}

/// The value serde found, as the config shows it.
fn plain_unexpected(unexpected: &de::Unexpected<'_>) -> String {
    use de::Unexpected as U;
    match unexpected {
        U::Bool(b) => format!("`{b}`"),
        U::Unsigned(n) => format!("`{n}`"),
        U::Signed(n) => format!("`{n}`"),
        U::Float(f) => format!("`{f}`"),
        U::Char(c) => format!("`{c}`"),
        U::Str(s) => format!("{s:?}"),
        U::Unit => "nothing (an empty value)".to_string(),
        U::Option => "a value".to_string(),
        U::Seq => "a list".to_string(),
        U::Map => "a mapping".to_string(),
        U::Enum => "a kind".to_string(),
        other => other.to_string(),
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Bool(b) => visitor.visit_bool(*b),
            NodeKind::Int(i) => visitor.visit_i64(*i),
            NodeKind::Float(f) => visitor.visit_f64(*f),
            NodeKind::Str(s) => visitor.visit_borrowed_str(s),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(self.loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        };
        result.map_err(|e| e.at(self.loc))
    }

    // Scalars read as text where text is wanted: `port_tag: 8080` or a tag value `123` is a string
    // to the user, so don't make them quote it. But an integer YAML read from other digits
    // (`0o644` is 420) would silently become other text: `mode: 0o644` would be the mode 0420.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            NodeKind::Str(s) => visitor.visit_borrowed_str(s),
            NodeKind::Int(i) if self.written.is_some() => {
                let written = self.written.as_deref().unwrap_or_default();
                Err(DeError::custom(format!(
                    "unquoted, `{written}` is the number {i} to YAML; quote it (\"{written}\") to use it as written"
                )))
            }
            NodeKind::Int(_) | NodeKind::Float(_) | NodeKind::Bool(_) => {
                visitor.visit_string(self.as_scalar_text().unwrap_or_default())
            }
            _ => return self.deserialize_any(visitor),
        };
        result.map_err(|e: DeError| e.at(self.loc))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(self.loc))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            NodeKind::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(EnumAccess { key, value })
            }
            NodeKind::Map(entries) => Err(DeError::custom(misindented(entries).unwrap_or_else(
                || format!(
                    "expected a single-key mapping like `kind: {{...}}`, found a mapping with {} keys",
                    entries.len()
                ),
            ))),
            _ => Err(DeError::custom(format!(
                "expected a single-key mapping like `kind: {{...}}`, found {}",
                self.kind_name()
            ))),
        };
        result.map_err(|e| e.at(self.loc))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// The hint for a `kind:` with no value followed by its settings at the same indentation
/// (`- file:` then `path: x` under the `f` instead of further in): YAML reads one mapping with
/// all of them as keys.
fn misindented(entries: &[(Node, Node)]) -> Option<String> {
    let (kind, value) = entries.first()?;
    if value.kind != NodeKind::Null {
        return None;
    }
    let kind = kind.as_scalar_text()?;
    let next = entries.get(1)?.0.as_scalar_text()?;
    Some(format!(
        "`{kind}:` has no settings, and `{next}` is beside it instead of under it: indent \
         `{next}` and the lines after it further than `{kind}:`"
    ))
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(node).map(Some).map_err(|e| e.at(node.loc)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key).map(Some).map_err(|e| e.at(key.loc))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| DeError::custom("value requested before key"))?;
        seed.deserialize(value).map_err(|e| e.at(value.loc))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'de> {
    key: &'de Node,
    value: &'de Node,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de Node), DeError> {
        let variant = seed.deserialize(self.key).map_err(|e| e.at(self.key.loc))?;
        Ok((variant, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.kind {
            NodeKind::Null => Ok(()),
            _ => Err(DeError::custom("this kind takes no value").at(self.loc)),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        seed.deserialize(self).map_err(|e| e.at(self.loc))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn locations_are_one_based_and_point_at_the_bad_node() {
        let node = parse("a:\n  port: 70000\n").unwrap();
        let err = node.get("a").unwrap().deserialize::<Inner>().unwrap_err();
        assert_eq!(err.loc, Some(Location { line: 2, column: 9 }));
        assert!(err.message.contains("70000"), "{}", err.message);
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let node = parse("port: 1\nprot: 2\n").unwrap();
        let err = node.deserialize::<Inner>().unwrap_err();
        assert_eq!(err.loc, Some(Location { line: 2, column: 1 }));
        assert!(
            err.message.contains("unknown field `prot`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn numbers_read_as_strings_where_strings_are_wanted() {
        let node = parse("port: 1\nname: 123\n").unwrap();
        let inner: Inner = node.deserialize().unwrap();
        assert_eq!(inner.port, 1);
        assert_eq!(inner.name.as_deref(), Some("123"));
    }

    #[test]
    fn integers_not_written_in_decimal_are_not_text() {
        let node = parse("port: 0x50\nname: 0o644\n").unwrap();
        assert_eq!(node.get("port").unwrap().written.as_deref(), Some("0x50"));
        let err = node.deserialize::<Inner>().unwrap_err();
        assert_eq!(err.loc, Some(Location { line: 2, column: 7 }));
        assert_eq!(
            err.message,
            "unquoted, `0o644` is the number 420 to YAML; quote it (\"0o644\") to use it as written"
        );
        // As a number it is still that number, and decimal or quoted text is text.
        let inner: Inner = parse("port: 0x50\nname: +0644\n")
            .unwrap()
            .deserialize()
            .unwrap();
        assert_eq!(inner.port, 80);
        assert_eq!(inner.name.as_deref(), Some("644"));
        let inner: Inner = parse("port: 1\nname: \"0o644\"\n")
            .unwrap()
            .deserialize()
            .unwrap();
        assert_eq!(inner.name.as_deref(), Some("0o644"));
        // Inside lists and behind aliases too.
        let node = parse("a: &m 0o17\nb: [*m]\n").unwrap();
        assert!(node.get("b").unwrap().deserialize::<Vec<String>>().is_err());
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.loc.line >= 1);
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }

    /// `text` must not parse, with a message containing `wanted`, at `line:column`.
    fn assert_fails_at(text: &str, wanted: &str, line: usize, column: usize) {
        let err = parse(text).unwrap_err();
        assert!(err.message.contains(wanted), "{}", err.message);
        assert_eq!(err.loc, Location { line, column });
    }

    #[test]
    fn deep_block_nesting_is_an_error_not_a_stack_overflow() {
        // `- - - ... x`: one list per `- `, 11,000 deep.
        let text = format!("{}x\n", "- ".repeat(11_000));
        assert_fails_at(&text, "nested more than 255", 1, 511);
        // Nested block mappings, one per line.
        let mut text = String::new();
        for i in 0..5_000 {
            text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_fails_at(&text, "nested more than 255", 256, 256);
    }

    #[test]
    fn nesting_up_to_the_limit_still_parses() {
        let text = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        let mut node = &parse(&text).unwrap();
        let mut depth = 0;
        while let NodeKind::Seq(items) = &node.kind {
            depth += 1;
            node = &items[0];
        }
        assert_eq!(depth, MAX_DEPTH);
        assert_eq!(node.kind, NodeKind::Str("x".into()));
        let too_deep = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(parse(&too_deep).is_err());
        // Flow style was already capped by the parser, at the same depth.
        let flow = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&flow).is_ok());
        let flow = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&flow).is_err());
    }

    #[test]
    fn depth_counts_lists_and_mappings_together_and_resets_between_siblings() {
        // 200 levels, closed, then 200 more beside it: never deeper than 201.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let text = format!("a: {deep}\nb: {deep}\n");
        assert!(parse(&text).is_ok());
        let mixed = format!(
            "{}{}{}",
            "- ".repeat(200),
            "{a: ".repeat(60),
            "}".repeat(60)
        );
        let err = parse(&mixed).unwrap_err();
        assert!(err.message.contains("nested"), "{}", err.message);
    }

    #[test]
    fn aliases_count_the_depth_of_what_they_stand_for() {
        // Each anchor deeper than the one it refers to: a chain of 28 of them, 250 levels each,
        // used to build a tree over 7,000 levels deep from 14 KB.
        let mut text = format!("- &a0 {}x{}\n", "[".repeat(250), "]".repeat(250));
        // 1 (the list) + 3 + 250 (a0's value) = 254: still allowed.
        text.push_str("- &a1 [[[*a0]]]\n");
        let node = parse(&text).map_err(|e| e.message).map(|_| ());
        assert_eq!(node, Ok(()));
        // 1 + 3 + 253 = 257.
        text.push_str("- &a2 [[[*a1]]]\n");
        assert_fails_at(&text, "the alias stands for", 3, 10);
        // Aliases of scalars and of shallow values are fine anywhere the limit allows.
        let text = format!(
            "a: &s x\nb: &m {{k: [1]}}\nc: {}[*s, *m]{}\n",
            "[".repeat(250),
            "]".repeat(250)
        );
        assert!(parse(&text).map(|_| ()).is_ok());
        let text = text.replace(&"[".repeat(250), &"[".repeat(252));
        let text = text.replace(&"]".repeat(250), &"]".repeat(252));
        assert!(parse(&text).is_err());
    }

    #[test]
    fn serde_type_names_become_plain_words() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Numbers {
            count: Option<usize>,
            ratio: Option<f64>,
            on: Option<bool>,
            list: Option<Vec<String>>,
            inner: Option<Inner>,
        }
        let cases = [
            ("count: -1", "`-1` is not a whole number ≥ 0"),
            ("count: x", "expected a whole number ≥ 0, found \"x\""),
            (
                "ratio: 50%",
                "expected a ratio between 0 and 1 (0.5, not 50%), found \"50%\"",
            ),
            ("on: 3", "expected true or false, found `3`"),
            ("list: {a: 1}", "expected a list, found a mapping"),
            ("inner: [1]", "expected a mapping of settings, found a list"),
            (
                "inner: {port: 0.5}",
                "expected a port number (1-65535), found `0.5`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap().deserialize::<Numbers>().unwrap_err();
            assert_eq!(err.message, want, "{text}");
        }
    }
}
