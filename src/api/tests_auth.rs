//! Operator credentials and access tokens at the edge, on a server with an API key.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::json;

use super::tests::{app_with, call, post_json, with_token};
use crate::access::{unix_now, Access, Claims};
use crate::config::{ApiSecret, AuthConfig, Config};

const KEY: &str = "APIkey1";
const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

fn auth() -> AuthConfig {
    AuthConfig {
        keys: BTreeMap::from([(KEY.to_string(), ApiSecret::new(SECRET))]),
        ..AuthConfig::default()
    }
}

fn keyed_app() -> Router {
    app_with(Config {
        auth: auth(),
        ..Config::default()
    })
}

/// Tokens minted the way an app backend would, with the same key and secret.
fn mint(claims: &Claims) -> String {
    Access::from_config(&auth()).mint(claims).unwrap()
}

fn creator() -> String {
    mint(&Claims::room_creator(KEY, "ops", unix_now(), 600))
}

fn create_with(token: Option<&str>) -> Request<Body> {
    let mut request = post_json("/api/v1/rooms", json!({"name": "show"}));
    if let Some(token) = token {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    request
}

#[tokio::test]
async fn creating_rooms_and_the_pool_need_an_operator_token() {
    let app = keyed_app();
    let (status, body) = call(&app, create_with(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("roomCreate"),
        "{body}"
    );
    let (status, _) = call(&app, create_with(Some("not-a-jwt"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let expired = mint(&Claims::room_creator(KEY, "ops", unix_now() - 3600, 60));
    let (status, body) = call(&app, create_with(Some(&expired))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let joiner = mint(&Claims::participant(
        KEY,
        "r1",
        "alice",
        None,
        false,
        unix_now(),
        600,
    ));
    let (status, _) = call(&app, create_with(Some(&joiner))).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a join token creates nothing"
    );

    let (status, created) = call(&app, create_with(Some(&creator()))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let pool = |token: Option<String>| {
        let mut request = Request::get("/api/v1/pool");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(call(&app, pool(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, pool(Some(creator()))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn room_tokens_are_jwts_and_tokens_minted_elsewhere_work_in_their_room_only() {
    let app = keyed_app();
    let (_, created) = call(&app, create_with(Some(&creator()))).await;
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let access = Access::from_config(&auth());
    let claims = access
        .verify(host)
        .expect("the host token is a JWT of our key");
    assert_eq!(claims.video.room.as_deref(), Some(id));
    assert_eq!(claims.video.room_admin, Some(true));
    assert!(claims.exp > unix_now());

    let links = format!("/api/v1/rooms/{id}/links");
    assert_eq!(
        call(&app, with_token("GET", &links, host)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, with_token("GET", &links, guest)).await.0,
        StatusCode::FORBIDDEN
    );
    // A host token minted by the app backend for this room is as good as the API's.
    let backend_host = mint(&Claims::participant(
        KEY,
        id,
        "producer",
        Some("Producer".into()),
        true,
        unix_now(),
        600,
    ));
    assert_eq!(
        call(&app, with_token("GET", &links, &backend_host)).await.0,
        StatusCode::OK
    );
    // ...but not one for another room, an expired one, or one signed with another secret.
    let elsewhere = mint(&Claims::participant(
        KEY,
        "another-room",
        "producer",
        None,
        true,
        unix_now(),
        600,
    ));
    let (status, body) = call(&app, with_token("GET", &links, &elsewhere)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("another room"),
        "{body}"
    );
    let expired = mint(&Claims::participant(
        KEY,
        id,
        "producer",
        None,
        true,
        unix_now() - 7200,
        600,
    ));
    assert_eq!(
        call(&app, with_token("GET", &links, &expired)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let forged = Access::from_config(&AuthConfig {
        keys: BTreeMap::from([(KEY.to_string(), ApiSecret::new(&"x".repeat(40)))]),
        ..AuthConfig::default()
    })
    .mint(&Claims::participant(
        KEY,
        id,
        "mallory",
        None,
        true,
        unix_now(),
        600,
    ))
    .unwrap();
    assert_eq!(
        call(&app, with_token("GET", &links, &forged)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_without_can_publish_cannot_publish_and_links_are_freshly_minted() {
    let app = keyed_app();
    let (_, created) = call(&app, create_with(Some(&creator()))).await;
    let id = created["room_id"].as_str().unwrap();
    // A LiveKit-style viewer token: in the room, but canPublish false.
    let mut viewer = Claims::participant(KEY, id, "viewer", None, false, unix_now(), 600);
    viewer.video.can_publish = Some(false);
    let offer = Request::post(format!("/whip/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", mint(&viewer)))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Body::from("v=0\r\n"))
        .unwrap();
    let (status, body) = call(&app, offer).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("canPublish"),
        "{body}"
    );

    // The links endpoint mints new tokens (the ones from creation expire).
    let host = created["host_token"].as_str().unwrap();
    let (status, links) = call(
        &app,
        with_token("GET", &format!("/api/v1/rooms/{id}/links"), host),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{links}");
    let fresh = links["host_url"]
        .as_str()
        .unwrap()
        .split("#token=")
        .nth(1)
        .unwrap()
        .to_string();
    let claims = Access::from_config(&auth()).verify(&fresh).unwrap();
    assert_eq!(claims.video.room.as_deref(), Some(id));
    assert_eq!(claims.video.room_admin, Some(true));
}
