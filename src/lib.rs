//! elasticd keeps web frontends (nginx, HAProxy, Varnish, Apache httpd) pointed at the live
//! addresses of their backends.
//!
//! A pass ([`pass::run_pass`]) asks each service's locators ([`locator`]) for backends, holds
//! back answers the guard refuses, renders every output with Tera ([`render`]), and for each
//! frontend installs the changed files atomically ([`output`]), checks them with the frontend's
//! own validator and reloads it once ([`frontend`]). The config ([`config`]) is YAML; every
//! problem in it is reported at once with line and column. See `docs/architecture.md`.

pub mod aws;
pub mod backend;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod frontend;
pub mod locator;
pub mod output;
pub mod plugin;
pub mod process;
pub mod render;
pub mod value;
pub mod yaml;
