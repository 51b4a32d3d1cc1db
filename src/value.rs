//! Value types every layer reads from the config: durations, file modes, names, program paths,
//! and the boxed future that trait objects return. Imports nothing of ours.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

/// A boxed future, so that locators and reload actions can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A duration written like `30s`, `1m30s` or `500ms` (a bare number is seconds), from 1ns up to
/// [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The longest [`HumanDuration`] any setting takes (timeouts, settle windows, backoff): one day.
/// Longer ones are mistakes, and near `u64::MAX` seconds they overflow clock arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

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
        if parsed > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is too long: this setting takes at most 1 day (`24h`)"
            )));
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

/// A span for people, in its largest unit or two: `42s`, `3m 5s`, `2h 10m`, `4d 1h`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `1 backend`, `2 backends`: a count with its noun, plural unless the count is 1.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(text: &str) -> Result<Duration, String> {
        crate::yaml::parse(text)
            .map_err(|e| e.message)?
            .deserialize::<HumanDuration>()
            .map(|d| d.0)
            .map_err(|e| e.message)
    }

    #[test]
    fn counts_are_plural_unless_one() {
        assert_eq!(count(0, "backend"), "0 backends");
        assert_eq!(count(1, "service"), "1 service");
        assert_eq!(count(2, "output"), "2 outputs");
    }

    #[test]
    fn durations_are_capped_at_a_day() {
        assert_eq!(duration("24h"), Ok(MAX_DURATION));
        assert_eq!(duration("86400"), Ok(MAX_DURATION));
        for long in ["86401", "24h1ms", "2d", "300000000y", "9223372036854775807"] {
            let err = duration(long).unwrap_err();
            assert!(err.contains("at most 1 day"), "{long}: {err}");
            assert!(err.contains(long), "{long}: {err}");
        }
        // Beyond u64 seconds it isn't a duration at all.
        assert!(duration("99999999999999999999999").is_err());
    }
}
