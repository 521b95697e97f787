//! Who may publish: per-stream random publish keys, and parsing what an RTMP client asked for
//! (`app` + `stream?key=…`). Pure; never shows a key in `Debug`.

/// The only RTMP application the origin serves (`rtmp://host/live/<stream>`).
pub const APP: &str = "live";

/// The secret that lets one stream be published: the same random, constant-time-compared,
/// never-printed kind of secret as the room tokens.
pub type PublishKey = crate::room::tokens::Token;

/// A publish or play request, split into its parts.
#[derive(PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream name, i.e. the room id.
    pub name: String,
    /// The `key` query parameter, from the stream name or the app.
    pub key: Option<String>,
}

impl std::fmt::Debug for StreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRequest")
            .field("name", &self.name)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown application; use rtmp://<host>/live/<stream>")]
    WrongApp,
    #[error("invalid stream name")]
    BadName,
}

/// Splits `app` (e.g. `live` or `live?key=…`) and the stream key of a publish/play command
/// (e.g. `room?key=…`). Clients differ in where they put a URL's query, so both are read.
pub fn parse_request(app: &str, stream: &str) -> Result<StreamRequest, RequestError> {
    let (app_path, app_query) = split_query(app);
    if app_path.trim_matches('/') != APP {
        return Err(RequestError::WrongApp);
    }
    let (name, stream_query) = split_query(stream);
    let name = name.trim_matches('/');
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(RequestError::BadName);
    }
    let key = [stream_query, app_query]
        .into_iter()
        .flatten()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned());
    Ok(StreamRequest {
        name: name.to_string(),
        key,
    })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_match_only_themselves() {
        let a = PublishKey::generate();
        let b = PublishKey::generate();
        assert_ne!(a, b);
        assert!(a.expose().len() >= 24);
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.expose()[1..]));
        assert_eq!(format!("{a:?}"), "Token(***)");
    }

    #[test]
    fn parses_key_from_stream_or_app_query() {
        let r = parse_request("live", "room1?key=s3cret").unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_deref()),
            ("room1", Some("s3cret"))
        );
        let r = parse_request("live?key=abc", "room1").unwrap();
        assert_eq!(r.key.as_deref(), Some("abc"));
        let r = parse_request("live/", "Ab-_9").unwrap();
        assert_eq!((r.name.as_str(), r.key), ("Ab-_9", None));
        let r = parse_request("live", "room?x=1&key=k%2Bk").unwrap();
        assert_eq!(r.key.as_deref(), Some("k+k"));
        assert!(!format!("{r:?}").contains("k+k"));
    }

    #[test]
    fn rejects_other_apps_and_bad_names() {
        assert_eq!(
            parse_request("vod", "x").unwrap_err(),
            RequestError::WrongApp
        );
        assert_eq!(
            parse_request("live", "").unwrap_err(),
            RequestError::BadName
        );
        assert_eq!(
            parse_request("live", "?key=x").unwrap_err(),
            RequestError::BadName
        );
        assert_eq!(
            parse_request("live", "../x").unwrap_err(),
            RequestError::BadName
        );
        assert_eq!(
            parse_request("live", "a b").unwrap_err(),
            RequestError::BadName
        );
    }
}
