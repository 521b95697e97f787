//! The built-in origin (the embedded default CDN). A room without its own outputs pushes its
//! mix over RTMP to `rtmp://<origin>/live/{room}?key=<secret>`; viewers pull it back as
//! HTTP-FLV (`GET /live/{room}.flv`) or RTMP (`rtmp://<origin>/live/{room}`) with no key.
//!
//! - [`flv`]: tag classification and FLV framing (pure)
//! - [`gop`]: metadata + sequence headers + GOP cache for instant start (pure)
//! - [`key`]: publish keys and request parsing (pure)
//! - [`hub`]: registered streams, publishers, bounded fan-out to viewers (no sockets)
//! - [`slots`]: connection slots, with places reserved for publishers (pure bookkeeping)
//! - [`rtmp`]: the RTMP listener (`rml_rtmp` sessions over tokio TCP)
//! - [`http_flv`]: the HTTP-FLV response body
//! - [`hls`]: HLS and LL-HLS (fMP4 parts and segments in memory, playlists with blocking reload)

pub mod flv;
pub mod gop;
pub mod hls;
pub mod http_flv;
pub mod hub;
pub mod key;
pub mod rtmp;
pub mod slots;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::hub::{Hub, HubLimits, StreamStats};
use self::key::{PublishKey, APP};
use self::slots::SlotLimits;

/// Where the origin listens and how it names itself to viewers.
#[derive(Debug, Clone)]
pub struct OriginSettings {
    /// Address to bind; port 0 picks a free port.
    pub rtmp_listen: SocketAddr,
    /// Base of viewer RTMP URLs (`rtmp://host[:port]`); empty derives it from the bound address.
    pub public_rtmp_url: String,
    pub limits: HubLimits,
    /// Connections at once, and the places among them kept for publishers.
    pub connections: SlotLimits,
}

/// Handle to the running origin; cheap to clone.
#[derive(Clone)]
pub struct Origin {
    hub: Arc<Hub>,
    /// Where the mixer (same machine) publishes: `rtmp://127.0.0.1:<port>`.
    publish_base: String,
    /// Base of the RTMP play URLs handed to viewers.
    play_base: String,
    bound: SocketAddr,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("bound", &self.bound)
            .field("play_base", &self.play_base)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// Binds the RTMP listener and serves it until `cancel` fires.
    pub async fn start(
        settings: OriginSettings,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.rtmp_listen).await?;
        let bound = listener.local_addr()?;
        let origin = Self::new(bound, &settings.public_rtmp_url, settings.limits);
        let span = tracing::info_span!(parent: None, "origin");
        tokio::spawn(tracing::Instrument::instrument(
            rtmp::serve(listener, origin.hub.clone(), settings.connections, cancel),
            span,
        ));
        Ok(origin)
    }

    /// An origin whose RTMP side is (or will be) at `bound`; no socket is opened here.
    pub fn new(bound: SocketAddr, public_rtmp_url: &str, limits: HubLimits) -> Self {
        let local_ip = if bound.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        let publish_base = format!("rtmp://{}", SocketAddr::new(local_ip, bound.port()));
        let play_base = if public_rtmp_url.is_empty() {
            publish_base.clone()
        } else {
            public_rtmp_url.trim_end_matches('/').to_string()
        };
        Self {
            hub: Arc::new(Hub::new(limits)),
            publish_base,
            play_base,
            bound,
        }
    }

    /// The address the RTMP listener is bound to.
    pub fn rtmp_addr(&self) -> SocketAddr {
        self.bound
    }

    /// Allows `stream` (a room id) to be published; returns the secret publish URL for the
    /// mixer. Show it only through `redact_url`.
    pub fn register(&self, stream: &str) -> String {
        let key = PublishKey::generate();
        let url = format!("{}/{APP}/{stream}?key={}", self.publish_base, key.expose());
        self.hub.register(stream, key);
        url
    }

    /// Forgets `stream`: its publisher is refused and its viewers are disconnected.
    pub fn unregister(&self, stream: &str) -> bool {
        self.hub.unregister(stream)
    }

    /// Forgets every stream (server shutdown): all viewers' streams end.
    pub fn unregister_all(&self) {
        self.hub.unregister_all();
    }

    /// `rtmp://<host>:<port>/live/{stream}` for players.
    pub fn play_url(&self, stream: &str) -> String {
        format!("{}/{APP}/{stream}", self.play_base)
    }

    pub fn stats(&self, stream: &str) -> Option<StreamStats> {
        self.hub.stats(stream)
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

/// `output_id` of the output a room gets when it names none.
pub const ORIGIN_OUTPUT_ID: &str = "origin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_bound_port_and_hide_nothing_public() {
        let origin = Origin::new("0.0.0.0:1935".parse().unwrap(), "", HubLimits::default());
        let publish = origin.register("room1");
        assert!(
            publish.starts_with("rtmp://127.0.0.1:1935/live/room1?key="),
            "{publish}"
        );
        assert_eq!(origin.play_url("room1"), "rtmp://127.0.0.1:1935/live/room1");
        let shown = costream_mixer::redact::redact_url(&publish);
        let key = publish.split("key=").nth(1).unwrap();
        assert!(!shown.contains(key), "{shown}");

        let origin = Origin::new(
            "10.0.0.5:1935".parse().unwrap(),
            "rtmp://live.example.com/",
            HubLimits::default(),
        );
        assert_eq!(origin.play_url("r"), "rtmp://live.example.com/live/r");
        assert!(origin
            .register("r")
            .starts_with("rtmp://10.0.0.5:1935/live/r?key="));
    }

    #[test]
    fn register_then_unregister() {
        let origin = Origin::new("127.0.0.1:1".parse().unwrap(), "", HubLimits::default());
        let url = origin.register("r");
        let key = url.split("key=").nth(1).unwrap();
        assert!(origin.hub().start_publish("r", Some(key)).is_ok());
        assert!(origin.stats("r").unwrap().live);
        assert!(origin.unregister("r"));
        assert!(origin.stats("r").is_none());
        assert!(!origin.unregister("r"));
    }
}
