//! Fuzz harnesses: one function per way untrusted bytes enter the server, each running the real
//! parser or handler on them. Contract: none of them panics, whatever the input; a panic, or one
//! of the invariants asserted here failing, is a bug to fix in the code under test (with a
//! regression test next to it and the input added to the corpus).
//!
//! `fuzz/` runs them under libFuzzer (`scripts/fuzz.sh`, seed corpus in `fuzz/corpus/<name>/`);
//! `tests/fuzz_smoke.rs` runs them over that corpus and a few seconds of mutations of it in the
//! normal test suite. Nothing here does IO: the RTMP session runs over an in-memory pipe.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::{Buf, Bytes, BytesMut};
use costream_mixer::control::{
    decode_line, encode_line, AudioMix, Command, Event, LayoutSpec, Look, OutputSpec, VideoSpec,
};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, LinesCodec};

use crate::access::{Access, Capability, Claims};
use crate::api::body::parse_json_or_default;
use crate::api::rooms::{
    room_settings, validate_output_url, AudioRequest, CreateRoom, OutputRequest,
};
use crate::config::{ApiSecret, AuthConfig, Config};
use crate::fleet::wire::{self, FromWorker, ToWorker};
use crate::origin::flv::{Tag, TagKind};
use crate::origin::gop::{CacheLimits, GopCache, StartBundle};
use crate::origin::http_flv::FlvWriter;
use crate::origin::hub::{Hub, HubLimits};
use crate::origin::key::PublishKey;
use crate::room::tokens::{bearer_token, RoomTokens};

/// The API key and secret the JWT harness's server knows; `fuzz/corpus/jwt` holds tokens
/// signed with them.
pub const API_KEY: &str = "fuzz-key";
pub const API_SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";
/// The room the JWT harness checks tokens against.
pub const ROOM: &str = "fuzzroom";
/// The cluster secret the placement-token check uses.
pub const CLUSTER_SECRET: &[u8] = b"fuzz-cluster-secret-0123456789abcdef";
/// The stream the RTMP harness registers, and its publish key
/// (`rtmp://…/live/fuzzroom?key=fuzzkey`).
pub const RTMP_STREAM: &str = "fuzzroom";
pub const RTMP_PUBLISH_KEY: &str = "fuzzkey";
/// A second stream, already live, so that a `play` in the input gets a start bundle and tags.
pub const RTMP_LIVE_STREAM: &str = "liveroom";

/// A WHIP or WHEP offer body: what `api::sdp::read_offer` checks once the body is read, then
/// what the ingest engine checks before it creates any WebRTC state.
pub fn sdp_offer(data: &[u8]) {
    // `read_offer` refuses a body that is not UTF-8 before anything else.
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    if crate::api::sdp::check_offer_bounds(sdp).is_err() {
        return;
    }
    let _ = costream_ingest::precheck_offer(sdp, false);
    let _ = costream_ingest::precheck_offer(sdp, true);
}

/// Every JSON request body of the API, parsed as its handler parses it (`parse_json_or_default`)
/// and checked as its handler checks it. What passes must also reach the mixer intact: encoded
/// as a control line, it decodes again, and a layout places every tile inside the canvas.
pub fn json_bodies(data: &[u8]) {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(Config::default);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );

    // POST /api/v1/rooms
    if let Ok(request) = parse_json_or_default::<CreateRoom>(&headers, data) {
        if let Ok(settings) = room_settings(config, request) {
            assert!(settings.outputs.len() <= config.limits.max_outputs_per_room);
            // Parts of the mixer's `Start`.
            round_trips(&settings.video, |l| decode_line::<VideoSpec>(l).map(drop));
            for output in &settings.outputs {
                round_trips(output, |l| decode_line::<OutputSpec>(l).map(drop));
            }
            look_reaches_mixer(settings.look);
        }
    }
    // PUT .../layout: the room checks participants named in it against its own, not here.
    if let Ok(Some(layout)) = parse_json_or_default::<Option<LayoutSpec>>(&headers, data) {
        if layout.validate().is_ok() {
            layout_reaches_mixer(layout);
        }
    }
    // PUT .../look
    if let Ok(Some(look)) = parse_json_or_default::<Option<Look>>(&headers, data) {
        if look.validate().is_ok() {
            look_reaches_mixer(look);
        }
    }
    // PUT .../participants/{pid}/audio: the room merges it into the participant's mix.
    if let Ok(request) = parse_json_or_default::<AudioRequest>(&headers, data) {
        let current = AudioMix::default();
        let audio = AudioMix {
            gain: request.gain.unwrap_or(current.gain),
            muted: request.muted.unwrap_or(current.muted),
        };
        if audio.validate().is_ok() {
            mixer_accepts(&Command::SetAudio {
                participant_id: "p1".into(),
                audio,
            });
        }
    }
    // POST .../outputs
    if let Ok(Some(request)) = parse_json_or_default::<Option<OutputRequest>>(&headers, data) {
        let _ = validate_output_url(&request.url);
    }
}

fn look_reaches_mixer(look: Look) {
    let _ = look.background_argb();
    let _ = look.idle_text();
    mixer_accepts(&Command::SetLook { look });
}

fn layout_reaches_mixer(layout: LayoutSpec) {
    let mut participants: Vec<&str> = match &layout {
        LayoutSpec::Custom { tiles } => tiles.iter().map(|t| t.participant_id.as_str()).collect(),
        other => other.pin().into_iter().collect(),
    };
    participants.extend(["a", "b", "c"]);
    for (width, height) in [(1280, 720), (160, 90), (3840, 2160)] {
        let placed = costream_mixer::layout::place(width, height, &participants, &layout, None);
        assert_eq!(placed.len(), participants.len());
        for rect in placed.iter().flatten().map(|p| p.rect) {
            assert!(
                u64::from(rect.x) + u64::from(rect.width) <= u64::from(width)
                    && u64::from(rect.y) + u64::from(rect.height) <= u64::from(height),
                "tile {rect:?} outside the {width}x{height} canvas for {layout:?}"
            );
        }
    }
    mixer_accepts(&Command::SetLayout { layout });
}

/// What serve sends, the mixer must be able to read.
fn mixer_accepts(command: &Command) {
    let line = encode_line(command);
    if let Err(e) = decode_line::<Command>(&line) {
        panic!("the mixer cannot read a command serve sends ({e}): {line}");
    }
}

/// A bearer token as a request presents it (`Authorization` value, or the bare token), through
/// everything that verifies one: the API's keys, a room's tokens, a fleet placement token.
pub fn jwt(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let token = bearer_token(value).unwrap_or(value);
    let (access, room) = jwt_verifiers();
    if let Ok(claims) = access.verify(token) {
        // Only a token signed with the one key's secret verifies.
        assert_eq!(claims.iss, API_KEY);
        let _ = claims.role_in(ROOM);
        let _ = claims.allows(Capability::Publish);
        let _ = claims.allows(Capability::Subscribe);
        let _ = claims.require_create();
        let _ = claims.require_list();
    }
    let _ = access.operator(Some(token), Claims::require_create);
    let _ = room.claims_in_room(token);
    let _ = wire::verify_placement(Some(CLUSTER_SECRET), token, ROOM, 1, "worker-1");
}

fn jwt_verifiers() -> &'static (Arc<Access>, RoomTokens) {
    static VERIFIERS: OnceLock<(Arc<Access>, RoomTokens)> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let mut auth = AuthConfig::default();
        auth.keys
            .insert(API_KEY.to_string(), ApiSecret::new(API_SECRET));
        let access = Arc::new(Access::from_config(&auth));
        let room = RoomTokens::new(ROOM, access.clone());
        (access, room)
    })
}

/// The JSON-lines control protocols, as each end frames and decodes them: serve → mixer
/// commands and mixer → serve events (stdin/stdout lines), and the serve ↔ worker link
/// (`LinesCodec` with its line limits). Whatever decodes must encode and decode again.
pub fn control_lines(data: &[u8]) {
    // The mixer and serve read UTF-8 lines; a line that is not UTF-8 ends the pipe.
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            break;
        };
        decode_control_line(line);
    }
    for max in [wire::MAX_OPEN_LINE, wire::MAX_LINE] {
        let mut codec = LinesCodec::new_with_max_length(max);
        let mut buf = BytesMut::from(data);
        // The link drops the connection on a framing error (an over-long line, not UTF-8).
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => decode_wire_line(&line),
                Ok(None) => {
                    if let Ok(Some(line)) = codec.decode_eof(&mut buf) {
                        decode_wire_line(&line);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

fn decode_control_line(line: &str) {
    if let Ok(command) = decode_line::<Command>(line) {
        match &command {
            Command::SetLayout { layout } if layout.validate().is_ok() => {
                layout_reaches_mixer(layout.clone())
            }
            Command::SetLook { look } => {
                let _ = look.validate();
                let _ = look.background_argb();
                let _ = look.idle_text();
            }
            Command::SetAudio { audio, .. } => {
                let _ = audio.validate();
            }
            _ => {}
        }
        mixer_accepts(&command);
    }
    if let Ok(event) = decode_line::<Event>(line) {
        round_trips(&event, |l| decode_line::<Event>(l).map(drop));
    }
}

fn decode_wire_line(line: &str) {
    if let Ok(message) = wire::decode::<ToWorker>(line) {
        round_trips(&message, |l| wire::decode::<ToWorker>(l).map(drop));
    }
    if let Ok(message) = wire::decode::<FromWorker>(line) {
        round_trips(&message, |l| wire::decode::<FromWorker>(l).map(drop));
    }
}

fn round_trips<T: serde::Serialize + std::fmt::Debug>(
    message: &T,
    decode: impl Fn(&str) -> Result<(), serde_json::Error>,
) {
    let line = encode_line(message);
    if let Err(e) = decode(&line) {
        panic!("{message:?} encodes as a line its reader refuses ({e}): {line}");
    }
}

/// Raw bytes from an RTMP client (handshake, chunks, commands, media), as the origin's
/// connection task reads them from its socket, here over an in-memory pipe. The origin knows
/// [`RTMP_STREAM`] (key [`RTMP_PUBLISH_KEY`]) and [`RTMP_LIVE_STREAM`] (live, with a GOP). A
/// viewer joins as soon as the input publishes, and sees what any viewer must (see
/// [`flv_gop`]); when the connection ends, however it ends, it no longer publishes.
pub fn rtmp_session(data: &[u8]) {
    let_caught_panics_unwind();
    let run = std::panic::catch_unwind(|| rtmp_session_tags(data));
    if run.is_err() {
        let panic = HELD_PANIC.with(|held| held.take()).unwrap_or_default();
        panic!("a panic escaped the RTMP session: {panic}");
    }
}

/// Where the code under test catches panics itself: rml_rtmp's session input, which
/// `origin::rtmp::session_input` wraps in `catch_unwind`.
const CAUGHT_BENEATH: &str = "origin::rtmp::session_input";

thread_local! {
    /// The last panic raised beneath [`CAUGHT_BENEATH`], for the report if nothing caught it.
    static HELD_PANIC: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// libFuzzer's panic hook aborts at every panic, before any unwinding, so a panic the code under
/// test catches and handles would count as a crash. Panics raised beneath [`CAUGHT_BENEATH`]
/// (seen in the backtrace) are let through to that catch; one that nothing catches reaches the
/// harness, which reports it as a crash with its message.
fn let_caught_panics_unwind() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = std::backtrace::Backtrace::force_capture()
                .to_string()
                .contains(CAUGHT_BENEATH);
            if caught {
                HELD_PANIC.with(|held| held.set(Some(info.to_string())));
            } else {
                previous(info);
            }
        }));
    });
}

/// [`rtmp_session`], returning how many tags the viewer of [`RTMP_STREAM`] got (to check that a
/// seed really publishes).
pub fn rtmp_session_tags(data: &[u8]) -> usize {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    let hub = Arc::new(Hub::new(HubLimits {
        cache: CacheLimits {
            max_tags: 64,
            max_bytes: 64 * 1024,
        },
        viewer_queue: 64,
        max_viewers: 4,
        ..HubLimits::default()
    }));
    hub.register(RTMP_STREAM, PublishKey::fixed(RTMP_PUBLISH_KEY));
    hub.register(RTMP_LIVE_STREAM, PublishKey::fixed(RTMP_PUBLISH_KEY));
    let publisher = hub
        .start_publish(RTMP_LIVE_STREAM, Some(RTMP_PUBLISH_KEY))
        .expect("registered with this key");
    for tag in sample_gop() {
        hub.publish(RTMP_LIVE_STREAM, publisher, tag)
            .expect("the publisher");
    }
    let done = std::cell::Cell::new(false);
    let (ended, viewer) = RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let session = async {
                let _ = crate::origin::rtmp::run_connection(server, hub.clone()).await;
                done.set(true);
            };
            // In pieces, as TCP delivers it, letting the viewer join between two of them.
            let send = async {
                for piece in data.chunks(RTMP_PIECE) {
                    if to_server.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = to_server.shutdown().await;
            };
            let drain = async {
                let mut buf = vec![0u8; 16 * 1024];
                while matches!(from_server.read(&mut buf).await, Ok(n) if n > 0) {}
            };
            // Joins the moment the stream goes live (between two reads of the session).
            let watch = async {
                let mut viewer = None;
                while !done.get() {
                    if viewer.is_none() {
                        viewer = hub.subscribe(RTMP_STREAM).ok().map(FlvViewer::new);
                    }
                    tokio::task::yield_now().await;
                }
                viewer
            };
            // Input ends in EOF, so the session ends at once; the bound is only a backstop.
            let run = async { tokio::join!(session, send, drain, watch).3 };
            match tokio::time::timeout(RTMP_SESSION_LIMIT, run).await {
                Ok(viewer) => (true, viewer),
                Err(_) => (false, None),
            }
        })
    });
    if ended {
        let stats = hub.stats(RTMP_STREAM).expect("still registered");
        assert!(
            !stats.live,
            "a publisher's ended connection still holds the stream"
        );
    }
    viewer.map_or(0, |mut viewer| {
        viewer.read();
        viewer.received
    })
}

/// Bytes the client side writes at a time. Small, because a real client waits for the answer
/// to `connect` before it sends `createStream`, and so on: a piece holding a whole request after
/// the end of the previous one would be read before the session could answer that one.
const RTMP_PIECE: usize = 16;
/// How long one RTMP input may run; real-time timeouts of the session are longer.
const RTMP_SESSION_LIMIT: Duration = Duration::from_secs(5);

/// A few tags of an H.264 + AAC stream: sequence headers, a keyframe, an inter frame, audio.
pub fn sample_gop() -> Vec<Tag> {
    vec![
        Tag::video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f])),
        Tag::audio(0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])),
        Tag::video(0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])),
        Tag::audio(10, Bytes::from_static(&[0xaf, 1, 0x21, 0x00])),
        Tag::video(
            33,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]),
        ),
    ]
}

/// An FLV stream (the file header optional, then tags) published through the origin's hub, GOP
/// cache and HTTP-FLV writer, with viewers joining and stalling along the way. Harness control
/// rides in the tags' stream id (0 in real files): bit 0 of its first byte makes the viewers
/// not read before that tag, bit 1 makes a new viewer join before it.
///
/// Invariants: a start bundle's GOP is empty or starts with a video keyframe and stays within
/// the cache's limits; a viewer that joined a stream with video sees a keyframe before any other
/// video frame; every HTTP-FLV chunk is well-formed FLV.
pub fn flv_gop(data: &[u8]) {
    flv_gop_hls_parts(data);
}

/// [`flv_gop`], returning how many HLS parts the stream's window holds at the end (so a test
/// can tell the seeds reach the HLS packager).
pub fn flv_gop_hls_parts(data: &[u8]) -> usize {
    let limits = CacheLimits {
        max_tags: 32,
        max_bytes: 16 * 1024,
    };
    let hub = Hub::new(HubLimits {
        cache: limits,
        viewer_queue: 8,
        max_viewers: 8,
        ..HubLimits::default()
    });
    let key = "k";
    hub.register("s", PublishKey::fixed(key));
    let publisher = hub.start_publish("s", Some(key)).expect("registered");
    let mut cache = GopCache::new(limits);
    let mut viewers: Vec<FlvViewer> = Vec::new();
    for (i, record) in flv_records(data).take(MAX_FLV_TAGS).enumerate() {
        if i == 0 || record.control & 2 != 0 {
            if let Ok(subscription) = hub.subscribe("s") {
                check_bundle(&subscription.start, limits);
                viewers.push(FlvViewer::new(subscription));
            }
        }
        match record.kind {
            8 | 9 => {
                let kind = if record.kind == 8 {
                    TagKind::Audio
                } else {
                    TagKind::Video
                };
                let tag = Tag {
                    kind,
                    timestamp: record.timestamp,
                    data: record.data,
                };
                cache.push(&tag);
                check_bundle(&cache.start_bundle(), limits);
                hub.publish("s", publisher, tag).expect("the publisher");
            }
            18 => {
                if let Some(metadata) = metadata_of(&record.data) {
                    cache.set_metadata(metadata.clone());
                    hub.set_metadata("s", publisher, metadata)
                        .expect("the publisher");
                }
            }
            _ => {}
        }
        if record.control & 1 == 0 {
            for viewer in &mut viewers {
                viewer.read();
            }
        }
    }
    for viewer in &mut viewers {
        viewer.read();
    }
    hub.stop_publish("s", publisher);
    check_hls(&hub, "s")
}

/// The stream's HLS window after whatever was published: every part is one well-formed
/// `moof` + `mdat` whose runs point inside it, and the playlist names only files the window
/// serves.
fn check_hls(hub: &Hub, name: &str) -> usize {
    use crate::origin::hls::playlist::{render, Resource};
    use mp4_atom::{Any, Decode};
    let hls = hub.hls(name).expect("HLS is on by default");
    let window = hls.window();
    for segment in window.listed() {
        assert!(
            window.init(segment.init).is_some(),
            "segment without its init"
        );
        for part in &segment.parts {
            let buf = &mut &part.bytes[..];
            let Ok(Any::Moof(moof)) = Any::decode(buf) else {
                panic!("a part does not start with a moof")
            };
            let moof_and_header = part.bytes.len() - buf.len() + 8;
            let Ok(Any::Mdat(mdat)) = Any::decode(buf) else {
                panic!("a part's moof is not followed by its mdat")
            };
            assert!(buf.is_empty(), "bytes after a part's mdat");
            let mut end = moof_and_header;
            for traf in &moof.traf {
                let run = &traf.trun[0];
                let size: usize = run
                    .samples
                    .iter()
                    .map(|s| s.size.unwrap_or(0) as usize)
                    .sum();
                assert_eq!(run.data_offset, Some(end as i32), "run offset");
                end += size;
            }
            assert_eq!(
                end,
                moof_and_header + mdat.data.len(),
                "runs cover the mdat"
            );
        }
    }
    let settings = hls.settings();
    let now = std::time::Instant::now();
    let text = render(&window, now, settings.packager.part_target_ms, 3);
    for uri in text.lines().filter_map(|l| {
        l.strip_prefix("#EXT-X-MAP:URI=\"")
            .or_else(|| l.split("URI=\"").nth(1))
            .map(|rest| rest.split('"').next().unwrap_or(""))
            .or((!l.starts_with('#')).then_some(l))
    }) {
        let exists = match Resource::parse(uri) {
            Some(Resource::Init(v)) => window.init(v).is_some(),
            Some(Resource::Segment(msn)) => window.segment(msn).is_some_and(|s| s.complete),
            Some(Resource::Part(msn, i)) => {
                window.part(msn, i).is_some() || window.part_is_next(msn, i, now)
            }
            _ => false,
        };
        assert!(
            exists,
            "the playlist names {uri:?}, which the window does not serve:\n{text}"
        );
    }
    window.listed().map(|s| s.parts.len()).sum()
}

/// At most this many tags of one input are published (each checks a start bundle).
const MAX_FLV_TAGS: usize = 1024;

fn check_bundle(bundle: &StartBundle, limits: CacheLimits) {
    if let Some(first) = bundle.gop.first() {
        assert!(
            first.is_video_keyframe(),
            "a start bundle's GOP begins with {first:?}"
        );
    }
    assert!(bundle.gop.len() <= limits.max_tags);
    assert!(bundle.gop.iter().map(|t| t.data.len()).sum::<usize>() <= limits.max_bytes);
    assert!(bundle
        .gop
        .iter()
        .all(|t| t.kind != TagKind::Script && !t.is_sequence_header()));
    assert!(bundle.headers.len() <= 2);
    assert!(bundle.headers.iter().all(Tag::is_sequence_header));
}

/// A viewer as the HTTP-FLV response serves it.
struct FlvViewer {
    live: tokio::sync::mpsc::Receiver<Tag>,
    writer: FlvWriter,
    /// It joined a stream with video: no video frame may come before a keyframe.
    needs_keyframe: bool,
    /// Tags received (start bundle and live).
    received: usize,
}

impl FlvViewer {
    fn new(subscription: crate::origin::hub::Subscription) -> Self {
        let mut viewer = FlvViewer {
            live: subscription.live,
            writer: FlvWriter::default(),
            needs_keyframe: subscription.start.has_video,
            received: 0,
        };
        let first = viewer.writer.start(&subscription.start);
        let tags = subscription.start.headers.len()
            + subscription.start.gop.len()
            + usize::from(subscription.start.metadata.is_some());
        assert_eq!(check_flv(&first, true), tags, "start chunk");
        viewer.received = tags;
        for tag in &subscription.start.gop {
            viewer.saw(tag);
        }
        viewer
    }

    /// Reads what is queued.
    fn read(&mut self) {
        while let Ok(tag) = self.live.try_recv() {
            self.saw(&tag);
            let mut out = BytesMut::new();
            self.writer.tag(&mut out, &tag);
            assert_eq!(check_flv(&out, false), 1, "live chunk");
            self.received += 1;
        }
    }

    fn saw(&mut self, tag: &Tag) {
        if tag.kind != TagKind::Video || tag.is_sequence_header() {
            return;
        }
        if self.needs_keyframe {
            assert!(
                tag.is_video_keyframe(),
                "a viewer got video {tag:?} before any keyframe"
            );
            self.needs_keyframe = false;
        }
    }
}

/// Checks FLV framing (tag sizes agree with `PreviousTagSize`); returns the number of tags.
fn check_flv(chunk: &[u8], with_header: bool) -> usize {
    let mut rest = chunk;
    if with_header {
        assert!(
            rest.len() >= 13 && rest.starts_with(b"FLV"),
            "no FLV header"
        );
        rest = &rest[13..];
    }
    let mut tags = 0;
    while !rest.is_empty() {
        assert!(rest.len() >= 15, "truncated FLV tag");
        assert!(matches!(rest[0], 8 | 9 | 18), "FLV tag type {}", rest[0]);
        let size = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
        assert!(rest.len() >= 11 + size + 4, "FLV tag larger than the chunk");
        let previous = &rest[11 + size..11 + size + 4];
        assert_eq!(
            u32::from_be_bytes(previous.try_into().expect("4 bytes")) as usize,
            11 + size
        );
        rest = &rest[11 + size + 4..];
        tags += 1;
    }
    tags
}

/// One tag of the input: FLV framing, the body cut short if the input is.
struct FlvRecord {
    kind: u8,
    timestamp: u32,
    control: u8,
    data: Bytes,
}

fn flv_records(data: &[u8]) -> impl Iterator<Item = FlvRecord> {
    let mut input = Bytes::copy_from_slice(data);
    if input.starts_with(b"FLV") && input.len() >= 13 {
        input.advance(13);
    }
    std::iter::from_fn(move || {
        if input.len() < 11 {
            return None;
        }
        let kind = input.get_u8();
        let size = input.get_uint(3) as usize;
        let low = input.get_uint(3) as u32;
        let high = u32::from(input.get_u8());
        let control = input.get_u8();
        input.advance(2);
        let data = input.split_to(size.min(input.len()));
        input.advance(4.min(input.len()));
        Some(FlvRecord {
            kind,
            timestamp: (high << 24) | low,
            control,
            data,
        })
    })
}

/// `onMetaData` of a script tag, as rml_rtmp reads it from `@setDataFrame`.
fn metadata_of(script: &[u8]) -> Option<StreamMetadata> {
    let values = rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(script)).ok()?;
    let properties = values.into_iter().find_map(|value| match value {
        Amf0Value::Object(properties) => Some(properties),
        _ => None,
    })?;
    let mut metadata = StreamMetadata::new();
    for (name, value) in properties {
        let number = match &value {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        };
        let whole = number.map(|n| n as u32);
        match name.as_str() {
            "width" => metadata.video_width = whole,
            "height" => metadata.video_height = whole,
            "videocodecid" => metadata.video_codec_id = whole,
            "framerate" => metadata.video_frame_rate = number.map(|n| n as f32),
            "videodatarate" => metadata.video_bitrate_kbps = whole,
            "audiocodecid" => metadata.audio_codec_id = whole,
            "audiodatarate" => metadata.audio_bitrate_kbps = whole,
            "audiosamplerate" => metadata.audio_sample_rate = whole,
            "audiochannels" => metadata.audio_channels = whole,
            "stereo" => {
                if let Amf0Value::Boolean(b) = value {
                    metadata.audio_is_stereo = Some(b);
                }
            }
            "encoder" => {
                if let Amf0Value::Utf8String(s) = value {
                    metadata.encoder = Some(s);
                }
            }
            _ => {}
        }
    }
    Some(metadata)
}
