//! The `elasticd` binary: parse the command line, set up logging, run, map the outcome to an exit
//! code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use elasticd::cli::{self, Cli};
use elasticd::daemon;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Before anything else: `systemctl reload` right after a start must not end the daemon.
    daemon::hold();
    let cli = Cli::parse();
    if !matches!(cli.command, cli::Command::Run(_)) {
        daemon::release();
    }
    // The scheduler library narrates its own start-up at info, and the AWS SDK its connection
    // housekeeping; keep that out of operators' logs (elasticd reports the errors that matter).
    const QUIET: &str = "tokio_cron_scheduler=warn,aws_smithy_runtime=warn,aws_config=warn";
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(&value).map_err(|e| ("RUST_LOG", e)),
        _ => EnvFilter::try_new(format!("{},{QUIET}", cli.log)).map_err(|e| ("--log", e)),
    };
    // A typo in the filter would otherwise silently log at another level than asked for.
    let filter = match filter {
        Ok(filter) => filter,
        Err((what, e)) => {
            cli::print_error(format_args!(
                "{what}: not a log level or filter ({e}); use a level (error, warn, info, debug, trace) or filters like `elasticd=debug,info`"
            ));
            return ExitCode::from(cli::EXIT_BAD_CONFIG);
        }
    };
    // Colour only for a person at a terminal: a log file, a pipe or journald gets plain text, and
    // NO_COLOR (https://no-color.org) turns it off everywhere.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    cli::set_log_format(cli.log_format);
    match cli.log_format {
        cli::LogFormat::Text => logger
            .with_ansi(colour)
            .with_target(false)
            // Values in messages (a target, a plugin's output) must not forge lines or colours.
            .fmt_fields(elasticd::logline::EscapedFields)
            .init(),
        cli::LogFormat::Json => logger
            .with_ansi(false)
            .event_format(elasticd::logline::JsonLines)
            .init(),
    }
    // One thread is plenty for a pass: the work is waiting on files and child processes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::print_error(format_args!("cannot start the async runtime: {e}"));
            return ExitCode::from(cli::EXIT_PASS_FAILED);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    // A read stuck in a blocking thread (a FIFO, a hung mount) was given up on; it must not keep
    // the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
