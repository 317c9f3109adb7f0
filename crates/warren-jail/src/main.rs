//! `warren-jailer`: reads a [`warren_jail::JailSpec`] as JSON on stdin, builds the jail, starts
//! the agent in it and prints a [`warren_jail::JailReport`] as one JSON line on stdout. On
//! failure: one `failed to <verb> <object>: <cause>` line on stderr and exit status 1.

use std::io::Write;
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
    // The first JSON value on stdin; the jailer does not wait for end of file, so a caller that
    // keeps stdin open cannot stall it.
    let spec: warren_jail::JailSpec =
        serde_json::Deserializer::from_reader(std::io::stdin().lock())
            .into_iter()
            .next()
            .context("failed to read the jail spec: stdin is empty")?
            .context("failed to parse the jail spec")?;
    let report = warren_jail::run(&spec)?;
    let line = serde_json::to_string(&report).context("failed to encode the jail report")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("failed to write the jail report")?;
    Ok(())
}
