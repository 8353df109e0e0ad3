//! One attach session, straight to the shim's attach socket: output frames
//! to our stdout/stderr, our stdin to the container, resizes on SIGWINCH,
//! detach keys in tty mode. Used by `berth run` and `berth attach`.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use runtime_core::attach::{self as proto, AttachReply, AttachRequest};
use runtime_core::exit::ExitRecord;
use runtime_core::frame;
use runtime_core::protocol::{PROTOCOL_MAJOR, PROTOCOL_MINOR};
use runtime_core::sockpath;

use super::term::{self, DetachMatcher, RawMode};
use super::Failure;
use crate::rpc::read_frame;

/// How a session ended.
pub enum AttachEnd {
    /// The container exited; all its output was received.
    Exited(ExitRecord),
    /// The user typed the detach keys; the container runs on.
    Detached,
    /// The shim cut us off or went away.
    Lost(String),
    /// Our own stdout failed (`berth run ... | head` closed it): the
    /// container runs on, as after a detach.
    OutputFailed(std::io::Error),
}

/// A handshaken attach connection.
pub struct Attached {
    stream: UnixStream,
    pub reply: AttachReply,
    stdin: bool,
}

/// Connects to a shim's attach socket and performs the handshake.
pub async fn connect(socket: &Path, stdin: bool) -> Result<Attached, Failure> {
    connect_to(socket, stdin, None).await
}

/// Like `connect`, for an exec'd process (`exec_id`) or the init (`None`).
pub async fn connect_to(
    socket: &Path,
    stdin: bool,
    exec_id: Option<String>,
) -> Result<Attached, Failure> {
    let (short, _h) = sockpath::short(socket).map_err(|e| Failure::new(e.to_string()))?;
    let mut stream = UnixStream::connect(&short)
        .await
        .map_err(|e| Failure::new(format!("cannot attach through {}: {e}", socket.display())))?;
    let req = AttachRequest {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
        stdin,
        stdout: true,
        stderr: true,
        exec_id,
    };
    let bytes = frame::encode_json(&req).map_err(|e| Failure::new(e.to_string()))?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| Failure::new(format!("attach handshake: {e}")))?;
    let f = read_frame(&mut stream)
        .await
        .map_err(Failure::new)?
        .ok_or_else(|| {
            Failure::new("the shim closed the attach connection during the handshake")
        })?;
    if f.tag == proto::TAG_ERROR {
        return Err(Failure::new(
            String::from_utf8_lossy(&f.payload).into_owned(),
        ));
    }
    let reply: AttachReply = frame::decode_json(&f).map_err(|e| Failure::new(e.to_string()))?;
    if let Some(e) = reply.error {
        return Err(Failure::new(e));
    }
    let stdin = stdin && reply.stdin_open;
    Ok(Attached {
        stream,
        reply,
        stdin,
    })
}

/// Options of a session.
pub struct SessionOpts {
    /// Detach sequence, used in tty mode with stdin.
    pub detach_keys: Vec<u8>,
}

impl Attached {
    /// Runs the session until exit, detach or loss.
    pub async fn run(self, opts: SessionOpts) -> Result<AttachEnd, Failure> {
        let tty = self.reply.tty;
        let _raw = if tty && self.stdin {
            RawMode::enable()
        } else {
            None
        };
        let (rd, mut wr) = self.stream.into_split();
        if tty {
            send_size(&mut wr).await;
        }
        let (detach_tx, mut detach_rx) = mpsc::channel::<()>(1);
        let detaching = Arc::new(AtomicBool::new(false));
        let input = tokio::spawn(forward_input(
            wr,
            self.stdin,
            tty,
            opts.detach_keys,
            detach_tx,
            detaching.clone(),
        ));
        // Biased: after a detach the shim closes the connection, and that
        // EOF must not be mistaken for a lost session.
        let end = tokio::select! {
            biased;
            Some(()) = detach_rx.recv() => Ok(AttachEnd::Detached),
            end = receive_output(rd) => end,
        };
        // The shim closes the connection as soon as it reads our detach.
        let end = match end {
            Ok(AttachEnd::Lost(_)) if detaching.load(Ordering::SeqCst) => Ok(AttachEnd::Detached),
            other => other,
        };
        input.abort();
        end
    }
}

async fn send_size(wr: &mut OwnedWriteHalf) {
    if let Some((rows, cols)) = term::size() {
        let mut out = Vec::new();
        if frame::encode_into(
            &mut out,
            proto::TAG_RESIZE,
            &proto::encode_resize(rows, cols),
        )
        .is_ok()
        {
            let _ = wr.write_all(&out).await;
        }
    }
}

/// Reads our stdin on a thread (stdin has no portable async form) and
/// forwards it in frames; resizes the pty on SIGWINCH.
async fn forward_input(
    mut wr: OwnedWriteHalf,
    stdin: bool,
    tty: bool,
    keys: Vec<u8>,
    detach: mpsc::Sender<()>,
    detaching: Arc<AtomicBool>,
) {
    let mut winch = signal(SignalKind::window_change()).ok();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    if stdin {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Vec::new());
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    let mut matcher = (tty && stdin).then(|| DetachMatcher::new(keys));
    let mut stdin_open = stdin;
    let mut out = Vec::new();
    loop {
        out.clear();
        tokio::select! {
            chunk = rx.recv(), if stdin_open => {
                let Some(chunk) = chunk else { stdin_open = false; continue };
                if chunk.is_empty() {
                    stdin_open = false;
                    // EOF: close the container's stdin (not for a tty: it has no EOF of its own).
                    if !tty {
                        let _ = frame::encode_into(&mut out, proto::TAG_STDIN, &[]);
                    }
                } else {
                    let mut data = Vec::with_capacity(chunk.len());
                    let detached = match matcher.as_mut() {
                        Some(m) => m.feed(&chunk, &mut data),
                        None => { data = chunk; false }
                    };
                    if !data.is_empty() {
                        let _ = frame::encode_into(&mut out, proto::TAG_STDIN, &data);
                    }
                    if detached {
                        detaching.store(true, Ordering::SeqCst);
                        let _ = frame::encode_into(&mut out, proto::TAG_DETACH, &[]);
                        let _ = wr.write_all(&out).await;
                        // Capacity 1 and nobody else sends: this never waits,
                        // so the session learns of the detach before the EOF.
                        let _ = detach.try_send(());
                        return;
                    }
                }
            }
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                if tty {
                    send_size(&mut wr).await;
                }
                continue;
            }
            else => {
                // No stdin and no signals: nothing more to send.
                std::future::pending::<()>().await;
            }
        }
        if !out.is_empty() && wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Reads frames straight out of one large buffer and writes payloads as
/// they are, flushing once per read: no allocation per frame, so the
/// client keeps up with a container writing at full speed.
async fn receive_output(mut rd: tokio::net::unix::OwnedReadHalf) -> Result<AttachEnd, Failure> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 2 * (frame::HEADER_LEN + frame::MAX_PAYLOAD)];
    let (mut start, mut end) = (0usize, 0usize);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        {
            let mut out = stdout.lock();
            loop {
                let avail = &buf[start..end];
                let header = match frame::Header::parse(avail) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return Ok(AttachEnd::Lost(format!("attach stream: {e}"))),
                };
                let Some(payload) = header.payload(avail) else {
                    break;
                };
                start += header.frame_len();
                match header.tag {
                    proto::TAG_STDOUT => {
                        if let Err(e) = out.write_all(payload) {
                            return Ok(AttachEnd::OutputFailed(e));
                        }
                    }
                    proto::TAG_STDERR => {
                        let _ = out.flush();
                        let mut err = stderr.lock();
                        let _ = err.write_all(payload).and_then(|_| err.flush());
                    }
                    proto::TAG_EXIT => {
                        let _ = out.flush();
                        let rec: ExitRecord = serde_json::from_slice(payload)
                            .map_err(|e| Failure::new(format!("bad exit frame: {e}")))?;
                        return Ok(AttachEnd::Exited(rec));
                    }
                    proto::TAG_ERROR => {
                        let _ = out.flush();
                        return Ok(AttachEnd::Lost(
                            String::from_utf8_lossy(payload).into_owned(),
                        ));
                    }
                    _ => {}
                }
            }
            if let Err(e) = out.flush() {
                return Ok(AttachEnd::OutputFailed(e));
            }
        }
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        match rd.read(&mut buf[end..]).await {
            Ok(0) => {
                return Ok(AttachEnd::Lost(
                    "the shim closed the attach connection before the container exited".into(),
                ))
            }
            Ok(n) => end += n,
            Err(e) => return Ok(AttachEnd::Lost(format!("attach connection failed: {e}"))),
        }
    }
}
