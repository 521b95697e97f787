//! The grid: everyone the same size, in join order.

use super::{even_floor, fit_16x9, TileRect};

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
    let (w, h) = fit_16x9(cell_w, cell_h);
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
