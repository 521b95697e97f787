//! The document against the router: every route has an operation, and real answers match the
//! schemas the document gives them.

use std::collections::BTreeSet;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::tests::{app, call, post_json, with_token};

/// The web UI, deliberately not in the document.
const UNDOCUMENTED: &[&str] = &[
    "/",
    "/host/{room_id}",
    "/join/{room_id}",
    "/watch/{room_id}",
    "/assets/{*path}",
];

fn document() -> Value {
    super::openapi()
}

/// `(METHOD, path)` of every route `router()` registers, read from its source: axum cannot list
/// a router's routes, and a test that reads the source fails for a route added without docs.
fn routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../mod.rs");
    let body = &source[source.find("pub fn router(").expect("router()")..];
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).expect("a path literal").to_string();
        // The handlers of this route: up to the `)` closing `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("balanced parentheses");
        let handlers = &call[..end];
        for method in ["get", "post", "put", "delete", "patch", "options"] {
            let needle = format!("{method}(");
            for (at, _) in handlers.match_indices(&needle) {
                let before = handlers[..at].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    routes.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    routes
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn every_route_has_an_operation_and_every_operation_a_route() {
    let routes = routes();
    assert!(routes.len() > 25, "found only {routes:?}");
    assert!(routes.contains(&("PUT".into(), "/api/v1/rooms/{room_id}/look".into())));
    assert!(routes.contains(&("OPTIONS".into(), "/whep/{room_id}/{participant_id}".into())));
    let documented = operations(&document());
    let missing: Vec<_> = routes
        .iter()
        .filter(|(_, path)| !UNDOCUMENTED.contains(&path.as_str()))
        .filter(|op| !documented.contains(op))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an operation in the OpenAPI document (add #[utoipa::path] and list \
         it in openapi.rs): {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(stale.is_empty(), "operations without a route: {stale:?}");
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let reference = reference.split('"').next().unwrap();
        let pointer = reference.trim_start_matches('#');
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    // Every operation answers errors in the one documented shape.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

/// A small JSON Schema check (what the document uses: `$ref`, types, `properties`, `required`,
/// `additionalProperties`, `items`, `enum`, `oneOf`/`anyOf`/`allOf`); the real check against the
/// running server is `tests/openapi.rs` (schemathesis).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .ok_or_else(|| format!("{at}: {reference} does not resolve"))?;
        return conforms(doc, target, value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            conforms(doc, s, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema[key].as_array() {
            let errors: Vec<_> = any
                .iter()
                .filter_map(|s| conforms(doc, s, value, at).err())
                .collect();
            if errors.len() == any.len() {
                return Err(format!("{at}: matches none of {key}: {errors:?}"));
            }
        }
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.contains(value) {
            return Err(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_of = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = types.contains(&type_of) || (type_of == "integer" && types.contains(&"number"));
    if !types.is_empty() && !type_ok {
        return Err(format!("{at}: {value} is not {types:?}"));
    }
    if let Value::Object(fields) = value {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !fields.contains_key(name) {
                return Err(format!("{at}: required `{name}` missing in {value}"));
            }
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => conforms(doc, s, field, &format!("{at}.{name}"))?,
                None if properties.is_some() || schema["additionalProperties"] == false => {
                    return Err(format!("{at}: `{name}` is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks one answer against the schema the document gives `method path` for its status.
fn check(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let op = &doc["paths"][path][method];
    let response = &op["responses"][status.as_str()];
    assert!(
        !response.is_null(),
        "{method} {path}: status {status} is not documented ({body})"
    );
    if let Some(schema) = response["content"]["application/json"].get("schema") {
        if let Err(e) = conforms(doc, schema, body, "body") {
            panic!("{method} {path} {status}: {e}");
        }
    }
}

#[tokio::test]
async fn real_answers_match_the_document() {
    let doc = document();
    let app = app();
    let rooms = "/api/v1/rooms";
    let room_path = "/api/v1/rooms/{room_id}";

    let (status, created) = call(
        &app,
        post_json(
            rooms,
            json!({"name": "show", "outputs": [{"url": "rtmp://cdn.example/live/KEY"}],
                   "preset": "480p30", "look": {"background": "#102030"}}),
        ),
    )
    .await;
    check(&doc, "post", rooms, status, &created);
    assert_eq!(status, StatusCode::CREATED);
    let id = created["room_id"].as_str().unwrap();
    let host = created["host_token"].as_str().unwrap();
    let guest = created["guest_token"].as_str().unwrap();
    let (status, body) = call(&app, post_json(rooms, json!({"preset": "4k"}))).await;
    check(&doc, "post", rooms, status, &body);

    let at = |suffix: &str| format!("/api/v1/rooms/{id}{suffix}");
    for token in [host, guest, "wrong"] {
        let (status, body) = call(&app, with_token("GET", &at(""), token)).await;
        check(&doc, "get", room_path, status, &body);
    }
    let (status, body) = call(&app, with_token("GET", &at("/links"), host)).await;
    check(&doc, "get", "/api/v1/rooms/{room_id}/links", status, &body);
    let (status, body) = call(&app, with_token("POST", &at("/live"), guest)).await;
    check(&doc, "post", "/api/v1/rooms/{room_id}/live", status, &body);
    let (status, body) = call(&app, with_token("POST", &at("/live"), host)).await;
    check(&doc, "post", "/api/v1/rooms/{room_id}/live", status, &body);
    assert_eq!(status, StatusCode::OK, "{body}");

    let put = |path: String, body: Value| {
        Request::put(path)
            .header(header::AUTHORIZATION, format!("Bearer {host}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, body) = call(&app, put(at("/layout"), json!({"type": "speaker"}))).await;
    check(&doc, "put", "/api/v1/rooms/{room_id}/layout", status, &body);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&app, put(at("/look"), json!({"labels": true}))).await;
    check(&doc, "put", "/api/v1/rooms/{room_id}/look", status, &body);
    let (status, body) = call(&app, put(at("/participants/nobody/audio"), json!({}))).await;
    check(
        &doc,
        "put",
        "/api/v1/rooms/{room_id}/participants/{participant_id}/audio",
        status,
        &body,
    );
    let mut add = with_token("POST", &at("/outputs"), host);
    *add.body_mut() = Body::from(json!({"url": "rtmp://b.example/app/k2"}).to_string());
    let (status, body) = call(&app, add).await;
    check(
        &doc,
        "post",
        "/api/v1/rooms/{room_id}/outputs",
        status,
        &body,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&app, with_token("POST", &at("/invites"), host)).await;
    check(
        &doc,
        "post",
        "/api/v1/rooms/{room_id}/invites",
        status,
        &body,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&app, with_token("DELETE", &at("/links/guest"), host)).await;
    check(
        &doc,
        "delete",
        "/api/v1/rooms/{room_id}/links/guest",
        status,
        &body,
    );
    let (status, body) = call(&app, with_token("DELETE", &at("/live"), host)).await;
    check(
        &doc,
        "delete",
        "/api/v1/rooms/{room_id}/live",
        status,
        &body,
    );

    let (status, body) = call(
        &app,
        Request::get("/api/v1/pool").body(Body::empty()).unwrap(),
    )
    .await;
    check(&doc, "get", "/api/v1/pool", status, &body);
    let (status, body) = call(&app, with_token("GET", "/api/v1/rooms/nope", host)).await;
    check(&doc, "get", room_path, status, &body);
}

#[tokio::test]
async fn the_document_is_served_without_auth() {
    let response = app()
        .oneshot(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, document());
}
