//! The `static` locator: backends written in the config.

use serde::Deserialize;

use super::{BackendMeta, LocateContext, LocateFuture, Locator, backend_from_target};
use crate::backend::{CompactString, Labels, parse_target};

/// One static backend: `"ADDRESS[:PORT]"` or `{address, port, weight, id, name, zone, tags}`.
///
/// Checked while the config loads, so a bad address is reported with its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticBackend {
    /// Address, optionally with `:PORT`, as written.
    pub target: String,
    /// Port from the object form.
    pub port: Option<u16>,
    /// Everything else.
    pub meta: BackendMeta,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticObject {
    address: String,
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
}

impl<'de> Deserialize<'de> for StaticBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StaticBackend;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"ADDRESS[:PORT]\" or a mapping with `address`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StaticBackend, E> {
                parse_target(s).map_err(|e| E::custom(format!("static backend `{s}`: {e}")))?;
                Ok(StaticBackend {
                    target: s.to_string(),
                    port: None,
                    meta: BackendMeta::default(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<StaticBackend, A::Error> {
                let o =
                    StaticObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let (_, target_port) = parse_target(&o.address).map_err(|e| {
                    serde::de::Error::custom(format!("static backend `{}`: {e}", o.address))
                })?;
                if target_port.is_some() && o.port.is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "static backend `{}`: give the port in `address` or in `port`, not both",
                        o.address
                    )));
                }
                if o.port == Some(0) {
                    return Err(serde::de::Error::custom("port 0 is not a usable port"));
                }
                if let Some(w) = o.weight
                    && !(1..=crate::backend::MAX_WEIGHT).contains(&w)
                {
                    return Err(serde::de::Error::custom(format!(
                        "weight {w} is out of range (1-{})",
                        crate::backend::MAX_WEIGHT
                    )));
                }
                Ok(StaticBackend {
                    target: o.address,
                    port: o.port,
                    meta: BackendMeta {
                        weight: o.weight,
                        id: o.id,
                        name: o.name,
                        zone: o.zone,
                        tags: o.tags,
                        meta: Default::default(),
                    },
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `static: [...]`: the list as written.
pub type StaticList = Vec<StaticBackend>;

impl super::LocatorSpec for StaticList {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(StaticLocator::new(self.clone()))
    }
}

/// Returns the configured backends.
pub struct StaticLocator {
    backends: Vec<StaticBackend>,
}

impl StaticLocator {
    /// A locator over a fixed list.
    pub fn new(backends: Vec<StaticBackend>) -> Self {
        StaticLocator { backends }
    }
}

impl Locator for StaticLocator {
    fn describe(&self) -> String {
        "static".into()
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let locator = self.describe();
            self.backends
                .iter()
                .map(|b| backend_from_target(&b.target, b.port, b.meta.clone(), &locator, ctx))
                .collect()
        })
    }
}
