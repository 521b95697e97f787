use proptest::prelude::*;

use super::*;

const IDS: [&str; 16] = [
    "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p12", "p13", "p14",
    "p15",
];

fn rect(x: u32, y: u32, width: u32, height: u32) -> TileRect {
    TileRect {
        x,
        y,
        width,
        height,
    }
}

fn shown(v: &[Option<Placement>]) -> Vec<Placement> {
    v.iter().flatten().copied().collect()
}

#[test]
fn speaker_puts_the_featured_participant_large_above_a_strip() {
    let ids = ["host", "g1", "g2", "g3"];
    let got = place(
        1280,
        720,
        &ids,
        &LayoutSpec::Speaker { pin: None },
        Some("g2"),
    );
    // Stage 1280x576 → 1024x576 centred; strip 144 high with 256x144 thumbnails.
    assert_eq!(got[2].unwrap().rect, rect(128, 0, 1024, 576));
    assert_eq!(got[0].unwrap().rect, rect(256, 576, 256, 144));
    assert_eq!(got[1].unwrap().rect, rect(512, 576, 256, 144));
    assert_eq!(got[3].unwrap().rect, rect(768, 576, 256, 144));
}

#[test]
fn pin_beats_the_active_speaker_and_unknown_ids_fall_back_to_the_first() {
    let ids = ["host", "g1", "g2"];
    let spec = LayoutSpec::Speaker {
        pin: Some("g1".into()),
    };
    let got = place(1280, 720, &ids, &spec, Some("g2"));
    assert_eq!(got[1].unwrap().rect.width, 1024);
    let spec = LayoutSpec::Speaker {
        pin: Some("gone".into()),
    };
    let got = place(1280, 720, &ids, &spec, Some("nobody"));
    assert_eq!(got[0].unwrap().rect.width, 1024);
}

#[test]
fn pip_main_fills_the_canvas_with_small_tiles_on_top_bottom_right() {
    let ids = ["host", "g1", "g2", "g3"];
    let got = place(1280, 720, &ids, &LayoutSpec::Pip { pin: None }, None);
    assert_eq!(
        got[0].unwrap(),
        Placement {
            rect: rect(0, 0, 1280, 720),
            z: 1
        }
    );
    // 320x180 tiles, 24 px margins, right to left.
    assert_eq!(
        got[1].unwrap(),
        Placement {
            rect: rect(936, 516, 320, 180),
            z: 2
        }
    );
    assert_eq!(got[2].unwrap().rect, rect(592, 516, 320, 180));
    assert_eq!(got[3].unwrap().rect, rect(248, 516, 320, 180));
}

#[test]
fn custom_places_listed_participants_and_hides_the_rest() {
    let tiles = vec![
        CustomTile {
            participant_id: "b".into(),
            x: 0.5,
            y: 0.0,
            width: 0.5,
            height: 0.5,
            z: 3,
        },
        CustomTile {
            participant_id: "a".into(),
            x: 0.0,
            y: 0.0,
            width: 1.0,
            height: 1.0,
            z: 0,
        },
    ];
    let got = place(
        1280,
        720,
        &["a", "b", "c"],
        &LayoutSpec::Custom { tiles },
        None,
    );
    assert_eq!(
        got[0],
        Some(Placement {
            rect: rect(0, 0, 1280, 720),
            z: 0
        })
    );
    assert_eq!(
        got[1],
        Some(Placement {
            rect: rect(640, 0, 640, 360),
            z: 3
        })
    );
    assert_eq!(got[2], None);
}

#[test]
fn validation_names_the_field() {
    let tile = |x: f64, width: f64| CustomTile {
        participant_id: "a".into(),
        x,
        y: 0.0,
        width,
        height: 0.5,
        z: 0,
    };
    let bad = |tiles: Vec<CustomTile>| LayoutSpec::Custom { tiles }.validate().unwrap_err();
    assert!(bad(vec![tile(1.5, 0.1)]).contains("layout.tiles[0].x"));
    assert!(bad(vec![tile(0.0, 0.0)]).contains("layout.tiles[0].width"));
    assert!(bad(vec![tile(0.0, f64::NAN)]).contains("layout.tiles[0].width"));
    assert!(bad(vec![tile(0.6, 0.6)]).contains("past the canvas"));
    assert!(bad(vec![tile(0.0, 0.5), tile(0.5, 0.5)]).contains("appears twice"));
    assert!(LayoutSpec::Custom {
        tiles: vec![tile(0.1, 0.9)]
    }
    .validate()
    .is_ok());
    let pin = LayoutSpec::Pip {
        pin: Some(String::new()),
    };
    assert!(pin.validate().unwrap_err().contains("layout.pin"));
}

#[test]
fn spec_json_is_tagged_by_type() {
    let spec: LayoutSpec = serde_json::from_str(r#"{"type":"speaker","pin":"p1"}"#).unwrap();
    assert_eq!(
        spec,
        LayoutSpec::Speaker {
            pin: Some("p1".into())
        }
    );
    assert_eq!(
        serde_json::from_str::<LayoutSpec>(r#"{"type":"grid"}"#).unwrap(),
        LayoutSpec::Grid {}
    );
    assert!(serde_json::from_str::<LayoutSpec>(r#"{"type":"mosaic"}"#).is_err());
    assert!(serde_json::from_str::<LayoutSpec>(r#"{"type":"grid","pin":"x"}"#).is_err());
}

fn canvas() -> impl Strategy<Value = (u32, u32)> {
    (160u32..3840, 120u32..2160).prop_map(|(w, h)| (w & !1, h & !1))
}

fn assert_inside_and_even(t: &TileRect, w: u32, h: u32) -> Result<(), TestCaseError> {
    prop_assert!(
        t.x + t.width <= w && t.y + t.height <= h,
        "{t:?} outside {w}x{h}"
    );
    prop_assert!(t.x % 2 == 0 && t.y % 2 == 0 && t.width % 2 == 0 && t.height % 2 == 0);
    prop_assert!(t.width >= 2 && t.height >= 2, "{t:?} too small");
    Ok(())
}

proptest! {
    #[test]
    fn speaker_tiles_fit_do_not_overlap_and_the_main_is_largest(
        (w, h) in canvas(), n in 1usize..16, main_pick in 0usize..16,
    ) {
        let ids = &IDS[..n];
        let speaker = ids[main_pick % n];
        let got = place(w, h, ids, &LayoutSpec::Speaker { pin: None }, Some(speaker));
        prop_assert_eq!(got.len(), n);
        let tiles = shown(&got);
        prop_assert_eq!(tiles.len(), n);
        for (i, t) in tiles.iter().enumerate() {
            assert_inside_and_even(&t.rect, w, h)?;
            for u in &tiles[i + 1..] {
                prop_assert!(!t.rect.overlaps(&u.rect), "{t:?} overlaps {u:?}");
            }
        }
        let main = got[main_pick % n].unwrap().rect;
        prop_assert!(tiles.iter().all(|t| t.rect.area() <= main.area()));
    }

    #[test]
    fn pip_small_tiles_fit_sit_on_top_and_do_not_overlap_each_other(
        (w, h) in canvas(), n in 1usize..16,
    ) {
        let got = shown(&place(w, h, &IDS[..n], &LayoutSpec::Pip { pin: None }, None));
        prop_assert_eq!(got.len(), n);
        let main = got[0];
        prop_assert_eq!(main.rect, TileRect { x: 0, y: 0, width: w, height: h });
        let small = &got[1..];
        for (i, t) in small.iter().enumerate() {
            assert_inside_and_even(&t.rect, w, h)?;
            prop_assert!(t.z > main.z);
            prop_assert!(t.rect.area() * 4 <= main.rect.area());
            for u in &small[i + 1..] {
                prop_assert!(!t.rect.overlaps(&u.rect), "{t:?} overlaps {u:?}");
            }
        }
    }

    #[test]
    fn custom_rects_always_stay_inside_the_canvas(
        (w, h) in canvas(),
        x in 0.0f64..=1.0, y in 0.0f64..=1.0, tw in 0.001f64..=1.0, th in 0.001f64..=1.0,
    ) {
        let tiles = vec![CustomTile { participant_id: "p0".into(), x, y, width: tw, height: th, z: 0 }];
        // Even specs that fail validation must never produce an out-of-canvas rect.
        let got = place(w, h, &IDS[..2], &LayoutSpec::Custom { tiles }, None);
        assert_inside_and_even(&got[0].unwrap().rect, w, h)?;
        prop_assert!(got[1].is_none());
    }

    #[test]
    fn every_layout_is_stable_for_the_same_input(
        (w, h) in canvas(), n in 0usize..16, kind in 0usize..3,
    ) {
        let spec = match kind {
            0 => LayoutSpec::Grid {},
            1 => LayoutSpec::Speaker { pin: None },
            _ => LayoutSpec::Pip { pin: None },
        };
        let a = place(w, h, &IDS[..n], &spec, None);
        prop_assert_eq!(a.len(), n);
        prop_assert_eq!(a, place(w, h, &IDS[..n], &spec, None));
    }
}
