//! Pure layout: where each participant's video goes on the canvas.

/// A tile on the canvas, in pixels. Coordinates and sizes are even (I420 chroma is 2x2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A grid of `n` tiles in join order: `cols = ceil(sqrt(n))`, `rows = ceil(n / cols)`, each tile
/// the largest 16:9 rectangle fitting its cell, centred in it. `n == 1` fills the canvas.
pub fn grid(canvas_w: u32, canvas_h: u32, n: usize) -> Vec<TileRect> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![TileRect {
            x: 0,
            y: 0,
            width: even_floor(canvas_w),
            height: even_floor(canvas_h),
        }];
    }
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let cell_w = canvas_w / cols;
    let cell_h = canvas_h / rows;
    // Largest 16:9 inside the cell; computed in integers so results are exact and repeatable.
    let (mut w, mut h) = if u64::from(cell_w) * 9 <= u64::from(cell_h) * 16 {
        (cell_w, cell_w * 9 / 16)
    } else {
        (cell_h * 16 / 9, cell_h)
    };
    w = even_floor(w.min(cell_w));
    h = even_floor(h.min(cell_h));
    (0..n as u32)
        .map(|i| {
            let (col, row) = (i % cols, i / cols);
            TileRect {
                x: even_floor(col * cell_w + (cell_w - w) / 2),
                y: even_floor(row * cell_h + (cell_h - h) / 2),
                width: w,
                height: h,
            }
        })
        .collect()
}

fn even_floor(v: u32) -> u32 {
    v & !1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_fills_two_side_by_side() {
        assert_eq!(
            grid(1280, 720, 1),
            vec![TileRect {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            }]
        );
        assert_eq!(
            grid(1280, 720, 2),
            vec![
                TileRect {
                    x: 0,
                    y: 180,
                    width: 640,
                    height: 360
                },
                TileRect {
                    x: 640,
                    y: 180,
                    width: 640,
                    height: 360
                },
            ]
        );
        let four = grid(1280, 720, 4);
        assert_eq!(
            four[3],
            TileRect {
                x: 640,
                y: 360,
                width: 640,
                height: 360
            }
        );
        assert!(grid(1280, 720, 0).is_empty());
    }

    fn overlap(a: &TileRect, b: &TileRect) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    proptest! {
        #[test]
        fn tiles_fit_are_even_and_disjoint(w in 64u32..4096, h in 64u32..4096, n in 0usize..40) {
            let tiles = grid(w, h, n);
            prop_assert_eq!(tiles.len(), n);
            for (i, t) in tiles.iter().enumerate() {
                prop_assert!(t.x + t.width <= w && t.y + t.height <= h, "{t:?} outside {w}x{h}");
                prop_assert!(t.x % 2 == 0 && t.y % 2 == 0 && t.width % 2 == 0 && t.height % 2 == 0);
                for u in &tiles[i + 1..] {
                    prop_assert!(t.width == 0 || u.width == 0 || !overlap(t, u), "{t:?} overlaps {u:?}");
                }
            }
        }

        #[test]
        fn join_order_is_row_major(n in 2usize..30) {
            let tiles = grid(1920, 1080, n);
            for pair in tiles.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                prop_assert!(b.y > a.y || (b.y == a.y && b.x > a.x));
            }
        }
    }
}
