//! The HTTP listener: hyper's HTTP/1 server driven by our own accept loop, for what
//! `axum::serve` does not offer: a header-read timeout (a slowloris connection that trickles
//! its headers is closed), a cap on connections per client address, and the client address for
//! the per-IP rate limits ([`ClientIp`]: the peer, or behind a trusted reverse proxy the address
//! it forwarded for). Graceful shutdown waits for open requests, as before.

use std::future::Future;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, warn};

/// A response write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The address a request counts as coming from for per-client rate limits: the TCP peer, or,
/// when the peer is a trusted proxy, the client it forwarded for (see [`crate::client_addr`]).
/// Set on every request this listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// Bounds on each client connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// The whole request head must arrive within this long (also bounds an idle keep-alive
    /// connection waiting for its next request).
    pub header_read_timeout: Duration,
    /// Open connections one TCP peer address may hold. Counted on the TCP peer, never on
    /// `X-Forwarded-For`: behind a reverse proxy, this bounds the proxy's connections.
    pub max_per_ip: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client ([`ClientIp`]).
    pub trusted_proxies: std::sync::Arc<crate::client_addr::TrustedProxies>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to `grace` for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let per_ip = crate::per_ip::PerIp::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
                    // A connection that died before we took it: nothing to wait for.
                    if !matches!(e.kind(), ConnectionAborted | ConnectionReset) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = per_ip.take(peer.ip(), limits.max_per_ip) else {
            debug!(%peer, max = limits.max_per_ip, "connection refused: too many from this address");
            continue;
        };
        let app = app.clone();
        let trusted_proxies = limits.trusted_proxies.clone();
        let service = tower::service_fn(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                let forwarded_for = request
                    .headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| v.as_bytes());
                let client = trusted_proxies.client_ip(peer.ip(), forwarded_for);
                request.extensions_mut().insert(ClientIp(client));
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        // A client that stops reading a response (a stalled HTTP-FLV viewer: zero TCP window)
        // would block its connection forever; writes that make no progress for this long end it.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let connection = builder.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => warn!("requests still open after {grace:?}; closing them"),
    }
    Ok(())
}
