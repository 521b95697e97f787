//! Speaker layout: the featured participant large on top, everyone else in a strip below.

use super::{even_floor, fit_16x9, grid, TileRect};

/// The strip takes this fraction of the canvas height (1/5: 144 px of 720).
const STRIP_DIVISOR: u32 = 5;

/// Rects for `n` participants in join order; `main` is the featured one's index (< n).
pub fn speaker(canvas_w: u32, canvas_h: u32, n: usize, main: usize) -> Vec<TileRect> {
    if n <= 1 {
        return grid(canvas_w, canvas_h, n);
    }
    let strip_h = even_floor(canvas_h / STRIP_DIVISOR);
    let stage_h = canvas_h - strip_h;
    let (main_w, main_h) = fit_16x9(canvas_w, stage_h);
    let main_rect = TileRect {
        x: even_floor((canvas_w - main_w) / 2),
        y: even_floor((stage_h - main_h) / 2),
        width: main_w,
        height: main_h,
    };
    // Thumbnails: 16:9 at the strip's height, shrunk if too many for one row.
    let others = (n - 1) as u32;
    let (mut thumb_w, mut thumb_h) = fit_16x9(canvas_w, strip_h);
    if thumb_w * others > canvas_w {
        (thumb_w, thumb_h) = fit_16x9(canvas_w / others, strip_h);
    }
    let row_w = thumb_w * others;
    let x0 = (canvas_w - row_w) / 2;
    let y = even_floor(stage_h + (strip_h - thumb_h) / 2);
    let mut thumbs = (0..others).map(|i| TileRect {
        x: even_floor(x0 + i * thumb_w),
        y,
        width: thumb_w,
        height: thumb_h,
    });
    (0..n)
        .map(|i| {
            if i == main {
                main_rect
            } else {
                thumbs.next().expect("one thumbnail per other participant")
            }
        })
        .collect()
}
