//! What a client sends, checked: ids, addresses against `allow`, ports, weights, meta, TTLs; and
//! the scoped tokens, read from files.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    MAX_ID_LEN, MAX_META, MAX_META_KEY, MAX_META_VALUE, Policy, Registration, RegistryError, Ttl,
};
use crate::backend::MAX_WEIGHT;
use crate::secret::Secret;

/// A value from a client as an error quotes it: escaped, and cut short.
pub(super) fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> RegistryError {
    RegistryError::BadField {
        field: field.into(),
        reason: reason.into(),
    }
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Ids name registrations in URLs, logs and templates: letters, digits and `_-.:`.
pub fn check_id(id: &str) -> Result<(), RegistryError> {
    if is_token(id, MAX_ID_LEN) {
        Ok(())
    } else {
        Err(bad(
            "id",
            format!(
                "must be 1-{MAX_ID_LEN} letters, digits or `_-.:`, not `{}`",
                echo(id)
            ),
        ))
    }
}

/// The address, port and weight of a registration, each checked; its meta is checked too.
pub(super) fn target_of(
    service: &str,
    r: &Registration,
    policy: &Policy,
) -> Result<(IpAddr, u16, u32), RegistryError> {
    let ip: IpAddr = r.address.parse().map_err(|_| {
        bad(
            "address",
            format!(
                "`{}` is not an IP address (host names can't be checked against `allow`)",
                echo(&r.address)
            ),
        )
    })?;
    // An IPv4-mapped IPv6 address is checked (and rendered) as the IPv4 address it is.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if !policy.allow.iter().any(|net| net.contains(&ip)) {
        return Err(RegistryError::NotAllowed {
            service: service.to_string(),
            address: ip.to_string(),
            allow: policy
                .allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let port = u16::try_from(r.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("port", format!("{} is not a port number (1-65535)", r.port)))?;
    let weight = r.weight.unwrap_or(1);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        return Err(bad(
            "weight",
            format!("{weight} is out of range (1-{MAX_WEIGHT})"),
        ));
    }
    if r.meta.len() > MAX_META {
        return Err(bad("meta", format!("at most {MAX_META} entries")));
    }
    for (k, v) in &r.meta {
        if !is_token(k, MAX_META_KEY) {
            return Err(bad(
                "meta",
                format!(
                    "key `{}` must be 1-{MAX_META_KEY} letters, digits or `_-.:`",
                    echo(k)
                ),
            ));
        }
        if v.len() > MAX_META_VALUE || v.chars().any(char::is_control) {
            return Err(bad(
                format!("meta.{k}"),
                format!("at most {MAX_META_VALUE} bytes, no control characters"),
            ));
        }
    }
    Ok((ip, port, weight))
}

pub(super) fn ttl_of(ttl: Option<&Ttl>, policy: &Policy) -> Result<Duration, RegistryError> {
    let ttl = match ttl {
        None => return Ok(policy.ttl_default),
        Some(Ttl::Seconds(s)) => Duration::from_secs(*s),
        Some(Ttl::Text(t)) => humantime::parse_duration(t).map_err(|e| {
            bad(
                "ttl",
                format!("`{}` is not a duration ({e}); write it like `10s`", echo(t)),
            )
        })?,
    };
    if ttl < policy.ttl_min || ttl > policy.ttl_max {
        return Err(bad(
            "ttl",
            format!(
                "{} is outside {}..{}",
                humantime::format_duration(ttl),
                humantime::format_duration(policy.ttl_min),
                humantime::format_duration(policy.ttl_max)
            ),
        ));
    }
    Ok(ttl)
}

/// Reads the scoped token files of a `registry` locator.
pub fn read_tokens(files: &[PathBuf]) -> Result<Vec<Secret>, String> {
    files
        .iter()
        .map(|f| Secret::read(f).map_err(|e| format!("token file {}: {e}", f.display())))
        .collect()
}
