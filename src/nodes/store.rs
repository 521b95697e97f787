//! The serve nodes' state in Redis (see [`super::record`] for the keys): thin IO over one
//! auto-reconnecting connection, every call bounded in time (as [`crate::fleet::FleetStore`]).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::record::{node_key, owner_key, NodeRecord, NODES_KEY};
use crate::fleet::store::{connection, millis, registry, StoreError, DELETE_IF_HELD};

/// Extends each owner key still naming this node; returns the rooms that are not (any more).
/// KEYS: owner keys. ARGV: node id, TTL ms.
const RENEW: &str = r#"
local lost = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not v then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"#;

/// Handle to the nodes' Redis. Cheap to clone.
#[derive(Clone)]
pub struct NodeStore {
    conn: ConnectionManager,
}

impl NodeStore {
    /// Connects lazily (see `FleetStore::connect`).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: connection(url)?,
        })
    }

    pub async fn publish_node(&self, record: &NodeRecord, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("node record serializes");
        let key = node_key(&record.node_id);
        registry::publish(&self.conn, NODES_KEY, &key, &record.node_id, json, ttl).await
    }

    pub async fn remove_node(&self, node_id: &str) -> Result<(), StoreError> {
        registry::remove(&self.conn, NODES_KEY, &node_key(node_id), node_id).await
    }

    /// Every live node (expired ones are pruned from the set; unreadable records skipped).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let (nodes, _unreadable) = registry::read(&self.conn, NODES_KEY, node_key).await?;
        Ok(nodes)
    }

    /// Takes room `room_id` for `node_id` if nobody owns it, or it is `node_id`'s already.
    pub async fn claim(
        &self,
        room_id: &str,
        node_id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let lost = self.renew(&[room_id.to_string()], node_id, ttl).await?;
        Ok(lost.is_empty())
    }

    /// Keeps `rooms` owned by `node_id` (taking back any whose key expired); returns those
    /// another node owns now.
    pub async fn renew(
        &self,
        rooms: &[String],
        node_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let renew = redis::Script::new(RENEW);
        let mut script = renew.prepare_invoke();
        for room in rooms {
            script.key(owner_key(room));
        }
        let lost: Vec<usize> = script
            .arg(node_id)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(lost
            .into_iter()
            .filter_map(|i| rooms.get(i.checked_sub(1)?).cloned())
            .collect())
    }

    /// The node that owns `room_id` now, if any.
    pub async fn owner(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(owner_key(room_id)).await?)
    }

    /// The owners of `rooms`, in order (`None`: nobody owns it).
    pub async fn owners(&self, rooms: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = rooms.iter().map(|r| owner_key(r)).collect();
        Ok(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?)
    }

    /// Gives `room_id` up if `node_id` still owns it (the room ended here).
    pub async fn release(&self, room_id: &str, node_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::Script::new(DELETE_IF_HELD)
            .key(owner_key(room_id))
            .arg(node_id)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// Ids of every stored room (the hash the room store writes).
    pub async fn stored_room_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.hkeys(crate::store::redis_db::ROOMS_KEY).await?)
    }

    /// One stored room's record bytes.
    pub async fn stored_room(&self, room_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .hget(crate::store::redis_db::ROOMS_KEY, room_id)
            .await?)
    }
}

/// The key an open server's serve nodes all sign tokens with, sealed with the store key.
const SIGNING_KEY: &str = "costream:signing-key";
const SIGNING_CONTEXT: &[u8] = b"costream signing key";

impl NodeStore {
    /// The signing key of an open server's serve nodes (no `[auth] keys`): the one in Redis, or
    /// `make()`'s if this node is the first, so a link one node handed out works on every node
    /// (and after its room moved to another). Sealed with the store key, which the nodes share.
    pub async fn shared_signing_key(
        &self,
        key: &crate::store::StoreKey,
        make: impl FnOnce() -> (String, String),
    ) -> anyhow::Result<(String, String)> {
        let mut conn = self.conn.clone();
        let (api_key, secret) = make();
        let sealed = key.seal(format!("{api_key}:{secret}").as_bytes(), SIGNING_CONTEXT);
        let json = serde_json::to_string(&sealed).expect("sealed values serialize");
        let _: Option<String> = redis::cmd("SET")
            .arg(SIGNING_KEY)
            .arg(&json)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let stored: String = conn.get(SIGNING_KEY).await?;
        let stored: crate::store::seal::Sealed = serde_json::from_str(&stored)
            .map_err(|e| anyhow::anyhow!("{SIGNING_KEY} in Redis is not a sealed key: {e}"))?;
        let plain = key.open(&stored, SIGNING_CONTEXT).ok_or_else(|| {
            anyhow::anyhow!(
                "the serve nodes' signing key in Redis ({SIGNING_KEY}) does not open with this node's store key: every serve node must have the same [store] key (COSTREAM_STORE_KEY)"
            )
        })?;
        let text = String::from_utf8(plain)?;
        match text.split_once(':') {
            Some((k, s)) if !k.is_empty() && !s.is_empty() => Ok((k.to_string(), s.to_string())),
            _ => anyhow::bail!("{SIGNING_KEY} in Redis is not `<api key>:<secret>`"),
        }
    }
}

impl NodeStore {
    /// Puts the shared signing key back if Redis lost it (a restart without persistence), so
    /// nodes started later sign with the same key as those running.
    pub async fn keep_signing_key(
        &self,
        key: &crate::store::StoreKey,
        api_key: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        if conn.exists(SIGNING_KEY).await? {
            return Ok(());
        }
        let sealed = key.seal(format!("{api_key}:{secret}").as_bytes(), SIGNING_CONTEXT);
        let json = serde_json::to_string(&sealed).expect("sealed values serialize");
        redis::cmd("SET")
            .arg(SIGNING_KEY)
            .arg(json)
            .arg("NX")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
