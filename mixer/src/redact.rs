//! Stream keys are secrets: every place that shows an output URL shows it through here.

/// Replaces the stream key (the last path segment) and any query or userinfo of an RTMP URL
/// with `***`, keeping scheme, host, port and application so a person can still tell outputs
/// apart. Input that is not a URL is hidden whole.
pub fn redact_url(raw: &str) -> String {
    if crate::srt_url::is_srt(raw) {
        // SRT keeps its secrets in the query (`streamid`, `passphrase`), next to settings worth
        // seeing (`latency`).
        return crate::srt_url::redact_srt_url(raw).unwrap_or_else(|| "***".to_string());
    }
    let Ok(mut url) = url::Url::parse(raw) else {
        return "***".to_string();
    };
    let had_credentials = !url.username().is_empty() || url.password().is_some();
    if had_credentials {
        let _ = url.set_username("***");
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
    }
    if url.fragment().is_some() {
        url.set_fragment(Some("***"));
    }
    let path = url.path().trim_end_matches('/').to_string();
    match path.rsplit_once('/') {
        Some((app, key)) if !app.is_empty() && !key.is_empty() => {
            url.set_path(&format!("{app}/***"));
        }
        // A single segment (`rtmp://host/KEY`): there is no application to keep.
        Some((_, key)) if !key.is_empty() => url.set_path("/***"),
        _ => {}
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_the_stream_key_but_keeps_host_and_app() {
        assert_eq!(
            redact_url("rtmp://a.rtmp.example.com:1935/live2/abcd-efgh-1234"),
            "rtmp://a.rtmp.example.com:1935/live2/***"
        );
    }

    #[test]
    fn hides_query_tokens_and_credentials() {
        let shown = redact_url("rtmps://user:pw@cdn.example/app/key?token=secret");
        assert!(!shown.contains("secret") && !shown.contains("key") && !shown.contains("pw"));
        assert!(shown.starts_with("rtmps://***@cdn.example/app/"), "{shown}");
    }

    #[test]
    fn a_lone_path_segment_and_a_fragment_are_hidden_too() {
        assert_eq!(
            redact_url("rtmp://cdn.example/SECRETKEY"),
            "rtmp://cdn.example/***"
        );
        let shown = redact_url("rtmp://cdn.example/app/key#SECRET");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn srt_urls_hide_streamid_and_passphrase() {
        let shown = redact_url(
            "srt://ingest.example:9000?streamid=live/SECRET&passphrase=PASSWORD123&latency=200",
        );
        assert_eq!(
            shown,
            "srt://ingest.example:9000?streamid=***&passphrase=***&latency=200"
        );
        assert_eq!(redact_url("srt://bad url?passphrase=PASSWORD123"), "***");
    }

    #[test]
    fn garbage_is_hidden_whole() {
        assert_eq!(redact_url("not a url with key"), "***");
    }
}
