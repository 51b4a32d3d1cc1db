//! `elasticd generate man|completions SHELL`: the man page and shell completions, made from the
//! clap definition of the command line, so that they cannot drift from it. Packaging runs it
//! (`scripts/package-deb.sh`); it is hidden from `--help`.

use std::io::Write;

use clap::{Args, CommandFactory, Subcommand};

use super::{Cli, EXIT_OK, EXIT_PASS_FAILED, print_error};

/// Options of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write on stdout.
    #[command(subcommand)]
    pub what: Generated,
}

/// What `generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generated {
    /// The man page, elasticd(1), in roff.
    Man,
    /// Completions for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Writes the man page or the completions on stdout.
pub fn generate(args: &GenerateArgs) -> u8 {
    let mut command = Cli::command();
    let mut out = Vec::new();
    let written = match &args.what {
        Generated::Man => clap_mangen::Man::new(command).render(&mut out),
        Generated::Completions { shell } => {
            clap_complete::generate(*shell, &mut command, "elasticd", &mut out);
            Ok(())
        }
    };
    match written.and_then(|()| std::io::stdout().lock().write_all(&out)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            print_error(format_args!("cannot write to stdout: {e}"));
            EXIT_PASS_FAILED
        }
    }
}
