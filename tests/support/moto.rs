//! A local AWS API for tests: `moto_server` (Python package `moto[server]`, installed by
//! `scripts/test.sh` into a virtualenv) on a free loopback port (see `moto_server.rs`), seeded
//! with the Rust SDK.
//!
//! Nothing here ever connects to the 10.x addresses moto hands out: they only end up as text in
//! rendered files. Every SDK client and every `elasticd` run points at `127.0.0.1:<port>`, with
//! dummy credentials and instance metadata disabled, so no request leaves the machine.

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag as AsgTag};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use futures_util::stream::{self, StreamExt};

pub use super::moto_server::{MotoServer as Moto, REGION};

/// An AMI id moto knows.
pub const AMI: &str = "ami-12c6146b";

/// SDK clients for a running moto.
pub trait SdkClients {
    /// SDK clients pointed at this server.
    fn clients(&self) -> Seeder;
}

impl SdkClients for Moto {
    fn clients(&self) -> Seeder {
        Seeder::new(&self.url())
    }
}

/// Seeds moto through the Rust SDK, on a runtime of its own.
pub struct Seeder {
    rt: tokio::runtime::Runtime,
    /// EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling client.
    pub asg: aws_sdk_autoscaling::Client,
}

impl Seeder {
    fn new(url: &str) -> Seeder {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let creds = Credentials::new("testing", "testing", None, None, "tests");
        let ec2 = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(creds.clone())
            .http_client(http.clone())
            .build();
        let asg = aws_sdk_autoscaling::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_sdk_autoscaling::config::Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(creds)
            .http_client(http)
            .build();
        Seeder {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            asg: aws_sdk_autoscaling::Client::from_conf(asg),
        }
    }

    /// Runs a future on the seeder's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Launches `count` instances in one reservation with `tags`; returns their ids.
    pub fn run(&self, count: i32, tags: &[(&str, &str)], subnet: Option<&str>) -> Vec<String> {
        self.block_on(run_instances(&self.ec2, count, tags, subnet))
    }

    /// Launches `count` instances, one reservation each (AWS pages DescribeInstances by
    /// instance, moto by reservation: one instance per reservation makes them agree), each tagged
    /// `tags` and `address_tag` with an address of its own (`127.0.X.Y`, unique among them):
    /// moto's random private addresses can collide among a thousand instances, and the locator
    /// keeps one backend per address. Returns `(id, address)` pairs.
    pub fn run_each_addressed(
        &self,
        count: usize,
        tags: &[(&str, &str)],
        address_tag: &str,
    ) -> Vec<(String, String)> {
        assert!(count <= 250 * 250, "not enough 127.0.X.Y addresses");
        self.block_on(async {
            stream::iter(0..count)
                .map(|i| async move {
                    let address = format!("127.0.{}.{}", i / 250 + 1, i % 250 + 1);
                    let mut all = tags.to_vec();
                    all.push((address_tag, &address));
                    let ids = run_instances(&self.ec2, 1, &all, None).await;
                    ids.into_iter()
                        .map(|id| (id, address.clone()))
                        .collect::<Vec<_>>()
                })
                .buffer_unordered(8)
                .concat()
                .await
        })
    }

    /// Stops instances.
    pub fn stop(&self, ids: &[String]) {
        self.block_on(
            self.ec2
                .stop_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send(),
        )
        .expect("StopInstances");
    }

    /// Terminates instances.
    pub fn terminate(&self, ids: &[String]) {
        self.block_on(
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send(),
        )
        .expect("TerminateInstances");
    }

    /// A subnet whose instances get no public IP address.
    pub fn private_subnet(&self) -> String {
        self.block_on(async {
            let vpc = self
                .ec2
                .create_vpc()
                .cidr_block("10.99.0.0/16")
                .send()
                .await
                .expect("CreateVpc");
            let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
            let subnet = self
                .ec2
                .create_subnet()
                .vpc_id(vpc_id)
                .cidr_block("10.99.1.0/24")
                .availability_zone("us-east-1b")
                .send()
                .await
                .expect("CreateSubnet");
            subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .expect("subnet id")
                .to_string()
        })
    }

    /// An Auto Scaling group of `size` instances from a launch template, tagged `tags`;
    /// returns its member ids.
    pub fn group(&self, name: &str, size: i32, tags: &[(&str, &str)]) -> Vec<String> {
        self.block_on(async {
            let template = format!("{name}-template");
            self.ec2
                .create_launch_template()
                .launch_template_name(&template)
                .launch_template_data(
                    RequestLaunchTemplateData::builder()
                        .image_id(AMI)
                        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                        .build(),
                )
                .send()
                .await
                .expect("CreateLaunchTemplate");
            let mut create = self
                .asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(name)
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .launch_template_name(&template)
                        .version("$Latest")
                        .build(),
                )
                .min_size(0)
                .max_size(size.max(1) * 2)
                .desired_capacity(size)
                .availability_zones("us-east-1a");
            for (k, v) in tags {
                create = create.tags(
                    AsgTag::builder()
                        .key(*k)
                        .value(*v)
                        .resource_id(name)
                        .resource_type("auto-scaling-group")
                        .propagate_at_launch(true)
                        .build(),
                );
            }
            create.send().await.expect("CreateAutoScalingGroup");
            self.members(name).await
        })
    }

    async fn members(&self, name: &str) -> Vec<String> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .expect("DescribeAutoScalingGroups");
        let mut ids: Vec<String> = out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| g.instances())
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// Marks a member unhealthy.
    pub fn set_unhealthy(&self, id: &str) {
        self.block_on(
            self.asg
                .set_instance_health()
                .instance_id(id)
                .health_status("Unhealthy")
                .should_respect_grace_period(false)
                .send(),
        )
        .expect("SetInstanceHealth");
    }

    /// Moves a member to Standby.
    pub fn standby(&self, group: &str, id: &str) {
        self.block_on(
            self.asg
                .enter_standby()
                .auto_scaling_group_name(group)
                .instance_ids(id)
                .should_decrement_desired_capacity(true)
                .send(),
        )
        .expect("EnterStandby");
    }
}

async fn run_instances(
    ec2: &aws_sdk_ec2::Client,
    count: i32,
    tags: &[(&str, &str)],
    subnet: Option<&str>,
) -> Vec<String> {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let mut request = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(count)
        .max_count(count)
        .set_subnet_id(subnet.map(str::to_string));
    if !tags.is_empty() {
        request = request.tag_specifications(spec.build());
    }
    let out = request.send().await.expect("RunInstances");
    out.instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}
