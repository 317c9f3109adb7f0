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
    /// Whether an image is present.
    Exists {
        /// Image reference.
        #[arg(default_value = "system/default:latest")]
        image: ImageRef,
    },
}

pub(crate) fn image(data_dir: &Path, cmd: ImageCommand) -> Result<ExitCode> {
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
