//! `costream token create` and `costream room create`: mint with the API key and secret, and
//! create rooms from the command line.

use anyhow::{bail, Context};

use super::{unix_now, Access, Claims};
use crate::cli::{ApiKeyArgs, RoomCreateArgs, TokenCreateArgs};
use crate::config::{ApiSecret, AuthConfig, MIN_SECRET_CHARS};

/// Lifetime of the roomCreate token `room create` sends: it is used at once.
const CREATE_TOKEN_TTL_SECS: u64 = 60;

/// The one key the command signs with.
fn signer(key: &ApiKeyArgs) -> anyhow::Result<(Access, String)> {
    let (Some(api_key), Some(secret)) = (&key.api_key, &key.api_secret) else {
        bail!("give the API key and secret: --api-key and --api-secret, or COSTREAM_API_KEY and COSTREAM_API_SECRET")
    };
    if secret.chars().count() < MIN_SECRET_CHARS {
        bail!("the API secret must have at least {MIN_SECRET_CHARS} characters");
    }
    let access = Access::from_config(&AuthConfig {
        keys: [(api_key.clone(), ApiSecret::new(secret))].into(),
        ..AuthConfig::default()
    });
    Ok((access, api_key.clone()))
}

/// Prints the token on stdout.
pub fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let (access, api_key) = signer(&args.key)?;
    let ttl = args.ttl.as_secs().max(1);
    let claims = if args.room_create {
        Claims::room_creator(&api_key, &args.identity, unix_now(), ttl)
    } else {
        let room = args
            .room
            .context("--room is required without --room-create")?;
        if args.identity.is_empty() {
            bail!("give the participant an --identity (the token's `sub`)");
        }
        Claims::participant(
            &api_key,
            &room,
            &args.identity,
            args.name,
            args.host,
            unix_now(),
            ttl,
        )
    };
    println!("{}", access.mint(&claims)?);
    Ok(())
}

/// `POST /api/v1/rooms` with a fresh roomCreate token; prints the answer.
pub async fn room_create(args: RoomCreateArgs) -> anyhow::Result<()> {
    let (access, api_key) = signer(&args.key)?;
    let token = access.mint(&Claims::room_creator(
        &api_key,
        "cli",
        unix_now(),
        CREATE_TOKEN_TTL_SECS,
    ))?;
    let mut body = serde_json::Map::new();
    if let Some(name) = args.name {
        body.insert("name".into(), name.into());
    }
    if let Some(preset) = args.preset {
        body.insert("preset".into(), preset.into());
    }
    if !args.outputs.is_empty() {
        let outputs: Vec<_> = args
            .outputs
            .iter()
            .map(|url| serde_json::json!({ "url": url }))
            .collect();
        body.insert("outputs".into(), outputs.into());
    }
    let url = format!("{}/api/v1/rooms", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    println!("{text}");
    Ok(())
}
