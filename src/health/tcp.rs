//! `tcp: {}`: the backend accepts a TCP connection.

use serde::Deserialize;

use super::{ProbeSpec, Session, Target};
use crate::value::BoxFuture;

/// `tcp: { port }`: a connect that succeeds is a pass; the connection is closed at once.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// Port to connect to instead of the backend's.
    #[serde(default)]
    pub port: Option<u16>,
}

impl ProbeSpec for TcpProbe {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        _session: &'a mut Session,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            target
                .connect()
                .await
                .map(drop)
                .map_err(|e| format!("connect failed: {e}"))
        })
    }

    fn port(&self) -> Option<u16> {
        self.port
    }

    fn validate(&self) -> Result<(), String> {
        match self.port {
            Some(0) => Err("tcp: port 0 is not a usable port".into()),
            _ => Ok(()),
        }
    }
}
