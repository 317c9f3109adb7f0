//! `warren image`: build and list images.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use warren_runtime::Storage;
use warren_runtime::image::ensure_default_image;
use warren_types::ImageRef;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the default image (system/default:latest) from Debian's packages, unless present.
    Build {
        /// Rebuild even if present.
        #[arg(long)]
        force: bool,
    },
    /// Import an image archive (an OCI image layout directory or a `docker save` tarball) into a
    /// Warren server as a snapshot, for hosts that reach no registry; waits until it is ready.
    Import(ImportArgs),
    /// Whether an image is present.
    Exists {
        /// Image reference.
        #[arg(default_value = "system/default:latest")]
        image: ImageRef,
    },
}

/// `warren image import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    conn: crate::client::ConnArgs,
    /// OCI image layout directory, or a `docker save` tarball.
    path: std::path::PathBuf,
    /// Snapshot NAME[:TAG] to publish it as.
    #[arg(long)]
    name: String,
    /// Disk size of sandboxes booted from it, e.g. 4G.
    #[arg(long, value_parser = warren_types::parse_size)]
    disk: Option<u64>,
    /// How long to wait for the server to unpack it, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

pub(crate) fn image(data_dir: &Path, cmd: ImageCommand) -> Result<ExitCode> {
    if let ImageCommand::Import(args) = cmd {
        return import(data_dir, args);
    }
    let driver = crate::open_driver(data_dir)?;
    let storage = driver.storage();
    match cmd {
        ImageCommand::Build { force } => {
            let image = ImageRef::default_image();
            if force && storage.has_image(&image) {
                storage
                    .remove_image(&image)
                    .context("failed to remove the old image")?;
            }
            let started = Instant::now();
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] building {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(image.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            let built = ensure_default_image(storage, &mut |line| bar.set_message(line.to_owned()));
            bar.finish_and_clear();
            if built.context("failed to build the default image")? {
                println!("built {image} in {:.0?}", started.elapsed());
            } else {
                println!("{image} is present");
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Import(_) => unreachable!("handled above"),
        ImageCommand::Exists { image } => {
            if storage.has_image(&image) {
                println!("{image} is present");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{image} is missing");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Uploads the archive (a directory is packed into a tar first, links kept as links) and waits
/// until the server has built the snapshot.
fn import(data_dir: &Path, a: ImportArgs) -> Result<ExitCode> {
    let client = crate::client::Client::new(&a.conn, data_dir)?;
    let (name, tag) = match a.name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_owned(), Some(t.to_owned())),
        _ => (a.name.clone(), None),
    };
    let meta = std::fs::metadata(&a.path)
        .with_context(|| format!("failed to read {}", a.path.display()))?;
    let packed;
    let archive = if meta.is_dir() {
        packed = tempfile::NamedTempFile::new().context("failed to create a temporary file")?;
        let mut tar = tar::Builder::new(packed.as_file());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &a.path)
            .with_context(|| format!("failed to pack {}", a.path.display()))?;
        tar.finish().context("failed to pack the image layout")?;
        packed.path().to_owned()
    } else {
        a.path.clone()
    };
    crate::tokio_runtime()?.block_on(async {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] importing {prefix}: {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(a.name.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("uploading");
        let result = async {
            let (_, snap) = client
                .import_snapshot(&archive, &name, tag.as_deref(), a.disk)
                .await?;
            crate::remote::snapshot::wait_until_built(
                &client,
                snap,
                Duration::from_secs(a.timeout),
                &|status| bar.set_message(status.to_owned()),
            )
            .await
        }
        .await;
        bar.finish_and_clear();
        let snap = result?;
        let shown = tag
            .clone()
            .or_else(|| snap.tags.first().cloned())
            .unwrap_or_else(|| "latest".into());
        println!("{}:{shown} {}", snap.name, snap.id);
        Ok(ExitCode::SUCCESS)
    })
}
