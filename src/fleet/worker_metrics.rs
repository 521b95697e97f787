//! `costream worker --metrics-listen ADDR`: the worker's own Prometheus series, for what serve's
//! `/metrics` cannot see from afar (its mixers' CPU and memory are on this machine's `/proc`)
//! and for a worker serve does not reach.
//!
//! Pure: [`render`] turns what the worker knows (its registry record, and a lookup of its
//! mixers' `/proc` figures) into Prometheus text, from a fresh recorder each scrape as in
//! `src/api/metrics.rs`: a room's series exist only while it runs here. IO: [`router`] and
//! [`serve`].
//!
//! No authentication, and the series name the rooms placed here (room ids guard a room's public
//! status and stream): bind it to a private address only, such as the pod IP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tracing::warn;

use super::record::{WorkerRecord, WorkerRoom, WorkerState};
use super::worker::WorkerCtx;
use crate::pool::cores;
use crate::proc_stats::ProcStats;

/// The Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The series of this moment. `mixer` gives a placed room's mixer figures, if it has a process.
pub fn render(record: &WorkerRecord, mixer: impl Fn(&WorkerRoom) -> Option<ProcStats>) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        describe();
        gauge!(
            "costream_worker_info",
            "worker_id" => record.worker_id.clone(),
            "version" => record.version.clone()
        )
        .set(1.0);
        gauge!("costream_worker_capacity_cores").set(cores(record.capacity));
        gauge!("costream_worker_used_cores").set(cores(record.used));
        gauge!("costream_worker_free_cores").set(cores(record.free));
        gauge!("costream_worker_warm_mixers").set(record.warm as f64);
        gauge!("costream_worker_draining")
            .set(f64::from(u8::from(record.state == WorkerState::Draining)));
        let rooms = newest_placements(&record.rooms);
        gauge!("costream_worker_mixers").set(rooms.len() as f64);
        for room in rooms {
            let id = room.room_id.clone();
            gauge!("costream_worker_room_epoch", "room" => id.clone()).set(room.epoch as f64);
            gauge!("costream_worker_room_cost_cores", "room" => id.clone()).set(cores(room.cost));
            if let Some(stats) = mixer(room) {
                gauge!("costream_worker_mixer_cpu_seconds", "room" => id.clone())
                    .set(stats.cpu_seconds);
                gauge!("costream_worker_mixer_rss_bytes", "room" => id).set(stats.rss_bytes as f64);
            }
        }
    });
    recorder.handle().render()
}

/// One placement per room: the newest. An older one of the same room is still here only while
/// it is being fenced (the room moved, then came back), and would otherwise collide with the
/// newer one's series.
fn newest_placements(rooms: &[WorkerRoom]) -> Vec<&WorkerRoom> {
    let mut newest: HashMap<&str, &WorkerRoom> = HashMap::new();
    for room in rooms {
        let slot = newest.entry(&room.room_id).or_insert(room);
        if room.epoch > slot.epoch {
            *slot = room;
        }
    }
    let mut rooms: Vec<_> = newest.into_values().collect();
    rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    rooms
}

fn describe() {
    describe_gauge!(
        "costream_worker_info",
        "1, labelled with this worker's id and version"
    );
    describe_gauge!(
        "costream_worker_capacity_cores",
        "Cores admission may hand out to mixers on this worker"
    );
    describe_gauge!(
        "costream_worker_used_cores",
        "Cores held by the rooms placed here"
    );
    describe_gauge!(
        "costream_worker_free_cores",
        "Cores free for rooms placed here"
    );
    describe_gauge!(
        "costream_worker_warm_mixers",
        "Idle mixer processes ready for a room"
    );
    describe_gauge!(
        "costream_worker_draining",
        "1 after SIGTERM: no new rooms; live ones stream on until they end or move"
    );
    describe_gauge!("costream_worker_mixers", "Rooms placed on this worker");
    describe_gauge!(
        "costream_worker_room_epoch",
        "Placement epoch (fencing token) of a room placed here"
    );
    describe_gauge!(
        "costream_worker_room_cost_cores",
        "Cores the room holds on this worker"
    );
    describe_gauge!(
        "costream_worker_mixer_cpu_seconds",
        "CPU time of the room's mixer process"
    );
    describe_gauge!(
        "costream_worker_mixer_rss_bytes",
        "Resident memory of the room's mixer process"
    );
}

/// `GET /metrics` answers `scrape()`; `GET /healthz` answers `ok`.
pub fn router(scrape: impl Fn() -> String + Clone + Send + Sync + 'static) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let scrape = scrape.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], scrape()).into_response() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves the worker's metrics on `listener` until the task is aborted.
pub async fn serve(ctx: Arc<WorkerCtx>, listener: TcpListener) {
    let app = router(move || {
        let pids = ctx.mixer_pids();
        render(&ctx.record(), |room| {
            let pid = pids.get(&(room.room_id.clone(), room.epoch))?;
            crate::proc_stats::of(*pid)
        })
    });
    if let Err(e) = axum::serve(listener, app).await {
        warn!("the metrics endpoint stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn record(rooms: Vec<WorkerRoom>, state: WorkerState) -> WorkerRecord {
        WorkerRecord {
            worker_id: "w-a".into(),
            advertise_ip: "10.0.0.11".parse().unwrap(),
            control_addr: "10.0.0.11:7700".parse().unwrap(),
            version: "1.2.3".into(),
            protocol: 1,
            capacity: 1800,
            used: 450,
            free: 1350,
            warm: 1,
            state,
            rooms,
        }
    }

    fn room(room_id: &str, epoch: u64, cost: u64) -> WorkerRoom {
        WorkerRoom {
            room_id: room_id.into(),
            epoch,
            cost,
            orphaned: false,
        }
    }

    /// The value of the line that starts with `series` (name and labels exactly).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn an_idle_worker_has_its_capacity_and_no_room() {
        let text = render(&record(vec![], WorkerState::Serving), |_| None);
        assert_eq!(
            value(
                &text,
                r#"costream_worker_info{worker_id="w-a",version="1.2.3"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(value(&text, "costream_worker_capacity_cores"), Some(1.8));
        assert_eq!(value(&text, "costream_worker_used_cores"), Some(0.45));
        assert_eq!(value(&text, "costream_worker_free_cores"), Some(1.35));
        assert_eq!(value(&text, "costream_worker_warm_mixers"), Some(1.0));
        assert_eq!(value(&text, "costream_worker_draining"), Some(0.0));
        assert_eq!(value(&text, "costream_worker_mixers"), Some(0.0));
        assert!(!text.contains("room="), "{text}");
        assert!(text.contains("# HELP costream_worker_mixers "), "{text}");
    }

    #[test]
    fn each_room_has_its_series_and_the_newest_placement_wins() {
        let rooms = vec![
            room("r1", 7, 300),
            room("r2", 3, 150),
            // r1's previous placement, being fenced.
            room("r1", 6, 300),
        ];
        let text = render(&record(rooms, WorkerState::Draining), |room| {
            (room.room_id == "r1").then_some(ProcStats {
                cpu_seconds: 12.5,
                rss_bytes: 4096 * room.epoch,
            })
        });
        assert_eq!(value(&text, "costream_worker_draining"), Some(1.0));
        assert_eq!(value(&text, "costream_worker_mixers"), Some(2.0));
        assert_eq!(
            value(&text, r#"costream_worker_room_epoch{room="r1"}"#),
            Some(7.0),
            "{text}"
        );
        assert_eq!(
            value(&text, r#"costream_worker_room_cost_cores{room="r2"}"#),
            Some(0.15)
        );
        assert_eq!(
            value(&text, r#"costream_worker_mixer_cpu_seconds{room="r1"}"#),
            Some(12.5)
        );
        assert_eq!(
            value(&text, r#"costream_worker_mixer_rss_bytes{room="r1"}"#),
            Some(4096.0 * 7.0)
        );
        // No process figures for a room whose mixer has none (not attached yet, or gone).
        assert!(!text.contains(r#"costream_worker_mixer_rss_bytes{room="r2"}"#));
    }

    #[tokio::test]
    async fn the_router_serves_metrics_and_health() {
        let app = router(|| "costream_worker_mixers 0\n".to_string());
        let response = app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], b"costream_worker_mixers 0\n");
        let response = app
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
    }
}
