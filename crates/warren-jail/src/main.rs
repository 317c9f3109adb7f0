//! `warren-jailer`: reads a [`warren_jail::JailSpec`] as JSON on stdin, builds the jail, starts
//! the agent in it and prints a [`warren_jail::JailReport`] as one JSON line on stdout. On
//! failure: one "failed to <verb> <object>: <cause>" line on stderr and exit status 1.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the cause chain into one line.
            let line = format!("{err:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "{line}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("failed to read the jail spec from stdin")?;
    let spec: warren_jail::JailSpec =
        serde_json::from_slice(&input).context("failed to parse the jail spec")?;
    let report = warren_jail::run(&spec)?;
    let line = serde_json::to_string(&report).context("failed to encode the jail report")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("failed to write the jail report")?;
    Ok(())
}
