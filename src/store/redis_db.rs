//! Room records in Redis, for serve nodes of a fleet (`cluster.redis_url`): one hash,
//! `costream:rooms`, room id → the encoded record (stream keys sealed as on disk, so Redis
//! never holds one in the clear). A batch is one Lua script (atomic), which writes a room only
//! while its owner key (see `nodes`) names this serve node or nobody. The journal's writer thread
//! calls in: a blocking connection with short timeouts, reopened after any error, so Redis
//! being away stalls only that thread (which retries) and never a room.
//!
//! Redis is the fleet's coordinator, run without persistence (its state is rebuilt within
//! seconds): when it comes back from a restart, empty, every serve writes all its rooms again
//! ([`RoomBackend::lost_writes`] tells the journal, by Redis's `run_id` changing).

use std::sync::Mutex;
use std::time::Duration;

use super::backend::RoomBackend;
use super::db::Change;
use super::StoreError;

/// The hash of every room record.
pub const ROOMS_KEY: &str = "costream:rooms";

/// Connecting, and each command, give up after this: the writer retries.
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisRoomDb {
    client: redis::Client,
    /// For messages: the URL without its password.
    shown: String,
    connection: Mutex<Option<redis::Connection>>,
    /// `run_id` of the Redis server the records were written to (a new one: restarted).
    run_id: Mutex<Option<String>>,
    /// This serve node: it writes only the records of rooms it owns (or nobody does).
    node_id: String,
}

/// Applies a batch, skipping rooms another serve node owns. KEYS: the rooms hash. ARGV: this
/// node's id, then (op, room, record) triples; op `put` or `del`.
const APPLY_OWNED: &str = r#"
for i = 2, #ARGV, 3 do
  local room = ARGV[i + 1]
  local owner = redis.call('GET', 'costream:owner:' .. room)
  if (not owner) or owner == ARGV[1] then
    if ARGV[i] == 'put' then
      redis.call('HSET', KEYS[1], room, ARGV[i + 2])
    else
      redis.call('HDEL', KEYS[1], room)
    end
  end
end
return 1
"#;

impl RedisRoomDb {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str, node_id: &str) -> Result<Self, StoreError> {
        let shown = crate::fleet::store::redact_url(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis {
            url: shown.clone(),
            cause: e.to_string(),
        })?;
        Ok(Self {
            client,
            shown,
            connection: Mutex::new(None),
            run_id: Mutex::new(None),
            node_id: node_id.to_string(),
        })
    }

    fn error(&self, cause: impl std::fmt::Display) -> StoreError {
        StoreError::Redis {
            url: self.shown.clone(),
            cause: cause.to_string(),
        }
    }

    /// Runs `f` on the connection (opened if needed); an error drops it, to reconnect next time.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let connection = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| self.error(e))?;
            connection
                .set_read_timeout(Some(TIMEOUT))
                .and_then(|()| connection.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| self.error(e))?;
            *slot = Some(connection);
        }
        let result = f(slot.as_mut().expect("connected above"));
        if result.is_err() {
            *slot = None;
        }
        result.map_err(|e| self.error(e))
    }
}

impl RoomBackend for RedisRoomDb {
    fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_connection(|c| {
            redis::cmd("HGETALL")
                .arg(ROOMS_KEY)
                .query::<Vec<(String, Vec<u8>)>>(c)
        })
    }

    fn apply(&self, changes: &[(&str, &Change)]) -> Result<(), StoreError> {
        if changes.is_empty() {
            // Still a round trip: opening the store checks that Redis answers.
            return self.with_connection(|c| redis::cmd("PING").query::<()>(c));
        }
        // One script: atomic as MULTI/EXEC was, and each write checks the room's owner.
        let script = redis::Script::new(APPLY_OWNED);
        let mut invocation = script.key(ROOMS_KEY);
        invocation.arg(&self.node_id);
        for (id, change) in changes {
            match change {
                Change::Put(bytes) => invocation.arg("put").arg(*id).arg(bytes.as_slice()),
                Change::Delete => invocation.arg("del").arg(*id).arg(""),
            };
        }
        self.with_connection(|c| invocation.invoke::<()>(c))
    }

    fn lost_writes(&self) -> bool {
        let Ok(info) =
            self.with_connection(|c| redis::cmd("INFO").arg("server").query::<String>(c))
        else {
            // Away: nothing to tell yet; the next batch fails and is retried anyway.
            return false;
        };
        let Some(run_id) = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_string())
        else {
            return false;
        };
        let mut known = self.run_id.lock().unwrap_or_else(|e| e.into_inner());
        let restarted = known.as_ref().is_some_and(|old| *old != run_id);
        if restarted {
            tracing::warn!(redis = %self.shown, "Redis restarted: writing every room again");
        }
        *known = Some(run_id);
        restarted
    }
}
