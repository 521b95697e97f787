//! `…/recordings`: the host records the program to this machine's disk, lists the parts,
//! downloads and deletes them. The room starts and stops recordings (its mixer writes them);
//! listing, downloading and deleting are file IO here, off the runtime's threads.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::ServiceExt;

use super::error::{ApiError, ErrorBody};
use super::rooms::host_room;
use super::AppState;
use crate::recordings::{valid_id, Catalog, CatalogError, RecordingView};
use crate::room::RecordingsAccess;

/// The room's recordings, or why there are none to be had.
fn catalog_of(access: &RecordingsAccess) -> Result<std::sync::Arc<Catalog>, ApiError> {
    access.catalog.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording_unavailable",
            "this server has no data directory for recordings (--data-dir or COSTREAM_DATA_DIR)",
        )
    })
}

fn checked_id(recording_id: &str) -> Result<(), ApiError> {
    if valid_id(recording_id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_not_found",
            format!("no recording {recording_id:?} in this room (ids look like rec-…-1)"),
        ))
    }
}

fn catalog_error(e: CatalogError) -> ApiError {
    let message = e.to_string();
    match e {
        CatalogError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "recording_not_found", message)
        }
        CatalogError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "recording_active", message),
        CatalogError::Io(_) => {
            tracing::warn!("recordings: {message}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "recording_io", message)
        }
    }
}

/// Runs blocking file IO off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("recordings: {e}"),
        )
    })
}

/// `POST /api/v1/rooms/{id}/recordings`: record the program from now on.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/recordings",
    tag = "recordings",
    summary = "Start recording the program",
    description = "Records the mixed program (H.264 + AAC, fragmented MP4: a killed mixer leaves a playable file) until the broadcast stops or `DELETE …/recordings/active`. A mixer restart during the recording starts a new part of it. Nothing is re-encoded; a write error (disk full) fails the recording alone, never the broadcast.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 201, description = "Recording (or starting with the mixer)", body = crate::room::RecordingStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 409, description = "`not_live`, `already_recording`", body = ErrorBody),
        (status = 503, description = "`recording_unavailable`: no data directory", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn start(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let status = room.start_recording().await??;
    tracing::info!(room = %room_id, recording = %status.session_id, "recording started");
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// `DELETE /api/v1/rooms/{id}/recordings/active`: stop the recording in progress.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/recordings/active",
    tag = "recordings",
    summary = "Stop the recording in progress",
    description = "The mixer closes the file (its last fragment written); the broadcast goes on.",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 204, description = "Stopped"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `not_recording`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    room.stop_recording().await??;
    tracing::info!(room = %room_id, "recording stopped");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/rooms/{id}/recordings`: every part, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/recordings",
    tag = "recordings",
    summary = "List the room's recordings",
    description = "One entry per part: a recording has several when its mixer was replaced while it ran (crash, move). `state`: `recording`, `complete`, `interrupted` (its mixer died: the file plays to its last whole fragment), `failed` (`reason` says why).",
    params(("room_id" = String, Path, description = "The room id")),
    responses(
        (status = 200, description = "The parts", body = Vec<RecordingView>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    let access = room.recordings().await?;
    let Some(catalog) = access.catalog else {
        return Ok(Json(Vec::<RecordingView>::new()).into_response());
    };
    let views =
        blocking(move || catalog.list(&room_id, &access.active, std::time::SystemTime::now()))
            .await?;
    Ok(Json(views).into_response())
}

/// What a download ticket allows (see `access::tickets`).
fn ticket_subject(room_id: &str, recording_id: &str) -> String {
    format!("recording/{room_id}/{recording_id}")
}

/// A link that downloads one part without the host token: for browsers (a plain link streams
/// to disk; fetching with a header would hold the whole file in memory) and players.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DownloadLink {
    /// `/api/v1/rooms/{id}/recordings/{recording_id}?ticket=…`, relative to the server.
    pub url: String,
    /// The ticket works this long (a download under way is not cut off).
    pub expires_in_secs: u64,
}

/// `POST /api/v1/rooms/{id}/recordings/{recording_id}/link`: a short-lived download link.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room_id}/recordings/{recording_id}/link",
    tag = "recordings",
    summary = "A short-lived download link",
    description = "The URL carries a ticket for this one part (HMAC-signed, 120 s): it downloads with a plain GET, no `Authorization` header, so a browser link or a player can use it.",
    params(("room_id" = String, Path, description = "The room id"), ("recording_id" = String, Path, description = "A part's `recording_id`")),
    responses(
        (status = 200, description = "The link", body = DownloadLink),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `recording_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn link(
    State(app): State<AppState>,
    Path((room_id, recording_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    checked_id(&recording_id)?;
    let catalog = catalog_of(&room.recordings().await?)?;
    let (room_for_io, id) = (room_id.clone(), recording_id.clone());
    blocking(move || catalog.media_of(&room_for_io, &id))
        .await?
        .map_err(catalog_error)?;
    let (ticket, expires_in_secs) = app
        .rooms
        .access()
        .ticket(&ticket_subject(&room_id, &recording_id));
    Ok(Json(DownloadLink {
        url: format!("/api/v1/rooms/{room_id}/recordings/{recording_id}?ticket={ticket}"),
        expires_in_secs,
    })
    .into_response())
}

/// `?ticket=` of a download link.
#[derive(serde::Deserialize)]
pub struct TicketQuery {
    ticket: Option<String>,
}

/// `GET /api/v1/rooms/{id}/recordings/{recording_id}`: download one part (ranges supported).
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room_id}/recordings/{recording_id}",
    tag = "recordings",
    summary = "Download a recording",
    description = "`video/mp4` (fragmented MP4). `Range` requests are honoured, so players can seek; a part still being written is served as far as it is written.",
    params(("room_id" = String, Path, description = "The room id"), ("recording_id" = String, Path, description = "A part's `recording_id`"), ("ticket" = Option<String>, Query, description = "A download link's ticket, instead of the host token")),
    responses(
        (status = 200, description = "The file", content_type = "video/mp4"),
        (status = 206, description = "Part of the file (a `Range` request)", content_type = "video/mp4"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `recording_not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn download(
    State(app): State<AppState>,
    Path((room_id, recording_id)): Path<(String, String)>,
    Query(query): Query<TicketQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    checked_id(&recording_id)?;
    let ticketed = query.ticket.as_deref().is_some_and(|ticket| {
        app.rooms
            .access()
            .ticket_allows(ticket, &ticket_subject(&room_id, &recording_id))
    });
    let room = if ticketed {
        super::rooms::find_room(&app, &room_id).await?
    } else if query.ticket.is_some() {
        return Err(ApiError::unauthorized(
            "the download link has expired or is not for this recording; ask for a new one \
             (POST …/recordings/{recording_id}/link)",
        ));
    } else {
        host_room(&app, &room_id, request.headers()).await?
    };
    let catalog = catalog_of(&room.recordings().await?)?;
    let id = recording_id.clone();
    let path = blocking(move || catalog.media_of(&room_id, &id))
        .await?
        .map_err(catalog_error)?;
    if !path.exists() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_not_found",
            format!("recording {recording_id} has no file (it failed before writing any)"),
        ));
    }
    // `.mp4`: served as `video/mp4`.
    let served = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording_io",
                format!("reading {recording_id}: {e}"),
            )
        })?;
    let mut response = served.map(Body::new);
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{recording_id}.mp4\""))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `DELETE /api/v1/rooms/{id}/recordings/{recording_id}`: remove one part.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room_id}/recordings/{recording_id}",
    tag = "recordings",
    summary = "Delete a recording",
    params(("room_id" = String, Path, description = "The room id"), ("recording_id" = String, Path, description = "A part's `recording_id`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the host token", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `recording_not_found`", body = ErrorBody),
        (status = 409, description = "`recording_active`: still being written; stop it first", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<AppState>,
    Path((room_id, recording_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = host_room(&app, &room_id, &headers).await?;
    checked_id(&recording_id)?;
    let access = room.recordings().await?;
    let catalog = catalog_of(&access)?;
    let (room_for_io, id) = (room_id.clone(), recording_id.clone());
    blocking(move || catalog.delete(&room_for_io, &id, &access.active))
        .await?
        .map_err(catalog_error)?;
    tracing::info!(room = %room_id, recording = %recording_id, "recording deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
