//! `berth image import`: a `docker save` archive or an OCI image layout,
//! as a directory or a tar file.
//!
//! Everything is checked before the index changes: every file the
//! manifests name must be in the archive (a truncated tar or a missing
//! layer fails before any unpacking), every blob is verified by digest
//! and size as it streams, every layer by its diff ID.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digest;
use crate::model::{self, Descriptor, Document, ImageConfig, Manifest};
use crate::reference::Reference;
use crate::store::{BlobCheck, ImageRecord, Store};
use crate::{Error, Result};

/// Largest manifest, index or config read into memory.
const MAX_JSON: u64 = 16 << 20;
/// Layers unpacked at once.
const PARALLEL_LAYERS: usize = 4;

/// One image that was imported.
#[derive(Debug, Clone)]
pub struct Imported {
    pub id: String,
    pub tags: Vec<String>,
}

/// Where the archive's files come from.
enum Source {
    Dir(PathBuf),
    /// A tar file: each member's offset and size, symlinks resolved.
    Tar {
        path: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

/// Normalizes a path inside the archive; refuses `..` and absolute paths.
fn clean(archive: &Path, p: &str) -> Result<String> {
    let mut out: Vec<&str> = Vec::new();
    if p.starts_with('/') {
        return Err(bad(archive, format!("path {p:?} is absolute")));
    }
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(archive, format!("path {p:?} leaves the archive"))),
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

fn bad(archive: &Path, message: impl Into<String>) -> Error {
    Error::Archive {
        path: archive.to_path_buf(),
        message: message.into(),
    }
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = meta.len();
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let mut archive = tar::Archive::new(&mut f);
        let entries = archive
            .entries_with_seek()
            .map_err(|e| bad(path, format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(path, format!("not a valid tar archive: {e}")))?;
            let name = clean(path, &String::from_utf8_lossy(&entry.path_bytes()))?;
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name_bytes().map(|t| t.into_owned()) {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    let base = if kind.is_symlink() {
                        name.rsplit_once('/').map_or("", |(d, _)| d).to_string()
                    } else {
                        String::new()
                    };
                    links.insert(
                        name,
                        if base.is_empty() {
                            target
                        } else {
                            format!("{base}/{target}")
                        },
                    );
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let (off, size) = (entry.raw_file_position(), entry.size());
            if off + size > len {
                return Err(bad(
                    path,
                    format!(
                        "truncated: {name} needs {} bytes more than the file has",
                        off + size - len
                    ),
                ));
            }
            members.insert(name, (off, size));
        }
        // Entries a tar ends in the middle of, or never wrote: a truncated
        // archive often ends exactly at a header boundary, which tar
        // readers take for the end.
        if len % 512 != 0 {
            return Err(bad(
                path,
                "truncated: its size is not a whole number of tar blocks",
            ));
        }
        for (name, target) in links {
            let mut t = target;
            for _ in 0..8 {
                let c = clean(path, &t)?;
                if let Some(m) = members.get(&c).copied() {
                    members.insert(name.clone(), m);
                    break;
                }
                t = c;
            }
        }
        Ok(Source::Tar {
            path: path.to_path_buf(),
            members,
        })
    }

    fn archive(&self) -> &Path {
        match self {
            Source::Dir(p) => p,
            Source::Tar { path, .. } => path,
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => clean(d, name).is_ok_and(|n| d.join(n).is_file()),
            Source::Tar { members, .. } => members.contains_key(name),
        }
    }

    /// A reader of one member and its size.
    fn reader(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let archive = self.archive();
        let name = clean(archive, name)?;
        match self {
            Source::Dir(d) => {
                let p = d.join(&name);
                let f = File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                let meta = f.metadata().map_err(|e| Error::io("stat", &p, e))?;
                if !meta.is_file() {
                    return Err(bad(archive, format!("{name} is not a regular file")));
                }
                Ok((Box::new(f), meta.len()))
            }
            Source::Tar { path, members } => {
                let (off, size) = *members
                    .get(&name)
                    .ok_or_else(|| bad(archive, format!("{name} is missing from the archive")))?;
                let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| Error::io("seek", path, e))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (r, size) = self.reader(name)?;
        if size > MAX_JSON {
            return Err(bad(
                self.archive(),
                format!("{name} is too large ({size} bytes)"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("read", self.archive().join(name), e))?;
        Ok(data)
    }
}

/// One image to import: where its config and layers are.
struct Plan {
    config: Vec<u8>,
    config_digest: Digest,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    /// Archive member of each layer, with the blob check when the format
    /// gives one (OCI layouts), bottom first.
    layers: Vec<(String, Option<BlobCheck>)>,
    tags: Vec<Reference>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports every image in the archive at `path`.
pub fn import(store: &Store, path: &Path) -> Result<Vec<Imported>> {
    let src = Source::open(path)?;
    let plans = if src.exists("manifest.json") {
        docker_plans(&src)?
    } else if src.exists("index.json") {
        oci_plans(&src)?
    } else {
        return Err(bad(
            path,
            "neither a docker save archive (manifest.json) nor an OCI image layout (index.json)",
        ));
    };
    let _lock = store.shared()?;
    let mut out = Vec::new();
    for plan in plans {
        out.push(import_one(store, &src, plan)?);
    }
    Ok(out)
}

fn docker_plans(src: &Source) -> Result<Vec<Plan>> {
    let archive = src.archive();
    let entries: Vec<DockerEntry> =
        model::parse_json("manifest.json", &src.read("manifest.json")?)?;
    let mut plans = Vec::new();
    for e in entries {
        if !src.exists(&e.config) {
            return Err(bad(
                archive,
                format!("config {} is missing from the archive", e.config),
            ));
        }
        for l in &e.layers {
            if !src.exists(l) {
                return Err(bad(
                    archive,
                    format!("layer {l} listed in manifest.json is missing from the archive"),
                ));
            }
        }
        let config = src.read(&e.config)?;
        let config_digest = Digest::of(&config);
        let parsed: ImageConfig = model::parse_json(&e.config, &config)?;
        if parsed.rootfs.diff_ids.len() != e.layers.len() {
            return Err(bad(
                archive,
                format!(
                    "manifest.json lists {} layers but the config has {} diff IDs",
                    e.layers.len(),
                    parsed.rootfs.diff_ids.len()
                ),
            ));
        }
        // docker load keeps no manifest; berth writes the OCI manifest of
        // the uncompressed layers so every image has one.
        let mut layer_descs = Vec::new();
        for (l, d) in e.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let (_, size) = src.reader(l)?;
            layer_descs.push(Descriptor {
                media_type: model::OCI_LAYER_TAR.into(),
                digest: d.clone(),
                size,
                platform: None,
                annotations: Default::default(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: model::OCI_MANIFEST.into(),
            config: Descriptor {
                media_type: model::OCI_CONFIG.into(),
                digest: config_digest.to_string(),
                size: config.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            layers: layer_descs,
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Other(e.to_string()))?;
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>>>()?;
        plans.push(Plan {
            manifest_digest: Digest::of(&manifest),
            manifest,
            config,
            config_digest,
            layers: e.layers.into_iter().map(|l| (l, None)).collect(),
            tags,
        });
    }
    Ok(plans)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn read_verified(src: &Source, what: &str, desc: &Descriptor) -> Result<(Digest, Vec<u8>)> {
    let d = desc.digest()?;
    let name = blob_name(&d);
    if !src.exists(&name) {
        return Err(bad(
            src.archive(),
            format!("{what} {d} is missing from the layout"),
        ));
    }
    let data = src.read(&name)?;
    d.verify(what, &data, Some(desc.size))?;
    Ok((d, data))
}

fn oci_plans(src: &Source) -> Result<Vec<Plan>> {
    let archive = src.archive();
    let index: model::Index = model::parse_json("index.json", &src.read("index.json")?)?;
    let mut plans = Vec::new();
    for top in &index.manifests {
        let name = top
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                top.annotations
                    .get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains('/'))
            })
            .map(|n| Reference::parse(n))
            .transpose()?;
        let mut desc = top.clone();
        // Follow nested indexes to the host's manifest.
        for _ in 0..4 {
            let (_, data) = read_verified(src, "manifest", &desc)?;
            match model::parse_document(&desc.digest, &data)? {
                Document::Index(i) => {
                    desc = model::select_platform(
                        &archive.display().to_string(),
                        &i,
                        &model::host_platform(),
                    )?
                    .clone();
                }
                Document::Manifest(m) => {
                    let (config_digest, config) = read_verified(src, "config", &m.config)?;
                    let mut layers = Vec::new();
                    for l in &m.layers {
                        let d = l.digest()?;
                        if !src.exists(&blob_name(&d)) {
                            return Err(bad(
                                archive,
                                format!("layer {d} is missing from the layout"),
                            ));
                        }
                        layers.push((
                            blob_name(&d),
                            Some(BlobCheck {
                                digest: d,
                                size: Some(l.size),
                            }),
                        ));
                    }
                    plans.push(Plan {
                        manifest_digest: desc.digest()?,
                        manifest: data,
                        config,
                        config_digest,
                        layers,
                        tags: name.into_iter().collect(),
                    });
                    break;
                }
            }
        }
    }
    if plans.is_empty() {
        return Err(bad(archive, "the layout's index.json lists no images"));
    }
    Ok(plans)
}

fn import_one(store: &Store, src: &Source, plan: Plan) -> Result<Imported> {
    let config: ImageConfig = model::parse_json("image config", &plan.config)?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != plan.layers.len() {
        return Err(bad(
            src.archive(),
            format!(
                "the manifest has {} layers but the config {} diff IDs",
                plan.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let work: Vec<(Digest, &(String, Option<BlobCheck>))> =
        diff_ids.iter().cloned().zip(plan.layers.iter()).collect();
    let mut size = 0;
    for chunk in work.chunks(PARALLEL_LAYERS) {
        let results: Vec<Result<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(diff_id, (member, check))| {
                    s.spawn(move || -> Result<u64> {
                        let Some(writer) = store.begin_layer(diff_id)? else {
                            return Ok(store.layer_size(diff_id));
                        };
                        let (reader, _) = src.reader(member)?;
                        writer.unpack(member, reader, check.as_ref())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Other("layer unpack thread panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            size += r?;
        }
    }
    store.write_blob("manifest", &plan.manifest_digest, &plan.manifest)?;
    store.write_blob("config", &plan.config_digest, &plan.config)?;
    let record = ImageRecord {
        manifest: plan.manifest_digest.to_string(),
        config: plan.config_digest.to_string(),
        layers: diff_ids.iter().map(|d| d.to_string()).collect(),
        size,
        created: config.created.clone(),
        // An archive is not a registry: no repository serves it.
        repo_digests: Vec::new(),
        index: None,
    };
    let id = store.add_image(record, &plan.tags)?;
    Ok(Imported {
        id,
        tags: plan.tags.iter().map(|t| t.to_string()).collect(),
    })
}
