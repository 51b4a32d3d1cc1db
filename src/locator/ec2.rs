//! The `ec2` locator: EC2 instances found by DescribeInstances filters, plus what it shares with
//! the `asg` locator (turning an instance into a backend, and the options for that).
//!
//! Only `running` instances are asked for unless `states` says otherwise, and with a top-level
//! `environment` a filter on the environment tag is added, so that one environment never sees
//! another's hosts. Every page is read, 1,000 instances per DescribeInstances call.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ec2::types::{Filter, Instance};
use serde::Deserialize;

use super::{BackendMeta, BoxFuture, LocateContext, LocateError, Locator, backend_from_target};
use crate::aws::sdk::{CallCounter, LazyClients, api_error};
use crate::aws::{AwsError, AwsSettings};
use crate::backend::{Backend, MAX_WEIGHT, parse_port};

/// Instances per DescribeInstances page (the API's maximum).
pub const PAGE_SIZE: i32 = 1000;
/// Pages read before giving up on a pagination loop: a million instances.
pub const MAX_PAGES: usize = 1000;
/// The tag that scopes locators to the config's `environment`, unless set otherwise.
pub const DEFAULT_ENVIRONMENT_TAG: &str = "Environment";
/// How many skipped instances one warning names before it just counts the rest.
const NAMED_IN_WARNING: usize = 20;

/// `ec2: { filters: {...}, address: private_ip, port: 8080, ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawEc2Config")]
pub struct Ec2LocatorConfig {
    /// DescribeInstances filters: name to accepted values (`*` and `?` are wildcards).
    pub filters: BTreeMap<String, Vec<String>>,
    /// Instance states to accept (default `running`).
    pub states: Vec<String>,
    /// Tag that must equal the config's `environment`; `~` turns scoping off.
    pub environment_tag: Option<String>,
    /// How each backend is made from an instance.
    pub instance: InstanceOptions,
    /// AWS settings over the top-level `aws` section.
    pub aws: AwsSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEc2Config {
    #[serde(default)]
    filters: BTreeMap<String, StringList>,
    #[serde(default)]
    states: Option<Vec<String>>,
    #[serde(default = "default_environment_tag")]
    environment_tag: Option<String>,
    #[serde(default)]
    address: AddressSource,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    port_tag: Option<String>,
    #[serde(default)]
    weight_tag: Option<String>,
    #[serde(default)]
    aws: AwsSettings,
}

/// The default `environment_tag`.
pub fn default_environment_tag() -> Option<String> {
    Some(DEFAULT_ENVIRONMENT_TAG.to_string())
}

impl TryFrom<RawEc2Config> for Ec2LocatorConfig {
    type Error = String;

    fn try_from(raw: RawEc2Config) -> Result<Self, String> {
        if raw.filters.is_empty() {
            return Err(
                "ec2: `filters` is empty, which would select every instance in the \
                 region; add one, like `filters: { \"tag:role\": [web] }`"
                    .into(),
            );
        }
        let mut filters = BTreeMap::new();
        for (name, values) in raw.filters {
            if name == "instance-state-name" {
                return Err(
                    "ec2: select instance states with `states: [...]`, not a filter".into(),
                );
            }
            if name.is_empty() || name == "tag:" {
                return Err("ec2: a filter name is empty".into());
            }
            if values.0.is_empty() {
                return Err(format!("ec2: filter `{name}` has no values"));
            }
            filters.insert(name, values.0);
        }
        Ok(Ec2LocatorConfig {
            filters,
            states: ec2_states(raw.states)?,
            environment_tag: non_empty_tag(raw.environment_tag, "environment_tag")?,
            instance: InstanceOptions::new(raw.address, raw.port, raw.port_tag, raw.weight_tag)?,
            aws: raw.aws,
        })
    }
}

/// Checks `states` against EC2's instance states; `None` means `running` only.
pub(super) fn ec2_states(states: Option<Vec<String>>) -> Result<Vec<String>, String> {
    let Some(states) = states else {
        return Ok(vec!["running".to_string()]);
    };
    if states.is_empty() {
        return Err("`states` is empty: no instance would ever be used".into());
    }
    let known = aws_sdk_ec2::types::InstanceStateName::values();
    states
        .into_iter()
        .map(|s| {
            known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&s))
                .map(|k| k.to_string())
                .ok_or_else(|| {
                    format!(
                        "`{s}` is not an EC2 instance state; states are: {}",
                        known.join(", ")
                    )
                })
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
pub(super) fn state_name(instance: &Instance) -> Option<&str> {
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
    let tags: BTreeMap<String, String> = instance
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect();
    let meta = BackendMeta {
        weight,
        id: instance.instance_id().map(str::to_string),
        name: tags.get("Name").cloned(),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        tags,
        meta: BTreeMap::new(),
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
    for (key, value) in fields
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (*k, Some(*v))))
    {
        if let Some(value) = non_empty(value) {
            backend.meta.insert(key.to_string(), value.to_string());
        }
    }
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

/// Finds running instances by filters.
pub struct Ec2Locator {
    config: Ec2LocatorConfig,
    /// Built on the first locate and kept, with their credentials, until a reload replaces
    /// this locator.
    clients: LazyClients,
}

impl super::LocatorSpec for Ec2LocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(Ec2Locator::new(self.clone()))
    }

    fn inherit_aws(&mut self, top: &AwsSettings) {
        self.aws = self.aws.over(top);
    }
}

impl Ec2Locator {
    /// A locator for one filter set.
    pub fn new(config: Ec2LocatorConfig) -> Self {
        Ec2Locator {
            config,
            clients: LazyClients::default(),
        }
    }

    /// The DescribeInstances filters for one pass: the configured ones, the states, and the
    /// environment tag unless the filters already name that tag.
    pub fn request_filters(&self, environment: Option<&str>) -> Vec<Filter> {
        let mut filters: Vec<Filter> = self
            .config
            .filters
            .iter()
            .map(|(name, values)| {
                Filter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build()
            })
            .collect();
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(self.config.states.clone()))
                .build(),
        );
        if let (Some(env), Some(key)) = (environment, &self.config.environment_tag) {
            let name = format!("tag:{key}");
            if !self.config.filters.contains_key(&name) {
                filters.push(Filter::builder().name(name).values(env).build());
            }
        }
        filters
    }
}

impl Locator for Ec2Locator {
    fn describe(&self) -> String {
        let filters: Vec<String> = self
            .config
            .filters
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect();
        format!("ec2 {}", filters.join(" "))
    }

    fn locate<'a>(
        &'a self,
        ctx: &'a LocateContext,
    ) -> BoxFuture<'a, Result<Vec<Backend>, LocateError>> {
        Box::pin(async move {
            let locator = self.describe();
            let aws_err = |source: AwsError| LocateError::Aws {
                locator: locator.clone(),
                source: Box::new(source),
            };
            let clients = self
                .clients
                .get(&self.config.aws)
                .await
                .map_err(aws_err)?;
            let filters = self.request_filters(ctx.environment.as_deref());
            let calls = CallCounter::default();
            // Each page becomes backends before the next is asked for, so that only one page
            // of SDK structures is held at a time.
            let mut backends = Vec::new();
            let mut report = Report::default();
            let mut seen = 0;
            let mut pages = 0;
            let mut token: Option<String> = None;
            loop {
                if pages >= MAX_PAGES {
                    return Err(aws_err(AwsError::Pagination {
                        operation: "DescribeInstances",
                        region: clients.region.clone(),
                        pages,
                    }));
                }
                let page = clients
                    .ec2
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token.take())
                    .customize()
                    .interceptor(calls.clone())
                    .send()
                    .await
                    .map_err(|e| aws_err(api_error("DescribeInstances", &clients.region, e)))?;
                pages += 1;
                token = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                let instances: Vec<(&Instance, Vec<(&str, &str)>)> = page
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(|i| (i, Vec::new()))
                    .collect();
                seen += instances.len();
                backends.extend(backends_from(
                    &instances,
                    &self.config.states,
                    &self.config.instance,
                    &locator,
                    ctx,
                    &mut report,
                )?);
                if token.is_none() {
                    break;
                }
            }
            report.log(&locator);
            tracing::debug!(
                locator = locator.as_str(),
                region = clients.region.as_str(),
                instances = seen,
                backends = backends.len(),
                pages,
                api_calls = calls.get(),
                "DescribeInstances done"
            );
            Ok(backends)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{InstanceState, InstanceStateName, Placement, Tag};

    fn config(yaml: &str) -> Result<Ec2LocatorConfig, String> {
        crate::yaml::parse(yaml)
            .map_err(|e| e.message)?
            .deserialize::<Ec2LocatorConfig>()
            .map_err(|e| e.message)
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
    fn config_defaults_and_checks() {
        let c = config("{filters: {'tag:role': web, vpc-id: [vpc-1, vpc-2]}}").unwrap();
        assert_eq!(c.states, ["running"]);
        assert_eq!(c.environment_tag.as_deref(), Some("Environment"));
        assert_eq!(c.instance.address, AddressSource::PrivateIp);
        assert_eq!(c.filters["vpc-id"], ["vpc-1", "vpc-2"]);
        let c = config("{filters: {'tag:role': web}, environment_tag: ~, address: 'tag:ip', states: [Running, stopped]}").unwrap();
        assert_eq!(c.environment_tag, None);
        assert_eq!(c.instance.address, AddressSource::Tag("ip".into()));
        assert_eq!(c.states, ["running", "stopped"]);
        for (bad, says) in [
            ("{filters: {}}", "every instance"),
            ("{}", "every instance"),
            (
                "{filters: {a: b}, address: public}",
                "not an address source",
            ),
            (
                "{filters: {a: b}, address: 'tag:'}",
                "not an address source",
            ),
            ("{filters: {instance-state-name: running}}", "states"),
            ("{filters: {a: []}}", "no values"),
            (
                "{filters: {a: b}, states: [asleep]}",
                "not an EC2 instance state",
            ),
            ("{filters: {a: b}, port: 0}", "port 0"),
            ("{filters: {a: b}, port_tag: ''}", "must not be empty"),
            ("{filters: {a: b}, prot: 80}", "prot"),
        ] {
            let err = config(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn filters_add_states_and_environment_scope() {
        let l = Ec2Locator::new(config("{filters: {'tag:role': web}}").unwrap());
        let f = l.request_filters(Some("production"));
        let names: Vec<_> = f.iter().map(|f| f.name().unwrap_or_default()).collect();
        assert_eq!(
            names,
            ["tag:role", "instance-state-name", "tag:Environment"]
        );
        assert_eq!(f[2].values(), ["production"]);
        assert_eq!(l.request_filters(None).len(), 2);
        // A filter on the environment tag written out wins over the automatic one.
        let l = Ec2Locator::new(
            config("{filters: {'tag:role': web, 'tag:Environment': [staging]}}").unwrap(),
        );
        let f = l.request_filters(Some("production"));
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|f| f.values() != ["production"]));
    }

    #[test]
    fn instances_become_backends_with_metadata() {
        let opts = config("{filters: {a: b}, port_tag: Port, weight_tag: Weight, port: 80}")
            .unwrap()
            .instance;
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
        assert_eq!(b.tags["Port"], "8081");
        assert_eq!(b.meta["instance_type"], "t3.micro");
        assert_eq!(b.meta["vpc_id"], "vpc-1");
        assert_eq!(b.meta["subnet_id"], "subnet-1");
        assert_eq!(b.meta["state"], "running");
        assert_eq!(b.meta["asg_name"], "web");
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
        let public = config("{filters: {a: b}, address: public_ip}")
            .unwrap()
            .instance;
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

        let tagged =
            config("{filters: {a: b}, address: 'tag:addr', port_tag: Port, weight_tag: W}")
                .unwrap()
                .instance;
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
        let opts = config("{filters: {a: b}}").unwrap().instance;
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
