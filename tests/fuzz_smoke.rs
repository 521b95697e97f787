//! The short fuzz run of the test suite: every harness of `costream::fuzzing` over its committed
//! corpus (`fuzz/corpus/<target>/`, which includes every crash found so far), then about two
//! seconds of inputs made by mutating the corpus (bit flips, truncations, splices, insertions,
//! random bytes). No coverage feedback: this catches regressions and shallow bugs; the long runs
//! are `scripts/fuzz.sh` (libFuzzer). A panicking input is written to
//! `target/fuzz-smoke-failures/` and named in the failure.
//!
//! `COSTREAM_FUZZ_SMOKE_SEED` repeats a run's mutations; `COSTREAM_FUZZ_SMOKE_MS` changes its length.
//! `cargo test --test fuzz_smoke -- --ignored write_seeds` regenerates the seeds made by code
//! (tokens, RTMP byte streams).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Harness = fn(&[u8]);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .iter()
        .map(|path| std::fs::read(path).expect("corpus file"))
        .collect()
}

/// Runs `input`; on a panic, saves it and fails naming the file.
fn run_one(target: &str, harness: Harness, input: &[u8], what: &str) {
    if std::panic::catch_unwind(|| harness(input)).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-smoke-failures");
    std::fs::create_dir_all(&dir).expect("failure dir");
    let path = dir.join(format!("{target}-{:016x}", fnv(input)));
    std::fs::write(&path, input).expect("failure file");
    panic!(
        "fuzz target {target} panicked on {what}; input saved to {} (add it to fuzz/corpus/{target}/ \
         once fixed)",
        path.display()
    );
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn smoke(target: &str, harness: Harness) {
    let seeds = corpus(target);
    for (i, seed) in seeds.iter().enumerate() {
        run_one(target, harness, seed, &format!("corpus entry {i}"));
    }
    let seed: u64 = std::env::var("COSTREAM_FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let budget = std::env::var("COSTREAM_FUZZ_SMOKE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget {
        let input = mutate(&mut rng, &seeds);
        run_one(
            target,
            harness,
            &input,
            &format!("mutation {runs} (COSTREAM_FUZZ_SMOKE_SEED={seed})"),
        );
        runs += 1;
    }
    println!(
        "{target}: {} corpus entries, {runs} mutations in {budget:?}",
        seeds.len()
    );
}

/// One to four stacked mutations of a corpus entry (sometimes of nothing).
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = if rng.gen_bool(0.05) {
        Vec::new()
    } else {
        seeds[rng.gen_range(0..seeds.len())].clone()
    };
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = *[0u8, 0xff, 0x7f, 0x80, b'"', b'\n', b'{', b'0']
                    .get(rng.gen_range(0..8))
                    .expect("in range");
            }
            2 => data.truncate(rng.gen_range(0..=len)),
            3 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..64);
                let noise: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                data.splice(at..at, noise);
            }
            4 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len.min(from + 256));
                data.drain(from..to);
            }
            5 => {
                // Splice: our head, another entry's tail.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let at = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                // Repeat a range (long lines, many sections, many chunks).
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len.min(from + 128));
                let copy = data[from..to].to_vec();
                for _ in 0..rng.gen_range(1..32) {
                    data.splice(to..to, copy.iter().copied());
                }
            }
            7 if len >= 4 => {
                // An interesting 32-bit value (sizes, timestamps) anywhere.
                let i = rng.gen_range(0..=len - 4);
                let value: u32 = *[0, 1, 0x7f, 0xff, 0xffff, 0x00ff_ffff, u32::MAX, 0x8000_0000]
                    .get(rng.gen_range(0..8))
                    .expect("in range");
                data[i..i + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => {
                let n = rng.gen_range(0..256);
                data = (0..n).map(|_| rng.gen()).collect();
            }
        }
    }
    data
}

#[test]
fn sdp_offer() {
    smoke("sdp_offer", costream::fuzzing::sdp_offer);
}

#[test]
fn json_bodies() {
    smoke("json_bodies", costream::fuzzing::json_bodies);
}

#[test]
fn jwt() {
    smoke("jwt", costream::fuzzing::jwt);
}

#[test]
fn control_lines() {
    smoke("control_lines", costream::fuzzing::control_lines);
}

#[test]
fn rtmp_session() {
    smoke("rtmp_session", costream::fuzzing::rtmp_session);
}

#[test]
fn flv_gop() {
    smoke("flv_gop", costream::fuzzing::flv_gop);
}

/// The committed FLV seeds with video reach the HLS packager (so `flv_gop` checks its parts).
#[test]
fn flv_seeds_package_hls() {
    let seed = std::fs::read(corpus_dir("flv_gop").join("h264-aac.flv")).expect("seed");
    let parts = costream::fuzzing::flv_gop_hls_parts(&seed);
    assert!(parts >= 2, "the H.264 + AAC seed made {parts} HLS parts");
}

/// The committed RTMP seeds still publish (and play) through the origin.
#[test]
fn rtmp_seeds_publish() {
    let seed = std::fs::read(corpus_dir("rtmp_session").join("publish")).expect("seed");
    let tags = costream::fuzzing::rtmp_session_tags(&seed);
    assert!(tags > 0, "the publish seed no longer publishes");
}

/// Regenerates the seeds made by code. Tokens expire in 2100.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    use costream::fuzzing::{API_KEY, CLUSTER_SECRET, ROOM, RTMP_PUBLISH_KEY, RTMP_STREAM};
    let write = |target: &str, name: &str, data: &[u8]| {
        std::fs::write(corpus_dir(target).join(name), data).expect("write seed");
    };
    let mut auth = costream::config::AuthConfig::default();
    auth.keys.insert(
        API_KEY.to_string(),
        costream::config::ApiSecret::new(costream::fuzzing::API_SECRET),
    );
    let access = costream::access::Access::from_config(&auth);
    let exp = 4_102_444_800; // 2100-01-01
    let host = costream::access::Claims::participant(API_KEY, ROOM, "host", None, true, 0, exp);
    let guest = costream::access::Claims::participant(
        API_KEY,
        ROOM,
        "ann",
        Some("Ann".into()),
        false,
        0,
        exp,
    );
    let operator = costream::access::Claims::room_creator(API_KEY, "ops", 0, exp);
    let expired = costream::access::Claims::participant(API_KEY, ROOM, "old", None, false, 0, 60);
    for (name, claims) in [
        ("host", host),
        ("guest", guest),
        ("operator", operator),
        ("expired", expired),
    ] {
        let token = access.mint(&claims).expect("mint");
        write("jwt", name, format!("Bearer {token}").as_bytes());
    }
    let placement =
        costream::fleet::wire::placement_token(Some(CLUSTER_SECRET), ROOM, 1, "worker-1", exp - 60);
    write("jwt", "placement", placement.as_bytes());

    let publish = rtmp::client_bytes(rtmp::Request::Publish(format!(
        "{RTMP_STREAM}?key={RTMP_PUBLISH_KEY}"
    )));
    write("rtmp_session", "publish", &publish);
    assert!(costream::fuzzing::rtmp_session_tags(&publish) > 0);
    let wrong_key = rtmp::client_bytes(rtmp::Request::Publish(format!("{RTMP_STREAM}?key=nope")));
    write("rtmp_session", "publish-wrong-key", &wrong_key);
    let play = rtmp::client_bytes(rtmp::Request::Play(
        costream::fuzzing::RTMP_LIVE_STREAM.to_string(),
    ));
    write("rtmp_session", "play", &play);
}

/// A real RTMP client (`rml_rtmp`'s) against an in-memory server that accepts everything: what
/// the client sends is the seed.
mod rtmp {
    use bytes::Bytes;
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType, ServerSession,
        ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
    };
    use rml_rtmp::time::RtmpTimestamp;

    pub enum Request {
        Publish(String),
        Play(String),
    }

    pub fn client_bytes(request: Request) -> Vec<u8> {
        let mut sent = Vec::new();
        let mut client_hs = Handshake::new(PeerType::Client);
        let mut server_hs = Handshake::new(PeerType::Server);
        let c0c1 = client_hs.generate_outbound_p0_and_p1().expect("c0c1");
        sent.extend_from_slice(&c0c1);
        let s0s1s2 = match server_hs.process_bytes(&c0c1).expect("server handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
            HandshakeProcessResult::Completed { .. } => panic!("server done early"),
        };
        match client_hs.process_bytes(&s0s1s2).expect("client handshake") {
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                sent.extend_from_slice(&response_bytes);
                server_hs.process_bytes(&response_bytes).expect("c2");
            }
            HandshakeProcessResult::InProgress { .. } => panic!("client not done"),
        }
        let (mut client, client_results) =
            ClientSession::new(ClientSessionConfig::new()).expect("client");
        let (mut server, server_results) =
            ServerSession::new(ServerSessionConfig::new()).expect("server");
        let mut pipe = Pipe {
            sent,
            to_server: Vec::new(),
            to_client: Vec::new(),
        };
        pipe.client(client_results);
        pipe.server(&mut server, server_results);
        pipe.run(&mut client, &mut server);
        let connect = client.request_connection("live".into()).expect("connect");
        pipe.client(vec![connect]);
        pipe.run(&mut client, &mut server);
        match request {
            Request::Publish(key) => {
                let publish = client
                    .request_publishing(key, PublishRequestType::Live)
                    .expect("publish");
                pipe.client(vec![publish]);
                pipe.run(&mut client, &mut server);
                let mut metadata = StreamMetadata::new();
                metadata.video_width = Some(1280);
                metadata.video_height = Some(720);
                metadata.video_codec_id = Some(7);
                metadata.audio_codec_id = Some(10);
                metadata.encoder = Some("fuzz seed".into());
                let mut media = vec![client.publish_metadata(&metadata).expect("metadata")];
                for tag in costream::fuzzing::sample_gop() {
                    let at = RtmpTimestamp::new(tag.timestamp);
                    let data = Bytes::from(tag.data.to_vec());
                    media.push(
                        match tag.kind {
                            costream::origin::flv::TagKind::Audio => {
                                client.publish_audio_data(data, at, false)
                            }
                            _ => client.publish_video_data(data, at, false),
                        }
                        .expect("media"),
                    );
                }
                pipe.client(media);
                pipe.run(&mut client, &mut server);
            }
            Request::Play(key) => {
                let play = client.request_playback(key).expect("play");
                pipe.client(vec![play]);
                pipe.run(&mut client, &mut server);
            }
        }
        pipe.sent
    }

    struct Pipe {
        /// Everything the client sent, in order.
        sent: Vec<u8>,
        to_server: Vec<u8>,
        to_client: Vec<u8>,
    }

    impl Pipe {
        fn client(&mut self, results: Vec<ClientSessionResult>) {
            for result in results {
                if let ClientSessionResult::OutboundResponse(packet) = result {
                    self.sent.extend_from_slice(&packet.bytes);
                    self.to_server.extend_from_slice(&packet.bytes);
                }
            }
        }

        fn server(&mut self, server: &mut ServerSession, results: Vec<ServerSessionResult>) {
            for result in results {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        self.to_client.extend_from_slice(&packet.bytes)
                    }
                    ServerSessionResult::RaisedEvent(event) => {
                        let id = match event {
                            ServerSessionEvent::ConnectionRequested { request_id, .. }
                            | ServerSessionEvent::PublishStreamRequested { request_id, .. }
                            | ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                                request_id
                            }
                            _ => continue,
                        };
                        let more = server.accept_request(id).expect("accept");
                        self.server(server, more);
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }

        /// Moves bytes both ways until neither side has anything to say.
        fn run(&mut self, client: &mut ClientSession, server: &mut ServerSession) {
            while !self.to_server.is_empty() || !self.to_client.is_empty() {
                let input = std::mem::take(&mut self.to_server);
                if !input.is_empty() {
                    let results = server.handle_input(&input).expect("server input");
                    self.server(server, results);
                }
                let input = std::mem::take(&mut self.to_client);
                if !input.is_empty() {
                    let results = client.handle_input(&input).expect("client input");
                    self.client(results);
                }
            }
        }
    }
}
