//! `warren cp`: copy one file into or out of a sandbox over its data plane's `/upload` and
//! `/download`, streamed both ways.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use tokio::io::AsyncWriteExt;

use crate::client::{Client, ConnArgs, dataplane};

#[derive(Debug, Args)]
pub(crate) struct CpArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Source: a local path, `-` for stdin, or NAME:/path in a sandbox.
    src: String,
    /// Destination: a local path, `-` for stdout, or NAME:/path in a sandbox. A path ending
    /// in `/` (or an existing local directory) receives the file under its own name.
    dst: String,
}

/// One side of `warren cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Local(String),
    Remote { sandbox: String, path: String },
}

/// `NAME:PATH` is a sandbox path when NAME is non-empty and has no `/` (the rule `docker cp`
/// uses), so a local file with a colon in its name can be written as `./a:b`.
fn parse_location(s: &str) -> Location {
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Location::Remote {
            sandbox: name.to_owned(),
            path: path.to_owned(),
        },
        _ => Location::Local(s.to_owned()),
    }
}

/// The last path component, for `cp x dir/`.
fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// The remote file an upload writes: `dir/` gets the local file's name appended.
fn upload_target(local: &str, remote: &str) -> Result<String> {
    if remote.is_empty() || remote.ends_with('/') {
        let Some(name) = base_name(local).filter(|_| local != "-") else {
            bail!("name the destination file: stdin has no file name");
        };
        Ok(format!("{remote}{name}"))
    } else {
        Ok(remote.to_owned())
    }
}

/// The local file a download writes: an existing directory or `dir/` gets the remote name.
fn download_target(remote: &str, local: &str) -> Result<PathBuf> {
    let p = PathBuf::from(local);
    if local.ends_with('/') || p.is_dir() {
        let name = base_name(remote)
            .with_context(|| format!("{remote:?} does not name a file to download"))?;
        Ok(p.join(name))
    } else {
        Ok(p)
    }
}

pub(crate) fn cp(data_dir: &Path, args: CpArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    let (src, dst) = (parse_location(&args.src), parse_location(&args.dst));
    crate::tokio_runtime()?.block_on(async move {
        match (src, dst) {
            (Location::Local(local), Location::Remote { sandbox, path }) => {
                upload(&client, &local, &sandbox, &path).await?;
            }
            (Location::Remote { sandbox, path }, Location::Local(local)) => {
                download(&client, &sandbox, &path, &local).await?;
            }
            (Location::Remote { .. }, Location::Remote { .. }) => {
                bail!("copying between two sandboxes is not supported; copy through a local file")
            }
            (Location::Local(_), Location::Local(_)) => {
                bail!("one side of `warren cp` must be a sandbox path, NAME:/path")
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// POST `{D}/upload?path=...` with one multipart part `file` (filename `file`), streamed from
/// the file or stdin so large files are never held in memory.
async fn upload(client: &Client, local: &str, sandbox: &str, remote: &str) -> Result<()> {
    let target = upload_target(local, remote)?;
    let part = if local == "-" {
        let stream = tokio_util::io::ReaderStream::new(tokio::io::stdin());
        Part::stream(reqwest::Body::wrap_stream(stream))
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("cannot open {local}"))?;
        let meta = file.metadata().await?;
        if meta.is_dir() {
            bail!(
                "{local} is a directory; copy directories with tar, e.g. \
                 `tar -C {local} -c . | warren exec -i {sandbox} -- tar -C {target} -x`"
            );
        }
        let stream = tokio_util::io::ReaderStream::new(file);
        Part::stream_with_length(reqwest::Body::wrap_stream(stream), meta.len())
    };
    let part = part
        .file_name("file")
        .mime_str("application/octet-stream")?;
    let sb = client.get_sandbox(sandbox).await?;
    let mut url = Client::dataplane_url(dataplane(&sb)?, "/upload")?;
    url.query_pairs_mut().append_pair("path", &target);
    client
        .send(
            client
                .request(Method::POST, url)
                .multipart(Form::new().part("file", part)),
        )
        .await
        .with_context(|| format!("failed to upload to {sandbox}:{target}"))?;
    Ok(())
}

/// GET `{D}/download?path=...`, streamed into a temporary file that replaces the destination
/// only once complete (or straight to stdout for `-`).
async fn download(client: &Client, sandbox: &str, remote: &str, local: &str) -> Result<()> {
    let sb = client.get_sandbox(sandbox).await?;
    let mut url = Client::dataplane_url(dataplane(&sb)?, "/download")?;
    url.query_pairs_mut().append_pair("path", remote);
    let what = || format!("failed to download {sandbox}:{remote}");
    if local == "-" {
        let resp = client
            .send(client.request(Method::GET, url))
            .await
            .with_context(what)?;
        let mut out = tokio::io::stdout();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk.with_context(what)?).await?;
        }
        out.flush().await?;
        return Ok(());
    }
    let target = download_target(remote, local)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .with_context(|| format!("{} does not name a file", target.display()))?;
    let tmp = dir.join(format!(
        ".{}.warren-cp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = async {
        let resp = client
            .send(client.request(Method::GET, url))
            .await
            .with_context(what)?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.with_context(what)?).await?;
        }
        file.flush().await?;
        drop(file);
        tokio::fs::rename(&tmp, &target)
            .await
            .with_context(|| format!("cannot write {}", target.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests;
