//! A room's look, as pure data and geometry: name labels, background colour, logo, the slate
//! title. No GStreamer here; `stills` renders these and the mixer places them with the layout.

use serde::{Deserialize, Serialize};

use crate::layout::{Placement, TileRect};

/// Largest logo data URI accepted (characters): about 190 KiB of PNG. A logo is a small corner
/// image; anything bigger is a mistake, and the URI travels in every replay to a new mixer.
pub const MAX_LOGO_URI_LEN: usize = 256 * 1024;
/// Longest slate title / label text, in characters (longer is cut, not refused).
pub const MAX_TEXT_CHARS: usize = 48;
/// What every accepted logo URI starts with: only inline PNG, never a path or a URL, so the
/// mixer never opens a file or a connection on the API caller's behalf.
pub const LOGO_PREFIX: &str = "data:image/png;base64,";
/// Base64 of the 8-byte PNG signature (+ the first length byte): cheap proof it is a PNG.
const PNG_MAGIC_B64: &str = "iVBORw0KGgo";

/// Colour of participant slates and of the "starting soon" slate (dark slate blue).
pub const SLATE_ARGB: u32 = 0xFF1E_2A38;
/// Name labels: white text on this near-black box (opaque: see `stills` on alpha).
pub const LABEL_ARGB: u32 = 0xFF14_1414;

/// The body of `PUT /api/v1/rooms/{id}/look` and the mixer's `SetLook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Look {
    /// Display names over the bottom-left corner of each tile.
    #[serde(default)]
    pub labels: bool,
    /// Canvas colour behind the tiles, `#RRGGBB`.
    #[serde(default = "default_background")]
    pub background: String,
    /// A PNG as `data:image/png;base64,…` (≤ [`MAX_LOGO_URI_LEN`]), shown in the top-right
    /// corner; `None` = no logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// First line of the slate shown while nobody publishes (serve puts the room name here).
    #[serde(default)]
    pub title: String,
}

fn default_background() -> String {
    "#000000".into()
}

impl Default for Look {
    fn default() -> Self {
        Self {
            labels: false,
            background: default_background(),
            logo: None,
            title: String::new(),
        }
    }
}

impl Look {
    /// Checks what serde cannot; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        parse_rgb(&self.background).ok_or_else(|| {
            format!(
                "look.background must be a colour like \"#1e2a38\" (got {:?})",
                truncate(&self.background, 16)
            )
        })?;
        if let Some(uri) = &self.logo {
            validate_logo(uri)?;
        }
        Ok(())
    }

    /// The background as videotestsrc's ARGB `foreground-color` (opaque).
    pub fn background_argb(&self) -> u32 {
        0xFF00_0000 | parse_rgb(&self.background).unwrap_or(0)
    }

    /// Text of the slate shown while nobody publishes.
    pub fn idle_text(&self) -> String {
        let title = truncate(self.title.trim(), MAX_TEXT_CHARS);
        if title.is_empty() {
            "Starting soon".into()
        } else {
            format!("{title}\nStarting soon")
        }
    }
}

fn validate_logo(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_LOGO_URI_LEN {
        return Err(format!(
            "look.logo is {} characters; at most {MAX_LOGO_URI_LEN} (about 190 KiB of PNG)",
            uri.len()
        ));
    }
    let Some(data) = uri.strip_prefix(LOGO_PREFIX) else {
        return Err(format!(
            "look.logo must be an inline PNG starting with \"{LOGO_PREFIX}\" \
             (files and URLs are not fetched)"
        ));
    };
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if !data.chars().all(base64) {
        return Err("look.logo: the data after \"base64,\" is not base64".into());
    }
    if !data.starts_with(PNG_MAGIC_B64) {
        return Err("look.logo: the data is not a PNG image".into());
    }
    let (width, height) =
        png_size(data).ok_or("look.logo: the PNG has no image header (IHDR) where PNG puts it")?;
    if width == 0 || height == 0 || width > MAX_LOGO_SIDE || height > MAX_LOGO_SIDE {
        return Err(format!(
            "look.logo is {width}x{height} pixels; at most {MAX_LOGO_SIDE}x{MAX_LOGO_SIDE}"
        ));
    }
    Ok(())
}

/// Largest logo width or height in pixels: a small PNG can declare a picture of billions of
/// pixels, which the decoder would try to allocate; the header is checked before anything
/// decodes it.
pub const MAX_LOGO_SIDE: u32 = 4096;

/// Width and height from a base64 PNG's IHDR chunk, which PNG requires first: signature (8
/// bytes), chunk length (4), "IHDR" (4), width (4), height (4), big-endian.
fn png_size(base64_data: &str) -> Option<(u32, u32)> {
    use base64::Engine;
    // 32 base64 characters are exactly the first 24 bytes.
    let head = base64::engine::general_purpose::STANDARD
        .decode(base64_data.get(..32)?)
        .ok()?;
    if head.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?));
    Some((be(16)?, be(20)?))
}

/// `#RRGGBB` → 0xRRGGBB.
pub fn parse_rgb(s: &str) -> Option<u32> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// At most `max` characters of `s` (char boundary safe).
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// textoverlay reads Pango markup: a display name like "<b>Ann & co" must show as typed.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Pixel size a name label is rendered at (once); the compositor shrinks it for small tiles.
pub fn label_size(canvas_w: u32, canvas_h: u32) -> (u32, u32) {
    (even(canvas_w * 3 / 10), even(canvas_h / 15).max(16))
}

/// Pixel size a slate is rendered at: half the canvas; tiles are rarely bigger, and scaling a
/// flat picture up costs nothing visible.
pub fn slate_size(canvas_w: u32, canvas_h: u32) -> (u32, u32) {
    (even(canvas_w / 2).max(16), even(canvas_h / 2).max(16))
}

/// Z values: layout tiles get `2z`, their labels `2z + 1`, so a label sits above its own tile
/// but below any tile the layout puts on top (pip insets). The logo is above everything.
pub fn tile_z(layout_z: u32) -> u32 {
    layout_z * 2
}

pub const LOGO_Z: u32 = 10_000;

/// Where a tile's name label goes: its bottom-left corner, inset by a margin, shrunk (keeping
/// its aspect) when the tile is narrow. `None` when the tile is too small to carry one.
pub fn label_placement(tile: &Placement, canvas_w: u32, canvas_h: u32) -> Option<Placement> {
    let (lw, lh) = label_size(canvas_w, canvas_h);
    let margin = even(canvas_h / 90).max(2);
    let r = tile.rect;
    let room = r.width.checked_sub(2 * margin)?;
    let width = even(lw.min(room));
    let height = even((u64::from(lh) * u64::from(width) / u64::from(lw)) as u32);
    if width < 16 || height < 8 || height + 2 * margin > r.height {
        return None;
    }
    Some(Placement {
        rect: TileRect {
            x: r.x + margin,
            y: even(r.y + r.height - margin - height),
            width,
            height,
        },
        z: tile_z(tile.z) + 1,
    })
}

/// The logo's box: the top-right corner, a sixth of the canvas (the picture keeps its aspect
/// inside it).
pub fn logo_placement(canvas_w: u32, canvas_h: u32) -> Placement {
    let margin = even(canvas_h / 36);
    let (w, h) = (even(canvas_w / 6), even(canvas_h / 6));
    Placement {
        rect: TileRect {
            x: canvas_w - margin - w,
            y: margin,
            width: w,
            height: h,
        },
        z: LOGO_Z,
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1X1: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

    #[test]
    fn defaults_are_valid_and_plain() {
        let look: Look = serde_json::from_str("{}").unwrap();
        assert_eq!(look, Look::default());
        assert!(look.validate().is_ok());
        assert_eq!(look.background_argb(), 0xFF00_0000);
        assert_eq!(look.idle_text(), "Starting soon");
    }

    #[test]
    fn colours_parse_strictly() {
        assert_eq!(parse_rgb("#1e2A38"), Some(0x1E2A38));
        for bad in ["1e2a38", "#1e2a3", "#1e2a388", "#gg0000", "", "red"] {
            assert_eq!(parse_rgb(bad), None, "{bad}");
            let look = Look {
                background: bad.into(),
                ..Look::default()
            };
            assert!(look.validate().unwrap_err().contains("look.background"));
        }
    }

    #[test]
    fn logo_must_be_a_small_inline_png() {
        let ok = Look {
            logo: Some(PNG_1X1.into()),
            ..Look::default()
        };
        assert!(ok.validate().is_ok());
        let err = |logo: String| {
            Look {
                logo: Some(logo),
                ..Look::default()
            }
            .validate()
            .unwrap_err()
        };
        assert!(err("file:///etc/passwd".into()).contains("inline PNG"));
        assert!(err("https://example.com/logo.png".into()).contains("inline PNG"));
        assert!(err("data:image/png;base64,R0lGODlh".into()).contains("not a PNG"));
        assert!(err("data:image/png;base64,iVBORw0KGgo\"!".into()).contains("not base64"));
        let huge = format!(
            "{LOGO_PREFIX}{PNG_MAGIC_B64}{}",
            "A".repeat(MAX_LOGO_URI_LEN)
        );
        assert!(err(huge).contains("at most"));
    }

    /// A PNG signature and IHDR declaring `width` x `height` (no image data follows).
    fn png_header(width: u32, height: u32) -> String {
        use base64::Engine;
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        format!(
            "{LOGO_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn logo_size_is_checked_from_the_png_header_before_decoding() {
        let check = |w, h| {
            Look {
                logo: Some(png_header(w, h)),
                ..Look::default()
            }
            .validate()
        };
        assert!(check(4096, 4096).is_ok());
        assert!(check(200, 80).is_ok());
        let err = check(100_000, 100_000).unwrap_err();
        assert!(
            err.contains("100000x100000") && err.contains("4096"),
            "{err}"
        );
        assert!(check(4097, 10).is_err());
        assert!(check(0, 10).is_err());
        // The signature alone, no IHDR.
        let bare = format!("{LOGO_PREFIX}{PNG_MAGIC_B64}AAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert!(Look {
            logo: Some(bare),
            ..Look::default()
        }
        .validate()
        .unwrap_err()
        .contains("IHDR"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Look>(r#"{"lables":true}"#).is_err());
    }

    #[test]
    fn markup_is_escaped_and_titles_cut() {
        assert_eq!(
            escape_markup("<b>Ann & co</b>"),
            "&lt;b&gt;Ann &amp; co&lt;/b&gt;"
        );
        assert_eq!(escape_markup("a\u{7}b"), "ab");
        let look = Look {
            title: "x".repeat(100),
            ..Look::default()
        };
        assert_eq!(
            look.idle_text().lines().next().unwrap().len(),
            MAX_TEXT_CHARS
        );
    }

    #[test]
    fn labels_sit_inside_their_tile_above_it() {
        for (cw, ch) in [(1280, 720), (640, 360), (1920, 1080)] {
            for (w, h) in [(cw, ch), (cw / 2, ch / 2), (cw / 5, ch / 5), (40, 30)] {
                let tile = Placement {
                    rect: TileRect {
                        x: 10,
                        y: 20,
                        width: w,
                        height: h,
                    },
                    z: 1,
                };
                let Some(label) = label_placement(&tile, cw, ch) else {
                    assert!(w < 100, "{w}x{h} on {cw}x{ch} got no label");
                    continue;
                };
                let (l, t) = (label.rect, tile.rect);
                assert!(
                    l.x >= t.x && l.x + l.width <= t.x + t.width,
                    "{l:?} in {t:?}"
                );
                assert!(
                    l.y >= t.y && l.y + l.height <= t.y + t.height,
                    "{l:?} in {t:?}"
                );
                assert_eq!(l.width % 2 + l.height % 2, 0);
                assert!(label.z > tile_z(tile.z) && label.z < tile_z(tile.z + 1));
            }
        }
    }

    #[test]
    fn logo_is_in_the_top_right_corner() {
        let p = logo_placement(1280, 720);
        assert!(p.rect.x > 1280 / 2 && p.rect.y < 720 / 4);
        assert!(p.rect.x + p.rect.width <= 1280);
    }
}
