//! The process's etcd session: one client and one lease for every election, the lease kept
//! alive, and calls that retry across endpoints within a time limit.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use super::ClusterConfig;

/// What every election of the process shares: settings, the client and the lease.
pub(crate) struct Shared {
    pub(super) config: ClusterConfig,
    pub(super) member: String,
    /// Asks the daemon to locate a service now.
    pub(super) refresh: Box<dyn Fn(&str) + Send + Sync>,
    pub(super) session: tokio::sync::Mutex<Option<Session>>,
}

/// A client with the lease every key this member writes is bound to.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) lease: i64,
    /// Turns true when the lease is gone (expired, or not renewed in time).
    pub(super) lost: watch::Receiver<bool>,
}

impl Shared {
    pub(super) fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The limit of each etcd call.
    pub(super) fn limit(&self) -> Duration {
        self.config.etcd.dial_timeout.0
    }

    /// The live session, or a new client and lease when there is none (or the lease is lost).
    pub(super) async fn session(&self) -> Result<Session, String> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref()
            && !*s.lost.borrow()
        {
            return Ok(s.clone());
        }
        let client = connect(&self.config).await?;
        let ttl = i64::try_from(self.config.lease_ttl.0.as_secs()).unwrap_or(i64::MAX);
        let grant = |mut c: Client| async move { c.lease_grant(ttl, None).await };
        let lease = retry(self.limit(), &client, grant).await?.id();
        let (tx, lost) = watch::channel(false);
        tokio::spawn(keep_alive(
            client.clone(),
            lease,
            self.config.lease_ttl.0,
            tx,
        ));
        tracing::info!(
            member = %self.member,
            "fleet `{}`: connected to etcd, lease {lease:x}",
            self.config.name
        );
        let session = Session {
            client,
            lease,
            lost,
        };
        *current = Some(session.clone());
        Ok(session)
    }

    /// The current client, if connected once (without connecting).
    pub(super) async fn client(&self) -> Option<Client> {
        self.session.lock().await.as_ref().map(|s| s.client.clone())
    }

    /// Revokes the lease: etcd deletes every key on it, so leadership passes on at once.
    pub(super) async fn revoke(&self) {
        let current = self.session.lock().await;
        if let Some(s) = current.as_ref() {
            let mut client = s.client.clone();
            let _ = timeout(Duration::from_secs(2), client.lease_revoke(s.lease)).await;
        }
    }
}

/// Between attempts of a failed etcd call.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs `f` on a clone of `client` until it succeeds, for at most `limit`: requests are spread
/// over every endpoint, so one that fails may have gone to a member that is down while another
/// would answer.
pub(super) async fn retry<T, Fut>(
    limit: Duration,
    client: &Client,
    f: impl Fn(Client) -> Fut,
) -> Result<T, String>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let failed = match call(left, f(client.clone())).await {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(failed);
        }
        sleep(RETRY_PAUSE).await;
    }
}

/// Runs an etcd call within `limit`: a cluster without quorum may otherwise never answer.
pub(super) async fn call<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd: {e}")),
        Err(_) => Err(format!(
            "etcd did not answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn connect(config: &ClusterConfig) -> Result<Client, String> {
    let e = &config.etcd;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|err| format!("cannot read {}: {err}", p.display()))
    };
    let mut options = ConnectOptions::new()
        .with_connect_timeout(e.dial_timeout.0)
        .with_keep_alive(Duration::from_secs(2), e.dial_timeout.0)
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(file)) = (&e.username, &e.password_file) {
        let password = String::from_utf8_lossy(&read(file)?).trim_end().to_string();
        options = options.with_user(user, password);
    }
    if e.ca_file.is_some() || e.cert_file.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &e.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&e.cert_file, &e.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    call(
        e.dial_timeout.0,
        Client::connect(&e.endpoints, Some(options)),
    )
    .await
    .map_err(|why| format!("cannot connect to {}: {why}", e.endpoints.join(", ")))
}

/// Renews `lease` every third of its TTL; says `lost` once it can't have been renewed in time.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, lost: watch::Sender<bool>) {
    let every = ttl / 3;
    let mut deadline = Instant::now() + ttl;
    let mut keeper = None;
    loop {
        // A failed renewal is tried again soon: it may have gone to a member that is down.
        let mut pause = RETRY_PAUSE;
        if Instant::now() >= deadline {
            let _ = lost.send(true);
            return;
        }
        if keeper.is_none() {
            match timeout(every, client.lease_keep_alive(lease)).await {
                Ok(Ok(pair)) => {
                    deadline = Instant::now() + ttl;
                    keeper = Some(pair);
                    pause = every;
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                    // etcd says the lease is gone: no retry can bring it back.
                    let _ = lost.send(true);
                    return;
                }
                _ => {}
            }
        } else if let Some((k, stream)) = keeper.as_mut() {
            let renewed = timeout(every, async {
                k.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    let left = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
                    deadline = Instant::now() + left;
                    pause = every;
                }
                Ok(Ok(Some(_))) => {
                    let _ = lost.send(true);
                    return;
                }
                _ => keeper = None,
            }
        }
        sleep(pause).await;
    }
}
