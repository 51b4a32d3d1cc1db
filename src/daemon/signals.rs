//! What the operating system's signals ask of the daemon, as messages: the event loop takes a
//! channel, so a test can drive it without signals and the handlers can be installed first thing.

use nix::sys::signal::{SigSet, Signal};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

fn daemon_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the daemon's signals on this thread, so that one sent while the process starts is
/// kept pending instead of taking its default action (ending the process). Call first thing in
/// `main`; [`listen`] or [`release`] unblocks them.
pub fn hold() {
    if let Err(e) = daemon_signals().thread_block() {
        tracing::warn!("cannot hold signals during start-up: {e}");
    }
}

/// Unblocks what [`hold`] blocked: the commands that are not the daemon keep the default actions.
pub fn release() {
    if let Err(e) = daemon_signals().thread_unblock() {
        tracing::warn!("cannot unblock signals: {e}");
    }
}

/// A request to the running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM or SIGINT: stop after the running apply.
    Stop,
    /// SIGHUP: read the config again.
    Reload,
    /// SIGUSR1: refresh every service now.
    Refresh,
}

/// Installs handlers for SIGTERM, SIGINT, SIGHUP and SIGUSR1 and forwards them as [`Control`]s.
/// Once this returns, none of them takes its default action (ending the process) any more.
pub fn listen() -> std::io::Result<mpsc::Receiver<Control>> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    // The handlers are in: a signal held since start-up is delivered to them now.
    release();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = sigterm.recv() => Control::Stop,
                _ = sigint.recv() => Control::Stop,
                _ = sighup.recv() => Control::Reload,
                _ = sigusr1.recv() => Control::Refresh,
            };
            if tx.send(control).await.is_err() {
                // The daemon is gone; the handlers stay installed so a late signal is harmless.
                return;
            }
        }
    });
    Ok(rx)
}
