//! fdbg's entry: parse the command line, run, print the error chain, map
//! to an exit status (0 ok, 1 could not do what was asked, 2 usage).

use std::process::ExitCode;

use fdbg::cli::{self, Parsed};

fn main() -> ExitCode {
    let result = cli::parse().and_then(|parsed| match parsed {
        Parsed::Session(config) => fdbg::repl::run(config),
        Parsed::DemoServer => fdbg::demo::serve().map(|()| 0),
        Parsed::Inspect { pid, json } => fdbg::inspect::run(pid, json),
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("fdbg: {e:#}");
            ExitCode::from(1)
        }
    }
}
