//! Custom layout: the host gives each participant a rectangle (fractions of the canvas, so the
//! same layout works at every output size) and a z-order.

use serde::{Deserialize, Serialize};

use super::{even_floor, Placement, TileRect, MAX_CUSTOM_TILES};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTile {
    pub participant_id: String,
    /// Left edge, 0.0..=1.0 of the canvas width.
    pub x: f64,
    /// Top edge, 0.0..=1.0 of the canvas height.
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// Higher is drawn on top.
    #[serde(default)]
    pub z: u32,
}

/// Tolerance for fractions that add up to a hair over 1.0 (0.1 + 0.9 in floating point).
const EPSILON: f64 = 1e-6;

pub fn validate(tiles: &[CustomTile]) -> Result<(), String> {
    if tiles.len() > MAX_CUSTOM_TILES {
        return Err(format!(
            "layout.tiles has {} entries; at most {MAX_CUSTOM_TILES}",
            tiles.len()
        ));
    }
    for (i, t) in tiles.iter().enumerate() {
        let field = |name: &str| format!("layout.tiles[{i}].{name}");
        if t.participant_id.is_empty() {
            return Err(format!("{} must not be empty", field("participant_id")));
        }
        if tiles[..i]
            .iter()
            .any(|u| u.participant_id == t.participant_id)
        {
            return Err(format!(
                "{} {:?} appears twice",
                field("participant_id"),
                t.participant_id
            ));
        }
        for (name, v) in [("x", t.x), ("y", t.y)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{} must be between 0 and 1 (got {v})", field(name)));
            }
        }
        for (name, v) in [("width", t.width), ("height", t.height)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!(
                    "{} must be above 0 and at most 1 (got {v})",
                    field(name)
                ));
            }
        }
        if t.x + t.width > 1.0 + EPSILON || t.y + t.height > 1.0 + EPSILON {
            return Err(format!(
                "layout.tiles[{i}] reaches past the canvas (x + width and y + height must be ≤ 1)"
            ));
        }
    }
    Ok(())
}

/// Places listed participants; the rest are hidden. Assumes `validate` passed, but clamps anyway
/// so a bad spec can never produce a rect outside the canvas.
pub fn custom(
    canvas_w: u32,
    canvas_h: u32,
    participants: &[&str],
    tiles: &[CustomTile],
) -> Vec<Option<Placement>> {
    participants
        .iter()
        .map(|p| {
            let t = tiles.iter().find(|t| t.participant_id == *p)?;
            let px =
                |frac: f64, full: u32| even_floor((frac.clamp(0.0, 1.0) * f64::from(full)) as u32);
            let x = px(t.x, canvas_w);
            let y = px(t.y, canvas_h);
            let width = px(t.width, canvas_w).clamp(2, even_floor(canvas_w - x).max(2));
            let height = px(t.height, canvas_h).clamp(2, even_floor(canvas_h - y).max(2));
            Some(Placement {
                rect: TileRect {
                    x: x.min(canvas_w - width),
                    y: y.min(canvas_h - height),
                    width,
                    height,
                },
                z: t.z,
            })
        })
        .collect()
}
