//! Build script: lays out the release binary's code so that the functions its common jobs run
//! sit side by side (linker/symbol-order.txt, made by scripts/symbol-order.sh).
//!
//! Without it, the few hundred KB of code that a `render` or an idle daemon runs is scattered
//! over the whole 12 MB text of the binary, and every page it touches stays resident: most of
//! the one-shot command's memory is code (docs/benchmarks.md, "Code layout"). The list is only a
//! hint to the linker: names that no longer match are skipped, and the binary behaves the same.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=linker/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=ELASTICD_NO_SYMBOL_ORDER");
    if !uses_rust_lld() {
        return;
    }
    let link_arg = |arg: &str| println!("cargo:rustc-link-arg-bin=elasticd=-Wl,{arg}");
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let list = format!("{dir}/linker/symbol-order.txt");
    if env::var_os("ELASTICD_NO_SYMBOL_ORDER").is_none() && std::path::Path::new(&list).is_file() {
        link_arg(&format!("--symbol-ordering-file={list}"));
        link_arg("--no-warn-symbol-ordering");
    }
    // The dynamic loader reads every relocation at start-up: 25,000 of them are 600 KB as RELA
    // entries, a few KB packed as RELR. Only glibc 2.36 and later know the packed form, and the
    // binary then asks for such a glibc (the Debian package's dependency says so).
    if glibc_minor().is_some_and(|m| m >= 36) {
        link_arg("-z,pack-relative-relocs");
    }
}

/// The minor version of the build host's glibc ("glibc 2.36" from getconf), which is the glibc
/// the binary links against.
fn glibc_minor() -> Option<u32> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc 2.")?;
    version.split('.').next()?.parse().ok()
}

/// Whether this build links the release binary with rustc's own lld, the only linker here that
/// knows `--symbol-ordering-file`: rustc 1.90 and later on x86_64 Linux (GNU), unless the build
/// chose its own linker.
fn uses_rust_lld() -> bool {
    let is = |key: &str, want: &str| env::var(key).is_ok_and(|v| v == want);
    if !is("TARGET", "x86_64-unknown-linux-gnu") || !is("PROFILE", "release") {
        return false;
    }
    if env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    // "rustc 1.95.0 (59807616e 2026-04-14)": the minor version.
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
