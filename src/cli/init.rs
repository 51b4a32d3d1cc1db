//! `elasticd init nginx|haproxy|varnish|apache [--dir DIR]`: a commented starter `config.yaml`
//! and the frontend's own snippet for the Debian layout, which pass `elasticd check` as written.
//! The files are those in `examples/init/`, built into the binary.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{EXIT_BAD_CONFIG, EXIT_OK, EXIT_PASS_FAILED, print_error};

/// Options of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The frontend to set up.
    pub frontend: Frontend,
    /// Where to write the files (created if missing); existing files are never replaced.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// The frontends `init` has a starter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Frontend {
    /// nginx: an upstream in /etc/nginx/conf.d, reloaded with SIGHUP.
    Nginx,
    /// HAProxy: a backend section checked before install, `systemctl reload haproxy`.
    Haproxy,
    /// Varnish: backends and a director, swapped in through the admin port.
    Varnish,
    /// Apache httpd: a mod_proxy_balancer section, `apache2ctl graceful`.
    Apache,
}

impl Frontend {
    /// The starter config and the snippet: (file name, text) each.
    fn files(self) -> [(&'static str, &'static str); 2] {
        match self {
            Frontend::Nginx => [
                (
                    "config.yaml",
                    include_str!("../../examples/init/nginx/config.yaml"),
                ),
                (
                    "nginx-site.conf",
                    include_str!("../../examples/init/nginx/nginx-site.conf"),
                ),
            ],
            Frontend::Haproxy => [
                (
                    "config.yaml",
                    include_str!("../../examples/init/haproxy/config.yaml"),
                ),
                (
                    "haproxy-frontend.cfg",
                    include_str!("../../examples/init/haproxy/haproxy-frontend.cfg"),
                ),
            ],
            Frontend::Varnish => [
                (
                    "config.yaml",
                    include_str!("../../examples/init/varnish/config.yaml"),
                ),
                (
                    "default.vcl",
                    include_str!("../../examples/init/varnish/default.vcl"),
                ),
            ],
            Frontend::Apache => [
                (
                    "config.yaml",
                    include_str!("../../examples/init/apache/config.yaml"),
                ),
                (
                    "apache-site.conf",
                    include_str!("../../examples/init/apache/apache-site.conf"),
                ),
            ],
        }
    }
}

/// Writes the starter files into `--dir`; refuses (exit 2) when one of them exists already.
pub fn init(args: &InitArgs) -> u8 {
    let files = args.frontend.files();
    let existing: Vec<String> = files
        .iter()
        .map(|(name, _)| args.dir.join(name))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        print_error(format_args!(
            "{} already exists; not replacing it (choose another --dir)",
            existing.join(" and ")
        ));
        return EXIT_BAD_CONFIG;
    }
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        print_error(format_args!("cannot create {}: {e}", args.dir.display()));
        return EXIT_PASS_FAILED;
    }
    for (name, text) in files {
        let path = args.dir.join(name);
        if let Err(e) = write_new(&path, text) {
            print_error(format_args!("cannot write {}: {e}", path.display()));
            return EXIT_PASS_FAILED;
        }
        println!("wrote {}", path.display());
    }
    let config = args.dir.join("config.yaml");
    println!(
        "next: read the comments at the top of {0}, then `elasticd check --config {0}`",
        config.display()
    );
    EXIT_OK
}

/// Creates `path` with `text`, failing if it exists (a file created since the check above).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}
