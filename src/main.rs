//! The `elasticd` binary: parse the command line, set up logging, run, map the outcome to an exit
//! code.

use std::process::ExitCode;

use clap::Parser;
use elasticd::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The scheduler library narrates its own start-up at info, and the AWS SDK its connection
    // housekeeping; keep that out of operators' logs (elasticd reports the errors that matter).
    const QUIET: &str = "tokio_cron_scheduler=warn,aws_smithy_runtime=warn,aws_config=warn";
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(format!("{},{QUIET}", cli.log)))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // One thread is plenty for a pass: the work is waiting on files and child processes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_PASS_FAILED);
        }
    };
    runtime.block_on(cli::run(cli))
}
