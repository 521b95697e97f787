//! Server-Sent Events read off a streaming response (the API's event streams).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::Api;

/// Reads Server-Sent Events off a streaming response.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The room's event stream (`GET /api/v1/rooms/{id}/events`).
    pub async fn open(api: &Api, room_id: &str, token: &str) -> anyhow::Result<Self> {
        Self::open_path(api, &format!("/api/v1/rooms/{room_id}/events"), token).await
    }

    /// Any event stream of the API, with `token` as the bearer.
    pub async fn open_path(api: &Api, path: &str, token: &str) -> anyhow::Result<Self> {
        let response = api
            .http()
            .get(api.url(path))
            .bearer_auth(token)
            // The client's overall timeout would cut a long stream; each read has its own below.
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        if response.status() != 200 {
            bail!("events {path}: {}", response.status());
        }
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event as (name, data); None when the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<(String, Value)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Ok(Some((name, serde_json::from_str(&data)?)));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .context("no event in time")??;
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }

    /// Skips events until `pick` returns Some for one.
    pub async fn until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str, &Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((name, data)) = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}"))?
            else {
                bail!("the stream ended while waiting for {what}");
            };
            if let Some(found) = pick(&name, &data) {
                return Ok(found);
            }
        }
    }
}
