//! Image verbs that work on the store directly (it is shared with berthd
//! through its flock): `berth images`, `berth rmi`, `berth image import`,
//! `berth image prune`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};

use berth_image::Store;

use super::{say, Failure, Outcome};

/// berth's own failures exit 125, as Docker's do.
pub fn image_failure(e: berth_image::Error) -> Failure {
    Failure {
        message: e.to_string(),
        code: 125,
    }
}

pub fn open_store(data_root: &Path) -> Result<Store, Failure> {
    Store::open(data_root).map_err(image_failure)
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show the DIGEST column: the digest the repository serves the image
    /// under (a multi-platform image's index digest).
    #[arg(long)]
    digests: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even when a container uses it (the container keeps its layers).
    #[arg(short, long)]
    force: bool,
    /// Images by name, ID or ID prefix.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import a `docker save` archive or an OCI image layout (dir or tar).
    Import {
        /// The archive or layout directory.
        path: PathBuf,
    },
    /// List images (same as `berth images`).
    Ls(ImagesArgs),
    /// Show images in full (JSON, Docker's field names).
    Inspect {
        /// Images by name, ID or ID prefix.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove images (same as `berth rmi`).
    Rm(RmiArgs),
    /// Remove untagged images no container uses, and unused layers.
    Prune {
        /// Remove every image no container uses, tagged or not.
        #[arg(short, long)]
        all: bool,
        /// Accepted for Docker compatibility (berth never asks).
        #[arg(short, long)]
        force: bool,
    },
}

pub fn images(data_root: &Path, a: ImagesArgs) -> Outcome {
    let store = open_store(data_root)?;
    let list = store.list().map_err(image_failure)?;
    if a.json {
        let text = serde_json::to_string_pretty(&list).map_err(|e| Failure::new(e.to_string()))?;
        say(&text)?;
        return Ok(0);
    }
    // Docker's columns; DIGEST only with --digests, in full.
    let digest = |d: &str| {
        if a.digests {
            format!("{d:<71}  ")
        } else {
            String::new()
        }
    };
    say(&format!(
        "{:<40}  {:<16}  {}{:<12}  {:<20}  SIZE",
        "REPOSITORY",
        "TAG",
        digest("DIGEST"),
        "IMAGE ID",
        "CREATED"
    ))?;
    for i in &list {
        say(&format!(
            "{:<40}  {:<16}  {}{:<12}  {:<20}  {}",
            i.repository,
            i.tag,
            digest(&i.digest),
            i.id.get(7..19).unwrap_or(&i.id),
            i.created.as_deref().map_or_else(|| "?".into(), ago),
            human_size(i.size),
        ))?;
    }
    Ok(0)
}

/// `image inspect`: a JSON array, one object per image, with Docker's
/// field names; `Manifest` (the platform manifest picked) and `Index`
/// (the index it came from) are berth's. Every name is tried; a missing
/// one is one line on stderr and exit 125, as Docker's exit 1 is its own.
fn inspect(data_root: &Path, names: &[String]) -> Outcome {
    let store = open_store(data_root)?;
    let mut out = Vec::new();
    let mut failed = false;
    for name in names {
        match store.inspect(name) {
            Ok(d) => {
                let rec = &d.record;
                let repo_digests: Vec<String> = rec
                    .repo_digests
                    .iter()
                    .map(|rd| match rd.rsplit_once('@') {
                        Some((repo, dg)) => {
                            format!("{}@{dg}", berth_image::reference::familiar(repo))
                        }
                        None => rd.clone(),
                    })
                    .collect();
                out.push(serde_json::json!({
                    "Id": d.id,
                    "RepoTags": d.tags,
                    "RepoDigests": repo_digests,
                    "Manifest": rec.manifest,
                    "Index": rec.index,
                    "Created": rec.created,
                    "Size": rec.size,
                    "Architecture": d.config.architecture,
                    "Os": d.config.os,
                    "Config": d.config.config,
                    "RootFS": {"Type": d.config.rootfs.kind, "Layers": rec.layers},
                }));
            }
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    let text = serde_json::to_string_pretty(&out).map_err(|e| Failure::new(e.to_string()))?;
    say(&text)?;
    if failed {
        return Err(Failure {
            message: String::new(),
            code: 125,
        });
    }
    Ok(0)
}

pub fn rmi(data_root: &Path, a: RmiArgs) -> Outcome {
    let store = open_store(data_root)?;
    let mut failed = None;
    for name in &a.images {
        match store.remove(name, a.force) {
            Ok(lines) => {
                for l in lines {
                    say(&l)?;
                }
            }
            Err(e) => {
                eprintln!("berth: {e}");
                failed = Some(125);
            }
        }
    }
    match failed {
        Some(code) => Err(Failure {
            message: String::new(),
            code,
        }),
        None => Ok(0),
    }
}

pub fn image(data_root: &Path, cmd: ImageCommand) -> Outcome {
    match cmd {
        ImageCommand::Import { path } => {
            let store = open_store(data_root)?;
            let imported = berth_image::import::import(&store, &path).map_err(image_failure)?;
            for i in imported {
                if i.tags.is_empty() {
                    say(&format!("Loaded image ID: {}", i.id))?;
                }
                for t in i.tags {
                    let r = berth_image::reference::Reference::parse(&t).map_err(image_failure)?;
                    say(&format!(
                        "Loaded image: {}:{}",
                        r.familiar_repository(),
                        r.tag.unwrap_or_default()
                    ))?;
                }
            }
            Ok(0)
        }
        ImageCommand::Ls(a) => images(data_root, a),
        ImageCommand::Inspect { images } => inspect(data_root, &images),
        ImageCommand::Rm(a) => rmi(data_root, a),
        ImageCommand::Prune { all, force: _ } => {
            let store = open_store(data_root)?;
            let (deleted, freed) = store.prune(all).map_err(image_failure)?;
            for id in deleted {
                say(&format!("Deleted: {id}"))?;
            }
            say(&format!("Total reclaimed space: {}", human_size(freed)))?;
            Ok(0)
        }
    }
}

/// Docker's sizes: decimal units, three significant digits.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[u]
    }
}

fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339.get(..19).unwrap_or(rfc3339)) else {
        return "?".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 60 => "less than a minute ago".into(),
        s if s < 3600 => format!("{} minutes ago", s / 60),
        s if s < 86400 * 2 => format!("{} hours ago", s / 3600),
        s if s < 86400 * 60 => format!("{} days ago", s / 86400),
        s => format!("{} months ago", s / (86400 * 30)),
    }
}
