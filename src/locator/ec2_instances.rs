//! What the `ec2` and `asg` locators share: the options for turning an EC2 instance into a
//! backend and doing so, reading DescribeInstances page by page, and the config checks both
//! make. Both locators end in the same DescribeInstances answer (by filters, or by the ids of
//! group members), so an instance becomes the same backend whichever found it.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder;
use aws_sdk_ec2::types::Instance;
use serde::Deserialize;

use super::{BackendMeta, LocateContext, LocateError, backend_from_target};
use crate::aws::AwsError;
use crate::aws::sdk::{CallCounter, Clients, api_error};
use crate::backend::{Backend, Labels, MAX_WEIGHT, parse_port};

/// Pages read before giving up on a pagination loop: a million instances.
pub const MAX_PAGES: usize = 1000;
/// The tag that scopes locators to the config's `environment`, unless set otherwise.
pub const DEFAULT_ENVIRONMENT_TAG: &str = "Environment";
/// How many skipped instances one warning names before it just counts the rest.
const NAMED_IN_WARNING: usize = 20;

/// The default `environment_tag`.
pub fn default_environment_tag() -> Option<String> {
    Some(DEFAULT_ENVIRONMENT_TAG.to_string())
}

/// The `tag:KEY` filter, with its value, that keeps a locator to the config's `environment`;
/// none without an environment or a tag, or when the filters already name that tag, since a
/// filter written out says which environment on purpose.
pub(super) fn environment_filter<'a>(
    environment: Option<&'a str>,
    tag: Option<&str>,
    filters: &BTreeMap<String, Vec<String>>,
) -> Option<(String, &'a str)> {
    let name = format!("tag:{}", tag?);
    let env = environment?;
    (!filters.contains_key(&name)).then_some((name, env))
}

/// An AWS failure as the locator's error (named by `locator`, as in the logs).
pub(super) fn aws_error(locator: &str, source: AwsError) -> LocateError {
    LocateError::Aws {
        locator: locator.to_string(),
        source: Box::new(source),
    }
}

/// Checks `states` against EC2's instance states; `None` means `running` only.
pub(super) fn ec2_states(states: Option<Vec<String>>) -> Result<Vec<String>, String> {
    api_states(
        states,
        "running",
        aws_sdk_ec2::types::InstanceStateName::values(),
        ("states", "instance", "EC2 instance state"),
    )
}

/// Checks configured states against the names an AWS API knows, in any case, and spells them
/// as the API does, since its filters and answers are case-sensitive; `None` means `default`
/// alone. `words`, for the errors: the option, what an empty list would leave out, and what a
/// state is called.
pub(super) fn api_states(
    states: Option<Vec<String>>,
    default: &str,
    known: &[&str],
    words: (&str, &str, &str),
) -> Result<Vec<String>, String> {
    let (option, unit, kind) = words;
    let Some(states) = states else {
        return Ok(vec![default.to_string()]);
    };
    if states.is_empty() {
        return Err(format!("`{option}` is empty: no {unit} would ever be used"));
    }
    states
        .into_iter()
        .map(|s| {
            known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&s))
                .map(|k| k.to_string())
                .ok_or_else(|| format!("`{s}` is not an {kind}; states are: {}", known.join(", ")))
        })
        .collect()
}

/// Rejects an empty tag key (`what` names the option).
pub(super) fn non_empty_tag(tag: Option<String>, what: &str) -> Result<Option<String>, String> {
    match tag {
        Some(t) if t.is_empty() => Err(format!("`{what}` must not be empty")),
        other => Ok(other),
    }
}

/// One value or a list of values (a filter's `Values`); numbers are taken as their text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StringList, E> {
                Ok(StringList(vec![s.to_string()]))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<StringList, E> {
                Ok(StringList(vec![n.to_string()]))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<StringList, E> {
                Ok(StringList(vec![n.to_string()]))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<StringList, E> {
                Ok(StringList(vec![b.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<ScalarText>()? {
                    out.push(v.0);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar read as text (`8080` and `"8080"` alike).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ScalarText)
    }
}

/// Which of an instance's addresses the frontend should use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddressSource {
    /// The primary private IPv4 address.
    #[default]
    PrivateIp,
    /// The public IPv4 address (none for instances in private subnets).
    PublicIp,
    /// The private DNS name.
    PrivateDns,
    /// The public DNS name.
    PublicDns,
    /// The first IPv6 address.
    Ipv6,
    /// The value of a tag (an address, optionally with `:PORT`).
    Tag(String),
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressSource::PrivateIp => f.write_str("private IP address"),
            AddressSource::PublicIp => f.write_str("public IP address"),
            AddressSource::PrivateDns => f.write_str("private DNS name"),
            AddressSource::PublicDns => f.write_str("public DNS name"),
            AddressSource::Ipv6 => f.write_str("IPv6 address"),
            AddressSource::Tag(key) => write!(f, "tag `{key}`"),
        }
    }
}

impl<'de> Deserialize<'de> for AddressSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "private_ip" => Ok(AddressSource::PrivateIp),
            "public_ip" => Ok(AddressSource::PublicIp),
            "private_dns" => Ok(AddressSource::PrivateDns),
            "public_dns" => Ok(AddressSource::PublicDns),
            "ipv6" => Ok(AddressSource::Ipv6),
            other => match other.strip_prefix("tag:") {
                Some(key) if !key.is_empty() => Ok(AddressSource::Tag(key.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "`{other}` is not an address source; use private_ip, public_ip, \
                     private_dns, public_dns, ipv6 or tag:KEY"
                ))),
            },
        }
    }
}

/// How a backend is made from an instance (shared by `ec2` and `asg`).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceOptions {
    /// Which address.
    pub address: AddressSource,
    /// Port for every instance (else the service's).
    pub port: Option<u16>,
    /// Tag holding the port; instances without it use `port`.
    pub port_tag: Option<String>,
    /// Tag holding the weight (1-100); instances without it weigh 1.
    pub weight_tag: Option<String>,
}

impl InstanceOptions {
    pub(super) fn new(
        address: AddressSource,
        port: Option<u16>,
        port_tag: Option<String>,
        weight_tag: Option<String>,
    ) -> Result<Self, String> {
        if port == Some(0) {
            return Err("port 0 is not a usable port".into());
        }
        Ok(InstanceOptions {
            address,
            port,
            port_tag: non_empty_tag(port_tag, "port_tag")?,
            weight_tag: non_empty_tag(weight_tag, "weight_tag")?,
        })
    }
}

/// Instances left out of one answer, and odd values worked around, for one warning each.
#[derive(Debug, Default)]
pub(super) struct Report {
    skipped: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    /// Logs what was skipped or worked around, naming the instances.
    pub(super) fn log(&self, locator: &str) {
        if !self.skipped.is_empty() {
            tracing::warn!(
                "{locator}: skipped {} instance{}: {}",
                self.skipped.len(),
                if self.skipped.len() == 1 { "" } else { "s" },
                name_some(&self.skipped)
            );
        }
        if !self.notes.is_empty() {
            tracing::warn!("{locator}: {}", name_some(&self.notes));
        }
    }
}

// Tag values end up in these lines: control characters become `?`, so that a tag can't forge
// log lines.
fn name_some(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(NAMED_IN_WARNING)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED_IN_WARNING {
        text.push_str(&format!("; and {} more", items.len() - NAMED_IN_WARNING));
    }
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `i-0abc (web-1)`: the instance id and, when it has one, its Name tag.
fn who(instance: &Instance) -> String {
    let id = instance.instance_id().unwrap_or("(no instance id)");
    match tag(instance, "Name") {
        Some(name) => format!("{id} ({name})"),
        None => id.to_string(),
    }
}

fn tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn instance_address<'a>(instance: &'a Instance, source: &AddressSource) -> Option<&'a str> {
    match source {
        AddressSource::PrivateIp => non_empty(instance.private_ip_address()),
        AddressSource::PublicIp => non_empty(instance.public_ip_address()),
        AddressSource::PrivateDns => non_empty(instance.private_dns_name()),
        AddressSource::PublicDns => non_empty(instance.public_dns_name()),
        AddressSource::Ipv6 => non_empty(instance.ipv6_address()).or_else(|| {
            // Older responses carry IPv6 addresses only on the network interfaces; the primary
            // interface (device index 0) comes first.
            let mut nics: Vec<_> = instance.network_interfaces().iter().collect();
            nics.sort_by_key(|n| n.attachment().and_then(|a| a.device_index()));
            nics.iter()
                .flat_map(|n| n.ipv6_addresses())
                .find_map(|a| non_empty(a.ipv6_address()))
        }),
        AddressSource::Tag(key) => non_empty(tag(instance, key)),
    }
}

/// The instance's state name, like `running`.
fn state_name(instance: &Instance) -> Option<&str> {
    instance.state().and_then(|s| s.name()).map(|n| n.as_str())
}

/// Makes a backend from an instance, or records in `report` why it was left out. `extra` is
/// metadata the caller adds (the `asg` locator's group name).
pub(super) fn instance_backend(
    instance: &Instance,
    opts: &InstanceOptions,
    extra: &[(&str, &str)],
    locator: &str,
    ctx: &LocateContext,
    report: &mut Report,
) -> Result<Option<Backend>, LocateError> {
    let Some(address) = instance_address(instance, &opts.address) else {
        report
            .skipped
            .push(format!("{}: no {}", who(instance), opts.address));
        return Ok(None);
    };
    let mut port = opts.port;
    if let Some(key) = &opts.port_tag
        && let Some(value) = tag(instance, key)
    {
        match parse_port(value.trim()) {
            Ok(p) => port = Some(p),
            Err(_) => {
                report.skipped.push(format!(
                    "{}: tag `{key}` = `{value}` is not a port number",
                    who(instance)
                ));
                return Ok(None);
            }
        }
    }
    let mut weight = None;
    if let Some(key) = &opts.weight_tag
        && let Some(value) = tag(instance, key)
    {
        match value.trim().parse::<u32>() {
            Ok(w) if (1..=MAX_WEIGHT).contains(&w) => weight = Some(w),
            _ => report.notes.push(format!(
                "{}: tag `{key}` = `{value}` is not a weight (1-{MAX_WEIGHT}); using 1",
                who(instance)
            )),
        }
    }
    let tags: Labels = instance
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect();
    let meta = BackendMeta {
        weight,
        id: instance.instance_id().map(Into::into),
        name: tags.get("Name").map(Into::into),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(Into::into),
        tags,
        meta: Labels::new(),
    };
    let mut backend = match backend_from_target(address, port, meta, locator, ctx) {
        Ok(b) => b,
        // No port anywhere is a config problem, not an instance's: fail like other locators do,
        // unless the port was meant to come from a tag this instance lacks.
        Err(e @ LocateError::NoPort { .. }) if opts.port_tag.is_none() => return Err(e),
        Err(LocateError::NoPort { .. }) => {
            report.skipped.push(format!(
                "{}: no tag `{}` and no fallback `port`",
                who(instance),
                opts.port_tag.as_deref().unwrap_or_default()
            ));
            return Ok(None);
        }
        Err(LocateError::BadBackend { reason, .. }) => {
            report.skipped.push(format!("{}: {reason}", who(instance)));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let fields = [
        (
            "instance_type",
            instance.instance_type().map(|t| t.as_str()),
        ),
        ("vpc_id", instance.vpc_id()),
        ("subnet_id", instance.subnet_id()),
        ("state", state_name(instance)),
        ("image_id", instance.image_id()),
        ("private_ip", instance.private_ip_address()),
        ("public_ip", instance.public_ip_address()),
        ("private_dns", instance.private_dns_name()),
        ("public_dns", instance.public_dns_name()),
    ];
    // Built in one go: the set is one allocation, which inserting key by key would redo.
    backend.meta = fields
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (*k, Some(*v))))
        .filter_map(|(key, value)| Some((key, non_empty(value)?)))
        .collect();
    Ok(Some(backend))
}

/// Backends from a list of instances: wrong states and unusable instances left out.
pub(super) fn backends_from(
    instances: &[(&Instance, Vec<(&str, &str)>)],
    states: &[String],
    opts: &InstanceOptions,
    locator: &str,
    ctx: &LocateContext,
    report: &mut Report,
) -> Result<Vec<Backend>, LocateError> {
    let mut backends = Vec::with_capacity(instances.len());
    for (instance, extra) in instances {
        // The API filters by state too; checking again costs nothing and covers the `asg`
        // locator, which asks for instances by id.
        if !state_name(instance).is_some_and(|s| states.iter().any(|w| w == s)) {
            continue;
        }
        if let Some(b) = instance_backend(instance, opts, extra, locator, ctx, report)? {
            backends.push(b);
        }
    }
    Ok(backends)
}

/// Sends one DescribeInstances request and follows its page tokens, handing each page's
/// instances to `each` before asking for the next, so that only one page of SDK structures is
/// held at a time. `pages` counts the pages of every request in a pass, against [`MAX_PAGES`].
pub(super) async fn instance_pages(
    clients: &Clients,
    request: DescribeInstancesFluentBuilder,
    calls: &CallCounter,
    pages: &mut usize,
    locator: &str,
    mut each: impl FnMut(Vec<&Instance>) -> Result<(), LocateError>,
) -> Result<(), LocateError> {
    let mut token: Option<String> = None;
    loop {
        if *pages >= MAX_PAGES {
            return Err(aws_error(
                locator,
                AwsError::Pagination {
                    operation: "DescribeInstances",
                    region: clients.region.clone(),
                    pages: *pages,
                },
            ));
        }
        let page = request
            .clone()
            .set_next_token(token.take())
            .customize()
            .interceptor(calls.clone())
            .send()
            .await
            .map_err(|e| aws_error(locator, api_error("DescribeInstances", &clients.region, e)))?;
        *pages += 1;
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        each(
            page.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .collect(),
        )?;
        if token.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{InstanceState, InstanceStateName, Placement, Tag};

    fn options(
        address: AddressSource,
        port: Option<u16>,
        port_tag: Option<&str>,
        weight_tag: Option<&str>,
    ) -> InstanceOptions {
        InstanceOptions::new(
            address,
            port,
            port_tag.map(str::to_string),
            weight_tag.map(str::to_string),
        )
        .unwrap()
    }

    fn ctx(port: Option<u16>) -> LocateContext {
        LocateContext {
            service: "web".into(),
            environment: Some("production".into()),
            default_port: port,
            base_dir: ".".into(),
        }
    }

    fn instance(id: &str, tags: &[(&str, &str)]) -> Instance {
        let mut b = Instance::builder()
            .instance_id(id)
            .private_ip_address("10.1.2.3")
            .private_dns_name("ip-10-1-2-3.ec2.internal")
            .public_dns_name("")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .vpc_id("vpc-1")
            .subnet_id("subnet-1")
            .placement(Placement::builder().availability_zone("eu-west-1a").build())
            .state(
                InstanceState::builder()
                    .name(InstanceStateName::Running)
                    .build(),
            );
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn instances_become_backends_with_metadata() {
        let opts = options(
            AddressSource::PrivateIp,
            Some(80),
            Some("Port"),
            Some("Weight"),
        );
        let mut report = Report::default();
        let i = instance(
            "i-1",
            &[("Name", "web-1"), ("Port", "8081"), ("Weight", "7")],
        );
        let b = instance_backend(
            &i,
            &opts,
            &[("asg_name", "web")],
            "ec2 x",
            &ctx(None),
            &mut report,
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.endpoint(), "10.1.2.3:8081");
        assert_eq!(b.weight, 7);
        assert_eq!(b.id.as_deref(), Some("i-1"));
        assert_eq!(b.name.as_deref(), Some("web-1"));
        assert_eq!(b.zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(b.tags.get("Port"), Some("8081"));
        assert_eq!(b.meta.get("instance_type"), Some("t3.micro"));
        assert_eq!(b.meta.get("vpc_id"), Some("vpc-1"));
        assert_eq!(b.meta.get("subnet_id"), Some("subnet-1"));
        assert_eq!(b.meta.get("state"), Some("running"));
        assert_eq!(b.meta.get("asg_name"), Some("web"));
        assert!(
            !b.meta.contains_key("public_dns"),
            "empty values are left out"
        );
        // Without the tags: the fallback port and weight 1.
        let b = instance_backend(
            &instance("i-2", &[]),
            &opts,
            &[],
            "ec2 x",
            &ctx(None),
            &mut report,
        )
        .unwrap()
        .unwrap();
        assert_eq!((b.port, b.weight), (80, 1));
        assert!(report.skipped.is_empty() && report.notes.is_empty());
    }

    #[test]
    fn unusable_instances_are_skipped_and_named() {
        let public = options(AddressSource::PublicIp, None, None, None);
        let mut report = Report::default();
        let got = instance_backend(
            &instance("i-9", &[("Name", "db-1")]),
            &public,
            &[],
            "ec2 x",
            &ctx(Some(80)),
            &mut report,
        )
        .unwrap();
        assert!(got.is_none());
        assert_eq!(report.skipped, ["i-9 (db-1): no public IP address"]);

        let tagged = options(
            AddressSource::Tag("addr".into()),
            None,
            Some("Port"),
            Some("W"),
        );
        let mut report = Report::default();
        for i in [
            instance("i-a", &[("addr", "10.0.0.1;evil")]),
            instance("i-b", &[("addr", "10.0.0.2"), ("Port", "http")]),
            instance("i-c", &[("addr", "10.0.0.3")]),
            instance("i-d", &[("addr", "10.0.0.4"), ("Port", "81"), ("W", "0")]),
        ] {
            let _ = instance_backend(&i, &tagged, &[], "ec2 x", &ctx(None), &mut report).unwrap();
        }
        assert_eq!(report.skipped.len(), 3, "{report:?}");
        assert!(report.skipped[0].starts_with("i-a: "), "{report:?}");
        assert!(
            report.skipped[1].contains("`http` is not a port"),
            "{report:?}"
        );
        assert!(report.skipped[2].contains("no tag `Port`"), "{report:?}");
        assert!(report.notes[0].contains("i-d: tag `W` = `0`"), "{report:?}");
    }

    #[test]
    fn no_port_anywhere_fails_the_locator() {
        let opts = options(AddressSource::PrivateIp, None, None, None);
        let err = instance_backend(
            &instance("i-1", &[]),
            &opts,
            &[],
            "ec2 x",
            &ctx(None),
            &mut Report::default(),
        )
        .unwrap_err();
        assert!(matches!(err, LocateError::NoPort { .. }), "{err}");
    }

    #[test]
    fn warnings_name_twenty_then_count() {
        let items: Vec<String> = (0..25).map(|i| format!("i-{i}")).collect();
        let text = name_some(&items);
        assert!(text.contains("i-19") && !text.contains("i-20"), "{text}");
        assert!(text.ends_with("and 5 more"), "{text}");
        let forged = name_some(&["i-1 (web\nERROR fake)".to_string()]);
        assert_eq!(forged, "i-1 (web?ERROR fake)");
    }
}
