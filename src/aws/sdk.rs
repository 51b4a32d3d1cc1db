//! Talking to AWS: SDK clients built from [`AwsSettings`] and kept by the locator that uses them
//! ([`LazyClients`]), a counter of HTTP requests, and AWS errors turned into [`AwsError`]s that
//! carry the error code and request id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_ec2::config::{ConfigBag, Intercept, ProvideCredentials, RuntimeComponents};
use aws_sdk_ec2::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use super::{AwsError, AwsSettings};

/// Session name of assumed roles, unless the config sets one.
pub const DEFAULT_ROLE_SESSION_NAME: &str = "elasticd";

/// The clients one locator uses, built once from its settings.
#[derive(Debug)]
pub struct Clients {
    /// EC2 (DescribeInstances).
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling (DescribeAutoScalingGroups).
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// The region they talk to.
    pub region: String,
}

/// A locator's clients, built on its first locate and kept as long as the locator, so that
/// credentials (an assumed role, instance metadata) are fetched when they expire, not on every
/// pass. Locators built from a reloaded config start without them.
#[derive(Debug, Default)]
pub struct LazyClients(tokio::sync::OnceCell<Arc<Clients>>);

impl LazyClients {
    /// The clients for `settings`, built on first use; a failure is retried on the next call.
    pub async fn get(&self, settings: &AwsSettings) -> Result<Arc<Clients>, AwsError> {
        self.0
            .get_or_try_init(|| async { load(settings).await.map(Arc::new) })
            .await
            .cloned()
    }
}

/// Builds clients: region and credentials from the settings or the SDK's default chains,
/// adaptive retries, bounded timeouts, rustls with ring for TLS.
pub async fn load(settings: &AwsSettings) -> Result<Clients, AwsError> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout())
        .operation_attempt_timeout(settings.attempt_timeout())
        .operation_timeout(settings.operation_timeout())
        .build();
    // Adaptive mode adds client-side rate limiting on top of backoff: when EC2 throttles a large
    // account, elasticd slows down instead of adding to the storm.
    let retry = RetryConfig::adaptive().with_max_attempts(settings.max_attempts());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retry);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    // Loading asks the region chain, which may include instance metadata; bound it like a call.
    let mut sdk = tokio::time::timeout(settings.operation_timeout(), loader.load())
        .await
        .map_err(|_| AwsError::NoRegion {
            tried: format!(
                "{} (no answer within {})",
                region_sources(settings),
                humantime::format_duration(settings.operation_timeout())
            ),
        })?;
    let region = match sdk.region() {
        Some(r) => r.to_string(),
        None => {
            return Err(AwsError::NoRegion {
                tried: region_sources(settings),
            });
        }
    };
    if let Some(role_arn) = &settings.role_arn {
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name(
                settings
                    .role_session_name
                    .as_deref()
                    .unwrap_or(DEFAULT_ROLE_SESSION_NAME),
            )
            .configure(&sdk);
        if let Some(id) = &settings.external_id {
            builder = builder.external_id(id);
        }
        let provider = builder.build().await;
        sdk = sdk
            .into_builder()
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build();
    }
    // Credentials are asked for once here so that a missing one is reported as such, naming the
    // sources tried, rather than as an opaque failure of the first API call.
    let no_credentials = |detail: String| AwsError::NoCredentials {
        region: region.clone(),
        tried: credential_sources(settings),
        detail,
    };
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| no_credentials("no credential provider is configured".into()))?;
    match tokio::time::timeout(settings.operation_timeout(), provider.provide_credentials()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(no_credentials(error_chain(&e))),
        Err(_) => {
            return Err(no_credentials(format!(
                "no answer within {}",
                humantime::format_duration(settings.operation_timeout())
            )));
        }
    }
    tracing::debug!(
        region,
        endpoint = settings.endpoint_url.as_deref().unwrap_or("default"),
        role = settings.role_arn.as_deref().unwrap_or("none"),
        "AWS clients ready"
    );
    Ok(Clients {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
        region,
    })
}

fn profile_name(settings: &AwsSettings) -> String {
    settings
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".into())
}

fn file_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn imds_source() -> &'static str {
    match std::env::var("AWS_EC2_METADATA_DISABLED") {
        Ok(v) if v.eq_ignore_ascii_case("true") => {
            "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"
        }
        _ => "EC2 instance metadata",
    }
}

fn region_sources(settings: &AwsSettings) -> String {
    format!(
        "`aws.region` in the config, AWS_REGION, AWS_DEFAULT_REGION, `region` of profile `{}` in {}, {}",
        profile_name(settings),
        file_or("AWS_CONFIG_FILE", "~/.aws/config"),
        imds_source()
    )
}

fn credential_sources(settings: &AwsSettings) -> String {
    let mut tried = format!(
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, profile `{}` in {} and {}, \
         web identity (AWS_WEB_IDENTITY_TOKEN_FILE), ECS container credentials, {}",
        profile_name(settings),
        file_or("AWS_CONFIG_FILE", "~/.aws/config"),
        file_or("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        imds_source()
    );
    if let Some(role) = &settings.role_arn {
        tried.push_str(&format!(", then AssumeRole into {role}"));
    }
    tried
}

/// Counts the HTTP requests one locator run sends, retries included, and every attempt in
/// `elasticd_cloud_api_calls_total{api,operation,result}`.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<AtomicU64>);

impl CallCounter {
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An attempt on the wire whose answer has not been seen. It lives in the operation's config
/// bag: an attempt cut short by a timeout never reaches `read_after_attempt`, but its marker is
/// dropped when the next attempt replaces it or the abandoned operation drops its bag, and the
/// drop counts it as `timeout`.
#[derive(Debug)]
struct InFlight {
    api: String,
    operation: String,
    answered: AtomicBool,
}

impl InFlight {
    fn count(&self, result: &str) {
        if !self.answered.swap(true, Ordering::Relaxed) {
            crate::metrics::metrics().cloud_call(&self.api, &self.operation, result);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count("timeout");
    }
}

impl Storable for InFlight {
    type Storer = StoreReplace<Self>;
}

/// The `api` label from the SDK's service name: `EC2` is `ec2`, `Auto Scaling` `autoscaling`.
fn api_label(service: &str) -> String {
    service
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "elasticd::CallCounter"
    }

    // Called once per attempt that is about to go on the wire, so retries count too.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        // The operation's name is fixed by the SDK (`DescribeInstances` of `EC2`), so the labels
        // are bounded.
        let (api, operation) = cfg.load::<Metadata>().map_or_else(Default::default, |m| {
            (api_label(m.service()), m.name().to_string())
        });
        cfg.interceptor_state().store_put(InFlight {
            api,
            operation,
            answered: AtomicBool::new(false),
        });
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(attempt) = cfg.load::<InFlight>() {
            attempt.count(match context.response() {
                Some(r) if r.status().is_success() => "success",
                Some(_) => "error",
                None => "transport_error",
            });
        }
        Ok(())
    }
}

/// An error and its sources as one line (`dispatch failure: io error: ... refused`), each
/// cause once: the SDK nests errors that repeat their inner message.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Turns an SDK error into an [`AwsError`] with the AWS error code and request id when AWS
/// answered, or the error chain when it did not.
pub fn api_error<E>(operation: &'static str, region: &str, err: SdkError<E>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let region = region.to_string();
    match &err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            // EC2 puts the request id in the XML body, most other services in a header.
            let request_id = err
                .as_service_error()
                .and_then(|e| e.meta().request_id())
                .or_else(|| err.request_id())
                .map(str::to_string);
            let message = match err.message() {
                Some(m) => m.to_string(),
                None if err.code().is_some() => "no message".to_string(),
                None => error_chain(&err),
            };
            AwsError::Api {
                operation,
                region,
                code: err.code().map(str::to_string),
                message,
                status,
                request_id,
            }
        }
        _ => AwsError::Transport {
            operation,
            region,
            detail: error_chain(&err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::config::http::HttpResponse;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;

    #[test]
    fn service_errors_keep_code_and_request_id() {
        let meta = ErrorMetadata::builder()
            .code("RequestLimitExceeded")
            .message("Request limit exceeded.")
            .custom("aws_request_id", "5f0c-11aa")
            .build();
        let response = HttpResponse::new(503.try_into().unwrap(), "".into());
        let err = SdkError::service_error(DescribeInstancesError::generic(meta), response);
        let msg = api_error("DescribeInstances", "eu-west-1", err).to_string();
        assert_eq!(
            msg,
            "DescribeInstances in eu-west-1 failed: RequestLimitExceeded: Request limit exceeded. (HTTP 503, request id 5f0c-11aa)"
        );
    }

    #[test]
    fn unreachable_endpoints_are_transport_errors() {
        let err: SdkError<DescribeInstancesError> = SdkError::timeout_error("too slow");
        let e = api_error("DescribeInstances", "eu-west-1", err);
        assert!(matches!(e, AwsError::Transport { .. }), "{e}");
    }

    #[test]
    fn api_labels_are_the_service_names_in_lower_case() {
        assert_eq!(api_label("EC2"), "ec2");
        assert_eq!(api_label("Auto Scaling"), "autoscaling");
    }

    #[test]
    fn an_attempt_is_counted_once_and_a_dropped_one_as_a_timeout() {
        let labels = |result: &str| crate::metrics::CloudLabels {
            api: "test".into(),
            operation: "UnitTestOperation".into(),
            result: result.into(),
        };
        let counted = |result: &str| {
            crate::metrics::metrics()
                .cloud_api_calls
                .get_or_create(&labels(result))
                .get()
        };
        let attempt = || InFlight {
            api: "test".into(),
            operation: "UnitTestOperation".into(),
            answered: AtomicBool::new(false),
        };
        let answered = attempt();
        answered.count("success");
        drop(answered);
        drop(attempt());
        assert_eq!(counted("success"), 1);
        assert_eq!(counted("timeout"), 1);
    }

    #[test]
    fn credential_errors_name_every_source() {
        let tried = credential_sources(&AwsSettings {
            role_arn: Some("arn:aws:iam::1:role/x".into()),
            ..AwsSettings::default()
        });
        assert!(tried.contains("AWS_ACCESS_KEY_ID"), "{tried}");
        assert!(
            tried.contains("AssumeRole into arn:aws:iam::1:role/x"),
            "{tried}"
        );
    }
}
