//! Pure layout: canvas + participants (join order) + spec + who is speaking → where each
//! participant's video goes. No GStreamer here; the mixer applies the result as pad properties.

mod custom;
mod grid;
mod pip;
mod speaker;

use serde::{Deserialize, Serialize};

pub use custom::CustomTile;
pub use grid::grid;

/// A tile on the canvas, in pixels. Coordinates and sizes are even (I420 chroma is 2x2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl TileRect {
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    pub fn overlaps(&self, other: &TileRect) -> bool {
        self.x < other.x + other.width
            && other.x < self.x + self.width
            && self.y < other.y + other.height
            && other.y < self.y + self.height
    }
}

/// Where one participant's video is drawn; `z` orders overlapping tiles (higher on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub rect: TileRect,
    pub z: u32,
}

/// How the canvas is divided: the body of `PUT /api/v1/rooms/{id}/layout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayoutSpec {
    /// Everyone the same size, in join order. (A struct variant so unknown fields are refused.)
    Grid {},
    /// One large tile (the pinned participant, else the active speaker, else the first to join)
    /// above a strip of the others.
    Speaker {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
    },
    /// The main participant (chosen like `speaker`) fills the canvas; the others are small
    /// tiles over its bottom-right corner.
    Pip {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
    },
    /// Explicit rectangles as fractions of the canvas; participants not listed are hidden.
    Custom { tiles: Vec<CustomTile> },
}

impl Default for LayoutSpec {
    fn default() -> Self {
        LayoutSpec::Grid {}
    }
}

/// Most tiles a custom layout may name (a compositor pad each; more is a mistake, not a layout).
pub const MAX_CUSTOM_TILES: usize = 64;

impl LayoutSpec {
    /// Checks what serde cannot; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            LayoutSpec::Grid {} => Ok(()),
            LayoutSpec::Speaker { pin } | LayoutSpec::Pip { pin } => match pin {
                Some(p) if p.is_empty() => Err("layout.pin must not be empty".into()),
                _ => Ok(()),
            },
            LayoutSpec::Custom { tiles } => custom::validate(tiles),
        }
    }

    /// The participant this layout features, if the host pinned one.
    pub fn pin(&self) -> Option<&str> {
        match self {
            LayoutSpec::Speaker { pin } | LayoutSpec::Pip { pin } => pin.as_deref(),
            _ => None,
        }
    }
}

/// Lays out `participants` (ids in join order) on a `canvas_w`x`canvas_h` canvas. `speaker` is
/// the current active speaker, if any. Returns one entry per participant, `None` = not shown.
pub fn place(
    canvas_w: u32,
    canvas_h: u32,
    participants: &[&str],
    spec: &LayoutSpec,
    speaker: Option<&str>,
) -> Vec<Option<Placement>> {
    let flat = |rects: Vec<TileRect>| rects.into_iter().map(|rect| Some(Placement { rect, z: 1 }));
    match spec {
        LayoutSpec::Grid {} => flat(grid(canvas_w, canvas_h, participants.len())).collect(),
        LayoutSpec::Speaker { pin } => {
            let main = focus(participants, pin.as_deref(), speaker);
            let rects = speaker::speaker(canvas_w, canvas_h, participants.len(), main);
            flat(rects).collect()
        }
        LayoutSpec::Pip { pin } => {
            let main = focus(participants, pin.as_deref(), speaker);
            pip::pip(canvas_w, canvas_h, participants.len(), main)
                .into_iter()
                .map(Some)
                .collect()
        }
        LayoutSpec::Custom { tiles } => custom::custom(canvas_w, canvas_h, participants, tiles),
    }
}

/// Index of the featured participant: pinned, else speaking, else the first to join.
fn focus(participants: &[&str], pin: Option<&str>, speaker: Option<&str>) -> usize {
    let index_of = |id: Option<&str>| id.and_then(|id| participants.iter().position(|p| *p == id));
    index_of(pin).or_else(|| index_of(speaker)).unwrap_or(0)
}

/// The largest 16:9 rectangle (even sides) inside `w`x`h`; integer maths so results repeat.
fn fit_16x9(w: u32, h: u32) -> (u32, u32) {
    let (fw, fh) = if u64::from(w) * 9 <= u64::from(h) * 16 {
        (w, w * 9 / 16)
    } else {
        (h * 16 / 9, h)
    };
    (even_floor(fw.min(w)), even_floor(fh.min(h)))
}

fn even_floor(v: u32) -> u32 {
    v & !1
}

#[cfg(test)]
mod tests;
