//! `GET /metrics`: Prometheus text. Two parts:
//!
//! - **Counted as it happens**: HTTP requests by route, method and status, with latency
//!   histograms; go-lives refused by admission. Kept in this module's recorder for the life of
//!   the process.
//! - **Read at scrape time**: capacity (what KEDA scales the fleet's workers on, see
//!   `docker/k8s/keda.yaml`), rooms, participants, peer connections, subscriptions, origin
//!   viewers, and per live room its mixer (CPU, memory, frames, restarts) and outputs (state,
//!   bitrate, bytes, reconnects). Rendered from a fresh recorder each scrape, so a room's series
//!   exist only while it is live and vanish with it: cardinality stays bounded by the rooms
//!   live now. Never stale, and costs nothing between scrapes.
//!
//! The recorders are this module's own (not installed globally), so tests that build many
//! routers in one process do not share counters by accident beyond this module.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use costream_mixer::control::OutputState;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::AppState;
use crate::room::status::RoomStatus;

/// Latency buckets (seconds): WHIP answers take tens of ms, status reads a few.
const LATENCY_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Join → visible buckets (seconds): ~0.2 s on a LAN, seconds when ICE or keyframes stall.
const JOIN_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

fn counted() -> &'static PrometheusRecorder {
    static RECORDER: OnceLock<PrometheusRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("costream_http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .expect("buckets are not empty")
            .set_buckets_for_metric(
                Matcher::Full("costream_join_to_visible_seconds".into()),
                JOIN_BUCKETS,
            )
            .expect("buckets are not empty")
            .build_recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_counter!(
                "costream_http_requests_total",
                "HTTP requests answered, by route template, method and status"
            );
            describe_histogram!(
                "costream_http_request_duration_seconds",
                "Time to the response head, by route template and method (event streams: until \
                 the stream starts)"
            );
            describe_counter!(
                "costream_admission_refusals_total",
                "Go-lives refused because the room's cost did not fit (503 over_capacity)"
            );
            describe_histogram!(
                "costream_join_to_visible_seconds",
                "From a publisher's WHIP request to the first program frame showing it"
            );
            // Present from the start, so rate() and alerts see 0 rather than nothing.
            counter!("costream_admission_refusals_total").absolute(0);
        });
        recorder
    })
}

/// Middleware: counts every request by its route *template* (`/api/v1/rooms/{room_id}`, never
/// the id itself, so series stay few) and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::with_local_recorder(counted(), || {
        counter!("costream_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
            .increment(1);
        histogram!("costream_http_request_duration_seconds", "route" => route, "method" => method)
            .record(elapsed);
    });
    response
}

/// One publisher became visible in a program this long after its WHIP request.
pub fn observe_join_to_visible(took: std::time::Duration) {
    metrics::with_local_recorder(counted(), || {
        histogram!("costream_join_to_visible_seconds").record(took.as_secs_f64());
    });
}

/// Counts a go-live refused for capacity.
pub fn count_admission_refusal() {
    metrics::with_local_recorder(counted(), || {
        counter!("costream_admission_refusals_total").increment(1);
    });
}

pub async fn render(State(app): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    // Room ids are what guards a room's public status and its HTTP-FLV stream, so on a keyed
    // server only an operator (`roomList` or `roomCreate`) sees the per-room series; the
    // totals (and the capacity an autoscaler reads) are for anyone.
    let per_room = super::auth::require_operator(
        &headers,
        app.rooms.access(),
        crate::access::Claims::require_list,
    )
    .is_ok();
    let now = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&now, || scrape(&app, per_room));
    let mut text = counted().handle().render();
    text.push_str(&now.handle().render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The gauges of this moment; the per-room ones only if `per_room`.
fn scrape(app: &AppState, per_room: bool) {
    describe_gauges();
    let view = app.rooms.pool().view();
    gauge!("costream_fleet_capacity_cores").set(view.capacity);
    gauge!("costream_fleet_used_cores").set(view.used);
    gauge!("costream_fleet_free_cores").set(view.free);
    gauge!("costream_fleet_workers").set(view.workers.as_ref().map_or(1, Vec::len) as f64);
    gauge!("costream_rooms_live").set(view.rooms.len() as f64);
    gauge!("costream_warm_mixers").set(view.warm_mixers as f64);
    gauge!("costream_peer_connections").set(app.ingest.peer_connections().open() as f64);

    let statuses: Vec<_> = app
        .rooms
        .all()
        .iter()
        .map(|room| room.latest_status())
        .collect();
    gauge!("costream_rooms").set(statuses.len() as f64);
    let participants: usize = statuses.iter().map(|s| s.participants.len()).sum();
    gauge!("costream_participants").set(participants as f64);
    let subscriptions: usize = statuses
        .iter()
        .flat_map(|s| &s.participants)
        .map(|p| p.subscribers)
        .sum();
    gauge!("costream_whep_subscriptions").set(subscriptions as f64);
    let publishers = || {
        statuses
            .iter()
            .flat_map(|s| &s.participants)
            .map(|p| p.quality)
    };
    gauge!("costream_rtp_packets_received")
        .set(publishers().map(|q| q.packets_received).sum::<u64>() as f64);
    gauge!("costream_rtp_bytes_received")
        .set(publishers().map(|q| q.bytes_received).sum::<u64>() as f64);
    gauge!("costream_rtp_packets_lost")
        .set(publishers().map(|q| q.packets_lost).sum::<i64>() as f64);
    if let Some(origin) = &app.origin {
        let viewers: usize = statuses
            .iter()
            .filter_map(|s| origin.stats(&s.room_id))
            .map(|stats| stats.viewers)
            .sum();
        gauge!("costream_origin_viewers").set(viewers as f64);
    }
    for status in statuses
        .iter()
        .filter(|s| per_room && s.broadcast != "offline")
    {
        live_room(status);
    }
}

/// The series of one live (or failed) room, labelled with its id.
fn live_room(status: &RoomStatus) {
    let room = status.room_id.clone();
    gauge!("costream_room_participants", "room" => room.clone())
        .set(status.participants.len() as f64);
    gauge!("costream_room_mixer_frames_out", "room" => room.clone())
        .set(status.mixer.frames_out as f64);
    gauge!("costream_room_mixer_restarts", "room" => room.clone())
        .set(f64::from(status.mixer.restarts));
    let lost: i64 = status
        .participants
        .iter()
        .map(|p| p.quality.packets_lost)
        .sum();
    gauge!("costream_room_rtp_packets_lost", "room" => room.clone()).set(lost as f64);
    let jitter_ms = status
        .participants
        .iter()
        .map(|p| p.quality.jitter_ms)
        .fold(0.0, f64::max);
    gauge!("costream_room_rtp_jitter_seconds", "room" => room.clone()).set(jitter_ms / 1000.0);
    if let Some(q) = &status.quality {
        gauge!("costream_room_latency_seconds", "room" => room.clone())
            .set(f64::from(q.latency_ms) / 1000.0);
        gauge!("costream_room_latency_max_seconds", "room" => room.clone())
            .set(f64::from(q.latency_max_ms) / 1000.0);
        if let Some(offset) = q.av_offset_ms {
            gauge!("costream_room_av_offset_seconds", "room" => room.clone()).set(offset / 1000.0);
        }
        gauge!("costream_room_program_frozen", "room" => room.clone())
            .set(f64::from(u8::from(q.frozen)));
        gauge!("costream_room_program_black", "room" => room.clone())
            .set(f64::from(u8::from(q.black)));
        gauge!("costream_room_program_still_seconds", "room" => room.clone())
            .set(q.still_ms as f64 / 1000.0);
    }
    // Only this machine's mixers have a /proc entry here: a fleet worker's pid means nothing
    // on this machine (the worker exports its mixers' figures itself, `--metrics-listen`).
    let local_pid = status.mixer.pid.filter(|_| status.mixer.worker.is_none());
    if let Some(stats) = local_pid.and_then(crate::proc_stats::of) {
        gauge!("costream_room_mixer_cpu_seconds", "room" => room.clone()).set(stats.cpu_seconds);
        gauge!("costream_room_mixer_rss_bytes", "room" => room.clone()).set(stats.rss_bytes as f64);
    }
    for output in &status.outputs {
        let labels = [("room", room.clone()), ("output", output.output_id.clone())];
        for state in [
            OutputState::Idle,
            OutputState::Connecting,
            OutputState::Live,
            OutputState::Reconnecting,
            OutputState::Failed,
        ] {
            let mut with_state = labels.to_vec();
            with_state.push(("state", state_name(state).to_string()));
            gauge!("costream_output_state", &with_state)
                .set(f64::from(u8::from(output.state == state)));
        }
        gauge!("costream_output_bitrate_kbps", &labels).set(output.bitrate_kbps as f64);
        gauge!("costream_output_bytes_sent", &labels).set(output.bytes_sent as f64);
        gauge!("costream_output_reconnects", &labels).set(f64::from(output.reconnects));
    }
}

fn state_name(state: OutputState) -> &'static str {
    match state {
        OutputState::Idle => "idle",
        OutputState::Connecting => "connecting",
        OutputState::Live => "live",
        OutputState::Reconnecting => "reconnecting",
        OutputState::Failed => "failed",
    }
}

fn describe_gauges() {
    describe_gauge!(
        "costream_fleet_capacity_cores",
        "Cores admission may hand out to mixers: the fleet's workers, or this machine's pool"
    );
    describe_gauge!("costream_fleet_used_cores", "Cores held by live rooms");
    describe_gauge!(
        "costream_fleet_free_cores",
        "Cores free for rooms going live"
    );
    describe_gauge!(
        "costream_fleet_workers",
        "Workers taking part (1 when serve runs its own mixers)"
    );
    describe_gauge!(
        "costream_rooms_live",
        "Rooms of this serve holding capacity"
    );
    describe_gauge!(
        "costream_warm_mixers",
        "Idle mixer processes ready for a room"
    );
    describe_gauge!(
        "costream_peer_connections",
        "WebRTC peer connections open (WHIP sessions and WHEP subscriptions)"
    );
    describe_gauge!("costream_rooms", "Rooms open on this serve");
    describe_gauge!("costream_participants", "Participants in all rooms");
    describe_gauge!("costream_whep_subscriptions", "WHEP subscriptions open");
    describe_gauge!("costream_origin_viewers", "Viewers of the built-in origin");
    describe_gauge!("costream_room_participants", "Participants of a live room");
    describe_gauge!(
        "costream_rtp_packets_received",
        "RTP packets received from the publishers present now"
    );
    describe_gauge!(
        "costream_rtp_bytes_received",
        "RTP bytes received from the publishers present now"
    );
    describe_gauge!(
        "costream_rtp_packets_lost",
        "RTP packets lost on the way from the publishers present now (RFC 3550)"
    );
    describe_gauge!(
        "costream_room_rtp_packets_lost",
        "RTP packets lost from the room's publishers (RFC 3550 cumulative)"
    );
    describe_gauge!(
        "costream_room_rtp_jitter_seconds",
        "Largest interarrival jitter among the room's publishers"
    );
    describe_gauge!(
        "costream_room_latency_seconds",
        "Mixer-added latency, median over the last second: input arrival to program frame leaving the muxer"
    );
    describe_gauge!(
        "costream_room_latency_max_seconds",
        "Mixer-added latency, maximum over the last second"
    );
    describe_gauge!(
        "costream_room_av_offset_seconds",
        "Largest A/V offset among the room's publishers (positive: picture trails sound)"
    );
    describe_gauge!(
        "costream_room_program_frozen",
        "1 while the program picture is frozen although a shown input moves"
    );
    describe_gauge!(
        "costream_room_program_black",
        "1 while the program is black although a shown input is not"
    );
    describe_gauge!(
        "costream_room_program_still_seconds",
        "How long the program picture has been unchanged"
    );
    describe_gauge!(
        "costream_room_mixer_frames_out",
        "Program frames the room's mixer produced"
    );
    describe_gauge!(
        "costream_room_mixer_restarts",
        "Times the room's mixer was replaced during this broadcast"
    );
    describe_gauge!(
        "costream_room_mixer_cpu_seconds",
        "CPU time of the room's mixer process (this machine's mixers only)"
    );
    describe_gauge!(
        "costream_room_mixer_rss_bytes",
        "Resident memory of the room's mixer process (this machine's mixers only)"
    );
    describe_gauge!(
        "costream_output_state",
        "1 for the output's current state (idle, connecting, live, reconnecting, failed)"
    );
    describe_gauge!(
        "costream_output_bitrate_kbps",
        "Send rate of an output over the last ~3 s"
    );
    describe_gauge!(
        "costream_output_bytes_sent",
        "Bytes written to the output's connection"
    );
    describe_gauge!(
        "costream_output_reconnects",
        "Times the output dropped into reconnecting during this broadcast"
    );
}
