//! The `ec2` locator: EC2 instances found by DescribeInstances filters. Turning an instance into
//! a backend, which the `asg` locator does too, is in [`super::ec2_instances`].
//!
//! Only `running` instances are asked for unless `states` says otherwise, and with a top-level
//! `environment` a filter on the environment tag is added, so that one environment never sees
//! another's hosts. Every page is read, 1,000 instances per DescribeInstances call.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use serde::Deserialize;

use super::ec2_instances::{
    AddressSource, InstanceOptions, Report, StringList, aws_error, backends_from,
    default_environment_tag, ec2_states, environment_filter, instance_pages, non_empty_tag,
};
use super::{LocateContext, LocateFuture, Locator};
use crate::aws::AwsSettings;
use crate::aws::sdk::{CallCounter, LazyClients};

/// Instances per DescribeInstances page (the API's maximum).
pub const PAGE_SIZE: i32 = 1000;

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
        if let Some((name, env)) = environment_filter(
            environment,
            self.config.environment_tag.as_deref(),
            &self.config.filters,
        ) {
            filters.push(Filter::builder().name(name).values(env).build());
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

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let locator = self.describe();
            let clients = self
                .clients
                .get(&self.config.aws)
                .await
                .map_err(|e| aws_error(&locator, e))?;
            let request = clients
                .ec2
                .describe_instances()
                .set_filters(Some(self.request_filters(ctx.environment.as_deref())))
                .max_results(PAGE_SIZE);
            let calls = CallCounter::default();
            let mut backends = Vec::new();
            let mut report = Report::default();
            let mut seen = 0;
            let mut pages = 0;
            instance_pages(
                &clients,
                request,
                &calls,
                &mut pages,
                &locator,
                |instances| {
                    seen += instances.len();
                    let instances: Vec<_> =
                        instances.into_iter().map(|i| (i, Vec::new())).collect();
                    backends.extend(backends_from(
                        &instances,
                        &self.config.states,
                        &self.config.instance,
                        &locator,
                        ctx,
                        &mut report,
                    )?);
                    Ok(())
                },
            )
            .await?;
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

    fn config(yaml: &str) -> Result<Ec2LocatorConfig, String> {
        crate::yaml::parse(yaml)
            .map_err(|e| e.message)?
            .deserialize::<Ec2LocatorConfig>()
            .map_err(|e| e.message)
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
}
