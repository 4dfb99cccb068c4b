//! The router's own ports as it accepts on them: at most so many connections at once (one more is
//! accepted and closed at once, so the backlog never fills with connections nobody serves), and a
//! connection on which the client sent nothing for a while is closed — a silent TCP connection, a
//! half-sent request or HTTP/2 preface, an idle keep-alive connection. On the gRPC port the router pings
//! every HTTP/2 connection ([`GRPC_KEEPALIVE`]) and a live peer's answers count as traffic, so Envoy's
//! idle connections (and its long-lived RDS stream) stay up while dead or silent ones go.
//!
//! Both servers (tonic on the gRPC ports, axum on the HTTP port) take the same [`Limited`] connections:
//! tonic through [`incoming`], axum through [`LimitedListener`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What one port allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A connection on which nothing was read for this long is closed.
    pub idle_timeout: Duration,
}

/// The gRPC ports (`listen`, `admin.listen`): Envoy keeps a few connections (each multiplexing up to
/// [`GRPC_MAX_STREAMS_PER_CONNECTION`] streams), probes and replicas a few more.
pub const GRPC_LIMITS: Limits = Limits { max_connections: 4096, idle_timeout: Duration::from_secs(30) };

/// The HTTP port (`metrics_listen`): scrapers and browsers.
pub const HTTP_LIMITS: Limits = Limits { max_connections: 4096, idle_timeout: Duration::from_secs(10) };

/// How often the gRPC ports ping each HTTP/2 connection; a peer that does not answer within
/// [`GRPC_KEEPALIVE_TIMEOUT`] is dropped. Must be well under [`GRPC_LIMITS`]' idle timeout, so a live
/// peer's answers keep its connection.
pub const GRPC_KEEPALIVE: Duration = Duration::from_secs(10);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent HTTP/2 streams per gRPC connection (tonic's default is unlimited). One HTTP request in
/// Envoy is one ext_proc stream; Envoy opens another connection when one is full.
pub const GRPC_MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// The largest gRPC message the router reads: a new statement's body of up to Envoy's request buffer
/// (`envoy::bootstrap::REQUEST_BUFFER_LIMIT_BYTES`, 8 MiB) with its headers and framing. tonic's
/// default (4 MiB) would fail the stream, which Envoy answers 503 for every retry of that statement.
pub const GRPC_MAX_MESSAGE_BYTES: usize = 9 * 1024 * 1024;

/// A port's connections as accepted: permits for at most `limits.max_connections` at once.
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: Limits,
    /// For the log line when the port is full.
    name: &'static str,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, limits: Limits, name: &'static str) -> LimitedListener {
        LimitedListener { listener, permits: Arc::new(Semaphore::new(limits.max_connections)), limits, name }
    }

    /// The next connection within the limits: one over the limit is closed at once; accept errors (out of
    /// file descriptors, a connection reset before it was accepted) are logged and waited out briefly.
    pub async fn next(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(port = self.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                tracing::warn!(port = self.name, %peer, max = self.limits.max_connections, "too many connections: one more closed");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (Limited::new(stream, permit, self.limits.idle_timeout), peer);
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A port's connections as a stream, for tonic's `serve_with_incoming`.
pub fn incoming(listener: LimitedListener) -> impl tokio_stream::Stream<Item = io::Result<Limited>> + Send {
    futures_util::stream::unfold(listener, |mut listener| async move {
        let (connection, _) = listener.next().await;
        Some((Ok(connection), listener))
    })
}

/// An accepted connection: holds its permit, and ends (as a read error) once nothing was read for the
/// idle timeout.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Limited {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Limited {
        let deadline = Box::pin(tokio::time::sleep(idle_timeout));
        Limited { stream, _permit: permit, idle_timeout, deadline }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle_timeout;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nothing received within the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server over a limited listener.
    async fn echo(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut limited = LimitedListener::new(listener, limits, "test");
        tokio::spawn(async move {
            loop {
                let (mut connection, _) = limited.next().await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = connection.read(&mut buf).await {
                        if n == 0 || connection.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn silent_connections_close_and_busy_ones_stay() {
        let addr = echo(Limits { max_connections: 10, idle_timeout: Duration::from_millis(300) }).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            busy.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            busy.read_exact(&mut one).await.unwrap();
        }
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "the silent one is closed: {closed:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        busy.write_all(b"y").await.unwrap();
        busy.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"y", "the busy one is still served");
    }

    #[tokio::test]
    async fn one_over_the_limit_is_closed() {
        let addr = echo(Limits { max_connections: 2, idle_timeout: Duration::from_secs(30) }).await;
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"a").await.unwrap();
            let mut one = [0u8; 1];
            c.read_exact(&mut one).await.unwrap();
            kept.push(c);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"a").await;
        let mut buf = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap();
        assert!(matches!(got, Ok(0) | Err(_)), "closed: {got:?}");
        drop(kept.pop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"b").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"b", "a freed place is taken again");
    }
}
