//! The HTTP edge against abuse, on a real serve: a slowloris client trickling its headers is
//! closed by the header-read timeout; an address creating rooms beyond its quota gets `429`
//! with `Retry-After` and a JSON error (other addresses are unaffected); connections beyond the
//! per-address cap are closed at once; event streams per room are capped with `503`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Api, Serve};
use serde_json::json;

fn addr(serve: &Serve) -> String {
    serve.base_url.trim_start_matches("http://").to_string()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(within))
        .expect("set read timeout");
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_floods_and_connection_hoarding_are_bounded() -> anyhow::Result<()> {
    let serve = Serve::start_with_config(
        "[limits]\nheader_read_timeout_secs = 2\nroom_creations_per_minute_per_ip = 6\n\
         connections_per_ip = 8\nevent_streams_per_room = 2\n",
    )?;
    let api = Api::new(&serve.base_url);

    // Slowloris: a request head trickled one header line every 300 ms is cut off.
    let mut slow = TcpStream::connect(addr(&serve))?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"X-Slow: 1\r\n").is_err()
            || closed_within(&mut slow, Duration::from_millis(300))
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the slowloris connection is still open after 10 s");
    println!(
        "MEASURE slowloris_closed_after_ms={}",
        closed_after.as_millis()
    );
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed too early: {closed_after:?}"
    );
    // A normal request on a fresh connection is served meanwhile.
    assert_eq!(
        api.http().get(api.url("/healthz")).send().await?.status(),
        200
    );

    // Connection hoarding: 8 idle connections are held, the 9th is closed at once.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr(&serve))?);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = TcpStream::connect(addr(&serve))?;
    assert!(
        closed_within(&mut ninth, Duration::from_millis(1000)),
        "the 9th connection from one address was kept"
    );
    drop(held);

    // Room creation flood: a burst of 2 (6 a minute / 3) passes, then 429 with Retry-After.
    let mut codes = Vec::new();
    let mut retry_after = None;
    let mut body = serde_json::Value::Null;
    for _ in 0..5 {
        let response = api
            .http()
            .post(api.url("/api/v1/rooms"))
            .json(&json!({}))
            .send()
            .await?;
        codes.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            body = response.json().await?;
        }
    }
    println!(
        "MEASURE room_creations_until_429={}",
        codes.iter().take_while(|c| **c == 201).count()
    );
    assert_eq!(codes, vec![201, 201, 429, 429, 429], "{body}");
    assert!(
        retry_after.is_some_and(|s| (1..=11).contains(&s)),
        "Retry-After {retry_after:?}"
    );
    assert_eq!(body["error"], "rate_limited", "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_per_room_are_capped() -> anyhow::Result<()> {
    let serve = Serve::start_with_config("[limits]\nevent_streams_per_room = 2\n")?;
    let api = Api::new(&serve.base_url);
    let room = api.create_room(json!({})).await?;
    let open = || {
        api.http()
            .get(api.url(&format!("/api/v1/rooms/{}/events", room.id)))
            .bearer_auth(&room.guest_token)
            .send()
    };
    let first = open().await?;
    let second = open().await?;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await?;
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await?;
    assert_eq!(body["error"], "too_many_streams", "{body}");
    // Closing one frees its place.
    drop(first);
    common::eventually("a place freed", Duration::from_secs(5), || async {
        let again = open().await?;
        Ok((again.status() == 200).then_some(()))
    })
    .await?;
    drop(second);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_have_their_own_quotas() -> anyhow::Result<()> {
    // The "proxy" connects from 127.0.0.2, the only trusted one; a client reaching serve
    // directly connects from 127.0.0.1. One room a minute per client after a burst of 1.
    let serve = Serve::start_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.2/32\"]\n\
         [limits]\nroom_creations_per_minute_per_ip = 3\n",
    )?;
    let api = Api::new(&serve.base_url);
    let proxy = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let create = |client: &reqwest::Client, forwarded_for: Option<&str>| {
        let mut request = client.post(api.url("/api/v1/rooms")).json(&json!({}));
        if let Some(xff) = forwarded_for {
            request = request.header("x-forwarded-for", xff);
        }
        async move { anyhow::Ok(request.send().await?.status().as_u16()) }
    };
    let alice = Some("203.0.113.1");
    let bob = Some("203.0.113.2");
    // Two clients behind the proxy: each has its own quota.
    assert_eq!(create(&proxy, alice).await?, 201);
    assert_eq!(create(&proxy, alice).await?, 429);
    assert_eq!(create(&proxy, bob).await?, 201);
    // Alice prepending a made-up address is still Alice (the walk starts from the right).
    assert_eq!(
        create(&proxy, Some("198.51.100.9, 203.0.113.1")).await?,
        429
    );
    // The proxy's own requests (no header) count as the proxy.
    assert_eq!(create(&proxy, None).await?, 201);
    // A direct client's header is not trusted: a new address per request gains nothing.
    let direct = api.http();
    assert_eq!(create(direct, Some("203.0.113.3")).await?, 201);
    assert_eq!(create(direct, Some("203.0.113.4")).await?, 429);
    Ok(())
}
