//! The fleet's state in Redis: the worker registry, leases and epochs (see [`super::record`]
//! for the keys). Thin IO over one auto-reconnecting connection; every call is bounded in time
//! so a Redis that is away makes callers fail fast instead of hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::record::{epoch_key, lease_key, worker_key, workers_set_key, Lease, WorkerRecord};

/// One Redis call never takes longer than this.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Handle to the fleet's Redis. Cheap to clone.
#[derive(Clone)]
pub struct FleetStore {
    conn: ConnectionManager,
}

/// What renewing a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Still ours; its TTL is extended.
    Renewed,
    /// Nobody held it (it expired, or Redis restarted empty): ours again.
    Reclaimed,
    /// Another placement holds the room now: this mixer must stop.
    Lost { holder: String },
}

/// One auto-reconnecting connection that connects lazily and bounds every call in time.
pub(crate) fn connection(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(|source| StoreError::Url {
        url: redact_url(url),
        source,
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(Some(CALL_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// A registry in Redis: a record per member under its own key with a TTL (a member that stops
/// refreshing it is gone), listed in a set. The workers' and the serve nodes'.
pub(crate) mod registry {
    use std::time::Duration;

    use redis::aio::ConnectionManager;
    use redis::AsyncCommands;

    use super::{millis, StoreError};

    /// Writes `id`'s record `json` under `key` for `ttl` and lists it in `set`.
    pub async fn publish(
        conn: &ConnectionManager,
        set: &str,
        key: &str,
        id: &str,
        json: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .sadd(set, id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes `id` at once (a clean exit).
    pub async fn remove(
        conn: &ConnectionManager,
        set: &str,
        key: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = conn.clone();
        redis::pipe()
            .del(key)
            .ignore()
            .srem(set, id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Every live member's record, and the ids of unreadable ones (another version's layout).
    /// Ids whose record expired are pruned from the set.
    pub async fn read<T: serde::de::DeserializeOwned>(
        conn: &ConnectionManager,
        set: &str,
        key_of: impl Fn(&str) -> String,
    ) -> Result<(Vec<T>, Vec<String>), StoreError> {
        let mut conn = conn.clone();
        let mut ids: Vec<String> = conn.smembers(set).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| key_of(id)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        let mut expired = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.map(|v| serde_json::from_str::<T>(&v)) {
                Some(Ok(record)) => records.push(record),
                Some(Err(_)) => unreadable.push(id),
                None => expired.push(id),
            }
        }
        if !expired.is_empty() {
            let _: Result<(), _> = conn.srem(set, &expired).await;
        }
        Ok((records, unreadable))
    }
}

/// Numbers a new placement and takes the room's lease for it, in one step: the epoch is above
/// both the counter and whatever lease is held (the counter may have been lost with a Redis
/// restart while a worker kept its lease), so the newest placement always holds the highest.
/// KEYS: epoch counter, lease. ARGV: worker id, TTL ms.
const PLACE: &str = r#"
local e = redis.call('INCR', KEYS[1])
local cur = redis.call('GET', KEYS[2])
if cur then
  local held = tonumber(string.match(cur, '/(%d+)$'))
  if held and held >= e then
    e = held + 1
    redis.call('SET', KEYS[1], e)
  end
end
redis.call('SET', KEYS[2], ARGV[1] .. '/' .. e, 'PX', ARGV[2])
return e
"#;

/// Extends the lease if it is still ours. Only a newer placement (a higher epoch) fences us off;
/// a missing lease (expired, or Redis restarted empty) or an older one is taken back, and the
/// counter raised to our epoch so later placements stay above it.
/// KEYS: lease, epoch counter. ARGV: `worker/epoch`, TTL ms, epoch.
const RENEW: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'renewed'
end
local mine = tonumber(ARGV[3])
if v then
  local held = tonumber(string.match(v, '/(%d+)$'))
  if held and held > mine then
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter < mine then
  redis.call('SET', KEYS[2], mine)
end
return 'reclaimed'
"#;

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`: a lease (a moved room's lease is not
/// ours to drop) or a serve node's ownership of a room.
pub(crate) const DELETE_IF_HELD: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl FleetStore {
    /// Connects lazily: nothing is sent until the first call, so a process starts while Redis is
    /// away and heals when it comes back.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: connection(url)?,
        })
    }

    /// Writes a worker's record with a TTL and lists it in the registry.
    pub async fn publish_worker(
        &self,
        record: &WorkerRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("worker record serializes");
        let key = worker_key(&record.worker_id);
        registry::publish(
            &self.conn,
            &workers_set_key(),
            &key,
            &record.worker_id,
            json,
            ttl,
        )
        .await
    }

    /// Removes a worker from the registry at once (a clean exit).
    pub async fn remove_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        registry::remove(
            &self.conn,
            &workers_set_key(),
            &worker_key(worker_id),
            worker_id,
        )
        .await
    }

    /// Every live worker. Ids whose record expired are pruned from the set; unreadable records
    /// (another version's layout) are skipped with their id returned for the log.
    pub async fn workers(&self) -> Result<(Vec<WorkerRecord>, Vec<String>), StoreError> {
        registry::read(&self.conn, &workers_set_key(), worker_key).await
    }

    /// Places `room_id` on `worker_id`: a new epoch (the fencing token) and the room's lease
    /// for it; whatever held the lease before is fenced off from now on.
    pub async fn place(
        &self,
        room_id: &str,
        worker_id: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn.clone();
        let epoch: u64 = redis::Script::new(PLACE)
            .key(epoch_key(room_id))
            .key(lease_key(room_id))
            .arg(worker_id)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(Lease {
            worker_id: worker_id.to_string(),
            epoch,
        })
    }

    /// Keeps a lease alive while its mixer runs; says when the room was placed elsewhere.
    pub async fn renew_lease(
        &self,
        room_id: &str,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<LeaseCheck, StoreError> {
        let mut conn = self.conn.clone();
        let answer: String = redis::Script::new(RENEW)
            .key(lease_key(room_id))
            .key(epoch_key(room_id))
            .arg(lease.encode())
            .arg(millis(ttl))
            .arg(lease.epoch)
            .invoke_async(&mut conn)
            .await?;
        Ok(match answer.as_str() {
            "renewed" => LeaseCheck::Renewed,
            "reclaimed" => LeaseCheck::Reclaimed,
            _ => LeaseCheck::Lost { holder: answer },
        })
    }

    /// Drops the lease if it is still this one.
    pub async fn release_lease(&self, room_id: &str, lease: &Lease) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::Script::new(DELETE_IF_HELD)
            .key(lease_key(room_id))
            .arg(lease.encode())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The lease of `room_id`, if any (tests and the pool view).
    pub async fn lease(&self, room_id: &str) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(lease_key(room_id)).await?;
        Ok(value.as_deref().and_then(Lease::decode))
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A Redis URL may carry a password (`redis://:secret@host`): never log it.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_never_reach_logs() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert!(FleetStore::connect("http://nope").is_err());
    }
}
