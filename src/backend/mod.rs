//! A backend (one address and port a frontend sends traffic to) and how addresses are parsed.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

mod labels;

pub use compact_str::CompactString;

pub use labels::{Iter as LabelsIter, Labels};

/// The largest weight accepted; Apache's `loadfactor` tops out at 100.
pub const MAX_WEIGHT: u32 = 100;

/// An IP address or a host name, validated so that it can't carry config syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// An RFC 1123 host name.
    Host(String),
}

impl Address {
    /// True for an IPv6 address (templates bracket it in `host:port` forms).
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Address::Ip(IpAddr::V6(_)))
    }
}

impl Ord for Address {
    // IPs sort numerically (10.0.0.9 before 10.0.0.10), IPv4 before IPv6, then host names.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Address::Ip(a), Address::Ip(b)) => a.cmp(b),
            (Address::Ip(_), Address::Host(_)) => Ordering::Less,
            (Address::Host(_), Address::Ip(_)) => Ordering::Greater,
            (Address::Host(a), Address::Host(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Address {
    /// Appends the address as [`fmt::Display`] writes it (IPv6 without brackets).
    pub fn write_to(&self, out: &mut String) {
        match self {
            Address::Ip(IpAddr::V4(ip)) => push_ipv4(ip.octets(), out),
            Address::Ip(ip) => {
                let _ = write!(out, "{ip}");
            }
            Address::Host(h) => out.push_str(h),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Written by hand: the formatter's IPv4 path costs more than the rest of a backend's
            // line in a large render.
            Address::Ip(IpAddr::V4(ip)) if f.width().is_none() && f.precision().is_none() => {
                let mut text = String::with_capacity(15);
                push_ipv4(ip.octets(), &mut text);
                f.write_str(&text)
            }
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Host(h) => f.write_str(h),
        }
    }
}

/// Appends a dotted quad, as `Ipv4Addr`'s `Display` writes it.
fn push_ipv4(octets: [u8; 4], out: &mut String) {
    let [a, b, c, d] = octets;
    out.push_str(octet_text(a));
    out.push('.');
    out.push_str(octet_text(b));
    out.push('.');
    out.push_str(octet_text(c));
    out.push('.');
    out.push_str(octet_text(d));
}

/// The decimal text of every octet, 0 to 255, one after another: an address is written as four
/// pieces of it, with no formatting and no UTF-8 check of digits made at run time (per backend
/// in a large render, those were a fifth of a change's instructions).
const OCTET_TEXT: &str = concat!(
    "01234567891011121314151617181920212223242526272829303132333435363738394041424344",
    "45464748495051525354555657585960616263646566676869707172737475767778798081828384",
    "85868788899091929394959697989910010110210310410510610710810911011111211311411511",
    "61171181191201211221231241251261271281291301311321331341351361371381391401411421",
    "43144145146147148149150151152153154155156157158159160161162163164165166167168169",
    "17017117217317417517617717817918018118218318418518618718818919019119219319419519",
    "61971981992002012022032042052062072082092102112122132142152162172182192202212222",
    "23224225226227228229230231232233234235236237238239240241242243244245246247248249",
    "250251252253254255",
);

/// The decimal text of `octet`: its piece of [`OCTET_TEXT`].
fn octet_text(octet: u8) -> &'static str {
    let o = usize::from(octet);
    let (start, len) = match octet {
        0..=9 => (o, 1),
        10..=99 => (10 + (o - 10) * 2, 2),
        _ => (190 + (o - 100) * 3, 3),
    };
    OCTET_TEXT.get(start..start + len).unwrap_or_default()
}

/// Appends `a.b.c.d:port`: the endpoint of most backends, once per backend in a large render.
fn push_ipv4_endpoint(octets: [u8; 4], port: u16, out: &mut String) {
    push_ipv4(octets, out);
    out.push(':');
    push_decimal(u32::from(port), out);
}

/// Writes `n` in decimal at the end of `digits`; where it starts.
fn decimal_digits(n: u32, digits: &mut [u8; 10]) -> usize {
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        // `rest % 10` is below 10: the sum stays an ASCII digit.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at
}

/// Appends `n` in decimal, without the formatting machinery of `write!` (per backend in a large
/// render, that was a tenth of a change's instructions).
pub fn push_decimal(n: u32, out: &mut String) {
    let mut digits = [0u8; 10];
    let at = decimal_digits(n, &mut digits);
    push_ascii(digits.get(at..).unwrap_or_default(), out);
}

/// Appends ASCII bytes (digits, dots) in one copy.
fn push_ascii(bytes: &[u8], out: &mut String) {
    // Callers write only ASCII, so the check always passes (and measured cheaper than pushing
    // each byte as a char).
    out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty string.
    #[error("address is empty")]
    Empty,
    /// Neither an IP address nor a valid host name.
    #[error("`{0}` is not an IP address or a valid host name")]
    Invalid(String),
    /// The port part is not a number from 1 to 65535.
    #[error("`{0}` is not a port number (1-65535)")]
    BadPort(String),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        if is_host_name(s) {
            return Ok(Address::Host(s.to_ascii_lowercase()));
        }
        Err(AddressError::Invalid(s.to_string()))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// RFC 1123 labels: letters, digits and inner hyphens, 1-63 characters each, 253 in all. A name made
// only of digits and dots is a malformed IPv4 address, not a host.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels_ok = s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Parses `ADDRESS`, `ADDRESS:PORT`, `[IPV6]:PORT` or a bare IPv6 address.
pub fn parse_target(s: &str) -> Result<(Address, Option<u16>), AddressError> {
    // A target that starts and ends with a digit has nothing to trim: the Unicode-aware trim
    // is a good part of the cost of parsing `10.0.0.1:80`.
    let bytes = s.as_bytes();
    let digit_ends = bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit);
    let s = if digit_ends { s } else { s.trim() };
    match plain_ipv4_target(s.as_bytes()) {
        Some((ip, port)) => Ok((Address::Ip(IpAddr::V4(ip)), port)),
        None => parse_target_general(s),
    }
}

/// [`parse_target`] of a trimmed string, for every spelling.
fn parse_target_general(s: &str) -> Result<(Address, Option<u16>), AddressError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::Invalid(s.to_string()))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| AddressError::Invalid(s.to_string()))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| AddressError::Invalid(s.to_string()))?,
            )?),
        };
        return Ok((Address::Ip(ip), port));
    }
    // More than one colon and no brackets: a bare IPv6 address, no port.
    if s.bytes().filter(|&b| b == b':').nth(1).is_some() {
        return Ok((s.parse()?, None));
    }
    match s.split_once(':') {
        Some((addr, port)) => Ok((addr.parse()?, Some(parse_port(port)?))),
        None => Ok((s.parse()?, None)),
    }
}

/// The common `a.b.c.d` or `a.b.c.d:port` read in one pass, for lists of 100,000 targets. Only
/// the plainest spelling is taken (no leading zeros, port 1-65535); anything else is `None` and
/// goes through the general parser, so the two can never disagree on what they both accept.
fn plain_ipv4_target(s: &[u8]) -> Option<(std::net::Ipv4Addr, Option<u16>)> {
    // One walk over the bytes: `part` 0-3 are the octets, 4 the port.
    let mut octets = [0u8; 4];
    let (mut part, mut value, mut digits) = (0usize, 0u32, 0u32);
    for &b in s {
        match b {
            b'0'..=b'9' => {
                // A second digit after a leading 0, or more digits than any part can have.
                if (digits > 0 && value == 0) || digits == 5 {
                    return None;
                }
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
            }
            b'.' | b':' if digits > 0 && value <= 255 && (part < 3) == (b == b'.') => {
                *octets.get_mut(part)? = u8::try_from(value).ok()?;
                (part, value, digits) = (part + 1, 0, 0);
            }
            _ => return None,
        }
    }
    let port = match part {
        3 if digits > 0 => {
            *octets.get_mut(3)? = u8::try_from(value).ok()?;
            None
        }
        4 if digits > 0 && value > 0 => Some(u16::try_from(value).ok()?),
        _ => return None,
    };
    Some((std::net::Ipv4Addr::from(octets), port))
}

/// Parses a port number from 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, AddressError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(AddressError::BadPort(s.to_string())),
    }
}

/// Why a [`Backend`] must not reach a rendered file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBackend {
    /// The address or the port is not usable.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The weight is outside 1 to [`MAX_WEIGHT`].
    #[error("weight {0} is out of range (1-{MAX_WEIGHT})")]
    Weight(u32),
}

/// A backend set, shared between a locator's kept answer, the engine's last good, applied and
/// rendered sets and the status: a service's backends are held once however many of those name
/// them.
pub type BackendSet = Arc<Vec<Backend>>;

/// One backend: where to send traffic, how much, and what the locator knew about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// IP address or host name.
    pub address: Address,
    /// TCP port.
    pub port: u16,
    /// Relative weight, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
    /// Locator-specific identity (an instance id, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CompactString>,
    /// Human name (a Name tag, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CompactString>,
    /// Availability zone or similar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<CompactString>,
    /// Free-form labels; rendered only through escaping.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub tags: Labels,
    /// What the locator knows besides tags (instance type, VPC, subnet, state, group name).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub meta: Labels,
    /// Which locator found it (for `elasticd locate`).
    /// Shared: every backend of one answer points at the same text, so 10,000 backends don't
    /// carry 10,000 copies of the locator's name.
    #[serde(default = "empty_source", skip_serializing_if = "str::is_empty")]
    pub source: Arc<str>,
    /// The health checks' verdict, for services with `health:` (locators never set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// The empty [`Backend::source`], allocated once for the process.
pub fn empty_source() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// A [`Backend::source`] for `name`: the same allocation as the previous call on this thread when
/// the name is unchanged, which is the case for every backend of one answer (and of the next
/// answer of the same locator), so a locator can ask per backend without paying per backend.
pub fn shared_source(name: &str) -> Arc<str> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some(s) if **s == *name => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(name);
                *last = Some(s.clone());
                s
            }
        }
    })
}

impl Backend {
    /// A backend with weight 1 and no metadata.
    pub fn new(address: Address, port: u16) -> Self {
        Backend {
            address,
            port,
            weight: 1,
            id: None,
            name: None,
            zone: None,
            tags: Labels::new(),
            meta: Labels::new(),
            source: empty_source(),
            healthy: None,
        }
    }

    /// `address:port`, with IPv6 addresses in brackets.
    pub fn endpoint(&self) -> String {
        let mut out = String::with_capacity(22);
        self.write_endpoint(&mut out);
        out
    }

    /// Appends [`Backend::endpoint`] to `out`.
    pub fn write_endpoint(&self, out: &mut String) {
        if let Address::Ip(IpAddr::V4(ip)) = &self.address {
            push_ipv4_endpoint(ip.octets(), self.port, out);
            return;
        }
        let v6 = self.address.is_ipv6();
        if v6 {
            out.push('[');
        }
        self.address.write_to(out);
        if v6 {
            out.push(']');
        }
        out.push(':');
        push_decimal(u32::from(self.port), out);
    }

    /// Checks what every path into a backend must hold, whoever built it (a locator, a plugin's
    /// JSON, a state file): a port from 1 to 65535, a weight from 1 to [`MAX_WEIGHT`], and a host
    /// name that [`Address`]'s parser would accept.
    pub fn validate(&self) -> Result<(), InvalidBackend> {
        if let Address::Host(host) = &self.address
            && (!is_host_name(host) || host.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(AddressError::Invalid(host.clone()).into());
        }
        if self.port == 0 {
            return Err(AddressError::BadPort(self.port.to_string()).into());
        }
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            return Err(InvalidBackend::Weight(self.weight));
        }
        Ok(())
    }

    /// The sort and identity key: address, then port.
    pub fn key(&self) -> (&Address, u16) {
        (&self.address, self.port)
    }

    /// `self.key().cmp(&other.key())`, with IPv4 addresses compared as numbers in line: sorting,
    /// checking and diffing a set of 10,000 compare keys some 60,000 times per change.
    #[inline]
    pub fn cmp_key(&self, other: &Backend) -> Ordering {
        match (&self.address, &other.address) {
            // Ipv4Addr orders by its octets, which is the order of their big-endian number.
            (Address::Ip(IpAddr::V4(a)), Address::Ip(IpAddr::V4(b))) => {
                (a.to_bits(), self.port).cmp(&(b.to_bits(), other.port))
            }
            _ => self.key().cmp(&other.key()),
        }
    }
}

/// Sorts by address then port and drops repeats of the same endpoint (the first one wins).
pub fn normalize(backends: &mut Vec<Backend>) {
    // A sorted list (most generated documents) skips the sort and its scratch buffer, half the
    // list's size.
    if !backends.is_sorted_by(|a, b| a.cmp_key(b).is_le()) {
        backends.sort_by(Backend::cmp_key);
    }
    backends.dedup_by(|b, a| a.cmp_key(b).is_eq());
}

/// What changed from `old` to `new` by endpoint: the backends only in `new` (added) and those
/// only in `old` (removed), each in its set's order.
pub fn diff<'a>(old: &'a [Backend], new: &'a [Backend]) -> (Vec<&'a Backend>, Vec<&'a Backend>) {
    let sorted = |set: &[Backend]| set.windows(2).all(|w| w[0].cmp_key(&w[1]).is_lt());
    if sorted(old) && sorted(new) {
        return diff_sorted(old, new);
    }
    let old_keys: HashSet<_> = old.iter().map(Backend::key).collect();
    let new_keys: HashSet<_> = new.iter().map(Backend::key).collect();
    let added = new
        .iter()
        .filter(|b| !old_keys.contains(&b.key()))
        .collect();
    let removed = old
        .iter()
        .filter(|b| !new_keys.contains(&b.key()))
        .collect();
    (added, removed)
}

/// [`diff`] of two sets sorted by key without repeats (as [`normalize`] leaves them): one walk
/// through both, no hashing.
fn diff_sorted<'a>(old: &'a [Backend], new: &'a [Backend]) -> (Vec<&'a Backend>, Vec<&'a Backend>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.cmp_key(b) {
                Ordering::Less => removed.extend(o.next()),
                Ordering::Greater => added.extend(n.next()),
                Ordering::Equal => {
                    o.next();
                    n.next();
                }
            },
            (Some(_), None) => removed.extend(o.by_ref()),
            (None, Some(_)) => added.extend(n.by_ref()),
            (None, None) => break,
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ipv4_fast_path_agrees_with_the_general_parser() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"0123456789.:0.1:";
        let mut taken = 0;
        for n in 0..200_000 {
            let s: String = if n % 2 == 0 {
                let len = rng.usize(0..24);
                (0..len)
                    .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
                    .collect()
            } else {
                let octet = |rng: &mut fastrand::Rng| rng.u32(0..300).to_string();
                let mut s = format!(
                    "{}.{}.{}.{}",
                    octet(&mut rng),
                    octet(&mut rng),
                    octet(&mut rng),
                    octet(&mut rng)
                );
                if rng.bool() {
                    s.push_str(&format!(":{}", rng.u32(0..70_000)));
                }
                s
            };
            if let Some((ip, port)) = plain_ipv4_target(s.as_bytes()) {
                taken += 1;
                assert_eq!(
                    parse_target_general(&s),
                    Ok((Address::Ip(IpAddr::V4(ip)), port)),
                    "{s}"
                );
            }
        }
        assert!(taken > 10_000, "{taken}");
        for s in [
            "127.0.0.1",
            "10.1.2.3:8080",
            "0.0.0.0:1",
            "255.255.255.255:65535",
        ] {
            assert!(plain_ipv4_target(s.as_bytes()).is_some(), "{s}");
        }
        for s in [
            "01.0.0.1",
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4:",
            "256.0.0.1",
        ] {
            assert!(plain_ipv4_target(s.as_bytes()).is_none(), "{s}");
        }
    }

    use super::*;

    #[test]
    fn targets_parse_in_every_form() {
        let ip = |s: &str| Address::Ip(s.parse().unwrap());
        assert_eq!(
            parse_target("10.0.0.1:8080").unwrap(),
            (ip("10.0.0.1"), Some(8080))
        );
        assert_eq!(parse_target("10.0.0.1").unwrap(), (ip("10.0.0.1"), None));
        assert_eq!(parse_target("[::1]:80").unwrap(), (ip("::1"), Some(80)));
        assert_eq!(parse_target("fe80::1").unwrap(), (ip("fe80::1"), None));
        assert_eq!(
            parse_target("Web-1.internal:443").unwrap(),
            (Address::Host("web-1.internal".into()), Some(443))
        );
    }

    #[test]
    fn hostile_targets_are_rejected() {
        for bad in [
            "",
            "10.0.0.1;",
            "a b",
            "host}",
            "x:0",
            "x:70000",
            "x:http",
            "-bad.example",
            "1.2.3.999",
            "[::1",
            "web\n.example",
            "\"quoted\"",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_octet_and_address_prints_as_the_standard_library_does() {
        for o in 0..=255u8 {
            assert_eq!(octet_text(o), o.to_string());
            let ip = std::net::Ipv4Addr::new(o, 255 - o, o / 3, o % 7);
            let mut text = String::new();
            push_ipv4_endpoint(ip.octets(), u16::from(o) * 257, &mut text);
            assert_eq!(text, format!("{ip}:{}", u16::from(o) * 257));
        }
    }

    #[test]
    fn cmp_key_agrees_with_the_key_order() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut pick = || {
            let address = match rng.u8(0..4) {
                // Few distinct values, so that equal addresses and ports come up often.
                0 | 1 => Address::Ip(IpAddr::V4([10, 0, rng.u8(0..3), rng.u8(0..3)].into())),
                2 => Address::Ip(IpAddr::V6([0, 0, 0, 0, 0, 0, 0, rng.u16(0..3)].into())),
                _ => Address::Host(format!("h{}.example", rng.u8(0..3))),
            };
            Backend::new(address, rng.u16(1..4))
        };
        for _ in 0..20_000 {
            let (a, b) = (pick(), pick());
            assert_eq!(a.cmp_key(&b), a.key().cmp(&b.key()), "{a:?} against {b:?}");
        }
    }

    #[test]
    fn normalize_sorts_numerically_and_dedups() {
        let b = |s: &str| {
            let (a, p) = parse_target(s).unwrap();
            Backend::new(a, p.unwrap())
        };
        let mut v = vec![
            b("host.example:1"),
            b("10.0.0.10:80"),
            b("10.0.0.9:81"),
            b("10.0.0.9:80"),
            b("[::1]:80"),
            b("10.0.0.9:80"),
        ];
        normalize(&mut v);
        let got: Vec<String> = v.iter().map(Backend::endpoint).collect();
        assert_eq!(
            got,
            [
                "10.0.0.9:80",
                "10.0.0.9:81",
                "10.0.0.10:80",
                "[::1]:80",
                "host.example:1"
            ]
        );
    }

    #[test]
    fn addresses_and_endpoints_print_as_the_standard_library_does() {
        let ips: [IpAddr; 8] = [
            "0.0.0.0".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "1.20.100.9".parse().unwrap(),
            "100.10.1.0".parse().unwrap(),
            "10.200.9.255".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "::1".parse().unwrap(),
            "fe80::1:2".parse().unwrap(),
        ];
        for ip in ips {
            for port in [0, 1, 9, 10, 80, 100, 999, 1000, 8080, 10000, 65535] {
                let b = Backend::new(Address::Ip(ip), port);
                assert_eq!(b.address.to_string(), ip.to_string());
                let want = std::net::SocketAddr::new(ip, port).to_string();
                assert_eq!(b.endpoint(), want);
            }
        }
        let host = Backend::new(Address::Host("web-1.example".into()), 443);
        assert_eq!(host.endpoint(), "web-1.example:443");
    }

    #[test]
    fn diff_of_sorted_sets_matches_the_general_diff() {
        let b = |s: &str| {
            let (a, p) = parse_target(s).unwrap();
            Backend::new(a, p.unwrap())
        };
        let mut old: Vec<Backend> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.9:81", "[::1]:80"]
            .into_iter()
            .map(b)
            .collect();
        let mut new: Vec<Backend> = ["10.0.0.2:80", "10.0.0.3:80", "[::1]:80", "web.example:1"]
            .into_iter()
            .map(b)
            .collect();
        normalize(&mut old);
        normalize(&mut new);
        let ends = |v: Vec<&Backend>| v.into_iter().map(Backend::endpoint).collect::<Vec<_>>();
        let (added, removed) = diff(&old, &new);
        assert_eq!(ends(added), ["10.0.0.3:80", "web.example:1"]);
        assert_eq!(ends(removed), ["10.0.0.1:80", "10.0.0.9:81"]);
        // Unsorted input takes the general path and gives the same sets.
        new.reverse();
        let (added, removed) = diff(&old, &new);
        assert_eq!(ends(added), ["web.example:1", "10.0.0.3:80"]);
        assert_eq!(ends(removed), ["10.0.0.1:80", "10.0.0.9:81"]);
        let counts = |o: &[Backend], n: &[Backend]| {
            let (a, r) = diff(o, n);
            (a.len(), r.len())
        };
        assert_eq!(counts(&old, &[]), (0, 4));
        assert_eq!(counts(&[], &old), (4, 0));
        assert_eq!(counts(&old, &old), (0, 0));
    }

    #[test]
    fn validate_rejects_what_no_parser_would_produce() {
        let ok = Backend::new(Address::Ip("10.0.0.1".parse().unwrap()), 80);
        assert_eq!(ok.validate(), Ok(()));
        let port0 = Backend::new(ok.address.clone(), 0);
        assert_eq!(
            port0.validate().unwrap_err().to_string(),
            "`0` is not a port number (1-65535)"
        );
        for weight in [0, MAX_WEIGHT + 1, 4_000_000_000] {
            let b = Backend {
                weight,
                ..ok.clone()
            };
            assert_eq!(b.validate(), Err(InvalidBackend::Weight(weight)));
        }
        let b = Backend {
            weight: MAX_WEIGHT,
            ..ok.clone()
        };
        assert_eq!(b.validate(), Ok(()));
        for host in [
            "web;evil",
            "",
            "a b",
            "-x.example",
            "Web.example",
            "1.2.3.4",
        ] {
            let b = Backend::new(Address::Host(host.into()), 80);
            assert!(b.validate().is_err(), "{host:?} passed");
        }
        let b = Backend::new(Address::Host("web-1.example".into()), 65535);
        assert_eq!(b.validate(), Ok(()));
    }

    #[test]
    fn validate_catches_a_tampered_state_file_entry() {
        // What a state file deserializes: the types let port 0 and any u32 weight through.
        let b: Backend =
            serde_json::from_str(r#"{"address": "127.0.0.1", "port": 0, "weight": 1}"#).unwrap();
        assert!(b.validate().is_err());
        let b: Backend =
            serde_json::from_str(r#"{"address": "127.0.0.1", "port": 80, "weight": 4000000000}"#)
                .unwrap();
        assert_eq!(b.validate(), Err(InvalidBackend::Weight(4_000_000_000)));
    }
}
