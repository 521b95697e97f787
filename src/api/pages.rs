//! The web pages (start, host studio, guest, viewer), compiled into the binary from `web/` so a
//! release binary serves them without the source tree. Plain ES modules, no build step.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};

use super::error::ApiError;

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web");

/// Pages load only this server's scripts and styles; media may come from blob: URLs (MSE
/// playback of the program) and the camera. Tokens live in the URL fragment, which browsers
/// never send, and `no-referrer` keeps page URLs out of other sites' logs.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub async fn index() -> Response {
    page("index.html")
}

pub async fn host(Path(_room): Path<String>) -> Response {
    page("host.html")
}

pub async fn join(Path(_room): Path<String>) -> Response {
    page("join.html")
}

pub async fn watch(Path(_room): Path<String>) -> Response {
    page("watch.html")
}

/// `GET /assets/{*path}`: scripts, styles and vendored libraries.
pub async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    let file = WEB
        .get_file(&path)
        .filter(|_| !path.ends_with(".html"))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file"))?;
    Ok(file_response(&path, file.contents()))
}

fn page(name: &str) -> Response {
    let Some(file) = WEB.get_file(name) else {
        // Only if the binary was built without web/: a packaging error, not a user error.
        return ApiError::internal(format!("page {name} is missing from this build"))
            .into_response();
    };
    let mut response = file_response(name, file.contents());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn file_response(path: &str, contents: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            // Small files; always revalidate so an upgraded server never runs stale scripts.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        contents,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_its_scripts_are_embedded() {
        for page in ["index.html", "host.html", "join.html", "watch.html"] {
            let html = WEB
                .get_file(page)
                .and_then(|f| f.contents_utf8())
                .unwrap_or_else(|| panic!("{page} missing"));
            // Every /assets/ reference of a page must resolve to an embedded file.
            for reference in html.split("\"/assets/").skip(1) {
                let path = reference.split('"').next().unwrap();
                assert!(WEB.get_file(path).is_some(), "{page} refers to {path}");
            }
        }
        assert!(WEB.get_file("vendor/mpegts.js").is_some());
    }
}
