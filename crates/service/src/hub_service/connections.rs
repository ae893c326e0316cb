//! A bound on the hub's open connections per client address: a client
//! that opens thousands of TLS connections and leaves them idle (or
//! trickles a header a line at a time) could otherwise use up the hub's
//! file descriptors and keep every member out (red team). Beyond
//! `[limits] max_connections_per_address`, a new connection from that
//! address is closed before its TLS handshake; the header read timeout
//! (`header_read_timeout_secs`) closes the slow ones.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The TCP-level acceptor under the hub's TLS acceptor.
#[derive(Clone)]
pub(crate) struct PerAddress {
    counts: Counts,
    max: usize,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> Self {
        PerAddress {
            counts: Arc::default(),
            max,
        }
    }
}

/// A connection counted against its address until it is dropped.
pub(crate) struct Counted {
    inner: TcpStream,
    ip: IpAddr,
    counts: Counts,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl<S> Accept<TcpStream, S> for PerAddress {
    type Stream = Counted;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = match stream.peer_addr() {
            Ok(a) => a.ip(),
            Err(e) => return std::future::ready(Err(e)),
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return std::future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "max_connections_per_address reached",
            )));
        }
        *n += 1;
        drop(counts);
        let _ = stream.set_nodelay(true);
        std::future::ready(Ok((
            Counted {
                inner: stream,
                ip,
                counts: self.counts.clone(),
            },
            service,
        )))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
