//! Picture-in-picture: the featured participant fills the canvas, the others are small tiles
//! over its bottom-right corner, right to left, wrapping upwards.

use super::{even_floor, fit_16x9, Placement, TileRect};

/// A small tile is this fraction of the canvas width at most (320 px of 1280).
const THUMB_DIVISOR: u32 = 4;

pub fn pip(canvas_w: u32, canvas_h: u32, n: usize, main: usize) -> Vec<Placement> {
    let full = TileRect {
        x: 0,
        y: 0,
        width: even_floor(canvas_w),
        height: even_floor(canvas_h),
    };
    if n == 0 {
        return Vec::new();
    }
    let others = (n - 1) as u32;
    let margin = even_floor(canvas_h / 30).max(2);
    let (mut thumb_w, mut thumb_h) = fit_16x9(canvas_w / THUMB_DIVISOR, canvas_h / THUMB_DIVISOR);
    // Shrink until every small tile fits inside the canvas with margins.
    let per_row = |w: u32| ((canvas_w.saturating_sub(margin)) / (w + margin)).max(1);
    while thumb_w > 16 {
        let rows = others.div_ceil(per_row(thumb_w));
        if rows * (thumb_h + margin) + margin <= canvas_h {
            break;
        }
        (thumb_w, thumb_h) = fit_16x9(thumb_w * 3 / 4, thumb_h * 3 / 4);
    }
    let cols = per_row(thumb_w);
    let mut k = 0;
    (0..n)
        .map(|i| {
            if i == main {
                return Placement { rect: full, z: 1 };
            }
            let (col, row) = (k % cols, k / cols);
            k += 1;
            let right = canvas_w - margin - col * (thumb_w + margin);
            let bottom = canvas_h - margin - row * (thumb_h + margin);
            Placement {
                rect: TileRect {
                    x: even_floor(right.saturating_sub(thumb_w)),
                    y: even_floor(bottom.saturating_sub(thumb_h)),
                    width: thumb_w,
                    height: thumb_h,
                },
                z: 2,
            }
        })
        .collect()
}
