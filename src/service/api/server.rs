//! Listeners and connections. A fixed pool of workers each accept on the shared listener and
//! serve what they accepted (no hand-off between threads, so a request costs one wake-up); each
//! connection has a deadline for its request, so a slow client holds one worker for at most that
//! long and never the others. The last free worker keeps itself free: while every other one is
//! busy it gives a client only `LAST_WORKER_DEADLINE` to send its request, and answers 503 with
//! `Retry-After` to one that takes longer.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{debug, warn};

use super::http::{self, ReadError, Response};
use super::{routes, Shared};
use crate::config::ApiListen;

/// Worker threads answering requests. Quick changes wait for the loop inside a worker, so there
/// are enough for a burst of them next to plenty of reads.
pub const WORKERS: usize = 16;
/// A client has this long to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The deadline when every other worker is busy: a client that has not sent its request by then
/// gets 503 with `Retry-After`, so the last worker is soon free again for the next one.
pub const LAST_WORKER_DEADLINE: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const WORKER_STACK: usize = 256 * 1024;
/// After a 413 the rest of the body is read and dropped (so the client sees the answer, not a
/// reset), up to this much.
const DRAIN_LIMIT: u64 = 16 << 20;

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// An accepted connection.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_read_timeout(&self, read: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(read)),
            Conn::Unix(s) => s.set_read_timeout(Some(read)),
        }
    }

    fn set_write_timeout(&self, write: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(Some(write)),
            Conn::Unix(s) => s.set_write_timeout(Some(write)),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write_vectored(bufs),
            Conn::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Reads with the connection's deadline: every read gets only the time that is left.
struct DeadlineReader<'a> {
    conn: &'a mut Conn,
    deadline: Instant,
    /// The read timeout the socket holds, so that it is set again only when it changed.
    timeout: Option<Duration>,
    /// The last read failed because the deadline passed (not because the client went away).
    timed_out: bool,
}

impl<'a> DeadlineReader<'a> {
    fn new(conn: &'a mut Conn, deadline: Instant) -> DeadlineReader<'a> {
        DeadlineReader {
            conn,
            deadline,
            timeout: None,
            timed_out: false,
        }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.timed_out = true;
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Whole milliseconds: the first read of a request (usually its only one) sets the timeout
        // once; a later read sets what is left.
        let left = Duration::from_millis(left.as_millis().max(1) as u64);
        if self.timeout != Some(left) {
            self.conn.set_read_timeout(left)?;
            self.timeout = Some(left);
        }
        let read = self.conn.read(buf);
        self.timed_out = matches!(&read, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        read
    }
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    use nix::libc;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is a valid ucred.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Binds the configured address. A Unix socket goes in a root-owned directory, replaces a stale
/// socket, refuses a symlink or any other file at its path, and is mode 0600.
pub fn bind(listen: &ApiListen) -> Result<Option<Listener>> {
    match listen {
        ApiListen::Off => Ok(None),
        ApiListen::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .with_context(|| format!("api.listen: cannot listen on {addr}"))?;
            defer_accept(&l);
            Ok(Some(Listener::Tcp(l)))
        }
        ApiListen::Unix(path) => bind_unix(path).map(|l| Some(Listener::Unix(l, path.clone()))),
    }
}

/// `TCP_DEFER_ACCEPT`: a connection is handed to `accept` once its first bytes have arrived, so a
/// worker wakes once per request, with the request there to read, and a client that connects
/// and sends nothing holds no worker. Without it (refused) a worker just waits in `read`.
fn defer_accept(l: &TcpListener) {
    use nix::libc;
    let secs: libc::c_int = REQUEST_DEADLINE.as_secs() as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!(error = %io::Error::last_os_error(), "api listener: TCP_DEFER_ACCEPT refused");
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    let dir = path
        .parent()
        .context("api.listen: the socket path has no directory")?;
    crate::fsutil::ensure_runtime_dir(dir).context("api.listen")?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).with_context(|| {
            format!("api.listen: cannot remove stale socket {}", path.display())
        })?,
        Ok(_) => bail!(
            "api.listen: {} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("api.listen: cannot stat {}", path.display()))
        }
    }
    // Nobody else may connect even for the instant between bind and chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("api.listen: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("api.listen: cannot chmod {}", path.display()))?;
    Ok(listener)
}

/// The running server: where it listens and the socket file to remove on exit.
pub struct ServerHandle {
    pub tcp_addr: Option<SocketAddr>,
    pub socket_path: Option<PathBuf>,
}

impl ServerHandle {
    /// Removes the socket file; called last on the way out.
    pub fn remove_socket(&self) {
        if let Some(p) = &self.socket_path {
            if let Err(e) = std::fs::remove_file(p) {
                warn!(path = %p.display(), error = %e, "cannot remove the api socket");
            }
        }
    }
}

/// Starts the workers, each accepting on the listener.
pub fn spawn(listener: Listener, shared: Arc<Shared>) -> Result<ServerHandle> {
    let handle = match &listener {
        Listener::Tcp(l) => ServerHandle {
            tcp_addr: l.local_addr().ok(),
            socket_path: None,
        },
        Listener::Unix(_, p) => ServerHandle {
            tcp_addr: None,
            socket_path: Some(p.clone()),
        },
    };
    let pool = Arc::new(Pool {
        listener,
        idle: AtomicUsize::new(WORKERS),
    });
    for n in 0..WORKERS {
        let (pool, shared) = (Arc::clone(&pool), Arc::clone(&shared));
        std::thread::Builder::new()
            .name(format!("api-worker-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || worker(&pool, &shared))
            .context("cannot start an api worker thread")?;
    }
    Ok(handle)
}

/// The listener the workers share and how many of them are not serving a connection.
struct Pool {
    listener: Listener,
    idle: AtomicUsize,
}

impl Pool {
    /// The next connection and its peer: the IP address on TCP, `uid N` on the socket
    /// (`SO_PEERCRED`).
    fn accept(&self) -> io::Result<(Conn, String)> {
        match &self.listener {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Conn::Tcp(s), a.ip().to_string())),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let peer = peer_uid(&s).map_or("uid unknown".into(), |u| format!("uid {u}"));
                (Conn::Unix(s), peer)
            }),
        }
    }
}

fn worker(pool: &Pool, shared: &Arc<Shared>) {
    loop {
        let (conn, peer) = match pool.accept() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "api accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        // The one that finds no other worker idle is the last free one.
        let last = pool.idle.fetch_sub(1, Ordering::SeqCst) == 1;
        let deadline = if last {
            LAST_WORKER_DEADLINE
        } else {
            REQUEST_DEADLINE
        };
        serve(conn, &peer, deadline, shared);
        pool.idle.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads one request within `deadline`, answers it, closes. Never logs the query string or any
/// header. Not inlined into the worker's loop: its frame (the handlers' inlined into it) would
/// be probed page by page on the worker's entry and stay resident in every idle worker's stack.
#[inline(never)]
fn serve(mut conn: Conn, peer: &str, deadline: Duration, shared: &Arc<Shared>) {
    if conn.set_write_timeout(WRITE_TIMEOUT).is_err() {
        return;
    }
    let Some((resp, unread)) = exchange(&mut conn, shared, peer, deadline) else {
        return;
    };
    if resp.write_to(&mut conn).is_err() {
        return;
    }
    conn.shutdown_write();
    if unread > 0 {
        // Read and drop the body that was not wanted, so the client sees the answer rather than
        // a reset (closing on unread data resets the connection).
        let mut reader = DeadlineReader::new(&mut conn, Instant::now() + Duration::from_secs(2));
        let _ = io::copy(
            &mut reader.by_ref().take(unread.min(DRAIN_LIMIT)),
            &mut io::sink(),
        );
    }
}

/// Reads the head; refuses what the head alone can refuse before any of the body is read; tells
/// an `Expect: 100-continue` client to send the body only when the request got that far; reads
/// the body and runs the handler. Returns the answer and how many declared body bytes are still
/// unread, or `None` when the client went away. A client that has not sent its request within
/// `deadline` while this is the last free worker gets 503 (see `LAST_WORKER_DEADLINE`).
fn exchange(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    peer: &str,
    deadline: Duration,
) -> Option<(Response, u64)> {
    let mut reader = DeadlineReader::new(conn, Instant::now() + deadline);
    let (mut req, early) = match http::read_head(&mut reader) {
        Ok(r) => r,
        Err(ReadError::HeadTooLarge) => return refused(ReadError::HeadTooLarge, DRAIN_LIMIT),
        Err(e) => return refused_or_busy(e, &reader, deadline),
    };
    let declared = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let unread = declared.saturating_sub(early.len() as u64);
    let route = match routes::admit(shared, peer, &req) {
        Ok(r) => r,
        Err(resp) => {
            debug!(peer = %peer, method = %req.method, path = %req.path, status = resp.status, "api request");
            return Some((resp, unread));
        }
    };
    let len = match http::body_length(&req) {
        Ok(n) => n,
        Err(e) => return refused(e, unread),
    };
    if req.expects_continue() && early.len() < len {
        reader.conn.write_all(http::CONTINUE).ok()?;
    }
    if let Err(e) = http::read_body(&mut reader, &mut req, early, len) {
        return refused_or_busy(e, &reader, deadline);
    }
    let resp = routes::dispatch(route, shared, peer, &req);
    debug!(peer = %peer, method = %req.method, path = %req.path, status = resp.status, "api request");
    Some((resp, 0))
}

/// Like `refused`, but a client that ran out of the last free worker's shorter deadline is told
/// to come back (503, `Retry-After: 1`): the server is busy, the request was not wrong.
fn refused_or_busy(
    e: ReadError,
    reader: &DeadlineReader<'_>,
    deadline: Duration,
) -> Option<(Response, u64)> {
    if e == ReadError::Gone && reader.timed_out && deadline < REQUEST_DEADLINE {
        let busy = routes::error(503, "every worker is busy", Vec::new())
            .with_header("Retry-After", "1".into());
        return Some((busy, 0));
    }
    refused(e, 0)
}

/// The answer to a request that could not be read; `None` when there is nobody to answer.
fn refused(e: ReadError, unread: u64) -> Option<(Response, u64)> {
    let resp = match e {
        ReadError::Gone => return None,
        ReadError::TooLarge => routes::error(
            413,
            &format!("the body is larger than {} bytes", http::MAX_BODY_BYTES),
            Vec::new(),
        ),
        ReadError::HeadTooLarge => routes::error(431, "the request head is too large", Vec::new()),
        ReadError::Malformed(m) => routes::error(400, m, Vec::new()),
    };
    Some((resp, unread))
}
