//! The `haproxy_runtime` reload action: move servers in place through HAProxy's Runtime API,
//! and the `master_socket` reload: ask the master process of a master-worker HAProxy to reload.
//!
//! The installed file is the truth. After it passed the check and went into place, the action
//! compares the old and new files: when they differ only in server addresses, ports, weights and
//! `disabled` (what `set server` can change), it reads the live servers (`show servers state`),
//! sends the `set server` commands that make them match the new file, and reads them back. Any
//! other change (a new server name because the slots ran out, a new option, a first install, a
//! reload still owed) or any Runtime API failure runs the fallback reload instead, so that
//! HAProxy always ends up running what the file says and a restart loses nothing.
//!
//! `client` speaks HAProxy's CLI protocol, `plan` decides from the old and new files what to
//! send, and `action` runs the plan or the fallback.

mod action;
mod client;
mod plan;

pub use action::{DEFAULT_RUNTIME_TIMEOUT, HaproxyRuntime, RuntimeOutcome, reload};
pub use client::{
    LiveServer, RuntimeClient, RuntimeError, RuntimeSocket, master_reload, parse_servers_state,
};

#[cfg(test)]
mod tests;
