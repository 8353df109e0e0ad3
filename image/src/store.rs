//! The image store under `<data-root>/images`:
//!
//! ```text
//! lock                 flock: shared while adding (pull, import, a container's lease),
//!                      exclusive while deleting (rmi, prune)
//! index.lock           flock around each read-modify-write of index.json
//! index.json           tags -> image ID, image ID -> record (written atomically)
//! blobs/sha256/<hex>   manifests and configs, verified on write and on read
//! layers/<hex>/        one unpacked layer by diff ID: diff/, link (short name), size
//! l/<short>            -> ../layers/<hex>/diff, short names for overlay's lowerdir
//! locks/<hex>          flock per layer: one unpack at a time, others wait and reuse it
//! leases/<id>.json     a container's hold on its image's layers (gone with its directory)
//! tmp/                 layers being unpacked; never trusted, emptied by rmi/prune
//! ```
//!
//! Architecture Invariant: a layer directory appears under `layers/` only
//! by a rename of a fully unpacked and verified (blob digest, size, diff
//! ID) temp directory; a pull killed at any point leaves at most junk in
//! `tmp/`, which nothing reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::model::{self, Compression, ImageConfig};
use crate::reference::{familiar, Reference};
use crate::{Error, Result};

/// The store's directory under a data root.
pub fn store_dir(data_root: &Path) -> PathBuf {
    data_root.join("images")
}

/// One image as the index records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The manifest's digest (the registry's, or of the manifest berth
    /// wrote for a `docker save` import).
    pub manifest: String,
    /// The config's digest: the image ID.
    pub config: String,
    /// Diff IDs, bottom layer first.
    pub layers: Vec<String>,
    /// Unpacked size in bytes.
    pub size: u64,
    #[serde(default)]
    pub created: Option<String>,
    /// Docker's RepoDigests: `domain/path@digest`, the digest a repository
    /// serves the image under (a multi-platform image's index digest, not
    /// the platform manifest's). Oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// The index (manifest list) `manifest` was picked from, when the
    /// image came through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

impl ImageRecord {
    /// The digest `repository` (`domain/path`) has this image under: its
    /// repo digest (the newest), else the manifest's own digest.
    pub fn digest_in(&self, repository: &str) -> &str {
        self.repo_digests
            .iter()
            .rev()
            .find_map(|rd| {
                rd.rsplit_once('@')
                    .filter(|(repo, _)| *repo == repository)
                    .map(|(_, d)| d)
            })
            .unwrap_or(&self.manifest)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    version: u32,
    /// Image ID -> record.
    #[serde(default)]
    images: BTreeMap<String, ImageRecord>,
    /// `domain/path:tag` -> image ID.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// A container's hold on an image.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    /// The container's directory: the lease lasts as long as it exists.
    dir: PathBuf,
    image: String,
    layers: Vec<String>,
}

/// What `berth images` shows for one tag (or one untagged image).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub repository: String,
    pub tag: String,
    pub id: String,
    /// The digest the repository has the image under (see
    /// `ImageRecord::digest_in`).
    pub digest: String,
    /// The platform manifest's digest.
    pub manifest: String,
    pub size: u64,
    pub created: Option<String>,
}

/// One image in full, for `image inspect`.
#[derive(Debug, Clone)]
pub struct ImageDetails {
    pub id: String,
    /// `repository:tag`, as Docker shows them.
    pub tags: Vec<String>,
    pub record: ImageRecord,
    pub config: ImageConfig,
}

/// A held flock on one of the store's lock files.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// The image store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn mkdir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("create", path, e))
}

fn lock_file(path: &Path, arg: FlockArg) -> Result<StoreLock> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let lock = Flock::lock(f, arg).map_err(|(_, e)| Error::errno("lock", path, e))?;
    Ok(StoreLock { _lock: lock })
}

/// A random short name for a layer's link (12 characters of base32, as
/// Docker's overlay2 keeps lowerdir options short).
fn short_name() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 12];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect())
}

fn internal(e: runtime_core::Error) -> Error {
    Error::Other(e.to_string())
}

impl Store {
    /// Opens (creating when needed) the store under `data_root`.
    pub fn open(data_root: &Path) -> Result<Store> {
        let dir = store_dir(data_root);
        for sub in ["blobs/sha256", "layers", "l", "locks", "leases", "tmp"] {
            mkdir(&dir.join(sub))?;
        }
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Held while adding content, so no rmi/prune deletes it meanwhile.
    pub fn shared(&self) -> Result<StoreLock> {
        lock_file(&self.dir.join("lock"), FlockArg::LockShared)
    }

    /// Held while deleting content.
    pub fn exclusive(&self) -> Result<StoreLock> {
        lock_file(&self.dir.join("lock"), FlockArg::LockExclusive)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Stores a small blob (manifest, config) after checking its digest.
    pub fn write_blob(&self, what: &str, d: &Digest, data: &[u8]) -> Result<()> {
        d.verify(what, data, None)?;
        let path = self.blob_path(d);
        if path.exists() {
            return Ok(());
        }
        // A temp name of its own: two pulls may write the same blob at once.
        let tmp = self.dir.join("tmp").join(format!("blob-{}", short_name()?));
        let written = (|| {
            use std::io::Write;
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", &path, e));
        }
        runtime_core::atomic::sync_dir(&self.dir.join("blobs/sha256")).map_err(internal)
    }

    /// Reads a blob and checks it still has its digest.
    pub fn read_blob(&self, what: &str, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let data = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        d.verify(what, &data, None)?;
        Ok(data)
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }

    /// Whether a layer is unpacked (its directory only exists once whole).
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Claims a layer for unpacking. Waits while another process unpacks
    /// it; returns `None` when it is there (then there is nothing to do).
    pub fn begin_layer(&self, diff_id: &Digest) -> Result<Option<LayerWriter<'_>>> {
        if self.has_layer(diff_id) {
            return Ok(None);
        }
        let lock = lock_file(
            &self.dir.join("locks").join(diff_id.hex()),
            FlockArg::LockExclusive,
        )?;
        if self.has_layer(diff_id) {
            return Ok(None);
        }
        Ok(Some(LayerWriter {
            store: self,
            diff_id: diff_id.clone(),
            _lock: lock,
        }))
    }

    /// Unpacked size of a layer.
    pub fn layer_size(&self, diff_id: &Digest) -> u64 {
        fs::read_to_string(self.layer_dir(diff_id).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(data) => model::parse_json(&path.display().to_string(), &data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Read-modify-write of the index under its lock; written atomically.
    fn update_index<T>(&self, f: impl FnOnce(&mut IndexFile) -> Result<T>) -> Result<T> {
        let _lock = lock_file(&self.dir.join("index.lock"), FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        index.version = 1;
        let path = self.dir.join("index.json");
        let data = serde_json::to_vec_pretty(&index)
            .map_err(|e| Error::Other(format!("serialize index: {e}")))?;
        runtime_core::atomic::write(&path, &data).map_err(internal)?;
        Ok(out)
    }

    /// Records an image (all its layers must be unpacked) and points
    /// `tags` at it. Returns the image ID.
    /// A record already there keeps its repo digests (the new ones last).
    pub fn add_image(&self, mut record: ImageRecord, tags: &[Reference]) -> Result<String> {
        for l in &record.layers {
            if !self.has_layer(&Digest::parse(l)?) {
                return Err(Error::Other(format!("layer {l} is not unpacked")));
            }
        }
        let id = record.config.clone();
        self.update_index(|index| {
            if let Some(old) = index.images.get(&id) {
                let mut digests: Vec<String> = old
                    .repo_digests
                    .iter()
                    .filter(|d| !record.repo_digests.contains(d))
                    .cloned()
                    .collect();
                digests.append(&mut record.repo_digests);
                record.repo_digests = digests;
                record.index = record.index.take().or_else(|| old.index.clone());
            }
            index.images.insert(id.clone(), record);
            for t in tags {
                index.tags.insert(t.to_string(), id.clone());
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Every tag, and every untagged image, as `berth images` lists them.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        let mut tagged = BTreeSet::new();
        let summary = |repository: &str, tag: String, id: &str, r: &ImageRecord| ImageSummary {
            repository: familiar(repository),
            tag,
            id: id.to_string(),
            digest: r.digest_in(repository).to_string(),
            manifest: r.manifest.clone(),
            size: r.size,
            created: r.created.clone(),
        };
        for (name, id) in &index.tags {
            let Some(r) = index.images.get(id) else {
                continue;
            };
            tagged.insert(id.clone());
            let (repo, tag) = name.rsplit_once(':').unwrap_or((name.as_str(), ""));
            out.push(summary(repo, tag.to_string(), id, r));
        }
        for (id, r) in &index.images {
            if !tagged.contains(id) {
                out.push(summary("<none>", "<none>".into(), id, r));
            }
        }
        Ok(out)
    }

    /// Finds an image by name (tag), full ID, or unique ID prefix.
    pub fn resolve(&self, name: &str) -> Result<(String, ImageRecord)> {
        let index = self.read_index()?;
        let (id, _) = resolve_in(&index, name)?;
        // A tag left pointing at a removed image (an index edited by hand or
        // by an older berth) is "not found", never a panic in berthd.
        let r = index
            .images
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        Ok((id, r))
    }

    /// `image inspect`: the image `name` names, with its tags (Docker's
    /// RepoTags, familiar) and config.
    pub fn inspect(&self, name: &str) -> Result<ImageDetails> {
        let index = self.read_index()?;
        let (id, _) = resolve_in(&index, name)?;
        let record = index
            .images
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let tags = index
            .tags
            .iter()
            .filter(|(_, v)| **v == id)
            .map(|(t, _)| {
                let (repo, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), ""));
                format!("{}:{tag}", familiar(repo))
            })
            .collect();
        let config_digest = Digest::parse(&record.config)?;
        let config_data = self.read_blob(&format!("config of {name}"), &config_digest)?;
        let config = model::parse_json(&format!("config of {name}"), &config_data)?;
        Ok(ImageDetails {
            id,
            tags,
            record,
            config,
        })
    }

    /// Containers (their directories) that hold `image_id`.
    fn users(&self, image_id: &str) -> Result<Vec<String>> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|(_, l)| l.image == image_id)
            .map(|(id, _)| id)
            .collect())
    }

    /// Live leases by container ID; stale ones (container gone) are skipped.
    fn leases(&self) -> Result<Vec<(String, LeaseFile)>> {
        let dir = self.dir.join("leases");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
            let e = e.map_err(|e| Error::io("read", &dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(data) = fs::read(e.path()) else {
                continue;
            };
            let Ok(lease) = serde_json::from_slice::<LeaseFile>(&data) else {
                continue;
            };
            if lease.dir.is_dir() {
                out.push((id.to_string(), lease));
            }
        }
        Ok(out)
    }

    /// `rmi`: untags `name` (a tag), or removes the image `name` names by
    /// ID. An image a container uses is refused without `force`; with it
    /// the tag goes but the layers stay until the container is removed.
    /// Returns Docker's lines (`Untagged: ...`, `Deleted: ...`).
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<String>> {
        let _lock = self.exclusive()?;
        let mut lines = Vec::new();
        self.update_index(|index| {
            let (id, by_tag) = resolve_in(index, name)?;
            let tags: Vec<String> = index
                .tags
                .iter()
                .filter(|(_, v)| **v == id)
                .map(|(k, _)| k.clone())
                .collect();
            let users = self.users(&id)?;
            if !force {
                if let Some(c) = users.first() {
                    return Err(Error::InUse(format!(
                        "image {name} is in use by container {c}: remove the container first, or use rmi -f"
                    )));
                }
                if by_tag.is_none() && tags.len() > 1 {
                    return Err(Error::InUse(format!(
                        "image {} is referenced by {} tags: name one, or use rmi -f",
                        &id[7..19],
                        tags.len()
                    )));
                }
            }
            let untag: Vec<String> = match &by_tag {
                Some(t) if !force || tags.len() > 1 => vec![t.clone()],
                _ => tags.clone(),
            };
            for t in &untag {
                index.tags.remove(t);
                let (repo, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), ""));
                lines.push(format!("Untagged: {}:{tag}", familiar(repo)));
            }
            let still_tagged = index.tags.values().any(|v| *v == id);
            if !still_tagged && users.is_empty() {
                index.images.remove(&id);
                lines.push(format!("Deleted: {id}"));
            }
            Ok(())
        })?;
        self.collect_garbage()?;
        Ok(lines)
    }

    /// `image prune`: removes untagged images no container uses (`all`:
    /// every image no container uses), then unreferenced layers and blobs.
    pub fn prune(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let _lock = self.exclusive()?;
        let used: BTreeSet<String> = self.leases()?.into_iter().map(|(_, l)| l.image).collect();
        let deleted = self.update_index(|index| {
            let tagged: BTreeSet<String> = index.tags.values().cloned().collect();
            let doomed: Vec<String> = index
                .images
                .keys()
                .filter(|id| !used.contains(*id) && (all || !tagged.contains(*id)))
                .cloned()
                .collect();
            for id in &doomed {
                index.images.remove(id);
            }
            index.tags.retain(|_, v| !doomed.contains(v));
            Ok(doomed)
        })?;
        let freed = self.collect_garbage()?;
        Ok((deleted, freed))
    }

    /// Deletes layers, blobs, links, temp dirs and stale leases nothing
    /// refers to. Call with the exclusive lock held. Returns bytes freed.
    fn collect_garbage(&self) -> Result<u64> {
        let index = self.read_index()?;
        let mut keep_layers: BTreeSet<String> = BTreeSet::new();
        let mut keep_blobs: BTreeSet<String> = BTreeSet::new();
        for r in index.images.values() {
            keep_layers.extend(r.layers.iter().cloned());
            keep_blobs.insert(r.manifest.clone());
            keep_blobs.insert(r.config.clone());
        }
        let live = self.leases()?;
        let live_ids: BTreeSet<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        for (_, l) in &live {
            keep_layers.extend(l.layers.iter().cloned());
            keep_blobs.insert(l.image.clone());
        }
        // Stale leases: their container directory is gone.
        if let Ok(rd) = fs::read_dir(self.dir.join("leases")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live_ids.contains(name.trim_end_matches(".json")) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut freed = 0;
        let layers = self.dir.join("layers");
        let tmp = self.dir.join("tmp");
        for e in fs::read_dir(&layers)
            .map_err(|e| Error::io("read", &layers, e))?
            .flatten()
        {
            let hex = e.file_name().to_string_lossy().into_owned();
            if keep_layers.contains(&format!("sha256:{hex}")) {
                continue;
            }
            let dir = e.path();
            freed += fs::read_to_string(dir.join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if let Ok(link) = fs::read_to_string(dir.join("link")) {
                let _ = fs::remove_file(self.dir.join("l").join(link.trim()));
            }
            // Out of layers/ in one step, so a half-deleted layer is never seen.
            let doomed = tmp.join(format!("rm-{hex}"));
            fs::rename(&dir, &doomed).map_err(|e| Error::io("rename", &dir, e))?;
        }
        let blobs = self.dir.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(|e| Error::io("read", &blobs, e))?
            .flatten()
        {
            let hex = e.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&format!("sha256:{hex}")) {
                let _ = fs::remove_file(e.path());
            }
        }
        // Nobody unpacks while the exclusive lock is held: tmp/ is junk.
        for e in fs::read_dir(&tmp)
            .map_err(|e| Error::io("read", &tmp, e))?
            .flatten()
        {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
        Ok(freed)
    }

    /// A container's hold on image `name`: checks the image is whole,
    /// records the lease, and returns what `run` needs. The store's shared
    /// lock is held until the `Lease` is dropped: keep it until the
    /// container's directory exists (a lease whose directory is missing
    /// is stale to garbage collection).
    pub fn lease(&self, container_dir: &Path, name: &str) -> Result<Lease> {
        let lock = self.shared()?;
        let (id, record) = self.resolve(name)?;
        let config_digest = Digest::parse(&record.config)?;
        let config_data = self.read_blob(&format!("config of {name}"), &config_digest)?;
        let config: ImageConfig = model::parse_json(&format!("config of {name}"), &config_data)?;
        let mut links = Vec::new();
        let dirs = self.layer_dirs(&record)?;
        for l in record.layers.iter().rev() {
            let d = Digest::parse(l)?;
            let dir = self.layer_dir(&d);
            let link = fs::read_to_string(dir.join("link")).map_err(|_| {
                Error::Other(format!(
                    "image {name} is missing layer {l}: pull or import it again"
                ))
            })?;
            links.push(link.trim().to_string());
        }
        let container_id = container_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Other(format!("bad container dir {}", container_dir.display()))
            })?;
        let lease = LeaseFile {
            dir: container_dir.to_path_buf(),
            image: id.clone(),
            layers: record.layers.clone(),
        };
        let data = serde_json::to_vec(&lease).map_err(|e| Error::Other(e.to_string()))?;
        runtime_core::atomic::write(
            &self.dir.join("leases").join(format!("{container_id}.json")),
            &data,
        )
        .map_err(internal)?;
        Ok(Lease {
            image_id: id,
            config,
            links,
            dirs,
            store: self.clone(),
            _lock: lock,
        })
    }

    /// The unpacked directories of an image's layers, top first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        record
            .layers
            .iter()
            .rev()
            .map(|l| Ok(self.layer_dir(&Digest::parse(l)?).join("diff")))
            .collect()
    }
}

/// Finds `name` in the index: a tag (returned as the second value), a
/// full image ID, or a unique prefix of one.
fn resolve_in(index: &IndexFile, name: &str) -> Result<(String, Option<String>)> {
    let hexish = name.strip_prefix("sha256:").unwrap_or(name);
    if hexish.len() >= 4
        && hexish
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let hits: Vec<&String> = index
            .images
            .keys()
            .filter(|id| id[7..].starts_with(hexish))
            .collect();
        match hits.len() {
            1 => return Ok((hits[0].clone(), None)),
            n if n > 1 => return Err(Error::Ambiguous(name.to_string())),
            _ => {}
        }
    }
    let r = Reference::parse(name)?;
    let key = r.to_string();
    if let Some(id) = index.tags.get(&key) {
        return Ok((id.clone(), Some(key)));
    }
    if let Some(d) = &r.digest {
        // By the repository's digest (an index's too), or the manifest's.
        let repo_digest = format!("{}@{d}", r.repository());
        if let Some((id, _)) = index
            .images
            .iter()
            .find(|(_, rec)| rec.manifest == d.as_str() || rec.repo_digests.contains(&repo_digest))
        {
            return Ok((id.clone(), None));
        }
    }
    Err(Error::NotFound(name.to_string()))
}

/// A claim on one layer's unpacking (the layer's flock is held).
pub struct LayerWriter<'a> {
    store: &'a Store,
    diff_id: Digest,
    _lock: StoreLock,
}

/// What a layer blob should be, checked while it streams.
#[derive(Debug, Clone)]
pub struct BlobCheck {
    pub digest: Digest,
    pub size: Option<u64>,
}

impl LayerWriter<'_> {
    /// Inflates (gzip, zstd or none, told by its first bytes), checks and
    /// unpacks a layer blob as it streams in, then renames it into
    /// place. `blob`: the compressed blob's digest and size, when known.
    /// On any failure the temp directory is removed and nothing changes.
    pub fn unpack(self, what: &str, reader: impl Read, blob: Option<&BlobCheck>) -> Result<u64> {
        let tmp =
            self.store
                .dir
                .join("tmp")
                .join(format!("{}-{}", self.diff_id.hex(), short_name()?));
        let result = self.unpack_into(&tmp, what, reader, blob);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn unpack_into<R: Read>(
        &self,
        tmp: &Path,
        what: &str,
        reader: R,
        blob: Option<&BlobCheck>,
    ) -> Result<u64> {
        let diff = tmp.join("diff");
        mkdir(&diff)?;
        // The layer's root is the container's `/` unless the tar says
        // otherwise: 0755, as Docker's, so any user can look up paths.
        fs::set_permissions(&diff, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &diff, e))?;
        let mut raw = BufReader::with_capacity(1 << 20, HashingReader::new(reader));
        let head = raw
            .fill_buf()
            .map_err(|e| Error::Layer {
                layer: what.to_string(),
                message: format!("read: {e}"),
            })?
            .to_vec();
        // When unpacking fails, a blob that is not what it should be is
        // the cause to report (corrupt data fails inflate or tar first).
        let blame_blob = |raw: Raw<R>, e: Error| -> Error {
            let Some(b) = blob else { return e };
            match raw.into_inner().finish() {
                Ok((d, _)) if d != b.digest => Error::DigestMismatch {
                    what: format!("layer {what}"),
                    expected: b.digest.to_string(),
                    actual: d.to_string(),
                },
                _ => e,
            }
        };
        let (unpacked, diff_id, raw) = match Compression::sniff(&head) {
            Compression::Gzip => {
                let mut tar = HashingReader::new(flate2::bufread::MultiGzDecoder::new(raw));
                let u = crate::unpack::unpack(what, &mut tar, &diff)
                    .and_then(|u| Ok((u, tar.finish().map_err(|e| stream_error(what, e))?.0)));
                let raw = tar.into_inner().into_inner();
                match u {
                    Ok((u, d)) => (u, d, raw),
                    Err(e) => return Err(blame_blob(raw, e)),
                }
            }
            Compression::None => {
                let mut tar = HashingReader::new(raw);
                let u = crate::unpack::unpack(what, &mut tar, &diff)
                    .and_then(|u| Ok((u, tar.finish().map_err(|e| stream_error(what, e))?.0)));
                let raw = tar.into_inner();
                match u {
                    Ok((u, d)) => (u, d, raw),
                    Err(e) => return Err(blame_blob(raw, e)),
                }
            }
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(raw)
                    .map_err(|e| stream_error(what, e))?;
                let mut tar = HashingReader::new(decoder);
                let u = crate::unpack::unpack(what, &mut tar, &diff)
                    .and_then(|u| Ok((u, tar.finish().map_err(|e| stream_error(what, e))?.0)));
                let raw = tar.into_inner().finish();
                match u {
                    Ok((u, d)) => (u, d, raw),
                    Err(e) => return Err(blame_blob(raw, e)),
                }
            }
        };
        let (blob_digest, blob_size) = raw
            .into_inner()
            .finish()
            .map_err(|e| stream_error(what, e))?;
        if let Some(b) = blob {
            if let Some(size) = b.size {
                if size != blob_size {
                    return Err(Error::SizeMismatch {
                        what: format!("layer {what}"),
                        expected: size,
                        actual: blob_size,
                    });
                }
            }
            if blob_digest != b.digest {
                return Err(Error::DigestMismatch {
                    what: format!("layer {what}"),
                    expected: b.digest.to_string(),
                    actual: blob_digest.to_string(),
                });
            }
        }
        if diff_id != self.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {what} (uncompressed, its diff ID)"),
                expected: self.diff_id.to_string(),
                actual: diff_id.to_string(),
            });
        }
        let link = short_name()?;
        let write = |name: &str, data: &str| {
            let p = tmp.join(name);
            fs::write(&p, data).map_err(|e| Error::io("write", &p, e))
        };
        write("link", &link)?;
        write("size", &unpacked.size.to_string())?;
        let l = self.store.dir.join("l").join(&link);
        std::os::unix::fs::symlink(format!("../layers/{}/diff", self.diff_id.hex()), &l)
            .map_err(|e| Error::io("symlink", &l, e))?;
        // Everything on disk before the rename makes it visible.
        syncfs(tmp)?;
        let dest = self.store.layer_dir(&self.diff_id);
        fs::rename(tmp, &dest).map_err(|e| Error::io("rename", tmp, e))?;
        runtime_core::atomic::sync_dir(&self.store.dir.join("layers")).map_err(internal)?;
        Ok(unpacked.size)
    }
}

type Raw<R> = BufReader<HashingReader<R>>;

fn stream_error(what: &str, e: std::io::Error) -> Error {
    Error::Layer {
        layer: what.to_string(),
        message: format!("read: {e}"),
    }
}

fn syncfs(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("syncfs", dir, e.into()))
}

/// A container's hold on an image (see `Store::lease`).
pub struct Lease {
    pub image_id: String,
    pub config: ImageConfig,
    /// Short link names of the layers, top first.
    links: Vec<String>,
    /// The layers' directories, top first.
    dirs: Vec<PathBuf>,
    store: Store,
    _lock: StoreLock,
}

impl Lease {
    /// The unpacked layer directories, top first.
    pub fn layer_dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The image's layers as an overlay's lower dirs: short names under
    /// `l/` (`/proc/self/fd/N/<short>` once mounted, so well over 100
    /// layers fit in the one page of mount options). The container's
    /// shim mounts them (see `runtime_core::rootfs::Overlay`).
    pub fn lower(&self) -> Result<runtime_core::rootfs::Lower> {
        if self.links.is_empty() {
            // An image without layers: overlayfs wants a lower dir.
            let empty = self.store.dir.join("tmp").join("empty");
            mkdir(&empty)?;
            return Ok(runtime_core::rootfs::Lower {
                base: None,
                dirs: vec![empty],
            });
        }
        Ok(runtime_core::rootfs::Lower {
            base: Some(self.store.dir.join("l")),
            dirs: self.links.iter().map(PathBuf::from).collect(),
        })
    }

    /// The mode of the container's upper dir: its root is the container's
    /// `/`, so it takes the top layer's mode (0755 when the layer does not
    /// say).
    pub fn upper_mode(&self) -> u32 {
        self.dirs
            .first()
            .and_then(|d| fs::metadata(d).ok())
            .map_or(0o755, |m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_pointing_at_a_missing_image_is_not_found_not_a_panic() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = Store::open(root.path()).expect("open store");
        let id = format!("sha256:{}", "ab".repeat(32));
        let index = serde_json::json!({
            "version": 1,
            "images": {},
            "tags": {"docker.io/library/busybox:latest": id},
        });
        fs::write(store.dir().join("index.json"), index.to_string()).expect("write index");
        assert!(matches!(store.resolve("busybox"), Err(Error::NotFound(_))));
        assert!(matches!(store.inspect("busybox"), Err(Error::NotFound(_))));
    }
}
