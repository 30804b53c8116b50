//! Windowed reads for the model's streaming connection.
//!
//! A model streams a token every few milliseconds. Read the usual way, every token costs a wakeup: the kernel
//! signals the socket, a runtime worker leaves `epoll_wait`, hyper's connection task and the turn run. Under a
//! paced stream that wakeup was most of the server's CPU per turn (docs/benchmarks.md). A turn's tokens go to the
//! log in windows of `turn.coalesce_ms` anyway, so while a response is flowing, this connection takes its socket
//! out of the reactor and reads once per window whatever arrived meanwhile: one timer wakeup per window instead
//! of one epoll wakeup per chunk. A window that ends with nothing to read puts the socket back into the reactor,
//! so a pause in the stream costs nothing and the first bytes after it are read at once.
//!
//! Windows are off until the reader of a response switches them on through the [`WindowCtl`] found in the
//! response's extensions (the model client does so after the first event, so time to first token is untouched).
//! Whenever the connection has handed over all it read and starts waiting, it says so ([`WindowCtl::idle`]): the
//! reader then knows a window's burst is complete and can act on it at once instead of waiting on a timer.

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The read window of one connection, shared between the connection and the reader of its current response.
#[derive(Clone, Default, Debug)]
pub(crate) struct WindowCtl(Arc<CtlInner>);

#[derive(Default, Debug)]
struct CtlInner {
    /// Window length in microseconds; zero means off (every read as soon as the socket is readable).
    window_us: AtomicU64,
    /// Signalled by the connection when, with windows on, it has handed over what it read and starts waiting.
    idle: Notify,
}

impl WindowCtl {
    pub(crate) fn set(&self, window: Duration) {
        self.0.window_us.store(window.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_micros(self.0.window_us.load(Ordering::Relaxed))
    }

    /// Completes once the connection, having returned data, waits for more (a signal given while nobody waits
    /// is kept for the next call).
    pub(crate) async fn idle(&self) {
        self.0.idle.notified().await
    }
}

/// A client TCP connection whose reads can be taken in windows (see the module docs).
pub(crate) struct WindowedTcp {
    io: Io,
    /// Shared with every response on this connection (`Connected::extra`); the response's reader sets it.
    ctl: WindowCtl,
    /// A window is running: reads wait for `timer`.
    in_window: bool,
    /// Data was returned since the last idle signal.
    unannounced: bool,
    /// End of the running window; owned by the connection, polled by whichever task reads it.
    timer: Pin<Box<Sleep>>,
}

enum Io {
    /// In the reactor: readiness wakes the reader.
    Registered(TcpStream),
    /// Out of the reactor (still non-blocking): read only when a window ends.
    Detached(std::net::TcpStream),
    /// Only while moving between the two; a failed move leaves the connection broken.
    Moving,
}

impl WindowedTcp {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            io: Io::Registered(tcp),
            ctl: WindowCtl::default(),
            in_window: false,
            unannounced: false,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// The handle that switches this connection's windows on and off.
    pub(crate) fn ctl(&self) -> WindowCtl {
        self.ctl.clone()
    }

    fn start_window(&mut self, window: Duration) {
        self.in_window = true;
        self.timer.as_mut().reset(window_end(Instant::now(), window));
    }

    fn detach(&mut self) -> io::Result<()> {
        if let Io::Registered(s) = std::mem::replace(&mut self.io, Io::Moving) {
            self.io = Io::Detached(s.into_std()?);
        }
        Ok(())
    }

    fn attach(&mut self) -> io::Result<()> {
        self.in_window = false;
        if let Io::Detached(s) = std::mem::replace(&mut self.io, Io::Moving) {
            self.io = Io::Registered(TcpStream::from_std(s)?);
        }
        Ok(())
    }
}

impl WindowedTcp {
    /// About to return `Pending`: with windows on, tell the reader that everything read has been handed over.
    fn waiting<T>(&mut self) -> Poll<T> {
        // With windows off nothing is announced, and what was read then is not owed a signal later.
        if std::mem::take(&mut self.unannounced) && !self.ctl.get().is_zero() {
            self.ctl.0.idle.notify_one();
        }
        Poll::Pending
    }
}

/// Windows end on a process-wide grid (multiples of the window since the first window), not a window after each
/// connection's own first read: the timers of all streams that are flowing fire together, so one wakeup reads
/// every turn's burst, and their appends and deliveries go out together too. A window is at most `window` long.
fn window_end(now: Instant, window: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let w = window.as_nanos().max(1);
    let next = (now.saturating_duration_since(epoch).as_nanos() / w + 1) * w;
    epoch + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "model connection lost while entering or leaving a read window")
}

impl AsyncRead for WindowedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.io {
                Io::Registered(s) => {
                    let before = buf.filled().len();
                    if Pin::new(s).poll_read(cx, buf)?.is_pending() {
                        return this.waiting();
                    }
                    let read = buf.filled().len() > before;
                    let window = this.ctl.get();
                    if read && buf.remaining() > 0 && !window.is_zero() {
                        // A stream (re)starts flowing: this read opens a window and its data goes out with that
                        // window's burst, not as an extra burst of its own.
                        this.detach()?;
                        this.start_window(window);
                    } else if !window.is_zero() {
                        // What is read with windows off is owed no signal, even once they are on.
                        this.unannounced |= read;
                    }
                    return Poll::Ready(Ok(()));
                }
                Io::Detached(s) => {
                    // Inside a window nothing is read, not even to find nothing: one read per window.
                    if this.in_window && !this.ctl.get().is_zero() && this.timer.as_mut().poll(cx).is_pending() {
                        return this.waiting();
                    }
                    this.in_window = false;
                    let want = buf.remaining();
                    match s.read(buf.initialize_unfilled()) {
                        Ok(n) => {
                            buf.advance(n);
                            this.unannounced |= n > 0;
                            let window = this.ctl.get();
                            // Still flowing: the next read waits for the next window, unless this one filled the
                            // buffer (more may be waiting in the socket).
                            if n > 0 && n < want && !window.is_zero() {
                                this.start_window(window);
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Quiet for a whole window (or windows switched off): wait for readiness again.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.attach()?,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Io::Moving => return Poll::Ready(Err(broken())),
            }
        }
    }
}

impl AsyncWrite for WindowedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.io {
                Io::Registered(s) => return Pin::new(s).poll_write(cx, data),
                Io::Detached(s) => match s.write(data) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // A full send buffer needs readiness to wait on.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.attach()?,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Io::Moving => return Poll::Ready(Err(broken())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP has no user-space buffer here to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Registered(s) => Pin::new(s).poll_shutdown(cx),
            Io::Detached(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Io::Moving => Poll::Ready(Err(broken())),
        }
    }
}

impl Connection for WindowedTcp {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.ctl())
    }
}

/// hyper-util's HTTP connector (DNS, connect timeout, `TCP_NODELAY`) producing [`WindowedTcp`] connections.
#[derive(Clone)]
pub(crate) struct WindowedConnector {
    http: HttpConnector,
}

impl WindowedConnector {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // TLS (if any) is layered on top by hyper-rustls, which hands https URIs down to this connector.
        http.enforce_http(false);
        Self { http }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for WindowedConnector {
    type Response = TokioIo<WindowedTcp>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(WindowedTcp::new(tcp)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (WindowedTcp, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (WindowedTcp::new(client.expect("connect")), server.expect("accept").0)
    }

    /// Reads until `want` bytes arrived; returns them and how many reads returned data.
    async fn read_exactly(conn: &mut WindowedTcp, want: usize) -> (Vec<u8>, usize) {
        let (mut got, mut reads) = (Vec::new(), 0);
        let mut buf = [0u8; 4096];
        while got.len() < want {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "EOF after {} of {want} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        (got, reads)
    }

    /// The peer writes `data` after `after_ms`; the connection's read of it, if it comes within `within_s`.
    async fn write_later_read_by(
        conn: &mut WindowedTcp,
        mut peer: TcpStream,
        after_ms: u64,
        data: &'static [u8],
        within_s: u64,
    ) -> (Option<Vec<u8>>, TcpStream) {
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            peer.write_all(data).await.expect("write");
            peer
        });
        let got = tokio::time::timeout(Duration::from_secs(within_s), read_exactly(conn, data.len())).await;
        (got.ok().map(|(bytes, _)| bytes), writer.await.expect("writer"))
    }

    #[tokio::test]
    async fn windows_off_read_every_write_as_it_arrives() {
        let (mut conn, mut peer) = pair().await;
        for i in 0..5u8 {
            peer.write_all(&[i; 10]).await.expect("write");
            let (got, reads) = read_exactly(&mut conn, 10).await;
            assert_eq!((got, reads), (vec![i; 10], 1));
        }
    }

    #[tokio::test]
    async fn a_flowing_stream_is_read_once_per_window_and_nothing_is_lost() {
        let (mut conn, mut peer) = pair().await;
        conn.ctl().set(Duration::from_millis(60));
        let writer = tokio::spawn(async move {
            for i in 0..40u8 {
                peer.write_all(&[i; 5]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            peer
        });
        let started = Instant::now();
        let (got, reads) = read_exactly(&mut conn, 200).await;
        let expected: Vec<u8> = (0..40u8).flat_map(|i| [i; 5]).collect();
        assert_eq!(got, expected, "bytes in order, none lost");
        // 40 writes 3 ms apart: the first read, then one per 60 ms window (about 4 in all), not one per write,
        // however slowly a loaded machine runs the writer.
        let windows = started.elapsed().as_millis() / 60;
        assert!(reads as u128 <= windows + 2, "{reads} reads in {windows} windows for 40 paced writes");
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn a_pause_puts_the_socket_back_in_the_reactor_and_the_next_bytes_wake_the_reader() {
        let (mut conn, mut peer) = pair().await;
        conn.ctl().set(Duration::from_millis(20));
        peer.write_all(b"first").await.expect("write");
        assert_eq!(read_exactly(&mut conn, 5).await.0, b"first");
        // Longer than a window: the connection goes back to waiting on readiness (no timer is left to wake it).
        let (got, mut peer) = write_later_read_by(&mut conn, peer, 150, b"late", 5).await;
        assert_eq!(got.expect("bytes after a pause are read"), b"late");
        // Switching windows off mid-window: the next read does not wait for the (long) window's end.
        conn.ctl().set(Duration::from_secs(30));
        peer.write_all(b"a").await.expect("write");
        assert_eq!(read_exactly(&mut conn, 1).await.0, b"a");
        conn.ctl().set(Duration::ZERO);
        let (got, peer) = write_later_read_by(&mut conn, peer, 20, b"b", 10).await;
        assert_eq!(got.expect("read does not wait out a 30 s window once windows are off"), b"b");
        // EOF still reads as EOF.
        drop(peer);
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf).await.expect("read at EOF"), 0);
    }

    #[tokio::test]
    async fn the_connection_says_when_it_has_handed_over_a_burst_and_waits() {
        let (mut conn, mut peer) = pair().await;
        let ctl = conn.ctl();
        let quiet = |ctl: WindowCtl| async move { tokio::time::timeout(Duration::from_millis(30), ctl.idle()).await };
        // Windows off: no signals.
        peer.write_all(b"one").await.expect("write");
        read_exactly(&mut conn, 3).await;
        let _ = tokio::time::timeout(Duration::from_millis(10), conn.read(&mut [0u8; 8])).await;
        assert!(quiet(ctl.clone()).await.is_err(), "no idle signal with windows off");
        // Windows on: the read that opens a window is not a burst of its own. Windows end on a shared grid, so
        // a window opened just before a grid line could end inside the 10 ms read below (which would then find
        // the socket empty and go back to the reactor, a different path): open it just after a line, with a
        // window long enough that a loaded machine still reads inside it.
        let w = Duration::from_millis(200);
        ctl.set(w);
        tokio::time::sleep_until(window_end(Instant::now(), w)).await;
        peer.write_all(b"two").await.expect("write");
        assert_eq!(read_exactly(&mut conn, 3).await.0, b"two");
        let _ = tokio::time::timeout(Duration::from_millis(10), conn.read(&mut [0u8; 8])).await;
        assert!(quiet(ctl.clone()).await.is_err(), "no signal for the read that opens a window");
        // The window's burst, then a read that has to wait: idle, once.
        peer.write_all(b"three").await.expect("write");
        assert_eq!(read_exactly(&mut conn, 5).await.0, b"three");
        assert!(quiet(ctl.clone()).await.is_err(), "no signal while the reader has not asked for more");
        let _ = tokio::time::timeout(Duration::from_millis(10), conn.read(&mut [0u8; 8])).await;
        assert!(quiet(ctl.clone()).await.is_ok(), "idle signalled once the reader waits");
        let _ = tokio::time::timeout(Duration::from_millis(10), conn.read(&mut [0u8; 8])).await;
        assert!(quiet(ctl.clone()).await.is_err(), "one signal per burst, not per wait");
    }

    #[test]
    fn windows_end_on_a_shared_grid_within_one_window() {
        let w = Duration::from_millis(50);
        let t0 = Instant::now();
        let first = window_end(t0, w);
        for offset_ms in [0u64, 1, 13, 49, 50, 77, 1000] {
            let now = t0 + Duration::from_millis(offset_ms);
            let end = window_end(now, w);
            assert!(end > now && end <= now + w, "window from +{offset_ms} ms ends {:?} later", end - now);
            // Ends fall on the grid: a whole number of windows from any other end.
            let apart = end.max(first) - end.min(first);
            assert_eq!(apart.as_nanos() % w.as_nanos(), 0, "+{offset_ms} ms");
        }
    }

    #[tokio::test]
    async fn writes_work_in_and_out_of_a_window() {
        let (mut conn, mut peer) = pair().await;
        conn.ctl().set(Duration::from_millis(50));
        peer.write_all(b"x").await.expect("write");
        read_exactly(&mut conn, 1).await;
        conn.write_all(b"request").await.expect("write while detached");
        let mut buf = [0u8; 7];
        peer.read_exact(&mut buf).await.expect("peer read");
        assert_eq!(&buf, b"request");
    }
}
