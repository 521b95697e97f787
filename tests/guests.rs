//! Per-participant identity and removal that sticks, against a real `costream serve` with
//! real WebRTC publishers: personal invites, a removed guest refused when rejoining with the
//! same invite, the shared guest link revoked while the people inside stay.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::{eventually, Api, Publisher, PublisherOptions, Room, Serve};
use reqwest::Method;
use serde_json::{json, Value};

/// A WHIP POST with `token`; the edge answers a refused token before reading the SDP, so the
/// body does not matter for the refusals checked here.
async fn whip_status(api: &Api, room: &Room, token: &str) -> anyhow::Result<(u16, Value)> {
    let response = api
        .http()
        .post(&room.whip_url)
        .header("content-type", "application/sdp")
        .bearer_auth(token)
        .body("v=0\r\n")
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn invite(api: &Api, room: &Room, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/invites", room.id)))
        .bearer_auth(&room.host_token)
        .json(&body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// The participants of the room as (identity, participant id, display name).
async fn people(api: &Api, room: &Room) -> anyhow::Result<Vec<(String, String, String)>> {
    let status = api.status(room).await?;
    Ok(status["participants"]
        .as_array()
        .context("participants")?
        .iter()
        .map(|p| {
            let field = |name: &str| p[name].as_str().unwrap_or_default().to_string();
            (
                field("identity"),
                field("participant_id"),
                field("display_name"),
            )
        })
        .collect())
}

fn named(name: &str) -> PublisherOptions<'_> {
    PublisherOptions {
        name,
        ..PublisherOptions::red_vp8()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_give_identities_removal_bans_and_the_shared_link_can_be_revoked(
) -> anyhow::Result<()> {
    let serve = Serve::start()?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({"name": "guests"})).await?;

    // A personal invite: a JWT for identity "ann" with her name and an expiry.
    let (status, ann) = invite(&api, &room, json!({"identity": "ann", "name": "Ann"})).await?;
    assert_eq!(status, 201, "{ann}");
    assert_eq!(ann["identity"], "ann");
    let ann_token = ann["token"].as_str().context("token")?.to_string();
    assert!(ann["join_url"]
        .as_str()
        .is_some_and(|url| url.ends_with(&format!("/join/{}#token={ann_token}", room.id))));
    assert!(ann["expires_at"].as_u64() > Some(0));
    // Only the host invites; identities are checked.
    let guest_invite = api
        .http()
        .post(api.url(&format!("/api/v1/rooms/{}/invites", room.id)))
        .bearer_auth(&room.guest_token)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(guest_invite.status(), 403);
    let (status, body) = invite(&api, &room, json!({"identity": "host"})).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_identity"))
    );
    let (status, body) = invite(&api, &room, json!({"ttl_secs": 1})).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_ttl")));

    // Ann joins with her invite; two people come through the shared link.
    let ann_publisher = Publisher::start(&room.whip_url, &ann_token, named("ann"))?;
    let _shared_one = Publisher::start(&room.whip_url, &room.guest_token, named("one"))?;
    let mut shared_two = Publisher::start(&room.whip_url, &room.guest_token, named("two"))?;
    let inside = people(&api, &room).await?;
    let identity_of = |name: &str| {
        inside
            .iter()
            .find(|(_, _, display)| display == name)
            .map(|(identity, id, _)| (identity.clone(), id.clone()))
    };
    let (ann_identity, ann_id) = identity_of("ann").context("ann inside")?;
    assert_eq!(ann_identity, "ann");
    let (one, _) = identity_of("one").context("one inside")?;
    let (two, two_id) = identity_of("two").context("two inside")?;
    assert!(
        one.starts_with("guest-") && two.starts_with("guest-"),
        "{one} {two}"
    );
    assert_ne!(one, two, "people on the shared link are told apart");

    // Removing Ann bans her identity: her invite no longer gets in (before any WebRTC work).
    let (status, body) = api
        .send(
            Method::DELETE,
            &format!("/api/v1/rooms/{}/participants/{ann_id}", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 204, "{body}");
    drop(ann_publisher);
    let (status, body) = whip_status(&api, &room, &ann_token).await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "removed");
    // Removing someone from the shared link bans only that generated identity.
    let (status, _) = api
        .send(
            Method::DELETE,
            &format!("/api/v1/rooms/{}/participants/{two_id}", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 204);
    // Its `costream publish` loses the session, asks why (DELETE of its session: `403 removed`)
    // and stops instead of reconnecting as a new shared-link guest.
    let exit = shared_two.wait_exit(Duration::from_secs(15))?;
    assert!(!exit.success(), "a removed publisher exits with an error");
    assert!(
        !people(&api, &room)
            .await?
            .iter()
            .any(|(_, _, name)| name == "two"),
        "the removed shared-link guest came back"
    );

    // Revoking the shared link: new joins with it get 401, the one inside stays.
    let (status, links) = api
        .send(
            Method::DELETE,
            &format!("/api/v1/rooms/{}/links/guest", room.id),
            Some(&room.host_token),
        )
        .await?;
    assert_eq!(status, 200, "{links}");
    assert_eq!(links["guest_link_revoked"], true);
    assert!(links.get("guest_url").is_none(), "{links}");
    let (status, body) = whip_status(&api, &room, &room.guest_token).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "link_revoked");
    let still_inside = eventually(
        "only the first shared-link guest left",
        Duration::from_secs(10),
        || async {
            let inside = people(&api, &room).await?;
            Ok((inside.len() == 1).then_some(inside))
        },
    )
    .await?;
    assert_eq!(still_inside[0].0, one);

    // The host invites Ann again: the ban is lifted and she joins with the new invite.
    let (status, again) = invite(&api, &room, json!({"identity": "ann"})).await?;
    assert_eq!(status, 201, "{again}");
    let again = again["token"].as_str().context("token")?;
    let _ann_back = Publisher::start(&room.whip_url, again, named("ann again"))?;
    let inside = people(&api, &room).await?;
    assert!(
        inside.iter().any(|(identity, _, _)| identity == "ann"),
        "{inside:?}"
    );
    Ok(())
}
