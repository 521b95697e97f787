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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::flv::{Tag, TagKind};
use super::hub::{Hub, PublishRefused, PublisherId, SubscribeRefused, Subscription};
use super::key::{parse_request, RequestError};

/// Most simultaneous RTMP connections (publishers + players).
const MAX_CONNECTIONS: usize = 2048;
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
/// bounds what a single client can take of [`MAX_CONNECTIONS`]. Loopback (this serve's own
/// mixers) is exempt.
const MAX_CONNECTIONS_PER_IP: usize = 128;

/// Accepts connections until `cancel` fires.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, "origin: too many RTMP connections, refusing one");
            continue;
        };
        let cap = if peer.ip().is_loopback() {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS_PER_IP
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), cap) else {
            warn!(%peer, "origin: too many RTMP connections from this address, refusing one");
            continue;
        };
        let hub = hub.clone();
        let cancel = cancel.clone();
        let span = tracing::debug_span!(parent: None, "rtmp", %peer);
        tokio::spawn(
            async move {
                let _ = socket.set_nodelay(true);
                let mut connection = Connection::new(socket, hub);
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    result = connection.run() => {
                        if let Err(e) = result {
                            debug!("connection closed: {e}");
                        }
                    }
                }
                connection.finish();
                drop(permit);
                drop(ip_slot);
            }
            .instrument(span),
        );
    }
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

struct Connection {
    socket: TcpStream,
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
}

impl Connection {
    fn new(socket: TcpStream, hub: Arc<Hub>) -> Self {
        Self {
            socket,
            hub,
            role: Role::Idle,
            outbox: Vec::new(),
            hang_up: false,
            received_unpublished: 0,
            window_start: tokio::time::Instant::now(),
        }
    }

    async fn run(&mut self) -> Result<(), ConnectionError> {
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| ConnectionError::Handshake("timed out".into()))??;
        let (mut session, results) =
            ServerSession::new(ServerSessionConfig::new()).map_err(session_error)?;
        self.process(&mut session, results)?;
        let results = session.handle_input(&leftover).map_err(session_error)?;
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
                    let results = session.handle_input(&buf[..n]).map_err(session_error)?;
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
            Ok(request) => match self
                .hub
                .start_publish(&request.name, request.key.as_deref())
            {
                Ok(id) => {
                    // The stream name is the room id (public); the key is never logged.
                    info!(stream = %request.name, "origin: publisher connected");
                    self.role = Role::Publishing {
                        name: request.name,
                        id,
                    };
                    Ok(())
                }
                Err(PublishRefused::UnknownStream) => {
                    info!(stream = %request.name, "origin: refused a publish to an unknown stream");
                    Err(("NetStream.Publish.BadName", "no such stream"))
                }
                Err(PublishRefused::BadKey) => {
                    warn!(stream = %request.name, "origin: refused a publish with a wrong or missing key");
                    Err((
                        "NetStream.Publish.Unauthorized",
                        "wrong or missing publish key",
                    ))
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
