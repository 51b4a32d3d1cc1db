//! The `asg` locator: the members of Auto Scaling groups, chosen by name or by tag filters.
//!
//! Members count only in the chosen lifecycle states (`InService` by default) and, by default,
//! only when healthy, so that Standby and lifecycle-hook drains take a host out of the frontend
//! before it goes away. Their addresses come from EC2, asked by instance id in batches.
//!
//! Calls per pass: one DescribeAutoScalingGroups per 100 groups, one DescribeInstances per 1,000
//! members. A named group that does not exist is an error; a group with no members is an empty
//! answer, and the service's guard decides what that means.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter as AsgFilter};
use aws_sdk_ec2::types::Instance;
use serde::Deserialize;

use super::ec2_instances::{
    AddressSource, InstanceOptions, MAX_PAGES, Report, StringList, api_states, aws_error,
    backends_from, default_environment_tag, ec2_states, environment_filter, instance_pages,
    non_empty_tag,
};
use super::{LocateContext, LocateError, LocateFuture, Locator};
use crate::aws::sdk::{CallCounter, Clients, LazyClients, api_error};
use crate::aws::{AwsError, AwsSettings};
use crate::backend::Backend;

/// Groups per DescribeAutoScalingGroups call (the API's maximum).
pub const GROUPS_PER_CALL: usize = 100;
/// Instance ids per DescribeInstances call.
pub const IDS_PER_CALL: usize = 1000;

/// `asg: { names: [web], lifecycle: [InService], healthy_only: true, ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawAsgConfig")]
pub struct AsgLocatorConfig {
    /// Group names.
    pub names: Vec<String>,
    /// DescribeAutoScalingGroups filters (`tag:KEY`, `tag-key`, `tag-value`).
    pub filters: BTreeMap<String, Vec<String>>,
    /// Lifecycle states that count (default `InService`).
    pub lifecycle: Vec<String>,
    /// Leave out members whose health is not `Healthy`.
    pub healthy_only: bool,
    /// EC2 instance states that count (default `running`).
    pub states: Vec<String>,
    /// Group tag that must equal the config's `environment` (when choosing groups by filters).
    pub environment_tag: Option<String>,
    /// How each backend is made from an instance.
    pub instance: InstanceOptions,
    /// AWS settings over the top-level `aws` section.
    pub aws: AwsSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsgConfig {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    filters: BTreeMap<String, StringList>,
    #[serde(default)]
    lifecycle: Option<Vec<String>>,
    #[serde(default = "default_true")]
    healthy_only: bool,
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

fn default_true() -> bool {
    true
}

impl TryFrom<RawAsgConfig> for AsgLocatorConfig {
    type Error = String;

    fn try_from(raw: RawAsgConfig) -> Result<Self, String> {
        if raw.names.is_empty() && raw.filters.is_empty() {
            return Err(
                "asg: give `names: [...]` or `filters: {\"tag:KEY\": [...]}` to choose groups"
                    .into(),
            );
        }
        if let Some(bad) = raw.names.iter().find(|n| n.is_empty() || n.len() > 255) {
            return Err(format!("asg: `{bad}` is not an Auto Scaling group name"));
        }
        let mut filters = BTreeMap::new();
        for (name, values) in raw.filters {
            if !(name == "tag-key"
                || name == "tag-value"
                || name.len() > 4 && name.starts_with("tag:"))
            {
                return Err(format!(
                    "asg: `{name}` is not a group filter; use `tag:KEY`, `tag-key` or `tag-value`"
                ));
            }
            if values.0.is_empty() {
                return Err(format!("asg: filter `{name}` has no values"));
            }
            filters.insert(name, values.0);
        }
        Ok(AsgLocatorConfig {
            names: raw.names,
            filters,
            lifecycle: lifecycle_states(raw.lifecycle)?,
            healthy_only: raw.healthy_only,
            states: ec2_states(raw.states)?,
            environment_tag: non_empty_tag(raw.environment_tag, "environment_tag")?,
            instance: InstanceOptions::new(raw.address, raw.port, raw.port_tag, raw.weight_tag)?,
            aws: raw.aws,
        })
    }
}

fn lifecycle_states(states: Option<Vec<String>>) -> Result<Vec<String>, String> {
    api_states(
        states,
        "InService",
        aws_sdk_autoscaling::types::LifecycleState::values(),
        ("lifecycle", "member", "Auto Scaling lifecycle state"),
    )
}

/// One member that counts, with what the group said about it.
struct Member {
    group: String,
    lifecycle: String,
    health: String,
}

/// Finds the members of Auto Scaling groups.
pub struct AsgLocator {
    config: AsgLocatorConfig,
    /// Built on the first locate and kept, with their credentials, until a reload replaces
    /// this locator.
    clients: LazyClients,
}

impl super::LocatorSpec for AsgLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(AsgLocator::new(self.clone()))
    }

    fn inherit_aws(&mut self, top: &AwsSettings) {
        self.aws = self.aws.over(top);
    }
}

impl AsgLocator {
    /// A locator for one set of groups.
    pub fn new(config: AsgLocatorConfig) -> Self {
        AsgLocator {
            config,
            clients: LazyClients::default(),
        }
    }

    /// The group filters for one pass; the environment scopes groups chosen by filters only,
    /// since names already say which groups.
    pub fn request_filters(&self, environment: Option<&str>) -> Vec<AsgFilter> {
        let mut filters: Vec<AsgFilter> = self
            .config
            .filters
            .iter()
            .map(|(name, values)| {
                AsgFilter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build()
            })
            .collect();
        if self.config.names.is_empty()
            && let Some((name, env)) = environment_filter(
                environment,
                self.config.environment_tag.as_deref(),
                &self.config.filters,
            )
        {
            filters.push(AsgFilter::builder().name(name).values(env).build());
        }
        filters
    }

    async fn groups(
        &self,
        clients: &Clients,
        filters: Vec<AsgFilter>,
        calls: &CallCounter,
    ) -> Result<Vec<AutoScalingGroup>, AwsError> {
        let batches: Vec<Option<Vec<String>>> = if self.config.names.is_empty() {
            vec![None]
        } else {
            self.config
                .names
                .chunks(GROUPS_PER_CALL)
                .map(|c| Some(c.to_vec()))
                .collect()
        };
        let filters = (!filters.is_empty()).then_some(filters);
        let mut groups = Vec::new();
        for names in batches {
            let mut token: Option<String> = None;
            let mut pages = 0;
            loop {
                pages += 1;
                if pages > MAX_PAGES {
                    return Err(AwsError::Pagination {
                        operation: "DescribeAutoScalingGroups",
                        region: clients.region.clone(),
                        pages: MAX_PAGES,
                    });
                }
                let page = clients
                    .autoscaling
                    .describe_auto_scaling_groups()
                    .set_auto_scaling_group_names(names.clone())
                    .set_filters(filters.clone())
                    .max_records(GROUPS_PER_CALL as i32)
                    .set_next_token(token.take())
                    .customize()
                    .interceptor(calls.clone())
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeAutoScalingGroups", &clients.region, e))?;
                token = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                groups.extend(page.auto_scaling_groups.unwrap_or_default());
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(groups)
    }

    /// Backends of the members that count, from their EC2 instances asked for by id. Each page
    /// becomes backends before the next is asked for, so that one page is held at a time.
    async fn member_backends(
        &self,
        clients: &Clients,
        members: &BTreeMap<String, Member>,
        calls: &CallCounter,
        locator: &str,
        ctx: &LocateContext,
        report: &mut Report,
    ) -> Result<Vec<Backend>, LocateError> {
        let ids: Vec<String> = members.keys().cloned().collect();
        let mut found: HashSet<String> = HashSet::with_capacity(ids.len());
        let mut backends = Vec::with_capacity(ids.len());
        let mut pages = 0;
        for batch in ids.chunks(IDS_PER_CALL) {
            // AWS answers a request by id in one page; instance_pages follows a token anyway
            // should one come (emulators paginate these too).
            let request = clients
                .ec2
                .describe_instances()
                .set_instance_ids(Some(batch.to_vec()));
            instance_pages(clients, request, calls, &mut pages, locator, |instances| {
                let instances: Vec<(&Instance, Vec<(&str, &str)>)> = instances
                    .into_iter()
                    .filter_map(|i| {
                        let member = members.get(i.instance_id()?)?;
                        Some((
                            i,
                            vec![
                                ("asg_name", member.group.as_str()),
                                ("lifecycle_state", member.lifecycle.as_str()),
                                ("health_status", member.health.as_str()),
                            ],
                        ))
                    })
                    .collect();
                found.extend(
                    instances
                        .iter()
                        .filter_map(|(i, _)| i.instance_id().map(str::to_string)),
                );
                backends.extend(backends_from(
                    &instances,
                    &self.config.states,
                    &self.config.instance,
                    locator,
                    ctx,
                    report,
                )?);
                Ok(())
            })
            .await?;
        }
        for (id, member) in members {
            if !found.contains(id) {
                tracing::warn!(
                    "{locator}: member {id} of group `{}` is not known to EC2; left out",
                    member.group
                );
            }
        }
        Ok(backends)
    }

    fn members(&self, groups: &[AutoScalingGroup]) -> (BTreeMap<String, Member>, usize) {
        let mut members = BTreeMap::new();
        let mut left_out = 0;
        for group in groups {
            let name = group.auto_scaling_group_name().unwrap_or_default();
            for instance in group.instances() {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let lifecycle = instance
                    .lifecycle_state()
                    .map(|s| s.as_str())
                    .unwrap_or_default();
                let health = instance.health_status().unwrap_or_default();
                let in_state = self
                    .config
                    .lifecycle
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(lifecycle));
                let healthy = !self.config.healthy_only || health.eq_ignore_ascii_case("Healthy");
                if in_state && healthy {
                    members.insert(
                        id.to_string(),
                        Member {
                            group: name.to_string(),
                            lifecycle: lifecycle.to_string(),
                            health: health.to_string(),
                        },
                    );
                } else {
                    left_out += 1;
                }
            }
        }
        (members, left_out)
    }
}

impl Locator for AsgLocator {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.config.names.clone();
        parts.extend(
            self.config
                .filters
                .iter()
                .map(|(k, v)| format!("{k}={}", v.join("|"))),
        );
        format!("asg {}", parts.join(" "))
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let locator = self.describe();
            let aws_err = |source: AwsError| aws_error(&locator, source);
            let clients = self.clients.get(&self.config.aws).await.map_err(aws_err)?;
            let calls = CallCounter::default();
            let filters = self.request_filters(ctx.environment.as_deref());
            let groups = self
                .groups(&clients, filters, &calls)
                .await
                .map_err(aws_err)?;
            let missing: Vec<String> = self
                .config
                .names
                .iter()
                .filter(|n| {
                    !groups
                        .iter()
                        .any(|g| g.auto_scaling_group_name() == Some(n.as_str()))
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(aws_err(AwsError::MissingGroups {
                    names: missing,
                    region: clients.region.clone(),
                }));
            }
            let (members, left_out) = self.members(&groups);
            let mut report = Report::default();
            let backends = self
                .member_backends(&clients, &members, &calls, &locator, ctx, &mut report)
                .await?;
            report.log(&locator);
            tracing::debug!(
                locator = locator.as_str(),
                region = clients.region.as_str(),
                groups = groups.len(),
                members = members.len(),
                left_out,
                backends = backends.len(),
                api_calls = calls.get(),
                "DescribeAutoScalingGroups done"
            );
            Ok(backends)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::{Instance as Member_, LifecycleState};

    fn config(yaml: &str) -> Result<AsgLocatorConfig, String> {
        crate::yaml::parse(yaml)
            .map_err(|e| e.message)?
            .deserialize::<AsgLocatorConfig>()
            .map_err(|e| e.message)
    }

    #[test]
    fn config_defaults_and_checks() {
        let c = config("{names: [web]}").unwrap();
        assert_eq!(c.lifecycle, ["InService"]);
        assert!(c.healthy_only);
        assert_eq!(c.states, ["running"]);
        let c = config(
            "{filters: {'tag:role': web}, lifecycle: [inservice, standby], healthy_only: false}",
        )
        .unwrap();
        assert_eq!(c.lifecycle, ["InService", "Standby"]);
        assert!(!c.healthy_only);
        for (bad, says) in [
            ("{}", "give `names"),
            ("{names: ['']}", "not an Auto Scaling group name"),
            ("{filters: {vpc-id: x}}", "not a group filter"),
            (
                "{names: [a], lifecycle: [Serving]}",
                "not an Auto Scaling lifecycle state",
            ),
            ("{names: [a], lifecycle: []}", "is empty"),
            ("{names: [a], healthy: true}", "healthy"),
        ] {
            let err = config(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn environment_scopes_groups_chosen_by_filters() {
        let by_tag = AsgLocator::new(config("{filters: {'tag:role': web}}").unwrap());
        assert_eq!(by_tag.request_filters(Some("prod")).len(), 2);
        let by_name = AsgLocator::new(config("{names: [web]}").unwrap());
        assert!(by_name.request_filters(Some("prod")).is_empty());
    }

    #[test]
    fn members_need_the_state_and_health() {
        let member = |id: &str, state: LifecycleState, health: &str| {
            Member_::builder()
                .instance_id(id)
                .lifecycle_state(state)
                .health_status(health)
                .build()
        };
        let group = AutoScalingGroup::builder()
            .auto_scaling_group_name("web")
            .instances(member("i-1", LifecycleState::InService, "Healthy"))
            .instances(member("i-2", LifecycleState::InService, "UNHEALTHY"))
            .instances(member("i-3", LifecycleState::Standby, "Healthy"))
            .instances(member("i-4", LifecycleState::TerminatingWait, "Healthy"))
            .instances(member("i-5", LifecycleState::InService, "healthy"))
            .build();
        let l = AsgLocator::new(config("{names: [web]}").unwrap());
        let (members, left_out) = l.members(std::slice::from_ref(&group));
        assert_eq!(members.keys().collect::<Vec<_>>(), ["i-1", "i-5"]);
        assert_eq!(left_out, 3);
        let l = AsgLocator::new(
            config("{names: [web], healthy_only: false, lifecycle: [InService, Standby]}").unwrap(),
        );
        let (members, _) = l.members(&[group]);
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            ["i-1", "i-2", "i-3", "i-5"]
        );
        assert_eq!(members["i-2"].health, "UNHEALTHY");
    }
}
