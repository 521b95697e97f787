//! `GET /metrics`: Prometheus text with the capacity figures an autoscaler needs (KEDA scales
//! the fleet's workers on them, see `docker/k8s/keda.yaml`).
//!
//! The gauges are read from the pool's view at scrape time, so they are never stale and cost
//! nothing between scrapes. The recorder is this module's own (not installed globally).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::AppState;

fn recorder() -> &'static PrometheusRecorder {
    static RECORDER: OnceLock<PrometheusRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_gauge!(
                "costream_fleet_capacity_cores",
                "Cores admission may hand out to mixers: the fleet's workers, or this machine's pool"
            );
            describe_gauge!("costream_fleet_used_cores", "Cores held by live rooms");
            describe_gauge!("costream_fleet_free_cores", "Cores free for rooms going live");
            describe_gauge!(
                "costream_fleet_workers",
                "Workers taking part (1 when serve runs its own mixers)"
            );
            describe_gauge!("costream_rooms_live", "Rooms of this serve holding capacity");
        });
        recorder
    })
}

pub async fn render(State(app): State<AppState>) -> impl IntoResponse {
    let view = app.rooms.pool().view();
    let recorder = recorder();
    metrics::with_local_recorder(recorder, || {
        gauge!("costream_fleet_capacity_cores").set(view.capacity);
        gauge!("costream_fleet_used_cores").set(view.used);
        gauge!("costream_fleet_free_cores").set(view.free);
        gauge!("costream_fleet_workers").set(view.workers.as_ref().map_or(1, Vec::len) as f64);
        gauge!("costream_rooms_live").set(view.rooms.len() as f64);
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        recorder.handle().render(),
    )
}
