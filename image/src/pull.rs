//! `berth pull`: a registry image into the store, through oci-client (the
//! OCI distribution API: token and basic auth, manifests, blob streams).
//!
//! One streaming pipeline per layer, the layers in parallel: the HTTP
//! body goes chunk by chunk over a bounded channel to a blocking thread
//! that hashes, inflates, hashes again and untars it at once into the
//! layer's temp directory. No layer is written whole to disk and read
//! back. A layer already in the store is not downloaded; one another
//! pull is unpacking is waited for (its flock) and then reused.

use std::io::Read;
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use crate::digest::Digest;
use crate::model::{self, Descriptor, Document, ImageConfig};
use crate::reference::Reference;
use crate::store::{BlobCheck, ImageRecord, Store};
use crate::{Error, Result};

/// Largest manifest or config accepted.
const MAX_JSON: usize = 16 << 20;

/// What a pull reports as it goes.
pub trait Progress: Send + Sync {
    /// A layer is needed; `size` compressed bytes.
    fn layer_start(&self, digest: &Digest, size: u64);
    /// Bytes of a layer arrived.
    fn layer_bytes(&self, digest: &Digest, n: u64);
    /// A layer was already in the store.
    fn layer_exists(&self, digest: &Digest);
    /// A layer is unpacked and verified.
    fn layer_done(&self, digest: &Digest);
}

/// How to reach the registry.
#[derive(Default)]
pub struct PullOptions {
    /// Registries (host[:port]) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub credential: Option<crate::auth::Credential>,
    /// Extra CA certificates (PEM) to trust for this registry.
    pub ca_certs: Vec<Vec<u8>>,
    pub progress: Option<Arc<dyn Progress>>,
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: String,
    pub id: String,
    /// The digest the reference resolved to (the index's, for a list).
    pub digest: String,
    /// Whether any layer had to be downloaded.
    pub downloaded: bool,
}

fn registry_error(r: &Reference, e: oci_client::errors::OciDistributionError) -> Error {
    use oci_client::errors::OciDistributionError as E;
    let text = match &e {
        E::RegistryError { envelope, url } => format!(
            "{}: {}",
            url,
            envelope
                .errors
                .iter()
                .map(|x| format!("{:?}: {}", x.code, x.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        E::RequestError(re) => {
            let mut s = re.to_string();
            let mut src = std::error::Error::source(re);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
        other => other.to_string(),
    };
    Error::Registry(format!("pull {r}: {text}"))
}

fn client_ref(r: &Reference, digest: Option<&str>) -> oci_client::Reference {
    match (digest, &r.tag) {
        (Some(d), _) => {
            oci_client::Reference::with_digest(r.domain.clone(), r.path.clone(), d.to_string())
        }
        (None, Some(t)) => {
            oci_client::Reference::with_tag(r.domain.clone(), r.path.clone(), t.clone())
        }
        (None, None) => oci_client::Reference::with_digest(
            r.domain.clone(),
            r.path.clone(),
            r.digest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        ),
    }
}

const ACCEPT: [&str; 4] = [
    model::OCI_MANIFEST,
    model::DOCKER_MANIFEST,
    model::OCI_INDEX,
    model::DOCKER_LIST,
];

/// Pulls `name` into the store.
pub async fn pull(store: &Store, name: &str, opts: PullOptions) -> Result<Pulled> {
    let r = Reference::parse(name)?;
    // rustls needs a process-wide crypto provider; ring is the one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(opts.insecure_registries.clone()),
        extra_root_certificates: opts
            .ca_certs
            .iter()
            .map(|pem| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        ..Default::default()
    });
    let auth = match &opts.credential {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    // The top manifest (or index), checked against its digest.
    let top_ref = client_ref(&r, None);
    let (data, digest) = client
        .pull_manifest_raw(&top_ref, &auth, &ACCEPT)
        .await
        .map_err(|e| registry_error(&r, e))?;
    let top_digest = match &r.digest {
        Some(d) => d.clone(),
        None => Digest::parse(&digest).unwrap_or_else(|_| Digest::of(&data)),
    };
    top_digest.verify(&format!("manifest of {r}"), &data, None)?;
    let limit = |d: &[u8]| -> Result<()> {
        if d.len() > MAX_JSON {
            return Err(Error::Registry(format!("pull {r}: manifest too large")));
        }
        Ok(())
    };
    limit(&data)?;
    // The manifest, and the index it was picked from (when there is one).
    let (manifest, manifest_data, manifest_digest, index) =
        match model::parse_document(&format!("manifest of {r}"), &data)? {
            Document::Manifest(m) => (m, data.to_vec(), top_digest.clone(), None),
            Document::Index(i) => {
                let desc = model::select_platform(&r.to_string(), &i, &model::host_platform())?;
                let d = desc.digest()?;
                let (data, _) = client
                    .pull_manifest_raw(&client_ref(&r, Some(d.as_str())), &auth, &ACCEPT)
                    .await
                    .map_err(|e| registry_error(&r, e))?;
                limit(&data)?;
                d.verify(&format!("manifest {d} of {r}"), &data, Some(desc.size))?;
                match model::parse_document(&format!("manifest {d}"), &data)? {
                    Document::Manifest(m) => (m, data.to_vec(), d, Some(top_digest.clone())),
                    Document::Index(_) => {
                        return Err(Error::Unsupported(format!(
                            "pull {r}: an index inside an index is not supported"
                        )))
                    }
                }
            }
        };
    // The config, checked.
    let config_digest = manifest.config.digest()?;
    let mut config_data = Vec::new();
    client
        .pull_blob(&top_ref, &oci_desc(&manifest.config), &mut config_data)
        .await
        .map_err(|e| registry_error(&r, e))?;
    config_digest.verify(
        &format!("config of {r}"),
        &config_data,
        Some(manifest.config.size),
    )?;
    let config: ImageConfig = model::parse_json(&format!("config of {r}"), &config_data)?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::Registry(format!(
            "pull {r}: the manifest has {} layers but the config {} diff IDs",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let lock_store = store.clone();
    let _lock = tokio::task::spawn_blocking(move || lock_store.shared())
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
    // Every layer at once: each is network-bound, then CPU-bound on its
    // own thread.
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(diff_ids.iter()) {
        tasks.push(pull_layer(
            store.clone(),
            client.clone(),
            top_ref.clone(),
            r.clone(),
            desc.clone(),
            diff_id.clone(),
            opts.progress.clone(),
        ));
    }
    let results = futures_util::future::join_all(tasks).await;
    let mut size = 0;
    let mut downloaded = false;
    for res in results {
        let (s, d) = res?;
        size += s;
        downloaded |= d;
    }
    store.write_blob("manifest", &manifest_digest, &manifest_data)?;
    store.write_blob("config", &config_digest, &config_data)?;
    let record = ImageRecord {
        manifest: manifest_digest.to_string(),
        config: config_digest.to_string(),
        layers: diff_ids.iter().map(|d| d.to_string()).collect(),
        size,
        created: config.created.clone(),
        // Docker's RepoDigests: what the repository serves, the index for
        // a multi-platform image.
        repo_digests: vec![format!("{}@{top_digest}", r.repository())],
        index: index.map(|d| d.to_string()),
    };
    let tags: Vec<Reference> = if r.tag.is_some() {
        vec![r.clone()]
    } else {
        Vec::new()
    };
    let id = store.add_image(record, &tags)?;
    Ok(Pulled {
        reference: r.to_string(),
        id,
        digest: top_digest.to_string(),
        downloaded,
    })
}

fn oci_desc(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    }
}

/// Reads the chunks a download task sends; an error item fails the read.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

async fn pull_layer(
    store: Store,
    client: Arc<oci_client::Client>,
    image: oci_client::Reference,
    r: Reference,
    desc: Descriptor,
    diff_id: Digest,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, bool)> {
    let blob = desc.digest()?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<bool>();
    // 64 chunks (a few MiB) in flight: the download runs ahead of the
    // unpacking a little, never without bound.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let check = BlobCheck {
        digest: blob.clone(),
        size: Some(desc.size),
    };
    let what = blob.to_string();
    let unpacker = tokio::task::spawn_blocking(move || -> Result<u64> {
        let Some(writer) = store.begin_layer(&diff_id)? else {
            let _ = ready_tx.send(false);
            return Ok(store.layer_size(&diff_id));
        };
        let _ = ready_tx.send(true);
        let reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        };
        writer.unpack(&what, reader, Some(&check))
    });
    let needed = ready_rx.await.unwrap_or(false);
    if needed {
        if let Some(p) = &progress {
            p.layer_start(&blob, desc.size);
        }
        let download = async {
            // From offset 0 as a range request: oci-client then leaves the
            // digest check to us (the unpacker hashes as it reads; a second
            // hash of every byte would cost CPU the inflate needs).
            let mut stream = match client
                .pull_blob_stream_partial(&image, &oci_desc(&desc), 0, None)
                .await
                .map_err(|e| registry_error(&r, e))?
            {
                BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if let (Ok(b), Some(p)) = (&chunk, &progress) {
                    p.layer_bytes(&blob, b.len() as u64);
                }
                if tx.send(chunk).await.is_err() || failed {
                    // The unpacker stopped (it says why) or the body broke.
                    break;
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        drop(tx);
        let unpacked = unpacker.await.map_err(|e| Error::Other(e.to_string()))?;
        // The unpacker's error names a bad blob; a broken download shows
        // there too, as a failed read.
        let size = unpacked?;
        download?;
        if let Some(p) = &progress {
            p.layer_done(&blob);
        }
        Ok((size, true))
    } else {
        drop(tx);
        let size = unpacker.await.map_err(|e| Error::Other(e.to_string()))??;
        if let Some(p) = &progress {
            p.layer_exists(&blob);
        }
        Ok((size, false))
    }
}
