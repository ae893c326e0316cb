//! The node's TLS listener: mutual TLS handshakes with a deadline and a
//! bound on how many may be under way, so connections that never finish
//! their handshake (a plain TCP connection left open, a handshake sent a
//! byte at a time) can neither hold the node's file descriptors nor keep
//! the hub out (red team: 20,000 idle connections made every query fail).
//! Tonic's own TLS listener waits for a handshake forever.
//!
//! The streams it yields are `tokio_rustls` server streams over TCP, for
//! which tonic records the peer's certificates, so
//! `Request::peer_certs` works as with tonic's listener.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ServiceError;

/// How long a connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may be under way at once; a connection beyond it
/// is closed at once (the hub retries), so half-open connections hold at
/// most this many descriptors.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// A server configuration that requires a client certificate chaining to
/// `ca_pem`, speaking HTTP/2 (gRPC).
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<rustls::ServerConfig, ServiceError> {
    let (certs, key) = cert_and_key(cert_pem, key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A server configuration with no client certificate (the hub's Flight
/// SQL endpoint: a member's token authenticates each call), speaking
/// HTTP/2 (gRPC).
pub fn token_server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ServiceError> {
    let (certs, key) = cert_and_key(cert_pem, key_pem)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn tls(e: &dyn std::fmt::Display) -> ServiceError {
    ServiceError::Config(format!("TLS: {e}"))
}

type CertAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn cert_and_key(cert_pem: &str, key_pem: &str) -> Result<CertAndKey, ServiceError> {
    crate::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    Ok((certs, key))
}

type Counts = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// One open connection of an address, counted until dropped.
struct Slot {
    ip: IpAddr,
    counts: Counts,
}

impl Slot {
    /// A place for `ip`, or none if it has `max` connections open.
    fn take(counts: &Counts, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            counts: counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// A TLS connection, holding its address's place (if its listener counts
/// them) until it is dropped.
pub struct Counted {
    inner: TlsStream<TcpStream>,
    _slot: Option<Slot>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The TLS connections accepted on `listener`: each handshake runs in its
/// own task within [`HANDSHAKE_TIMEOUT`], at most
/// [`MAX_PENDING_HANDSHAKES`] at once; failed and late ones are dropped.
/// With `max_per_address`, an address with that many connections open has
/// a new one closed before its handshake (the hub's Flight SQL endpoint:
/// a client holding idle connections cannot use up the hub's). The
/// accepting task ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    max_per_address: Option<usize>,
) -> impl Stream<Item = Result<Counted, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let counts: Counts = Arc::default();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match max_per_address {
                Some(max) => match Slot::take(&counts, peer.ip(), max) {
                    Some(slot) => Some(slot),
                    None => {
                        drop(tcp);
                        continue;
                    }
                },
                None => None,
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                if let Ok(Ok(tls)) = done {
                    let _ = tx
                        .send(Ok(Counted {
                            inner: tls,
                            _slot: slot,
                        }))
                        .await;
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
