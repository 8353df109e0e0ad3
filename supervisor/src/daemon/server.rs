//! berthd's API socket: accept, check the peer, answer requests in order.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, Signal, SignalKind};

use runtime_core::frame;
use runtime_core::protocol::{
    ErrorCode, Hello, Request, Response, RpcError, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};
use runtime_core::sockpath;

use super::{
    clients, create, events, exec, lifecycle, listing, pause, reconcile, remove, restart, start,
    stats, stop, top, update, watch, Daemon,
};
use crate::api::{
    methods as m, CreateParams, ExecRequest, KillParams, ListParams, RemoveParams, StartParams,
    StopParams, Target,
};
use crate::rpc::{self, read_frame};

/// Binds `<root>/berthd.sock` (0600), replacing a stale socket file; the
/// root lock guarantees no live berthd owns it.
pub fn bind(d: &Daemon) -> anyhow::Result<UnixListener> {
    let path = d.root.api_socket();
    let _ = std::fs::remove_file(&path);
    let (short, _handle) = sockpath::short(&path)?;
    let listener =
        UnixListener::bind(&short).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// SIGTERM and SIGINT, caught from berthd's start-up on: one arriving
/// while containers are still being restored stops berthd through its
/// shutdown steps, not the signal's default death.
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    /// Installs the handlers.
    pub fn catch() -> std::io::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Returns once either signal has arrived.
    pub async fn asked(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Serves until `stop` is asked (SIGTERM or SIGINT), then closes the API
/// and returns. Shims and containers are left running: that is the point
/// of berth.
///
/// Out of file descriptors (EMFILE/ENFILE) the loop does not spin: it
/// closes the longest-idle clients and backs off (10 ms doubling to 1 s),
/// logging once per episode. At most [`MAX_CLIENTS`] connections are
/// served; past that the longest-idle one makes room, or the newcomer is
/// told why and closed.
pub async fn serve(d: Arc<Daemon>, listener: UnixListener, stop: &mut Stop) -> anyhow::Result<()> {
    let clients = clients::Clients::default();
    let mut backoff = clients::Backoff::default();
    // The socket is bound and listening: a client connecting from now on
    // is served. A service manager that cannot be told is worth a warning,
    // not the daemon.
    if let Err(e) = d.config.notify.ready() {
        log::warn!("{e}");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.reset();
                    if clients.len() >= MAX_CLIENTS && !clients.evict_idle(1, SILENT_TO_EVICT, IDLE_TO_EVICT) {
                        log::warn!("refusing an API client: {MAX_CLIENTS} connections are open and none is idle");
                        tokio::spawn(async move { refuse_busy(stream).await });
                        continue;
                    }
                    let d = d.clone();
                    let slot = clients.register();
                    tokio::spawn(async move { connection(d, stream, slot).await });
                }
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_fds {
                        // Make room: an idle client is the cheapest thing to give up.
                        let freed = clients.evict_idle(usize::MAX, SILENT_TO_EVICT, IDLE_TO_EVICT);
                        backoff.out_of_fds(&e, clients.len(), freed);
                    } else {
                        backoff.other(&e);
                    }
                    tokio::time::sleep(backoff.delay()).await;
                }
            },
            () = stop.asked() => break,
        }
    }
    log::info!("berthd stopping; containers and shims keep running");
    if let Err(e) = d.config.notify.stopping() {
        log::warn!("{e}");
    }
    close(&d);
    Ok(())
}

/// Removes the API socket's name: nobody connects to a berthd on its way
/// out (clients already connected finish with the process).
pub fn close(d: &Daemon) {
    let _ = std::fs::remove_file(d.root.api_socket());
}

/// Most API connections served at once.
pub const MAX_CLIENTS: usize = 1024;
/// A connection that has not sent its hello within this is closed.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// To make room, a client that has sent nothing for this long is closed
/// (a real CLI's hello is in the socket before berthd accepts it)...
const SILENT_TO_EVICT: Duration = Duration::from_millis(100);
/// ...and one idle between requests for this long.
const IDLE_TO_EVICT: Duration = Duration::from_secs(1);

async fn refuse_busy(mut stream: UnixStream) {
    let err = RpcError::new(
        ErrorCode::Internal,
        format!("berthd is serving {MAX_CLIENTS} connections, none idle; try again"),
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        send(&mut stream, 0, &Response::err(0, err)),
    )
    .await;
}

async fn connection(d: Arc<Daemon>, mut stream: UnixStream, slot: clients::Slot) {
    if let Err(why) = runtime_core::peercred::check(&stream) {
        log::warn!("refused API client: {why}");
        return;
    }
    let mut greeted = false;
    loop {
        slot.idle();
        let next = async {
            if greeted {
                read_frame(&mut stream).await
            } else {
                tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream))
                    .await
                    .unwrap_or_else(|_| Err("no hello within 10s".to_string()))
            }
        };
        let frame = tokio::select! {
            f = next => f,
            () = slot.closed() => return,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                let err = RpcError::new(ErrorCode::InvalidArgument, e);
                let _ = send(&mut stream, 0, &Response::err(0, err)).await;
                return;
            }
        };
        greeted = true;
        slot.busy();
        let sent = match frame::decode_json::<Request>(&frame) {
            // A stream of many replies; it ends the connection.
            Ok(req) if req.method == m::EVENTS => return events::serve(&d, &mut stream, req).await,
            // Encoded straight from the table (see `listing`).
            Ok(req) if req.method == m::LIST => match params::<Option<ListParams>>(&req) {
                Ok(p) => {
                    let all = p.unwrap_or_default().all;
                    let reply = listing::reply(&d, req.id, all).await;
                    send_encoded(&mut stream, req.id, reply).await
                }
                Err(e) => send(&mut stream, req.id, &Response::err(req.id, e)).await,
            },
            Ok(req) => {
                let id = req.id;
                let method = req.method.clone();
                let resp = match dispatch(&d, req).await {
                    Ok(v) => Response::ok(id, v),
                    Err(e) => {
                        log::debug!("{method}: {e}");
                        Response::err(id, e)
                    }
                };
                send(&mut stream, id, &resp).await
            }
            Err(e) => {
                let err = RpcError::new(ErrorCode::InvalidArgument, e.to_string());
                send(&mut stream, 0, &Response::err(0, err)).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Sends the reply to request `id`, in several frames when it is large.
async fn send<T: Serialize>(stream: &mut UnixStream, id: u64, resp: &T) -> std::io::Result<()> {
    send_encoded(stream, id, rpc::Message::encode(resp)).await
}

/// Sends an encoded reply to request `id`. A reply that could not be
/// encoded or is over the message limit is logged and replaced by an
/// error reply, so the client says why instead of "connection closed".
async fn send_encoded(
    stream: &mut UnixStream,
    id: u64,
    encoded: Result<rpc::Message, rpc::SendError>,
) -> std::io::Result<()> {
    match encoded {
        Ok(message) => message.write_to(stream).await,
        Err(rpc::SendError::Io(e)) => Err(e),
        Err(e) => {
            log::error!("cannot send the reply to request {id}: {e}");
            let err = RpcError::new(
                ErrorCode::Internal,
                format!("berthd cannot send its reply: {e}"),
            );
            let bytes =
                rpc::encode_message(&Response::err(id, err)).map_err(std::io::Error::other)?;
            stream.write_all(&bytes).await
        }
    }
}

fn params<T: DeserializeOwned>(req: &Request) -> Result<T, RpcError> {
    serde_json::from_value(req.params.clone()).map_err(|e| {
        RpcError::new(
            ErrorCode::InvalidArgument,
            format!("bad params for {}: {e}", req.method),
        )
    })
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// Every method but `events` (a stream) and `list` (encoded without a
/// `Value`), which `connection` answers itself.
async fn dispatch(d: &Arc<Daemon>, req: Request) -> Result<Value, RpcError> {
    match req.method.as_str() {
        m::HELLO => {
            let hello: Hello = params(&req)?;
            hello.check_compatible()?;
            Ok(
                json!({ "major": PROTOCOL_MAJOR, "minor": PROTOCOL_MINOR, "agent": concat!("berthd ", env!("CARGO_PKG_VERSION")) }),
            )
        }
        m::CREATE => to_value(create::create(d, params::<CreateParams>(&req)?).await?),
        m::START => {
            let p: StartParams = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            restart::user_started(d, &id);
            if start::start(d, &id, p.attach).await? == start::Started::NewShim {
                watch::spawn_watcher(d, id.clone());
            }
            info(d, &id)
        }
        m::STOP => {
            let p: StopParams = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            let (signal, secs) = stop::defaults(d, &id);
            let timeout = Duration::from_secs(p.timeout.unwrap_or(secs));
            // Also cancels a restart waiting for its delay; one under way
            // is let finish, then stopped.
            restart::user_stopped(d, &id);
            restart::wait_not_starting(d, &id).await;
            stop::stop(d, &id, p.signal.unwrap_or(signal), timeout).await?;
            info(d, &id)
        }
        m::PAUSE => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            pause::pause(d, &id).await?;
            info(d, &id)
        }
        m::UNPAUSE => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            pause::unpause(d, &id).await?;
            info(d, &id)
        }
        m::TOP => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            to_value(top::top(d, &id).await?)
        }
        m::STATS => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            to_value(stats::stats(d, &id).await?)
        }
        m::UPDATE => {
            let p: crate::policy::UpdateParams = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            update::update(d, &id, p).await?;
            info(d, &id)
        }
        m::INSPECT => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            reconcile::settle(d, &id).await;
            let mut v = info(d, &id)?;
            let execs = exec::list(d, &id).await;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("execs".into(), to_value(execs)?);
            }
            Ok(v)
        }
        m::EXEC => {
            let p: ExecRequest = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            to_value(exec::exec(d, &id, p).await?)
        }
        m::KILL => {
            let p: KillParams = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            lifecycle::kill(d, &id, p.signal).await?;
            Ok(Value::Null)
        }
        m::WAIT => {
            let id = d.registry.resolve(&params::<Target>(&req)?.id)?;
            to_value(lifecycle::wait(d, &id).await?)
        }
        m::REMOVE => {
            let p: RemoveParams = params(&req)?;
            let id = d.registry.resolve(&p.id)?;
            remove::remove(d, &id, p.force).await?;
            Ok(json!({ "id": id }))
        }
        m::INFO => to_value(crate::api::DaemonInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            root: d.config.root.display().to_string(),
            runtime: d.config.runtime.display().to_string(),
            shim: d.config.shim.display().to_string(),
            pid: std::process::id(),
        }),
        other => Err(RpcError::new(
            ErrorCode::UnknownMethod,
            format!("unknown method {other:?}"),
        )),
    }
}

fn info(d: &Daemon, id: &str) -> Result<Value, RpcError> {
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    let mut info = entry.info(&d.root);
    info.restart = Some(restart::info(d, id));
    info.network = runtime_core::net::read_state(d.root.container(id).dir()).map(|mut n| {
        // The plugins' raw configuration and result stay on disk.
        n.conflist = None;
        n.result = None;
        n
    });
    to_value(info)
}
