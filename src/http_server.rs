//! The HTTP listener: hyper's HTTP/1 server driven by our own accept loop, for what
//! `axum::serve` does not offer: a header-read timeout (a slowloris connection that trickles
//! its headers is closed), a cap on connections per client address, and the peer address for the
//! per-IP rate limits. Graceful shutdown waits for open requests, as before.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Bounds on each client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The whole request head must arrive within this long (also bounds an idle keep-alive
    /// connection waiting for its next request).
    pub header_read_timeout: Duration,
    /// Open connections one client address may hold.
    pub max_per_ip: usize,
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
    let per_ip = PerIp::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
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
        let service = tower::service_fn(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
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

/// Open connections per client address.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`PerIp`]; freed on drop.
struct Slot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(ip).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Slot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_capped_and_freed() {
        let per_ip = PerIp::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = per_ip.take(ip, 2).unwrap();
        let _b = per_ip.take(ip, 2).unwrap();
        assert!(per_ip.take(ip, 2).is_none());
        assert!(per_ip.take("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(per_ip.take(ip, 2).is_some());
    }
}
