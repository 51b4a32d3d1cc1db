//! What an output is, as the config writes it: the file, its template or renderer plugin, its
//! frontend and its template variables. Owned here because rendering is what reads it.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::plugin::PluginCall;
use crate::value::FileMode;

/// Prefix that names a template embedded in the binary.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// One rendered file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `builtin:NAME` or a template file path (or else `renderer`).
    #[serde(default)]
    pub template: Option<TemplateRef>,
    /// A renderer plugin that prints the file's content (instead of `template`).
    #[serde(default)]
    pub renderer: Option<PluginCall>,
    /// Where the file goes.
    pub path: PathBuf,
    /// The frontend that reads it (checked and reloaded when it changes).
    #[serde(default)]
    pub frontend: Option<String>,
    /// File mode; by default the existing file's, or 0644.
    #[serde(default)]
    pub mode: Option<FileMode>,
    /// Values for the template (`service` binds `backends`).
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

impl OutputConfig {
    /// The service named by `vars.service`, if any.
    pub fn service(&self) -> Option<&str> {
        self.vars.get("service").and_then(|v| v.as_str())
    }
}

/// Which template an output renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// A template embedded in the binary.
    Builtin(String),
    /// A template file (resolved against the config directory).
    File(PathBuf),
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateRef::Builtin(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
            TemplateRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for TemplateRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(name) = text.strip_prefix(BUILTIN_PREFIX) {
            if super::builtin_source(name).is_none() {
                return Err(serde::de::Error::custom(format!(
                    "unknown built-in template `{text}`; built-ins are: {}",
                    super::builtin_names()
                        .map(|n| format!("{BUILTIN_PREFIX}{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(TemplateRef::Builtin(name.to_string()))
        } else if text.is_empty() {
            Err(serde::de::Error::custom("template is empty"))
        } else {
            Ok(TemplateRef::File(PathBuf::from(text)))
        }
    }
}
