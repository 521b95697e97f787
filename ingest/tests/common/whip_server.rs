//! A tiny WHIP endpoint for tests: POST /whip/{room} → accept_offer → 201 + relative Location;
//! DELETE /whip/{room}/{id} → close. Records what it saw so tests can assert on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use costream_ingest::{IngestConfig, IngestEngine, PeerSession, SessionEvent, Subscription};
use tokio::sync::mpsc;

pub const TOKEN: &str = "s3cret-whip-token-42";

#[derive(Clone)]
struct Whip {
    engine: IngestEngine,
    sessions: Arc<Mutex<HashMap<String, PeerSession>>>,
    events: mpsc::UnboundedSender<(String, SessionEvent)>,
    deleted: mpsc::UnboundedSender<String>,
    /// Every offer and answer exchanged, for log-hygiene checks.
    sdps: Arc<Mutex<Vec<String>>>,
    subscriptions: Arc<Mutex<HashMap<String, Subscription>>>,
}

pub struct TestWhipServer {
    pub addr: SocketAddr,
    /// The engine behind the endpoint (tests may create sessions directly and put them into
    /// `sessions` to make them subscribable at `/whep/{session id}`).
    pub engine: IngestEngine,
    pub sessions: Arc<Mutex<HashMap<String, PeerSession>>>,
    /// (session id, event) for every session.
    pub events: mpsc::UnboundedReceiver<(String, SessionEvent)>,
    /// Session ids whose resource was DELETEd.
    pub deleted: mpsc::UnboundedReceiver<String>,
    pub sdps: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestWhipServer {
    pub async fn start() -> Self {
        let engine = IngestEngine::new(IngestConfig {
            include_loopback: true,
            ..Default::default()
        })
        .expect("engine");
        let (events_tx, events) = mpsc::unbounded_channel();
        let (deleted_tx, deleted) = mpsc::unbounded_channel();
        let state = Whip {
            engine: engine.clone(),
            sessions: Arc::default(),
            events: events_tx,
            deleted: deleted_tx,
            sdps: Arc::default(),
            subscriptions: Arc::default(),
        };
        let sessions = Arc::clone(&state.sessions);
        let sdps = Arc::clone(&state.sdps);
        let app = Router::new()
            .route("/whip/{room}", post(publish))
            .route("/whip/{room}/{id}", delete(leave))
            .route("/whep/{id}", post(subscribe))
            .route("/whep/{id}/{sub}", delete(unsubscribe))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            engine,
            sessions,
            events,
            deleted,
            sdps,
            task,
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("http://{}/whip/{room}", self.addr)
    }

    pub fn session(&self, id: &str) -> PeerSession {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .expect("session")
    }
}

impl Drop for TestWhipServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"))
}

async fn publish(
    State(whip): State<Whip>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/sdp" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "need application/sdp").into_response();
    }
    let offer = String::from_utf8_lossy(&body).into_owned();
    match whip.engine.accept_offer(&offer).await {
        Ok((session, answer, mut events)) => {
            let id = session.id().to_owned();
            whip.sdps.lock().unwrap().extend([offer, answer.clone()]);
            whip.sessions.lock().unwrap().insert(id.clone(), session);
            let relay = whip.events.clone();
            let relay_id = id.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let _ = relay.send((relay_id.clone(), event));
                }
            });
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    // Relative on purpose: the client must resolve it against the POST URL.
                    (header::LOCATION, format!("{room}/{id}")),
                ],
                answer,
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn leave(
    State(whip): State<Whip>,
    Path((_room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let session = whip.sessions.lock().unwrap().remove(&id);
    match session {
        Some(session) => {
            session.close().await;
            let _ = whip.deleted.send(id);
            StatusCode::OK.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such session").into_response(),
    }
}

/// WHEP, serve-like: a subscription to session `id`, fed by that session's read loops.
async fn subscribe(
    State(whip): State<Whip>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let Some(source) = whip.sessions.lock().unwrap().get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    let offer = String::from_utf8_lossy(&body).into_owned();
    match whip.engine.accept_subscription(&offer, &source).await {
        Ok((subscription, answer, _events)) => {
            source.add_subscription(&subscription);
            let sub_id = subscription.id().to_owned();
            whip.subscriptions
                .lock()
                .unwrap()
                .insert(sub_id.clone(), subscription);
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, format!("{id}/{sub_id}")),
                ],
                answer,
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn unsubscribe(
    State(whip): State<Whip>,
    Path((id, sub)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let subscription = whip.subscriptions.lock().unwrap().remove(&sub);
    let source = whip.sessions.lock().unwrap().get(&id).cloned();
    match subscription {
        Some(subscription) => {
            if let Some(source) = source {
                source.remove_subscription(&sub);
            }
            subscription.close().await;
            StatusCode::OK.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such subscription").into_response(),
    }
}
