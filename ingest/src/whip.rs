//! Pure WHIP protocol helpers for the client: Location resolution and error bodies.

use reqwest::Url;

use crate::error::IngestError;

/// Longest server error body we keep in an error message.
const MAX_ERROR_BODY: usize = 2048;

/// Resolves a (possibly relative) Location header against the URL the offer was POSTed to,
/// as RFC 9725 requires.
pub(crate) fn resolve_location(base: &Url, location: &str) -> Result<Url, IngestError> {
    let location = location.trim();
    if location.is_empty() {
        return Err(IngestError::Whip(
            "the server's Location header is empty".into(),
        ));
    }
    base.join(location).map_err(|e| {
        IngestError::Whip(format!(
            "the server's Location {location:?} is not a valid URL reference: {e}"
        ))
    })
}

/// Keeps error bodies readable in logs: trimmed and cut at a character boundary.
pub(crate) fn truncate_body(body: &str) -> String {
    let body = body.trim();
    if body.len() <= MAX_ERROR_BODY {
        return body.to_owned();
    }
    let mut end = MAX_ERROR_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:8080/whip/room1?name=alice").unwrap()
    }

    #[test]
    fn absolute_path_location() {
        let url = resolve_location(&base(), "/whip/room1/p42").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/whip/room1/p42");
    }

    #[test]
    fn relative_location() {
        let url = resolve_location(&base(), "room1/p42").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/whip/room1/p42");
    }

    #[test]
    fn absolute_location_on_another_host() {
        let url = resolve_location(&base(), "https://edge.example/resource/1").unwrap();
        assert_eq!(url.as_str(), "https://edge.example/resource/1");
    }

    #[test]
    fn empty_location_is_an_error() {
        assert!(matches!(
            resolve_location(&base(), "  "),
            Err(IngestError::Whip(_))
        ));
    }

    #[test]
    fn long_bodies_are_cut_on_char_boundaries() {
        let body = "é".repeat(3000);
        let cut = truncate_body(&body);
        assert!(cut.len() <= MAX_ERROR_BODY + "…".len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_body("  short \n"), "short");
    }
}
