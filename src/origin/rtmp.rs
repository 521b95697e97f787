//! The RTMP side of the origin: a TCP listener, one task per connection. `rml_rtmp` does the
//! handshake, chunking and the NetConnection/NetStream commands (sans-IO); this file only moves
//! bytes and turns session events into [`Hub`] calls. Publish and play on app `live` only.

use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::flv::{Tag, TagKind};
use super::hub::{Hub, PublishRefused, PublisherId, SubscribeRefused, Subscription};
use super::key::{parse_request, RequestError};
use super::slots::{Slot, SlotLimits, SlotRefused, Slots};

/// A client must finish the handshake within this long.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// ... and start publishing or playing within this long, or it is hung up on.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes a client may send before it publishes or plays (connect, createStream, play: a few
/// hundred bytes): without it, one declared 16 MB RTMP message buffers 16 MB per connection.
const MAX_UNAUTHENTICATED_BYTES: usize = 64 * 1024;
/// Bytes a player may send a minute (it sends no media: acknowledgements and pings, a few
/// hundred bytes a minute even at high bitrates).
const MAX_PLAYER_BYTES_PER_MINUTE: usize = 64 * 1024;
/// A write that does not complete within this long means the peer stopped reading.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections one address may hold (viewers behind one NAT, or a fleet worker's mixers):
/// bounds what a single client can take of `max_connections`. Loopback (this serve's own
/// mixers) is exempt.
const MAX_CONNECTIONS_PER_IP: usize = 128;

/// Accepts connections until `cancel` fires, within `limits` (see [`super::slots`]).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    limits: SlotLimits,
    cancel: CancellationToken,
) {
    let slots = Slots::new(limits);
    let per_ip = crate::per_ip::PerIp::default();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!("origin: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Refusals are logged at debug with their running count: a flood must not flood the log.
        let cap = if peer.ip().is_loopback() {
            limits.max_connections
        } else {
            MAX_CONNECTIONS_PER_IP
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), cap) else {
            debug!(%peer, "origin: too many RTMP connections from this address, closing one");
            continue;
        };
        let Some(slot) = slots.admit(peer.ip()) else {
            let counts = slots.counts();
            debug!(
                %peer,
                refused_total = counts.refused,
                publishers = counts.publishers,
                "origin: connections full (origin.max_connections), closing a new one"
            );
            continue;
        };
        let evicted = slot.evicted();
        let hub = hub.clone();
        let cancel = cancel.clone();
        let span = tracing::debug_span!(parent: None, "rtmp", %peer);
        tokio::spawn(
            async move {
                let _ = socket.set_nodelay(true);
                let mut connection = Connection::new(socket, hub).counted_in(slot);
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = evicted.cancelled() => {
                        debug!("connection closed: a newer one took its place in the publisher reserve");
                    }
                    result = connection.run() => {
                        if let Err(e) = result {
                            debug!("connection closed: {e}");
                        }
                    }
                }
                connection.finish();
                // Its slot goes with it.
                drop(connection);
                drop(ip_slot);
            }
            .instrument(span),
        );
    }
}

/// Runs one connection to its end over an in-memory stream, as [`serve`] runs each accepted
/// socket (without the listener's caps): the fuzz harness feeds it raw client bytes.
pub(crate) async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    hub: Arc<Hub>,
) -> Result<(), String> {
    let mut connection = Connection::new(socket, hub);
    let result = connection.run().await;
    connection.finish();
    result.map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("rtmp session: {0}")]
    Session(String),
    #[error("closed by peer")]
    Closed,
    #[error("{0}")]
    Done(&'static str),
}

fn session_error(e: impl std::fmt::Display) -> ConnectionError {
    ConnectionError::Session(e.to_string())
}

/// Feeds a client's bytes to its session. rml_rtmp is third-party code fed with untrusted input,
/// and fuzzing found two ways to make it panic: an AMF0 command of fewer than three values
/// (`drain(..3)` out of range), and a chunk header declaring a message shorter than the part of
/// a message already received (a subtraction past zero: a panic with overflow checks, which the
/// workspace enables for it in release too, where it would otherwise wrap and buffer without
/// bound). A panic is caught here and ends this connection like any protocol error, so `finish`
/// still releases the stream; the session is dropped with the connection.
fn session_input(
    session: &mut ServerSession,
    bytes: &[u8],
) -> Result<Vec<ServerSessionResult>, ConnectionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes)))
        .map_err(|_| ConnectionError::Session("malformed RTMP chunk stream".into()))?
        .map_err(session_error)
}

enum Role {
    Idle,
    Publishing {
        name: String,
        id: PublisherId,
    },
    Playing {
        name: String,
        stream_id: u32,
        live: mpsc::Receiver<Tag>,
        /// Timestamps sent to this player start at 0 from its first tag.
        base: Option<u32>,
    },
}

/// The next tag for a player; never resolves for other roles.
async fn next_live_tag(role: &mut Role) -> Option<Tag> {
    match role {
        Role::Playing { live, .. } => live.recv().await,
        _ => std::future::pending().await,
    }
}

/// One RTMP connection over any byte stream (a TCP socket; an in-memory pipe in the fuzz
/// harness).
struct Connection<S> {
    socket: S,
    hub: Arc<Hub>,
    role: Role,
    /// Bytes to write before reading again (responses of the session).
    outbox: Vec<u8>,
    /// Hang up once the outbox is flushed (after refusing a publish or play).
    hang_up: bool,
    /// Bytes received while not publishing (see [`MAX_UNAUTHENTICATED_BYTES`]); for a player,
    /// within the current minute.
    received_unpublished: usize,
    /// Start of a player's current one-minute window.
    window_start: tokio::time::Instant,
    /// This connection's place among the listener's connections (see [`super::slots`]): moves
    /// when it publishes or plays, freed when the connection is dropped. `None`: not counted.
    slot: Option<Slot>,
}

/// Why a publish was refused.
enum PublishDenied {
    Hub(PublishRefused),
    Slot(SlotRefused),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn new(socket: S, hub: Arc<Hub>) -> Self {
        Self {
            socket,
            hub,
            slot: None,
            role: Role::Idle,
            outbox: Vec::new(),
            hang_up: false,
            received_unpublished: 0,
            window_start: tokio::time::Instant::now(),
        }
    }

    fn counted_in(mut self, slot: Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    async fn run(&mut self) -> Result<(), ConnectionError> {
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| ConnectionError::Handshake("timed out".into()))??;
        let (mut session, results) =
            ServerSession::new(ServerSessionConfig::new()).map_err(session_error)?;
        self.process(&mut session, results)?;
        let results = session_input(&mut session, &leftover)?;
        self.process(&mut session, results)?;
        self.flush().await?;
        if self.hang_up {
            return Err(ConnectionError::Done("request refused"));
        }

        let mut buf = vec![0u8; 64 * 1024];
        let idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
        loop {
            let idle = matches!(self.role, Role::Idle);
            tokio::select! {
                _ = tokio::time::sleep_until(idle_deadline), if idle => {
                    return Err(ConnectionError::Done("neither published nor played in time"));
                }
                read = self.socket.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(ConnectionError::Closed);
                    }
                    self.count_inbound(n)?;
                    let results = session_input(&mut session, &buf[..n])?;
                    self.process(&mut session, results)?;
                }
                tag = next_live_tag(&mut self.role) => {
                    let Some(tag) = tag else {
                        return Err(ConnectionError::Done("stream ended"));
                    };
                    self.send_tag(&mut session, tag)?;
                }
            }
            self.flush().await?;
            if self.hang_up {
                return Err(ConnectionError::Done("request refused"));
            }
        }
    }

    async fn handshake(&mut self) -> Result<Vec<u8>, ConnectionError> {
        let mut handshake = Handshake::new(PeerType::Server);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnectionError::Closed);
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| ConnectionError::Handshake(format!("{e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.outbox.is_empty() {
            tokio::time::timeout(WRITE_TIMEOUT, self.socket.write_all(&self.outbox))
                .await
                .map_err(|_| ConnectionError::Done("the peer stopped reading"))??;
            self.outbox.clear();
        }
        Ok(())
    }

    /// Only a publisher (holding the room's key) sends media; everyone else is held to a few
    /// control messages.
    fn count_inbound(&mut self, n: usize) -> Result<(), ConnectionError> {
        let limit = match self.role {
            Role::Publishing { .. } => return Ok(()),
            Role::Idle => MAX_UNAUTHENTICATED_BYTES,
            Role::Playing { .. } => {
                if self.window_start.elapsed() >= std::time::Duration::from_secs(60) {
                    self.window_start = tokio::time::Instant::now();
                    self.received_unpublished = 0;
                }
                MAX_PLAYER_BYTES_PER_MINUTE
            }
        };
        self.received_unpublished += n;
        if self.received_unpublished > limit {
            return Err(ConnectionError::Done(
                "sent more than a player or a client that has not published may",
            ));
        }
        Ok(())
    }

    fn process(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), ConnectionError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.outbox.extend_from_slice(&packet.bytes);
                }
                ServerSessionResult::RaisedEvent(event) => self.on_event(session, event)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<(), ConnectionError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                let app = app_name.split('?').next().unwrap_or_default();
                let results = if app.trim_matches('/') == super::key::APP {
                    session.accept_request(request_id)
                } else {
                    info!("refused connect to an unknown application");
                    session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application; use rtmp://<host>/live/<stream>",
                    )
                }
                .map_err(session_error)?;
                self.process(session, results)?;
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => self.on_publish(session, request_id, &app_name, &stream_key)?,
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.on_play(session, request_id, &app_name, &stream_key, stream_id)?,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Role::Publishing { name, id } = &self.role {
                    self.hub
                        .set_metadata(name, *id, metadata)
                        .map_err(|_| ConnectionError::Done("replaced by another publisher"))?;
                }
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.on_media(Tag::video(timestamp.value, data))?,
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.on_media(Tag::audio(timestamp.value, data))?,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                return Err(ConnectionError::Done("publisher finished"));
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                return Err(ConnectionError::Done("player finished"));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_publish(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        app: &str,
        stream: &str,
    ) -> Result<(), ConnectionError> {
        if !matches!(self.role, Role::Idle) {
            return Err(ConnectionError::Done(
                "second publish/play on one connection",
            ));
        }
        let refusal = match parse_request(app, stream) {
            Err(RequestError::WrongApp) => {
                Err(("NetStream.Publish.BadName", "unknown application"))
            }
            Err(RequestError::BadName) => Err(("NetStream.Publish.BadName", "invalid stream name")),
            Ok(request) => match self.take_stream(&request.name, request.key.as_deref()) {
                Ok(id) => {
                    // The stream name is the room id (public); the key is never logged.
                    info!(stream = %request.name, "origin: publisher connected");
                    self.role = Role::Publishing {
                        name: request.name,
                        id,
                    };
                    Ok(())
                }
                Err(PublishDenied::Hub(PublishRefused::UnknownStream)) => {
                    info!(stream = %request.name, "origin: refused a publish to an unknown stream");
                    Err(("NetStream.Publish.BadName", "no such stream"))
                }
                Err(PublishDenied::Hub(PublishRefused::BadKey)) => {
                    warn!(stream = %request.name, "origin: refused a publish with a wrong or missing key");
                    Err((
                        "NetStream.Publish.Unauthorized",
                        "wrong or missing publish key",
                    ))
                }
                Err(PublishDenied::Slot(refused)) => {
                    warn!(
                        stream = %request.name,
                        "origin: refused a publish with a valid key: {refused} (origin.publisher_slots)"
                    );
                    Err(("NetStream.Publish.Rejected", "the origin is full"))
                }
            },
        };
        match refusal {
            Ok(()) => {
                let results = session.accept_request(request_id).map_err(session_error)?;
                self.process(session, results)
            }
            Err((code, description)) => {
                let results = session
                    .reject_request(request_id, code, description)
                    .map_err(session_error)?;
                self.hang_up = true;
                self.process(session, results)
            }
        }
    }

    /// Checks the key, then takes a publisher slot, then the stream, in that order: a client
    /// without the key evicts no would-be publisher, and one refused a slot replaces no
    /// publisher.
    fn take_stream(&mut self, name: &str, key: Option<&str>) -> Result<PublisherId, PublishDenied> {
        self.hub
            .check_publish_key(name, key)
            .map_err(PublishDenied::Hub)?;
        if let Some(slot) = &mut self.slot {
            slot.to_publisher().map_err(PublishDenied::Slot)?;
        }
        self.hub
            .start_publish(name, key)
            .map_err(PublishDenied::Hub)
    }

    fn on_play(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        app: &str,
        stream: &str,
        stream_id: u32,
    ) -> Result<(), ConnectionError> {
        if !matches!(self.role, Role::Idle) {
            return Err(ConnectionError::Done(
                "second publish/play on one connection",
            ));
        }
        if let Some(Err(refused)) = self.slot.as_mut().map(Slot::to_player) {
            // A candidate for the publisher reserve may not play while everything else is full.
            debug!("origin: refused play: {refused}");
            let results = session
                .reject_request(request_id, "NetStream.Play.Failed", "the origin is full")
                .map_err(session_error)?;
            self.hang_up = true;
            return self.process(session, results);
        }
        let subscription = parse_request(app, stream)
            .map_err(|_| SubscribeRefused::UnknownStream)
            .and_then(|request| {
                self.hub
                    .subscribe(&request.name)
                    .map(|sub| (request.name, sub))
            });
        let (name, Subscription { start, live }) = match subscription {
            Ok(ok) => ok,
            Err(refused) => {
                debug!("origin: refused play: {refused}");
                let results = session
                    .reject_request(
                        request_id,
                        "NetStream.Play.StreamNotFound",
                        &refused.to_string(),
                    )
                    .map_err(session_error)?;
                self.hang_up = true;
                return self.process(session, results);
            }
        };
        info!(stream = %name, "origin: RTMP player joined");
        let results = session.accept_request(request_id).map_err(session_error)?;
        self.process(session, results)?;
        if let Some(metadata) = &start.metadata {
            let packet = session
                .send_metadata(stream_id, metadata)
                .map_err(session_error)?;
            self.outbox.extend_from_slice(&packet.bytes);
        }
        self.role = Role::Playing {
            name,
            stream_id,
            live,
            base: None,
        };
        for tag in start.headers {
            self.send_tag_at(session, &tag, 0)?;
        }
        for tag in start.gop {
            self.send_tag(session, tag)?;
        }
        Ok(())
    }

    fn on_media(&mut self, tag: Tag) -> Result<(), ConnectionError> {
        match &self.role {
            Role::Publishing { name, id } => self
                .hub
                .publish(name, *id, tag)
                .map_err(|_| ConnectionError::Done("no longer the publisher")),
            _ => Ok(()),
        }
    }

    /// Sends a live or cached tag to a player, rebasing its timestamp.
    fn send_tag(&mut self, session: &mut ServerSession, tag: Tag) -> Result<(), ConnectionError> {
        let Role::Playing { base, .. } = &mut self.role else {
            return Ok(());
        };
        if tag.kind == TagKind::Script {
            // Metadata went out at play start; rml_rtmp sends only parsed metadata.
            return Ok(());
        }
        if tag.is_sequence_header() {
            return self.send_tag_at(session, &tag, 0);
        }
        let base = *base.get_or_insert(tag.timestamp);
        let timestamp = tag.timestamp.saturating_sub(base);
        self.send_tag_at(session, &tag, timestamp)
    }

    fn send_tag_at(
        &mut self,
        session: &mut ServerSession,
        tag: &Tag,
        timestamp: u32,
    ) -> Result<(), ConnectionError> {
        let Role::Playing { stream_id, .. } = &self.role else {
            return Ok(());
        };
        let data: Bytes = tag.data.clone();
        let timestamp = RtmpTimestamp::new(timestamp);
        let packet = match tag.kind {
            TagKind::Video => session.send_video_data(*stream_id, data, timestamp, false),
            TagKind::Audio => session.send_audio_data(*stream_id, data, timestamp, false),
            TagKind::Script => return Ok(()),
        }
        .map_err(session_error)?;
        self.outbox.extend_from_slice(&packet.bytes);
        Ok(())
    }

    /// Releases the stream when a publisher's connection ends, however it ends.
    fn finish(&mut self) {
        match &self.role {
            Role::Publishing { name, id } => {
                info!(stream = %name, "origin: publisher disconnected");
                self.hub.stop_publish(name, *id);
            }
            Role::Playing { name, .. } => debug!(stream = %name, "origin: RTMP player left"),
            Role::Idle => {}
        }
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use crate::origin::hub::HubLimits;

    /// Found by `fuzz/` (rtmp_session): a chunk on another chunk stream declaring a 10-byte
    /// message while 128 bytes of a 200-byte message are in, which underflowed in rml_rtmp's
    /// decoder. The connection ends with an error; nothing panics through it.
    #[tokio::test]
    async fn a_message_shorter_than_the_data_already_received_ends_the_connection() {
        // C0, C1, C2.
        let mut input = vec![3u8];
        input.extend([0u8; 1536 * 2]);
        // Type 0 header, chunk stream 3: 200-byte AMF0 command, of which one 128-byte chunk.
        input.extend([0x03, 0, 0, 0, 0, 0, 200, 20, 0, 0, 0, 0]);
        input.extend([0x05; 128]);
        // Type 0 header, chunk stream 4: a 10-byte message.
        input.extend([0x04, 0, 0, 0, 0, 0, 10, 20, 0, 0, 0, 0]);
        input.extend([0x05; 10]);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&input).await.unwrap();
        let hub = Arc::new(Hub::new(HubLimits::default()));
        let result = run_connection(server, hub).await;
        assert_eq!(
            result,
            Err("rtmp session: malformed RTMP chunk stream".to_string())
        );
    }

    /// Found by `fuzz/` (rtmp_session): an AMF0 command message holding only its name made
    /// rml_rtmp index past the values it had (`drain(..3)`), before any request was made.
    #[tokio::test]
    async fn a_command_of_one_value_ends_the_connection() {
        // C0, C1, C2.
        let mut input = vec![3u8];
        input.extend([0u8; 1536 * 2]);
        // Type 0 header, chunk stream 3: a 10-byte AMF0 command, the string "connect" alone.
        input.extend([0x03, 0, 0, 0, 0, 0, 10, 20, 0, 0, 0, 0]);
        input.extend([0x02, 0, 7]);
        input.extend(b"connect");
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&input).await.unwrap();
        let hub = Arc::new(Hub::new(HubLimits::default()));
        let result = run_connection(server, hub).await;
        assert_eq!(
            result,
            Err("rtmp session: malformed RTMP chunk stream".to_string())
        );
    }
}
