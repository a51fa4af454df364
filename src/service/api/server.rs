//! Listeners and connections. Two accept threads share the listener. Each answers a small GET
//! itself when its whole request came with the connection. A connection whose head has not all
//! arrived waits in the waiting room: one thread polls every such connection until its head is
//! complete (then answers it the same way, or hands it on) or its deadline passes. A request
//! with a complete head that needs more work goes to a fixed pool of workers through a bounded
//! queue (a full queue gets 503 at once). So a client that connects and sends nothing, or a byte
//! at a time, holds a descriptor but never a worker; a worker reads only a body, with a deadline,
//! and only after the head was admitted. The accept threads never wait on a client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{debug, warn};

use super::http::{self, ReadError, Response};
use super::{routes, Shared};
use crate::config::ApiListen;

/// Worker threads answering requests. Quick changes wait for the loop inside a worker, so there
/// are enough for a burst of them next to plenty of reads.
pub const WORKERS: usize = 16;
/// Threads accepting connections and answering small GETs themselves (`answer_inline`): two keep
/// both cores of a small node serving under load (p99 of a 50-client status load 4.6-5.5 ms
/// against 5.5-6.5 with one, and no better with three or four).
const ACCEPTORS: usize = 2;
/// Accepted connections waiting for a worker; beyond this a client gets 503 at once.
const QUEUE: usize = 128;
/// Connections whose head has not all arrived. A new one beyond this closes the one that has
/// waited longest: a flood of silent connections cannot keep a real request out.
const WAITING: usize = 128;
/// A client has this long to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
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
    fn set_read_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(d)),
            Conn::Unix(s) => s.set_read_timeout(Some(d)),
        }
    }

    fn set_write_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(Some(d)),
            Conn::Unix(s) => s.set_write_timeout(Some(d)),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
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
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(left)?;
        self.conn.read(buf)
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

/// Asks the kernel to hand over a TCP connection only once its first bytes arrived
/// (`TCP_DEFER_ACCEPT`, for up to `REQUEST_DEADLINE`): a client connects and then writes, so
/// without it the accept thread usually finds nothing yet and the request took the way through
/// the waiting room (a channel, a wake-up and a `poll` more), which cost the status route about
/// a millisecond of p99 under 50 clients. A connection that stays silent is handed over when
/// the deferral ends and waits in the waiting room as before. Without the option (another
/// kernel) every request still works, only by the longer way.
fn defer_accept(l: &TcpListener) {
    use nix::libc;
    let secs = libc::c_int::try_from(REQUEST_DEADLINE.as_secs()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the option value is a live c_int of the size passed; the fd is the open listener.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc != 0 {
        debug!(error = %io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
    }
}

/// True when a socket (a stale one: the instance lock is held) is at `path`, false when nothing
/// is; an error naming `api.listen` for a symlink or any other file, which is never replaced.
pub fn stale_socket(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(true),
        Ok(_) => bail!(
            "api.listen: {} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("api.listen: cannot stat {}", path.display())),
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    let dir = path
        .parent()
        .context("api.listen: the socket path has no directory")?;
    crate::fsutil::ensure_runtime_dir(dir).context("api.listen")?;
    if stale_socket(path)? {
        std::fs::remove_file(path).with_context(|| {
            format!("api.listen: cannot remove stale socket {}", path.display())
        })?;
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

/// Work handed from the accept thread to a worker.
enum Job {
    /// A request still to be read: the bytes that came with the connection, and the peer.
    Read(Conn, Vec<u8>, String),
    /// An answer the accept thread could not send whole: the rest is still to send.
    Write(Conn, Pending),
}

/// Starts the workers and the accept thread.
pub fn spawn(listener: Listener, shared: Arc<Shared>) -> Result<ServerHandle> {
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let room = {
        let (room, wake) = WaitingRoom::new()?;
        let (jobs, shared) = (tx.clone(), Arc::clone(&shared));
        let (arrivals, wake_rx) = wake;
        std::thread::Builder::new()
            .name("api-waiting".into())
            .stack_size(WORKER_STACK)
            .spawn(move || waiting_loop(&arrivals, &wake_rx, &jobs, &shared))
            .context("cannot start the api waiting thread")?;
        room
    };
    for n in 0..WORKERS {
        let (rx, shared) = (Arc::clone(&rx), Arc::clone(&shared));
        std::thread::Builder::new()
            .name(format!("api-worker-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || worker(&rx, &shared))
            .context("cannot start an api worker thread")?;
    }
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
    let acceptors = std::thread::available_parallelism().map_or(1, |n| n.get().min(ACCEPTORS));
    for n in 1..acceptors {
        let l = match &listener {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l, p) => Listener::Unix(l.try_clone()?, p.clone()),
        };
        let (tx, shared, room) = (tx.clone(), Arc::clone(&shared), room.try_clone()?);
        std::thread::Builder::new()
            .name(format!("api-accept-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || accept_loop(l, &tx, &room, &shared))
            .context("cannot start the api accept thread")?;
    }
    std::thread::Builder::new()
        .name("api-accept".into())
        .stack_size(WORKER_STACK)
        .spawn(move || accept_loop(listener, &tx, &room, &shared))
        .context("cannot start the api accept thread")?;
    Ok(handle)
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, shared: &Arc<Shared>) {
    loop {
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        match job {
            Job::Read(conn, early, peer) => serve(conn, early, &peer, shared),
            Job::Write(mut conn, mut rest) => {
                if conn.set_write_timeout(WRITE_TIMEOUT).is_ok() && rest.finish(&mut conn).is_ok() {
                    conn.shutdown_write();
                }
            }
        }
    }
}

fn accept_loop(
    listener: Listener,
    tx: &mpsc::SyncSender<Job>,
    room: &WaitingRoom,
    shared: &Arc<Shared>,
) {
    let mut first = vec![0u8; FIRST_READ];
    loop {
        // The peer comes with the connection on TCP (no getpeername); SO_PEERCRED on the socket.
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Conn::Tcp(s), a.ip().to_string())),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let peer = peer_uid(&s).map_or("uid unknown".into(), |u| format!("uid {u}"));
                (Conn::Unix(s), peer)
            }),
        };
        let (mut conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "api accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let inline = answer_inline(&mut conn, &mut first, shared, &peer);
        hand_on(inline, conn, peer, tx, room);
    }
}

/// Passes on what `answer_inline` left: an incomplete head to the waiting room, a request or an
/// answer still to send to a worker.
fn hand_on(
    inline: Inline,
    conn: Conn,
    peer: String,
    tx: &mpsc::SyncSender<Job>,
    room: &WaitingRoom,
) {
    let job = match inline {
        Inline::Done => return,
        Inline::Wait(early) => {
            return room.admit(Waiting {
                conn,
                bytes: early,
                peer,
                deadline: Instant::now() + REQUEST_DEADLINE,
            })
        }
        Inline::Read(early) => Job::Read(conn, early, peer),
        Inline::Write(rest) => Job::Write(conn, rest),
    };
    to_worker(job, tx);
}

/// Queues `job` for a worker; a full queue answers 503 at once.
fn to_worker(job: Job, tx: &mpsc::SyncSender<Job>) {
    if let Err(mpsc::TrySendError::Full(job)) = tx.try_send(job) {
        let conn = match job {
            Job::Read(c, ..) | Job::Write(c, _) => c,
        };
        let busy = routes::error(503, "too many connections", Vec::new())
            .with_header("Retry-After", "1".into());
        // Never blocks the calling thread: what the socket does not take at once is dropped.
        if send_now(&conn, &mut Pending::new(&busy)) == Sent::All {
            conn.shutdown_write();
        }
    }
}

/// A connection whose head has not all arrived: the bytes so far and when it must be complete.
struct Waiting {
    conn: Conn,
    bytes: Vec<u8>,
    peer: String,
    deadline: Instant,
}

/// The accept threads' end of the waiting room: new connections, and a socket whose byte wakes
/// the waiting thread from its `poll`.
struct WaitingRoom {
    tx: mpsc::Sender<Waiting>,
    wake: UnixStream,
}

/// The waiting thread's end: the arrivals, and the socket that wakes it.
type RoomEnd = (mpsc::Receiver<Waiting>, UnixStream);

impl WaitingRoom {
    fn new() -> Result<(WaitingRoom, RoomEnd)> {
        let (tx, rx) = mpsc::channel();
        let (wake, wake_rx) = UnixStream::pair().context("cannot create the api wake socket")?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok((WaitingRoom { tx, wake }, (rx, wake_rx)))
    }

    fn try_clone(&self) -> Result<WaitingRoom> {
        Ok(WaitingRoom {
            tx: self.tx.clone(),
            wake: self.wake.try_clone()?,
        })
    }

    fn admit(&self, w: Waiting) {
        if self.tx.send(w).is_ok() {
            // A full wake socket already holds a wake-up: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The waiting thread: polls every waiting connection and the wake socket. A connection whose
/// head is complete is answered like in the accept thread or handed to a worker; one that
/// closes, fails or outlives its deadline is dropped without an answer, as a worker would.
fn waiting_loop(
    arrivals: &mpsc::Receiver<Waiting>,
    wake: &UnixStream,
    tx: &mpsc::SyncSender<Job>,
    shared: &Arc<Shared>,
) {
    use nix::libc;
    let mut room: std::collections::VecDeque<Waiting> = std::collections::VecDeque::new();
    let mut buf = vec![0u8; FIRST_READ];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        loop {
            match arrivals.try_recv() {
                Ok(w) => {
                    if room.len() >= WAITING {
                        room.pop_front();
                    }
                    room.push_back(w);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        room.retain(|w| w.deadline > now);
        let timeout_ms = room.iter().map(|w| w.deadline).min().map_or(-1, |d| {
            let ms = d.saturating_duration_since(now).as_millis() + 1;
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        let pollfd = |fd: std::os::fd::RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.clear();
        fds.push(pollfd(wake.as_raw_fd()));
        fds.extend(room.iter().map(|w| pollfd(w.conn.as_raw_fd())));
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a live, initialised array of `nfds` pollfd entries that poll may write.
        if unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                warn!(error = %e, "api poll failed");
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        if fds[0].revents != 0 {
            while matches!((&*wake).read(&mut buf), Ok(n) if n > 0) {}
        }
        // From the back, so that removing one leaves the indices still to visit in place.
        for i in (0..room.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            match recv_now(&room[i].conn, &mut buf) {
                Ok(0) => drop(room.remove(i)),
                Ok(n) => {
                    let w = &mut room[i];
                    w.bytes.extend_from_slice(&buf[..n]);
                    if http::head_arrived(&w.bytes) || w.bytes.len() > http::MAX_HEAD_BYTES {
                        if let Some(mut w) = room.remove(i) {
                            let job = match answer_head(&mut w.conn, &w.bytes, shared, &w.peer) {
                                Inline::Done => continue,
                                // An oversized head: a worker answers 431.
                                Inline::Wait(early) | Inline::Read(early) => {
                                    Job::Read(w.conn, early, w.peer)
                                }
                                Inline::Write(rest) => Job::Write(w.conn, rest),
                            };
                            to_worker(job, tx);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => drop(room.remove(i)),
            }
        }
    }
}

/// The accept thread's first read: what the client sent before it was accepted, without waiting.
const FIRST_READ: usize = 4096;

/// What the accept thread did with a new connection.
enum Inline {
    /// Answered and closed.
    Done,
    /// The head has not all arrived: these bytes came first, the rest is awaited in the
    /// waiting room.
    Wait(Vec<u8>),
    /// A worker reads the rest of the request (the body); these bytes came first.
    Read(Vec<u8>),
    /// Answered, but the socket took only part of it: a worker sends the rest.
    Write(Pending),
}

/// Answers a request in the accept thread when that cannot block it: its whole head arrived with
/// the connection, it has no body, and its route is answered from memory (or it is refused from
/// the head alone). A head still on its way waits in the waiting room; everything else goes to a
/// worker. A slow client costs the accept thread one read that does not wait. Waking a worker
/// for every small GET doubled the syscalls and thread switches per request.
fn answer_inline(conn: &mut Conn, buf: &mut [u8], shared: &Arc<Shared>, peer: &str) -> Inline {
    let n = match recv_now(conn, buf) {
        Ok(0) => return Inline::Done,
        Ok(n) => n,
        // Nothing yet, or a signal came first: the request is awaited in the waiting room.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Inline::Wait(Vec::new())
        }
        Err(_) => return Inline::Done,
    };
    let early = &buf[..n];
    if !http::head_arrived(early) {
        return Inline::Wait(early.to_vec());
    }
    answer_head(conn, early, shared, peer)
}

/// A request whose head is in `bytes`: answered now when its route allows (see `answer_inline`),
/// else handed to a worker with these bytes.
fn answer_head(conn: &mut Conn, bytes: &[u8], shared: &Arc<Shared>, peer: &str) -> Inline {
    let Some(req) = http::complete_head_without_body(bytes) else {
        return Inline::Read(bytes.to_vec());
    };
    let resp = match routes::admit(shared, peer, &req) {
        Ok(route) if routes::answers_now(route) => routes::dispatch(route, shared, peer, &req),
        Ok(_) => return Inline::Read(bytes.to_vec()),
        Err(refused) => refused,
    };
    debug!(peer = %peer, method = %req.method, path = routes::shown_path(&req.path), status = resp.status, "api request");
    let mut out = Pending::new(&resp);
    match send_now(conn, &mut out) {
        Sent::All => {
            conn.shutdown_write();
            Inline::Done
        }
        Sent::Blocked => Inline::Write(out),
        Sent::Failed => Inline::Done,
    }
}

/// One `recv` that does not wait (`MSG_DONTWAIT`), whatever the socket's mode.
fn recv_now(conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
    use nix::libc;
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which it borrows mutably.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// An answer on its way out: the head, then the body (shared, never copied), of which the first
/// `sent` bytes are gone.
struct Pending {
    head: String,
    body: Arc<String>,
    sent: usize,
}

impl Pending {
    fn new(resp: &Response) -> Pending {
        Pending {
            head: resp.head(),
            body: Arc::clone(&resp.body),
            sent: 0,
        }
    }

    /// What is left of the head and of the body.
    fn rest(&self) -> (&[u8], &[u8]) {
        let (h, b) = (self.head.as_bytes(), self.body.as_bytes());
        match h.get(self.sent..) {
            Some(h) => (h, b),
            None => (&[], &b[self.sent - h.len()..]),
        }
    }

    fn done(&self) -> bool {
        self.sent == self.head.len() + self.body.len()
    }

    /// Sends the rest (head and body in one vectored write where the kernel takes it), waiting as
    /// the writer's timeout allows.
    fn finish(&mut self, w: &mut impl Write) -> io::Result<()> {
        while !self.done() {
            let (h, b) = self.rest();
            let n = w.write_vectored(&[io::IoSlice::new(h), io::IoSlice::new(b)])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
        }
        w.flush()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    All,
    /// The socket would have blocked; `Pending` holds what is left.
    Blocked,
    Failed,
}

/// Sends what is left of `out` without waiting (`MSG_DONTWAIT`, and `MSG_NOSIGNAL` so that a
/// closed peer is an error, not a signal), head and body in one call.
fn send_now(conn: &Conn, out: &mut Pending) -> Sent {
    use nix::libc;
    while !out.done() {
        let (h, b) = out.rest();
        let mut iov = [
            libc::iovec {
                iov_base: h.as_ptr().cast_mut().cast(),
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            },
        ];
        // SAFETY: all-zero is a valid msghdr (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs point into `out`'s head and body, which outlive the call; sendmsg
        // only reads them.
        let n = unsafe {
            libc::sendmsg(
                conn.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Sent::Failed,
            Ok(k) => out.sent += k,
            Err(_) => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Sent::Blocked,
                _ => return Sent::Failed,
            },
        }
    }
    Sent::All
}

/// Reads one request, answers it, closes. Never logs the query string or any header.
fn serve(mut conn: Conn, early: Vec<u8>, peer: &str, shared: &Arc<Shared>) {
    let Some((resp, unread)) = exchange(&mut conn, early, shared, peer) else {
        return;
    };
    let mut out = Pending::new(&resp);
    if conn.set_write_timeout(WRITE_TIMEOUT).is_err() || out.finish(&mut conn).is_err() {
        return;
    }
    conn.shutdown_write();
    if unread > 0 {
        // Read and drop the body that was not wanted, so the client sees the answer rather than
        // a reset (closing on unread data resets the connection).
        let mut reader = DeadlineReader {
            conn: &mut conn,
            deadline: Instant::now() + Duration::from_secs(2),
        };
        let _ = io::copy(
            &mut reader.by_ref().take(unread.min(DRAIN_LIMIT)),
            &mut io::sink(),
        );
    }
}

/// Reads the head; refuses what the head alone can refuse before any of the body is read; tells
/// an `Expect: 100-continue` client to send the body only when the request got that far; reads
/// the body and runs the handler. Returns the answer and how many declared body bytes are still
/// unread, or `None` when the client went away.
fn exchange(
    conn: &mut Conn,
    first: Vec<u8>,
    shared: &Arc<Shared>,
    peer: &str,
) -> Option<(Response, u64)> {
    let mut reader = DeadlineReader {
        conn,
        deadline: Instant::now() + REQUEST_DEADLINE,
    };
    let (mut req, early) = match http::read_head_after(&mut reader, first) {
        Ok(r) => r,
        Err(ReadError::HeadTooLarge) => return refused(ReadError::HeadTooLarge, DRAIN_LIMIT),
        Err(e) => return refused(e, 0),
    };
    let declared = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let unread = declared.saturating_sub(early.len() as u64);
    let route = match routes::admit(shared, peer, &req) {
        Ok(r) => r,
        Err(resp) => {
            debug!(peer = %peer, method = %req.method, path = routes::shown_path(&req.path), status = resp.status, "api request");
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
        return refused(e, 0);
    }
    let resp = routes::dispatch(route, shared, peer, &req);
    debug!(peer = %peer, method = %req.method, path = routes::shown_path(&req.path), status = resp.status, "api request");
    Some((resp, 0))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 5 bytes a call, as a socket with a full buffer might.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_pending_answer_sends_exactly_what_is_left_from_wherever_it_stopped() {
        let resp = Response::shared(
            200,
            "application/json",
            Arc::new("{\"a\":[1,2,3]}".to_string()),
        );
        let whole = resp.encode();
        let head_len = resp.head().len();
        for sent in [0, 7, head_len, head_len + 4, whole.len()] {
            let mut out = Pending::new(&resp);
            out.sent = sent;
            let mut w = Trickle(Vec::new());
            out.finish(&mut w).unwrap();
            assert_eq!(w.0, whole[sent..], "from byte {sent}");
            assert!(out.done());
        }
    }

    #[test]
    fn a_tcp_connection_is_handed_over_only_once_its_first_bytes_arrived() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let Some(Listener::Tcp(l)) = bind(&ApiListen::Tcp(addr)).unwrap() else {
            panic!("not a tcp listener");
        };
        l.set_nonblocking(true).unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // Connected, but silent: the kernel keeps it until data comes (or REQUEST_DEADLINE).
        let e = l.accept().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let req = b"GET /health HTTP/1.1\r\n\r\n";
        client.write_all(req).unwrap();
        let (mut conn, _) = loop {
            match l.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        // Handed over with its request already there: the accept thread's one recv finds it.
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], req);
    }

    #[test]
    fn the_log_shows_the_route_pattern_never_the_path_a_client_sent() {
        assert_eq!(
            routes::shown_path("/resource/lxc/status"),
            "/resource/lxc/status"
        );
        assert_eq!(
            routes::shown_path("/tasks/s3cr3t-in-the-path"),
            "/tasks/{task_id}"
        );
        // A path the server decoded from `/x%3Ftoken=...`, or any other unknown one.
        for path in ["/x?token=s3cr3t", "/tasks/a/s3cr3t", "/s3cr3t"] {
            assert_eq!(routes::shown_path(path), "(no such route)");
        }
    }

    #[test]
    fn only_a_socket_is_stale_and_anything_else_at_the_path_is_refused_naming_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("api.sock");
        assert!(!stale_socket(&path).unwrap());
        drop(UnixListener::bind(&path).unwrap());
        assert!(stale_socket(&path).unwrap());
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let link = tmp.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        for refused in [&file, &link] {
            let err = format!("{:#}", stale_socket(refused).unwrap_err());
            assert!(
                err.starts_with("api.listen: ") && err.contains("is not a socket"),
                "{err}"
            );
        }
    }

    #[test]
    fn send_now_sends_a_whole_small_answer_at_once() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let resp = routes::error(503, "too many connections", Vec::new());
        let mut out = Pending::new(&resp);
        assert_eq!(send_now(&Conn::Unix(a), &mut out), Sent::All);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, resp.encode());
    }

    #[test]
    fn send_now_stops_without_waiting_when_the_peer_does_not_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let body = Arc::new("x".repeat(8 << 20));
        let resp = Response::shared(200, "text/plain", Arc::clone(&body));
        let mut out = Pending::new(&resp);
        let conn = Conn::Unix(a);
        assert_eq!(send_now(&conn, &mut out), Sent::Blocked);
        assert!(out.sent > 0 && !out.done(), "sent {}", out.sent);
        // A worker then sends the rest; the peer gets the whole answer, once.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut conn = conn;
        out.finish(&mut conn).unwrap();
        drop(conn);
        assert_eq!(reader.join().unwrap(), resp.encode());
    }
}
