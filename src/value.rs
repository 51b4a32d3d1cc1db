//! Value types every layer reads from the config: durations, file modes, names, program paths,
//! and the boxed future that trait objects return. Imports nothing of ours.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

/// A boxed future, so that locators and reload actions can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A duration written like `30s`, `1m30s` or `500ms` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = match text.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(&text).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({e}); write it like `30s`, `2m` or `500ms`"
                ))
            })?,
        };
        if parsed.is_zero() {
            return Err(serde::de::Error::custom(
                "a duration of zero is not allowed here",
            ));
        }
        Ok(HumanDuration(parsed))
    }
}

/// A Unix file mode, written in octal (`"0644"`, `640`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML 1.2 reads `0644` as the decimal 644, so digits are taken as octal either way.
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(FileMode(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not an octal file mode like \"0644\""
            ))),
        }
    }
}

/// Names of services and frontends: safe in file names, logs and template identifiers.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Makes a relative program path like `./plugins/x` absolute; bare names stay for `PATH` lookup.
pub fn resolve_program(argv: &mut [String], base: &Path) {
    if let Some(program) = argv.first_mut()
        && program.contains('/')
        && Path::new(program.as_str()).is_relative()
    {
        *program = base.join(&*program).to_string_lossy().into_owned();
    }
}
