//! Webhooks: every room's events (`room_started`, `participant_joined`, `broadcast_failed`,
//! `output_updated`, …) POSTed as JSON to the operator's endpoints (`[webhooks] urls`), signed
//! the way LiveKit signs its webhooks, retried with backoff, in order per endpoint (so in order
//! per room), from a bounded queue: a slow or dead receiver never blocks a room or the API, it
//! loses events instead (counted and logged).

pub mod events;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::access::{unix_now, Access};
use crate::config::WebhooksConfig;
use crate::room::status::RoomStatus;
use crate::room::tokens::random_id;
use crate::room::RoomHandle;
use events::{Change, OutputRef, ParticipantRef};

/// One try may take this long before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between tries: doubling from the first, at most the last; then the event is dropped
/// (about a minute of trying in all).
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(16);
const ATTEMPTS: u32 = 8;

/// The JSON body, in LiveKit's webhook layout (`id`, `event`, `createdAt`, `room`,
/// `participant`) with costream's `output` and `broadcast` beside them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent<'a> {
    pub id: String,
    pub event: &'static str,
    /// Unix seconds.
    pub created_at: u64,
    pub room: RoomRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<&'a ParticipantRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<&'a OutputRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastRef<'a>>,
}

/// The room as LiveKit names one (`sid`, `name`), with its display name as `title`.
#[derive(Debug, Serialize)]
pub struct RoomRef<'a> {
    pub sid: &'a str,
    pub name: &'a str,
    pub title: &'a str,
    #[serde(rename = "numParticipants")]
    pub num_participants: usize,
}

#[derive(Debug, Serialize)]
pub struct BroadcastRef<'a> {
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// The body of `change` in the room whose status is `status`.
pub fn body(status: &RoomStatus, change: &Change) -> Bytes {
    let broadcast = match change {
        Change::BroadcastStarted | Change::BroadcastEnded | Change::BroadcastFailed { .. } => {
            Some(BroadcastRef {
                state: status.broadcast,
                reason: match change {
                    Change::BroadcastFailed { reason } => reason.as_deref(),
                    _ => None,
                },
            })
        }
        _ => None,
    };
    let event = WebhookEvent {
        id: format!("EV_{}", random_id(9)),
        event: change.name(),
        created_at: unix_now(),
        room: RoomRef {
            sid: &status.room_id,
            name: &status.room_id,
            title: &status.name,
            num_participants: status.participants.len(),
        },
        participant: match change {
            Change::ParticipantJoined(p) | Change::ParticipantLeft(p) => Some(p),
            _ => None,
        },
        output: match change {
            Change::OutputUpdated(o) => Some(o),
            _ => None,
        },
        broadcast,
    };
    Bytes::from(serde_json::to_vec(&event).expect("webhook events serialize"))
}

/// The server's webhook sender: one delivery task per endpoint, each with its own bounded
/// queue. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    queues: Arc<Vec<mpsc::Sender<Bytes>>>,
    dropped: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts a delivery task per configured URL; `None` without URLs.
    pub fn start(config: &WebhooksConfig, access: Arc<Access>) -> Option<Webhooks> {
        if config.urls.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            // Operators' endpoints, configured by them: no redirects to elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        let queues = config
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(config.queue);
                let endpoint = Endpoint {
                    shown: shown_url(url),
                    url: url.clone(),
                    http: http.clone(),
                    access: access.clone(),
                    api_key: config.api_key.clone(),
                };
                tokio::spawn(endpoint.deliver(rx));
                tx
            })
            .collect();
        Some(Webhooks {
            queues: Arc::new(queues),
            dropped: Arc::default(),
        })
    }

    /// Queues `body` for every endpoint without waiting; a full queue drops it.
    pub fn send(&self, body: Bytes) {
        for queue in self.queues.iter() {
            if queue.try_send(body.clone()).is_err() {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per power of two: a dead receiver must not flood the log either.
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "webhook queue full: events dropped");
                }
            }
        }
    }

    /// Follows one room from now until it ends, sending the events its status changes mean.
    pub fn follow(&self, room: &RoomHandle) {
        let (mut status, _) = room.watch();
        let hooks = self.clone();
        tokio::spawn(async move {
            let mut last: Option<Arc<RoomStatus>> = None;
            loop {
                let current = status.borrow_and_update().clone();
                for change in events::changes(last.as_deref(), &current) {
                    hooks.send(body(&current, &change));
                }
                last = Some(current);
                if status.changed().await.is_err() {
                    break;
                }
            }
            if let Some(last) = last {
                for change in events::finished(&last) {
                    hooks.send(body(&last, &change));
                }
            }
        });
    }
}

struct Endpoint {
    url: String,
    /// The URL as logs show it: no query (receivers often take a secret there), no userinfo.
    shown: String,
    http: reqwest::Client,
    access: Arc<Access>,
    api_key: Option<String>,
}

impl Endpoint {
    /// Delivers queued events one at a time, so the receiver gets them in order.
    async fn deliver(self, mut queue: mpsc::Receiver<Bytes>) {
        while let Some(body) = queue.recv().await {
            let mut wait = FIRST_RETRY;
            for attempt in 1..=ATTEMPTS {
                match self.post(&body).await {
                    Ok(()) => break,
                    Err(Failure::Permanent(why)) => {
                        tracing::warn!(url = %self.shown, %why, "webhook refused; not retried");
                        break;
                    }
                    Err(Failure::Transient(why)) if attempt == ATTEMPTS => {
                        tracing::warn!(url = %self.shown, %why, attempt, "webhook dropped");
                    }
                    Err(Failure::Transient(why)) => {
                        tracing::debug!(url = %self.shown, %why, attempt, "webhook retried");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
        }
    }

    async fn post(&self, body: &Bytes) -> Result<(), Failure> {
        // Signed per try: the token is valid for minutes, retries can take longer.
        let token = self
            .access
            .sign_webhook(self.api_key.as_deref(), body)
            .ok_or_else(|| Failure::Permanent("the signing key is gone".into()))?;
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/webhook+json")
            .header(reqwest::header::AUTHORIZATION, token)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failure::Transient(format!("answered {status}")))
        } else {
            Err(Failure::Permanent(format!("answered {status}")))
        }
    }
}

/// `scheme://host[:port]/path` of `url`, for logs.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().map(|p| format!(":{p}")).unwrap_or_default() + parsed.path()
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

enum Failure {
    /// Worth another try (network, 5xx, 408, 429).
    Transient(String),
    /// The receiver said no (other 4xx): trying again would say the same.
    Permanent(String),
}

#[cfg(test)]
mod tests {
    #[test]
    fn logs_show_no_query_or_credentials() {
        assert_eq!(
            super::shown_url("https://user:pw@hooks.example:8443/in?token=s3cret"),
            "https://hooks.example:8443/in"
        );
    }
}
