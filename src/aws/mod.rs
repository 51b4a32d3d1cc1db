//! AWS settings shared by the `ec2` and `asg` locators, and the errors they report.
//!
//! The settings and errors are plain data, compiled with or without the `aws` cargo feature, so
//! that a build without it can still read a config and say clearly why `aws:`, `ec2:` or `asg:`
//! is not available. Everything that talks to AWS lives in [`sdk`] (feature `aws`).

#[cfg(feature = "aws")]
pub mod sdk;

use std::time::Duration;

use serde::Deserialize;

use crate::value::HumanDuration;

/// Attempts per API call when the config sets none (the SDK's own default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// How long a TCP/TLS connect to an AWS endpoint may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one HTTP attempt may take by default (a hung connection is retried after this).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API call, retries included, may take by default.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an AWS feature is missing from this build: the config names it, the binary lacks it.
pub const NOT_BUILT: &str = "this elasticd was built without AWS support (cargo feature `aws`); \
     build it with default features to use `aws`, `ec2` and `asg`";

/// `aws:` settings, at the top level and per locator; unset fields fall back to the top level,
/// then to the AWS SDK's own chain (environment, profile, instance metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAwsSettings")]
pub struct AwsSettings {
    /// Region, like `eu-west-1`; else AWS_REGION, the profile, or instance metadata.
    pub region: Option<String>,
    /// Named profile from `~/.aws/config`; else AWS_PROFILE, or `default`.
    pub profile: Option<String>,
    /// A role to assume (STS AssumeRole) with the credentials found.
    pub role_arn: Option<String>,
    /// Session name for the assumed role (default `elasticd`).
    pub role_session_name: Option<String>,
    /// External id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// Endpoint for every AWS API call, EC2, Auto Scaling and STS alike (emulators, proxies).
    pub endpoint_url: Option<String>,
    /// Attempts per API call, first one included (retry mode is always adaptive).
    pub max_attempts: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Option<HumanDuration>,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Option<HumanDuration>,
    /// Timeout of one API call, retries included.
    pub operation_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAwsSettings {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    role_session_name: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    attempt_timeout: Option<HumanDuration>,
    #[serde(default)]
    operation_timeout: Option<HumanDuration>,
}

impl TryFrom<RawAwsSettings> for AwsSettings {
    type Error = String;

    fn try_from(raw: RawAwsSettings) -> Result<Self, String> {
        if let Some(region) = &raw.region
            && (region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!(
                "aws.region `{region}` is not a region name like `eu-west-1`"
            ));
        }
        if raw.profile.as_deref() == Some("") {
            return Err("aws.profile must not be empty".into());
        }
        if let Some(arn) = &raw.role_arn
            && !(arn.starts_with("arn:") && arn.contains(":role/"))
        {
            return Err(format!(
                "aws.role_arn `{arn}` is not a role ARN like `arn:aws:iam::123456789012:role/NAME`"
            ));
        }
        if let Some(name) = &raw.role_session_name
            && !(2..=64).contains(&name.len())
        {
            return Err(format!(
                "aws.role_session_name `{name}` must be 2 to 64 characters long"
            ));
        }
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "aws.endpoint_url `{url}` must start with http:// or https://"
            ));
        }
        if let Some(n) = raw.max_attempts
            && !(1..=10).contains(&n)
        {
            return Err(format!("aws.max_attempts must be from 1 to 10, not {n}"));
        }
        Ok(AwsSettings {
            region: raw.region,
            profile: raw.profile,
            role_arn: raw.role_arn,
            role_session_name: raw.role_session_name,
            external_id: raw.external_id,
            endpoint_url: raw.endpoint_url,
            max_attempts: raw.max_attempts,
            connect_timeout: raw.connect_timeout,
            attempt_timeout: raw.attempt_timeout,
            operation_timeout: raw.operation_timeout,
        })
    }
}

impl AwsSettings {
    /// These settings with every unset field taken from `base` (a locator's over the top level).
    pub fn over(&self, base: &AwsSettings) -> AwsSettings {
        fn pick<T: Clone>(mine: &Option<T>, base: &Option<T>) -> Option<T> {
            mine.clone().or_else(|| base.clone())
        }
        AwsSettings {
            region: pick(&self.region, &base.region),
            profile: pick(&self.profile, &base.profile),
            // A role belongs with the credentials it is assumed from: a locator that names its
            // own profile doesn't silently inherit the top level's role.
            role_arn: if self.profile.is_some() {
                self.role_arn.clone()
            } else {
                pick(&self.role_arn, &base.role_arn)
            },
            role_session_name: pick(&self.role_session_name, &base.role_session_name),
            external_id: pick(&self.external_id, &base.external_id),
            endpoint_url: pick(&self.endpoint_url, &base.endpoint_url),
            max_attempts: pick(&self.max_attempts, &base.max_attempts),
            connect_timeout: pick(&self.connect_timeout, &base.connect_timeout),
            attempt_timeout: pick(&self.attempt_timeout, &base.attempt_timeout),
            operation_timeout: pick(&self.operation_timeout, &base.operation_timeout),
        }
    }

    /// Attempts per API call.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0)
    }

    /// Timeout of one HTTP attempt.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
            .map_or(DEFAULT_ATTEMPT_TIMEOUT, |d| d.0)
    }

    /// Timeout of one API call, retries included.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
            .map_or(DEFAULT_OPERATION_TIMEOUT, |d| d.0)
    }
}

/// Stands in for the `ec2` and `asg` locator settings in a build without the `aws` feature:
/// it cannot be built, and reading one is an error that says so.
#[derive(Debug, Clone, PartialEq)]
pub enum NotBuilt {}

impl<'de> Deserialize<'de> for NotBuilt {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(NOT_BUILT))
    }
}

/// Why an AWS locator has no answer this pass.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// No region in the config, the environment, the profile or instance metadata.
    #[error("no AWS region found; tried {tried}. Set `aws.region` in the config or AWS_REGION")]
    NoRegion {
        /// Every source that was asked, in order.
        tried: String,
    },
    /// The credential chain found nothing usable.
    #[error("no usable AWS credentials in {region}; tried {tried}: {detail}")]
    NoCredentials {
        /// The region the credentials were for.
        region: String,
        /// Every source that was asked, in order.
        tried: String,
        /// What the SDK said.
        detail: String,
    },
    /// AWS answered with an error (throttling, authorization, bad request, server error).
    #[error(
        "{operation} in {region} failed: {}{message} (HTTP {}, request id {})",
        code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(),
        status.map_or_else(|| "status unknown".to_string(), |s| s.to_string()),
        request_id.as_deref().unwrap_or("none")
    )]
    Api {
        /// The API operation, like `DescribeInstances`.
        operation: &'static str,
        /// The region asked.
        region: String,
        /// AWS error code, like `RequestLimitExceeded`.
        code: Option<String>,
        /// AWS error message (or the SDK's description when AWS gave none).
        message: String,
        /// HTTP status of the response.
        status: Option<u16>,
        /// AWS request id, for AWS support and CloudTrail.
        request_id: Option<String>,
    },
    /// No answer: connection refused, DNS, TLS, or a timeout, after the retries.
    #[error("{operation} in {region} got no answer: {detail}")]
    Transport {
        /// The API operation.
        operation: &'static str,
        /// The region asked.
        region: String,
        /// The SDK's error chain.
        detail: String,
    },
    /// Named Auto Scaling groups that do not exist.
    #[error("Auto Scaling group{} {} not found in {region}", if names.len() == 1 { "" } else { "s" }, names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))]
    MissingGroups {
        /// The names AWS did not return.
        names: Vec<String>,
        /// The region asked.
        region: String,
    },
    /// AWS kept handing out page tokens (a guard against a pagination loop).
    #[error("{operation} in {region} returned more than {pages} pages; giving up")]
    Pagination {
        /// The API operation.
        operation: &'static str,
        /// The region asked.
        region: String,
        /// Pages read.
        pages: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AwsSettings, String> {
        crate::yaml::parse(yaml)
            .map_err(|e| e.message)?
            .deserialize::<AwsSettings>()
            .map_err(|e| e.message)
    }

    #[test]
    fn settings_are_checked() {
        assert!(parse("{region: eu-west-1, max_attempts: 5, connect_timeout: 2s}").is_ok());
        for (bad, says) in [
            ("{region: EU West}", "not a region name"),
            ("{role_arn: admin}", "not a role ARN"),
            ("{endpoint_url: localhost:5000}", "http://"),
            ("{max_attempts: 0}", "from 1 to 10"),
            ("{regoin: eu-west-1}", "regoin"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn locator_settings_override_the_top_level_field_by_field() {
        let top = parse("{region: eu-west-1, role_arn: 'arn:aws:iam::1:role/a', max_attempts: 2}")
            .unwrap();
        let mine = parse("{region: us-east-1}").unwrap().over(&top);
        assert_eq!(mine.region.as_deref(), Some("us-east-1"));
        assert_eq!(mine.max_attempts(), 2);
        assert_eq!(mine.role_arn.as_deref(), Some("arn:aws:iam::1:role/a"));
        // Another profile means other credentials: the top level's role is not assumed with them.
        let other = parse("{profile: ops}").unwrap().over(&top);
        assert_eq!(other.role_arn, None);
        assert_eq!(
            AwsSettings::default().operation_timeout(),
            DEFAULT_OPERATION_TIMEOUT
        );
    }

    #[test]
    fn api_errors_name_code_status_and_request_id() {
        let e = AwsError::Api {
            operation: "DescribeInstances",
            region: "eu-west-1".into(),
            code: Some("RequestLimitExceeded".into()),
            message: "Request limit exceeded.".into(),
            status: Some(503),
            request_id: Some("abc-123".into()),
        };
        assert_eq!(
            e.to_string(),
            "DescribeInstances in eu-west-1 failed: RequestLimitExceeded: Request limit exceeded. (HTTP 503, request id abc-123)"
        );
        let missing = AwsError::MissingGroups {
            names: vec!["web".into(), "api".into()],
            region: "eu-west-1".into(),
        };
        assert_eq!(
            missing.to_string(),
            "Auto Scaling groups `web`, `api` not found in eu-west-1"
        );
    }
}
