//! The pod's listener: accepts TCP connections and serves HTTP/1.1 on each (WebSocket upgrades included) with
//! the limits a public port needs, which `axum::serve` does not set:
//!
//! - a connection must send its first byte, and then its whole request head, within
//!   `http.header_read_timeout_ms` (slow-loris: without it a connection that never finishes its headers stays
//!   open forever, and thousands of them hold the pod's memory);
//! - an idle keep-alive connection is closed after `http.idle_timeout_ms` without a new request;
//! - at most `limits.connections_per_pod` connections are open at once, WebSockets included (a socket holds
//!   its connection's slot for its life); past it a new connection is closed at once.
//!
//! Refusals are counted in `switchboard_connections_refused_total{reason}` and logged as one summary line per
//! interval, never one line each (a burst must not flood the logs).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Refusal};

/// A connection's place among the pod's open connections. The request handler of a WebSocket upgrade takes
/// it from the request's extensions and holds it for the socket's life; dropped with the last holder.
#[derive(Clone)]
pub(crate) struct ConnectionSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The limits of [`serve`], from config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) max_connections: usize,
}

/// How often the refusal summary is logged (when there was any).
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Logs what was refused since the last summary, if anything, in one line.
fn summarize(metrics: &Metrics) {
    let counts = metrics.take_refusals();
    if counts.iter().any(|(_, n)| *n > 0) {
        let by_reason: Vec<String> =
            counts.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{}={n}", r.label())).collect();
        tracing::warn!(
            refused = %by_reason.join(" "),
            window_s = SUMMARY_EVERY.as_secs(),
            "connections refused (see switchboard_connections_refused_total)"
        );
    }
}

/// Serves `router` on `listener` until `stop`, then waits for the open HTTP requests to finish (upgraded
/// WebSockets are closed by the drain, not here).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read).keep_alive(true);
    // Connection tasks, so the server can wait for open requests once it stops accepting.
    let open = tokio_util::task::TaskTracker::new();
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            _ = summary.tick() => {
                summarize(&metrics);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connection_refused(Refusal::Cap);
            drop(tcp);
            continue;
        };
        // Token streams are many small frames: Nagle plus delayed ACKs would add up to 40 ms to each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        let slot = ConnectionSlot(Arc::new(permit));
        let io = IdleTimeout::new(tcp, limits.idle);
        let upgrading = io.upgrading();
        let service = hyper::service::service_fn({
            let router = router.clone();
            let slot = slot.clone();
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(slot.clone());
                // The peer, for the budgets of anonymous callers (`client_addr`).
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                if req.headers().contains_key(hyper::header::UPGRADE) {
                    // A WebSocket keeps itself alive (keepalive frames, close codes): no idle limit from here.
                    upgrading.store(true, Ordering::Relaxed);
                }
                let mut router = router.clone();
                async move {
                    use tower_service::Service;
                    router.call(req.map(axum::body::Body::new)).await
                }
            }
        });
        let metrics = metrics.clone();
        let http = http.clone();
        let stop = stop.clone();
        open.spawn(async move {
            // The request head's timer starts with its first byte: a connection that sends nothing at all is
            // bounded here, by the same limit.
            if !first_byte_within(io.get_ref(), limits.header_read).await {
                metrics.connection_refused(Refusal::HeaderTimeout);
                return;
            }
            let mut conn = std::pin::pin!(http.serve_connection(TokioIo::new(io), service).with_upgrades());
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    // Stop after the request in flight (a keep-alive connection takes no new one).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    metrics.connection_refused(Refusal::HeaderTimeout);
                } else {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            drop(slot);
        });
    }
    summarize(&metrics);
    // Open requests finish (a REST turn in flight answers); the drain's own deadline bounds this.
    open.close();
    open.wait().await;
}

/// Whether the peer sent something within `limit`.
async fn first_byte_within(tcp: &TcpStream, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    matches!(tokio::time::timeout(limit, tcp.peek(&mut one)).await, Ok(Ok(n)) if n > 0)
}

pub(crate) use self::idle::IdleTimeout;

mod idle {
    //! A connection that has read and written nothing for its idle limit reads as closed (end of stream), so
    //! hyper ends an idle keep-alive connection. A WebSocket keeps its connection busy (keepalives), and once
    //! upgraded the socket task owns the stream.

    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::time::{Instant, Sleep};

    pub(crate) struct IdleTimeout<T> {
        inner: T,
        limit: Duration,
        /// When bytes last moved: a read or write only notes the time (no timer work on the data path).
        last: Instant,
        /// Fires at `last + limit` at the earliest; when it finds newer activity it is set to the rest of the
        /// wait. Owned by this wrapper.
        deadline: Pin<Box<Sleep>>,
        /// Set by the request handler when the connection is being upgraded (a WebSocket): the limit is off.
        upgrading: Arc<AtomicBool>,
    }

    impl<T> IdleTimeout<T> {
        pub(crate) fn new(inner: T, limit: Duration) -> IdleTimeout<T> {
            let deadline = Box::pin(tokio::time::sleep(limit));
            IdleTimeout { inner, limit, last: Instant::now(), deadline, upgrading: Arc::new(AtomicBool::new(false)) }
        }

        pub(crate) fn upgrading(&self) -> Arc<AtomicBool> {
            self.upgrading.clone()
        }

        pub(crate) fn get_ref(&self) -> &T {
            &self.inner
        }

        fn touch(&mut self) {
            // After an upgrade the limit is off: nothing to note.
            if !self.upgrading.load(Ordering::Relaxed) {
                self.last = Instant::now();
            }
        }

        /// Ready once nothing moved for the whole limit.
        fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            loop {
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = self.last + self.limit;
                if Instant::now() >= due {
                    return Poll::Ready(());
                }
                self.deadline.as_mut().reset(due);
            }
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(r) => {
                    if buf.filled().len() > before {
                        self.touch();
                    }
                    Poll::Ready(r)
                }
                Poll::Pending if self.upgrading.load(Ordering::Relaxed) => Poll::Pending,
                // Idle for the whole limit: end of stream (hyper closes the connection).
                Poll::Pending => self.poll_idle(cx).map(Ok),
            }
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, data);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                self.touch();
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    use std::future::Future;
}
