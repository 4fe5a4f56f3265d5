//! The `noregret` command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if std::env::var_os("NOREGRET_GLIBC_DEFAULTS").is_none() {
        rl::memory::keep_freed_memory();
    }
    let cli = rl::cli::Cli::parse();
    rl::logging::init();
    match rl::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, so a user sees the file and what is wrong.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
