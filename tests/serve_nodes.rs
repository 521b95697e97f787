//! Many serve nodes behind one address (issue 15 items 3 and 4), with real processes (see
//! `serve_nodes/stage.rs`): two serve nodes sharing Redis behind a TCP balancer, a worker, nginx
//! and a `costream publish` guest. A room created on node A is joined, driven and followed (its
//! event stream) through either node: the one that does not own it forwards to the owner. A
//! second room goes to the less loaded node. The owner is killed with `kill -9`: the other node
//! adopts the room (live again, taking over the mixer the dead node left orphaned on the worker)
//! and the guest reconnects by itself. The killed node comes back, and the owner is stopped with
//! SIGTERM as in an upgrade: the other adopts the room at once. Then one node is left, killed
//! and restarted at once: it takes its room back. The CDN sees one publisher throughout, its
//! bytes never standing still for long.
//!
//! Timings are printed and checked with generous bounds (behaviour, not speed: `cargo bench
//! --bench serve_nodes` measures them over several trials).

mod common;
#[path = "serve_nodes/stage.rs"]
mod stage;

use std::time::Duration;

use common::sse::Events;
use serde_json::json;
use stage::{owner, Loss, Stage, NODES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_owned_by_one_node_forwarded_from_others_and_adopted_when_it_goes(
) -> anyhow::Result<()> {
    let mut stage = Stage::start().await?;
    let room = stage.room.clone();
    assert_eq!(owner(&stage.redis, &room.id), NODES[0]);

    // Node B forwards to the owner, A: the host's API and the room's event stream.
    let api_b = stage.api_of(1);
    let mut events = Events::open(&api_b, &room.id, &room.host_token).await?;
    let layout = api_b
        .http()
        .put(api_b.url(&format!("/api/v1/rooms/{}/layout", room.id)))
        .bearer_auth(&room.host_token)
        .json(&json!({"type": "pip"}))
        .send()
        .await?;
    assert_eq!(layout.status(), 200, "layout through node B");
    events
        .until(
            "the new layout, in an event through node B",
            Duration::from_secs(10),
            |_, data| (data["layout"]["type"] == "pip").then_some(()),
        )
        .await?;
    drop(events);

    // New rooms go to the least loaded node: A holds a live room with a guest, B nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let api_a = stage.api_of(0);
    let second = api_a.create_room(json!({})).await?;
    assert_eq!(
        owner(&stage.redis, &second.id),
        NODES[1],
        "placed on the less loaded node"
    );
    assert!(
        second
            .whip_url
            .starts_with(api_b.base_url.trim_end_matches('/')),
        "answered by node B: {}",
        second.whip_url
    );
    let (code, _) = api_a.end_room(&second).await?;
    assert_eq!(code, 204, "ended through node A");

    let killed = stage.lose_owner(Loss::Kill).await?;
    eprintln!("owner killed: {}", Stage::summary(&killed));
    assert!(killed.adopted < Duration::from_secs(12), "{killed:?}");
    let stopped = stage.lose_owner(Loss::Term).await?;
    eprintln!("owner stopped (SIGTERM): {}", Stage::summary(&stopped));
    assert!(stopped.adopted < Duration::from_secs(5), "{stopped:?}");
    // One node stops for good; the other, alone, is killed and restarted at once: it takes
    // its room back.
    let owner_now = owner(&stage.redis, &room.id);
    let other = NODES
        .iter()
        .position(|n| *n != owner_now)
        .expect("two nodes");
    stage.stop_node(other).await?;
    let restarted = stage.lose_owner(Loss::Restart).await?;
    eprintln!("the only node restarted: {}", Stage::summary(&restarted));
    for trial in [&killed, &stopped, &restarted] {
        assert!(trial.cdn_still < Duration::from_secs(3), "{trial:?}");
    }

    let (code, _) = stage.api().end_room(&room).await?;
    assert_eq!(code, 204);
    let nginx = stage.nginx.clone();
    common::eventually(
        "the publisher gone from nginx",
        Duration::from_secs(10),
        || async { Ok(nginx.publisher_ids(stage::KEY).is_empty().then_some(())) },
    )
    .await?;
    Ok(())
}
