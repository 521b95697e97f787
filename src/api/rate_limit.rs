//! Per-client-address rate limits on the requests that cost the server most: creating rooms
//! and opening WebRTC sessions (WHIP, WHEP). `429` with `Retry-After` and a JSON error beyond
//! the quota; a generic cell-rate limiter (`governor`) keyed by the peer address.
//!
//! The client address comes from the listener ([`crate::http_server::ClientIp`]): the TCP peer,
//! or behind a reverse proxy listed in `[server] trusted_proxies` the address it forwarded for.
//! A request without one (the in-process router in unit tests) is not limited.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::http_server::ClientIp;

/// One quota, shared by the routes it guards.
#[derive(Clone)]
pub struct IpLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Checks so far: the table is swept every [`SWEEP_EVERY`] of them.
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// What is limited, for the error message.
    what: &'static str,
    per_minute: u32,
}

impl IpLimiter {
    /// `per_minute` requests per address, in bursts of up to a third of that.
    pub fn per_minute(what: &'static str, per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        let burst = NonZeroU32::new((per_minute / 3).max(1)).expect("at least 1");
        Self {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_minute(rate).allow_burst(burst),
            )),
            checks: Arc::default(),
            what,
            per_minute,
        }
    }

    /// `Ok`, or how many seconds until the next request from `ip` would pass.
    fn check(&self, ip: IpAddr) -> Result<(), u64> {
        // Keys whose quota is full again carry no state worth keeping: swept now and then (a
        // sweep scans the whole table, so never on every request), a flood of distinct
        // addresses cannot grow the table for long.
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&crate::per_ip::client_key(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }
}

/// How often (in checks) the limiter's table is swept of idle keys.
const SWEEP_EVERY: u64 = 4096;

pub async fn limit(State(limiter): State<IpLimiter>, request: Request, next: Next) -> Response {
    let extensions = request.extensions();
    let client = extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| *ip)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        });
    if let Some(ip) = client {
        if let Err(retry_after) = limiter.check(ip) {
            tracing::debug!(%ip, what = limiter.what, "rate limited");
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many {} from this address (at most {} a minute); retry in {retry_after} s",
                    limiter.what, limiter.per_minute
                ),
            );
            error.retry_after = Some(retry_after.max(1));
            return error.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_address_waits_and_others_do_not() {
        let limiter = IpLimiter::per_minute("rooms", 30);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=2).contains(&wait), "retry after {wait} s at 30/min");
        assert!(limiter.check("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn an_ipv6_client_shares_one_quota_per_64() {
        let limiter = IpLimiter::per_minute("rooms", 3);
        assert!(limiter.check("2001:db8::1".parse().unwrap()).is_ok());
        assert!(limiter.check("2001:db8::2".parse().unwrap()).is_err());
        assert!(limiter.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
