//! RTP fan-out: each remote track's read loop hands every packet straight to its targets.
//!
//! The media path never goes through a channel or actor. Control code replaces a track's
//! target list with [`TrackForwarder::set_targets`]; the read loop takes a lock-free snapshot of
//! it once per packet. Counters are relaxed atomics: they are statistics, not synchronisation.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use crate::codec::{CodecName, MediaKind};
use crate::keyframe::{KeyframeThrottle, KEYFRAME_MIN_INTERVAL};
use crate::reception::{Reception, ReceptionStats};
use crate::sfu_track::SfuTrack;

/// Where one track's RTP goes.
///
/// An enum rather than a trait object so the per-packet dispatch stays a match (no boxed
/// futures per packet) while new destinations remain a variant away.
#[non_exhaustive]
#[derive(Clone)]
pub enum ForwardTarget {
    /// Raw RTP over UDP, e.g. to a mixer's udpsrc. Payload type and SSRC are unchanged.
    Udp(SocketAddr),
    /// Another peer connection's outgoing track. webrtc-rs rewrites SSRC and payload type per
    /// binding; the publisher's header extensions are stripped first. (Subscriptions use their
    /// own multi-codec track instead, see `PeerSession::add_subscription`.)
    Rtp(Arc<TrackLocalStaticRTP>),
}

impl std::fmt::Debug for ForwardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardTarget::Udp(addr) => write!(f, "Udp({addr})"),
            ForwardTarget::Rtp(track) => write!(f, "Rtp({})", track.id()),
        }
    }
}

/// Per-track forwarding state shared by the read loop (reader) and control code (writer).
pub(crate) struct TrackForwarder {
    pub track_id: String,
    targets: ArcSwap<Vec<ForwardTarget>>,
    /// 0 until the first packet tells us; PLI needs it.
    ssrc: AtomicU32,
    /// Set once when the track starts; before that stats report no codec.
    info: OnceLock<(MediaKind, CodecName)>,
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    packets_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    packets_dropped: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Packets sent to subscriptions (counted once per subscription).
    subscriber_packets: AtomicU64,
    /// Time from the packet's arrival (read returned) until every subscriber write returned:
    /// the delay forwarding adds inside serve. Sum and max in microseconds.
    forward_delay_us_sum: AtomicU64,
    forward_delay_us_max: AtomicU64,
    forward_delay_samples: AtomicU64,
    /// Control-path only (never touched per packet), so a plain mutex is fine.
    keyframe_throttle: Mutex<KeyframeThrottle>,
    /// Loss, jitter and capture delay. Locked once per packet by the read loop, and only
    /// briefly by the RTCP reader and stats, so it is all but uncontended.
    reception: Mutex<Reception>,
    state: AtomicU8,
}

const STATE_PENDING: u8 = 0;
const STATE_LIVE: u8 = 1;
const STATE_ENDED: u8 = 2;

impl TrackForwarder {
    pub fn new(track_id: String) -> Self {
        Self {
            track_id,
            targets: ArcSwap::from_pointee(Vec::new()),
            ssrc: AtomicU32::new(0),
            info: OnceLock::new(),
            packets_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            packets_forwarded: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            packets_dropped: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            subscriber_packets: AtomicU64::new(0),
            forward_delay_us_sum: AtomicU64::new(0),
            forward_delay_us_max: AtomicU64::new(0),
            forward_delay_samples: AtomicU64::new(0),
            keyframe_throttle: Mutex::new(KeyframeThrottle::new(KEYFRAME_MIN_INTERVAL)),
            reception: Mutex::new(Reception::default()),
            state: AtomicU8::new(STATE_PENDING),
        }
    }

    pub fn set_targets(&self, targets: Vec<ForwardTarget>) {
        self.targets.store(Arc::new(targets));
    }

    pub fn start(&self, kind: MediaKind, codec: CodecName, ssrc: u32, clock_rate: u32) {
        let _ = self.info.set((kind, codec));
        *self.lock_reception() = Reception::new(clock_rate);
        self.ssrc.store(ssrc, Ordering::Relaxed);
        self.state.store(STATE_LIVE, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.state.store(STATE_ENDED, Ordering::Relaxed);
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc.load(Ordering::Relaxed)
    }

    pub fn kind(&self) -> Option<MediaKind> {
        self.info.get().map(|(kind, _)| *kind)
    }

    /// True if the track has started (not pending, not ended).
    pub fn is_live(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STATE_LIVE
    }

    /// True if a keyframe request may go out now (see [`KeyframeThrottle`]).
    pub fn allow_keyframe_request(&self, now: Instant) -> bool {
        self.keyframe_throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .try_acquire(now)
    }

    /// A sender report for this track's SSRC (from the receiver's RTCP).
    pub fn on_sender_report(&self, ntp_time: u64, rtp_time: u32) {
        self.lock_reception().on_sender_report(ntp_time, rtp_time);
    }

    fn lock_reception(&self) -> std::sync::MutexGuard<'_, Reception> {
        self.reception
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn count_keyframe_request(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends one packet to every current target and subscription. `raw` is the marshalled
    /// packet for UDP targets; `packet` is the parsed form track targets need. Never waits on a
    /// full socket: a packet that cannot be sent right now is dropped and counted.
    pub async fn forward(
        &self,
        sockets: &ForwardSockets,
        raw: &[u8],
        packet: &webrtc::rtp::packet::Packet,
        subscribers: &[Arc<SfuTrack>],
        source_codec: &RTCRtpCodecCapability,
        arrived: Instant,
    ) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.lock_reception().on_packet(
            packet.header.sequence_number,
            packet.header.timestamp,
            wall,
        );
        self.bytes_received
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        let targets = self.targets.load();
        let needs_rtp =
            !subscribers.is_empty() || targets.iter().any(|t| matches!(t, ForwardTarget::Rtp(_)));
        // Header extension ids are negotiated per connection: the publisher's would be
        // misread by a subscriber. The mixer (UDP) gets the packet unchanged.
        let stripped = needs_rtp.then(|| without_extensions(packet));
        for target in targets.iter() {
            let sent = match (target, &stripped) {
                (ForwardTarget::Udp(addr), _) => sockets.try_send_to(raw, *addr).is_ok(),
                (ForwardTarget::Rtp(track), Some(p)) => track.write_rtp(p).await.is_ok(),
                (ForwardTarget::Rtp(_), None) => false,
            };
            self.count_sent(sent, raw.len());
        }
        if let Some(p) = &stripped {
            for subscriber in subscribers {
                let sent = subscriber.write(p, source_codec, raw.len()).await;
                if sent {
                    self.subscriber_packets.fetch_add(1, Ordering::Relaxed);
                }
                self.count_sent(sent, raw.len());
            }
            if !subscribers.is_empty() {
                let us = arrived.elapsed().as_micros() as u64;
                self.forward_delay_us_sum.fetch_add(us, Ordering::Relaxed);
                self.forward_delay_us_max.fetch_max(us, Ordering::Relaxed);
                self.forward_delay_samples.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_sent(&self, sent: bool, len: usize) {
        if sent {
            self.packets_forwarded.fetch_add(1, Ordering::Relaxed);
            self.bytes_forwarded
                .fetch_add(len as u64, Ordering::Relaxed);
        } else {
            self.packets_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a packet that arrived but could not be prepared for forwarding.
    pub fn count_dropped(&self) {
        self.packets_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> TrackStats {
        let info = self.info.get();
        TrackStats {
            track_id: self.track_id.clone(),
            kind: info.map(|(kind, _)| *kind),
            codec: info.map(|(_, codec)| *codec),
            ssrc: self.ssrc(),
            live: self.state.load(Ordering::Relaxed) == STATE_LIVE,
            targets: self.targets.load().len(),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            packets_forwarded: self.packets_forwarded.load(Ordering::Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Ordering::Relaxed),
            packets_dropped: self.packets_dropped.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            subscriber_packets: self.subscriber_packets.load(Ordering::Relaxed),
            forward_delay_us_sum: self.forward_delay_us_sum.load(Ordering::Relaxed),
            forward_delay_us_max: self.forward_delay_us_max.load(Ordering::Relaxed),
            forward_delay_samples: self.forward_delay_samples.load(Ordering::Relaxed),
            reception: self.lock_reception().stats(),
        }
    }
}

/// One snapshot of a track's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    pub track_id: String,
    /// None until the first packet arrived.
    pub kind: Option<MediaKind>,
    pub codec: Option<CodecName>,
    pub ssrc: u32,
    /// True between the first packet and the end of the track.
    pub live: bool,
    /// Number of current forward targets.
    pub targets: usize,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Counted once per target: one packet sent to two targets counts two.
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Sends that failed or would have blocked (full socket buffer), plus unreadable packets.
    pub packets_dropped: u64,
    /// PLIs actually sent to the publisher (after throttling).
    pub keyframe_requests: u64,
    /// Packets sent to subscriptions (once per subscription).
    pub subscriber_packets: u64,
    /// Forwarding delay inside serve for packets with subscribers: arrival (read returned) to
    /// the last subscriber write returned. Sum and max in µs over `forward_delay_samples`.
    pub forward_delay_us_sum: u64,
    pub forward_delay_us_max: u64,
    pub forward_delay_samples: u64,
    /// Loss, jitter and capture delay of what the publisher sent (see [`Reception`]).
    pub reception: ReceptionStats,
}

/// The packet without the publisher's header extensions (payload shared, not copied).
fn without_extensions(packet: &webrtc::rtp::packet::Packet) -> webrtc::rtp::packet::Packet {
    let mut out = packet.clone();
    out.header.extension = false;
    out.header.extension_profile = 0;
    out.header.extensions.clear();
    out.header.extensions_padding = 0;
    out
}

/// Per-session counters, a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStats {
    pub session_id: String,
    pub tracks: Vec<TrackStats>,
}

impl SessionStats {
    /// The publisher's A/V offset in seconds (positive: its picture trails its sound), from
    /// its first live audio and video tracks; `None` until both had a sender report.
    pub fn av_offset_secs(&self) -> Option<f64> {
        let video = self.live_track(MediaKind::Video)?;
        let audio = self.live_track(MediaKind::Audio)?;
        crate::reception::av_offset_secs(&video.reception, &audio.reception)
    }

    /// The publisher's first live track of `kind` (the one the figures describe).
    pub fn live_track(&self, kind: MediaKind) -> Option<&TrackStats> {
        self.tracks.iter().find(|t| t.live && t.kind == Some(kind))
    }
}

/// The engine's outgoing UDP sockets, shared by every track: a UDP send is one syscall with
/// no per-destination state, so one socket per address family is enough. They are plain
/// non-blocking std sockets: a send either happens now or fails with WouldBlock (dropped and
/// counted), so the read loop never waits and no runtime is needed to create them.
pub(crate) struct ForwardSockets {
    v4: UdpSocket,
    /// None where the host has no IPv6.
    v6: Option<UdpSocket>,
}

impl ForwardSockets {
    pub fn bind() -> io::Result<Self> {
        let v4 = std_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        let v6 = std_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).ok();
        Ok(Self { v4, v6 })
    }

    fn try_send_to(&self, data: &[u8], target: SocketAddr) -> io::Result<usize> {
        let socket = match target {
            SocketAddr::V4(_) => &self.v4,
            SocketAddr::V6(_) => self.v6.as_ref().ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "no IPv6 socket on this host")
            })?,
        };
        socket.send_to(data, target)
    }
}

fn std_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
