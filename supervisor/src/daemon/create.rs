//! `create`: from the user's request to a created (or started) container.
//!
//! Order matters for crash safety: the directory and meta.json come first,
//! so a berthd killed at any later step leaves something the next berthd
//! recognizes and either adopts (a shim answers) or cleans up.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime_core::layout::ContainerPaths;
use runtime_core::meta::{ContainerMeta, ImageUse, LogConfig};
use runtime_core::protocol::{shim_methods as m, ErrorCode, RpcError};
use runtime_core::rootfs::{Lower, Overlay};
use runtime_core::runopts::NetworkMode;
use runtime_core::spec::{self, ProcessOpts};
use runtime_core::{atomic, id, rootfs};

use super::registry::{Entry, Phase};
use super::{events, image, netsetup, reconcile, restart, shim, validate, watch, Daemon};
use crate::api::{ContainerInfo, CreateParams};

/// Fault injection for the crash-safety tests: when `BERTH_TEST_CRASH_AT`
/// names this step, berthd dies on the spot with SIGKILL, exactly as an
/// operator's `kill -9` would leave things.
fn crash_point(step: &str) {
    if std::env::var("BERTH_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        log::warn!("BERTH_TEST_CRASH_AT={step}: killing berthd");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

fn absolute(what: &str, p: &str) -> Result<PathBuf, RpcError> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(invalid(format!("{what} {p:?} must be an absolute path")));
    }
    Ok(path)
}

/// A rootfs with its symlinks resolved: runc refuses a rootfs that is a
/// symlink, and inspect shows where the files really are.
fn resolved(dir: &Path) -> Result<PathBuf, RpcError> {
    fs::canonicalize(dir).map_err(|e| invalid(format!("rootfs {}: {e}", dir.display())))
}

/// How the root filesystem is provided.
enum RootSource {
    /// berth's busybox rootfs under an overlay.
    Default,
    /// A user's directory, used as is.
    Dir(PathBuf),
    /// A user's bundle: its config and its rootfs (symlinks resolved).
    Bundle(PathBuf, Box<oci_spec::runtime::Spec>, PathBuf),
    /// An image from the store: its layers under an overlay.
    Image,
}

/// Handles `create`; on any failure nothing is left behind.
pub async fn create(d: &Arc<Daemon>, p: CreateParams) -> Result<ContainerInfo, RpcError> {
    if let Some(name) = &p.name {
        id::validate("name", name).map_err(|e| invalid(e.to_string()))?;
    }
    if p.rootfs.is_some() && p.bundle.is_some() {
        return Err(invalid("--rootfs and --bundle cannot be used together"));
    }
    restart::check_create(&p).map_err(invalid)?;
    if p.image.is_some() && (p.rootfs.is_some() || p.bundle.is_some()) {
        return Err(invalid("an image cannot be used with --rootfs or --bundle"));
    }
    if p.command.is_empty() && p.bundle.is_none() && p.image.is_none() {
        return Err(invalid(
            "no command given: berth run [OPTIONS] -- COMMAND [ARG...]",
        ));
    }
    let log_defaults = &d.config.log;
    let log = LogConfig {
        max_size: p.log_max_size.unwrap_or(log_defaults.max_size),
        max_files: p.log_max_files.unwrap_or(log_defaults.max_files),
    };
    runtime_core::logwrite::check_limits(&log).map_err(|e| invalid(e.to_string()))?;
    let runtime = shim::resolve_runtime(&d.config.runtime)
        .map_err(|m| RpcError::new(ErrorCode::Runtime, m))?;
    let source = if let Some(b) = &p.bundle {
        validate::path_text("bundle", b)?;
        let dir = absolute("bundle", b)?;
        let spec = spec::load_bundle_config(&dir).map_err(|e| invalid(e.to_string()))?;
        let rootfs = spec::root_path(&spec, &dir).map_err(|e| invalid(e.to_string()))?;
        spec::check_rootfs(&rootfs).map_err(|e| invalid(e.to_string()))?;
        let rootfs = resolved(&rootfs)?;
        RootSource::Bundle(dir, Box::new(spec), rootfs)
    } else if let Some(r) = &p.rootfs {
        validate::path_text("rootfs", r)?;
        let dir = absolute("rootfs", r)?;
        spec::check_rootfs(&dir).map_err(|e| invalid(e.to_string()))?;
        RootSource::Dir(resolved(&dir)?)
    } else if p.image.is_some() {
        RootSource::Image
    } else {
        RootSource::Default
    };
    if matches!(source, RootSource::Default) {
        ensure_default_rootfs(d).await?;
    }

    let new_id = id::generate().map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
    let name = p.name.clone().unwrap_or_else(|| new_id.clone());
    let prepared = match &p.image {
        Some(img) => {
            // The lease names the data directory: it lasts as long as
            // the container's definition, across reboots.
            Some(
                image::prepare(
                    d,
                    d.root.container(&new_id).data_dir().to_path_buf(),
                    img,
                    &p,
                )
                .await?,
            )
        }
        None => None,
    };
    let settings = prepared.as_ref().map(|i| &i.settings);
    let mut process = ProcessOpts {
        args: settings.map_or_else(|| p.command.clone(), |s| s.args.clone()),
        env: settings.map_or_else(|| p.env.clone(), |s| s.env.clone()),
        cwd: settings.map_or_else(|| p.cwd.clone(), |s| s.cwd.clone()),
        hostname: p.hostname.clone().or_else(|| Some(name.clone())),
        tty: p.tty,
    };
    let (mut oci, rootfs_path, readonly, source_bundle) = match &source {
        RootSource::Default => (spec::default_spec(), d.root.default_rootfs(), false, None),
        RootSource::Dir(dir) => (spec::default_spec(), dir.clone(), false, None),
        RootSource::Image => (
            spec::default_spec(),
            d.root.container(&new_id).bundle_rootfs(),
            false,
            None,
        ),
        RootSource::Bundle(dir, s, root) => {
            let ro = s
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false);
            // A bundle keeps its own hostname unless one is asked for.
            process.hostname = p.hostname.clone();
            (
                (**s).clone(),
                root.clone(),
                ro,
                Some(dir.display().to_string()),
            )
        }
    };
    spec::apply(&mut oci, &process).map_err(|e| invalid(e.to_string()))?;
    if let Some(s) = settings {
        image::apply_user(&mut oci, s);
    }
    validate::spec(&oci)?;
    // An image's user (its own or -u's) was resolved from its layers.
    let users = match prepared {
        Some(_) => runtime_core::options::UserLookup::Done,
        None => runtime_core::options::UserLookup::Rootfs(&rootfs_path),
    };
    runtime_core::options::apply(&mut oci, &p.options, users)
        .map_err(|e| invalid(e.to_string()))?;
    // An image's rootfs exists once its overlay is mounted (below).
    if prepared.is_none() {
        validate::command(&oci, &rootfs_path)?;
    }
    // The command as the user gave it (an image's is checked below),
    // before --init puts tini in front of it.
    let unwrapped = oci.clone();
    runtime_core::options::wrap_init(&mut oci, &p.options);
    let net_plan = netsetup::plan(d, &p.options)?;
    let command = oci
        .process()
        .as_ref()
        .and_then(|pr| pr.args().clone())
        .unwrap_or_default();
    let overlay = match (&source, &prepared) {
        (RootSource::Image, Some(i)) => Some(
            i.lease
                .lower()
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?,
        ),
        (RootSource::Default, _) => Some(Lower {
            base: None,
            dirs: vec![rootfs_path.clone()],
        }),
        _ => None,
    };
    let meta = ContainerMeta {
        id: new_id.clone(),
        name: name.clone(),
        created_at: runtime_core::time::now_rfc3339(),
        command,
        rootfs: rootfs_path.display().to_string(),
        default_rootfs: matches!(source, RootSource::Default),
        source_bundle,
        tty: p.tty,
        stdin: p.stdin,
        auto_remove: p.auto_remove,
        log,
        runtime: runtime.display().to_string(),
        start_later: !(p.start || p.attach),
        restart_count: 0,
        restart_policy: p.restart.clone(),
        image: prepared.as_ref().map(|i| ImageUse {
            name: p.image.clone().unwrap_or_default(),
            id: i.lease.image_id.clone(),
            stop_signal: i.settings.stop_signal.clone(),
        }),
        options: p.options.clone(),
        overlay,
    };

    // Reserve the name, ID and host ports under the lock; the slow work
    // runs outside it.
    let releasing = {
        let mut entries = d.registry.lock();
        if entries.values().any(|e| e.meta.name == name) {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                format!("the name {name:?} is already in use by another container"),
            ));
        }
        // Host ports under the same lock: two creates cannot both pass.
        let releasing = netsetup::check_published(&d.root, &entries, &p.options, None)?;
        entries.insert(
            new_id.clone(),
            Box::new(Entry::new(meta.clone(), Phase::Creating)),
        );
        releasing
    };
    let paths = d.root.container(&new_id);
    let lease = prepared.as_ref().map(|i| &i.lease);
    runtime_core::net::configure_spec(
        &mut oci,
        &p.options.network,
        paths.dir(),
        net_plan.join.as_ref().map(|(ns, _)| ns.as_path()),
    );
    let readonly = readonly || p.options.read_only;
    // Exited containers' port mappings go before this one's are made.
    let mut made = match netsetup::release(d, releasing).await {
        Ok(()) => make_bundle(d, &meta, &mut oci, &rootfs_path, readonly, lease).await,
        Err(e) => Err(e),
    };
    if made.is_ok() && lease.is_some() {
        if let Err(e) = image_command(&meta, &paths, unwrapped).await {
            made = Err(e);
        }
    }
    // The directory exists: the layers are safe from rmi/prune now (the
    // lease file names it), so the store's lock can go.
    drop(prepared);
    crash_point("after-bundle");
    let hostname = oci.hostname().clone().unwrap_or_else(|| name.clone());
    let start_now = p.start || p.attach;
    // Bridge networking's CNI chain (tens of milliseconds of plugin
    // processes) runs beside the shim's start and the runtime's create;
    // the container's process is started only once both are done. Other
    // modes have nothing slow to overlap: one `runc run` as before.
    let overlap = p.options.network == NetworkMode::Bridge && start_now;
    let (started, meta_durable) = match made {
        Err(e) => (Err(e), None),
        Ok(meta_durable) if overlap => {
            let create = async {
                crash_point("after-netns");
                shim::start_shim(
                    d,
                    &meta,
                    &paths,
                    shim::StartMode {
                        start: false,
                        wait_attach: p.attach,
                    },
                )
                .await
                .map_err(|m| RpcError::new(ErrorCode::Runtime, m))
            };
            let started =
                match netsetup::setup_beside(d, &new_id, &hostname, &p.options, &net_plan, create)
                    .await
                {
                    (Ok(_), Some(Ok(addr))) => start_created(d, &meta, &paths, addr).await,
                    (Err(e), Some(Ok(_))) => {
                        abandon_shim(d, &meta, &paths).await;
                        Err(e)
                    }
                    (_, Some(Err(e))) | (Err(e), None) => Err(e),
                    (Ok(_), None) => Err(RpcError::new(
                        ErrorCode::Internal,
                        "the container was not created",
                    )),
                };
            (started, Some(meta_durable))
        }
        Ok(meta_durable) => {
            let started = match netsetup::setup(d, &new_id, &hostname, &p.options, &net_plan).await
            {
                Ok(_) => {
                    crash_point("after-netns");
                    shim::start_shim(
                        d,
                        &meta,
                        &paths,
                        shim::StartMode {
                            start: start_now,
                            wait_attach: p.attach,
                        },
                    )
                    .await
                    .map_err(|m| RpcError::new(ErrorCode::Runtime, m))
                }
                Err(e) => Err(e),
            };
            (started, Some(meta_durable))
        }
    };
    let addr = match started {
        Ok(a) => a,
        Err(e) => {
            reconcile::discard(d, &meta.id).await;
            return Err(e);
        }
    };
    log::info!(
        "created {} ({name}) shim pid {} init pid {}",
        new_id,
        addr.pid,
        addr.init_pid
    );
    crash_point("after-shim");
    // The container runs and meta.json is in place for any berthd; until
    // its directory is synced a machine crash could lose the entry (the
    // container with it). Tell the user once it is on disk.
    if let Some(sync) = meta_durable {
        match sync.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("container {new_id}: {e}"),
            Err(e) => log::error!("container {new_id}: fsync meta.json: {e}"),
        }
    }
    match addr.state {
        Some(state) => d.registry.set_phase(&new_id, Phase::Live(state)),
        None => {
            reconcile::refresh(d, &new_id).await;
        }
    }
    events::created(d, &new_id);
    watch::spawn_watcher(d, new_id.clone());
    d.registry
        .get(&new_id)
        .map(|e| e.info(&d.root))
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("container {new_id} vanished")))
}

/// Starts the container the shim has created (its network is up): the
/// shim's `start` (the runtime's start). Its ready report said
/// "created", so berthd asks for the state afresh. On failure the shim
/// and its container are deleted.
async fn start_created(
    d: &Daemon,
    meta: &ContainerMeta,
    paths: &ContainerPaths,
    mut addr: shim::ShimAddress,
) -> Result<shim::ShimAddress, RpcError> {
    let started = match shim::connect(paths).await {
        Ok(mut c) => c.call_value(m::START, &()).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        abandon_shim(d, meta, paths).await;
        return Err(shim::from_call(&meta.id, e));
    }
    addr.state = None;
    Ok(addr)
}

/// Deletes a shim whose container will not run (its network failed): the
/// shim's `delete`, or the runtime's `delete -f` when it does not answer.
async fn abandon_shim(d: &Daemon, meta: &ContainerMeta, paths: &ContainerPaths) {
    let deleted = match shim::connect(paths).await {
        Ok(mut c) => c.call_value(m::DELETE, &()).await.is_ok(),
        Err(_) => false,
    };
    if !deleted {
        shim::force_delete_runtime_state(d, meta).await;
    }
}

/// Builds the default rootfs on first use; later creates only check it
/// still has its busybox (one stat, no thread hop).
async fn ensure_default_rootfs(d: &Daemon) -> Result<(), RpcError> {
    let target = d.root.default_rootfs();
    if rootfs::is_built(&target) {
        return Ok(());
    }
    let _guard = d.rootfs_build.lock().await;
    tokio::task::spawn_blocking(move || rootfs::ensure_default(&target))
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("default rootfs: {e}")))
}

/// Looks an image's command up in its merged rootfs (127/126 typed), which
/// berthd sees only in a throwaway mount namespace of its own: the
/// container's overlay is mounted by its shim.
async fn image_command(
    meta: &ContainerMeta,
    paths: &ContainerPaths,
    unwrapped: oci_spec::runtime::Spec,
) -> Result<(), RpcError> {
    let Some(lower) = meta.overlay.clone() else {
        return Ok(());
    };
    let overlay = Overlay::of(paths, lower);
    tokio::task::spawn_blocking(move || {
        overlay.with_mounted(|merged| validate::command(&unwrapped, merged))
    })
    .await
    .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
}

async fn make_bundle(
    d: &Daemon,
    meta: &ContainerMeta,
    oci: &mut oci_spec::runtime::Spec,
    rootfs_path: &Path,
    readonly: bool,
    image: Option<&berth_image::store::Lease>,
) -> Result<MetaSync, RpcError> {
    let internal = |e: runtime_core::Error| RpcError::new(ErrorCode::Internal, e.to_string());
    let paths = d.root.container(&meta.id);
    // The data directory first: a restarted berthd looks for containers
    // there, and removes one without meta.json as half-made.
    for dir in paths.dirs() {
        private_dir(dir)?;
    }
    // meta.json the durable way (temp, fsync, rename, fsync dir), with the
    // disk waits overlapping other work: the temp file's fsync with the
    // bundle, the directory's with the shim's start. The rename comes
    // before any shim exists, so a restarted berthd always finds it.
    let staged = atomic::to_json(&paths.meta(), meta)
        .and_then(|data| atomic::stage(&paths.meta(), &data))
        .map_err(internal)?;
    let content_synced = tokio::task::spawn_blocking(move || staged.sync().map(|()| staged));
    private_dir(&paths.bundle())?;
    match &meta.overlay {
        // Only the directories: the shim mounts the overlay in its own
        // mount namespace, before the runtime runs.
        Some(lower) => {
            Overlay::of(&paths, lower.clone())
                .prepare(image.map(|l| l.upper_mode()))
                .map_err(internal)?;
            spec::set_root(oci, Path::new("rootfs"), readonly && image.is_none());
        }
        None => spec::set_root(oci, rootfs_path, readonly),
    }
    spec::write_config(oci, &paths.bundle()).map_err(internal)?;
    let staged = content_synced
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(internal)?;
    // Killed here: a directory with a mounted overlay and no meta.json,
    // which a restarted berthd removes as half-made.
    crash_point("before-meta");
    let dir = staged.commit().map_err(internal)?;
    crash_point("after-meta");
    Ok(tokio::task::spawn_blocking(move || atomic::sync_dir(&dir)))
}

/// The pending fsync of the directory meta.json was renamed into.
type MetaSync = tokio::task::JoinHandle<runtime_core::Result<()>>;

/// Creates a directory only root can enter (mode 0700).
fn private_dir(path: &Path) -> Result<(), RpcError> {
    fs::DirBuilder::new().mode(0o700).create(path).map_err(|e| {
        RpcError::new(
            ErrorCode::Internal,
            format!("create {}: {e}", path.display()),
        )
    })
}
