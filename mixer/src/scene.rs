//! Everything on the canvas that is not a participant's camera: the background colour, a slate
//! for each participant without video, the "starting soon" slate while nobody is in the room,
//! name labels and the logo. The mixer hands it each relayout's tiles; it keeps the still
//! branches in step (creating and removing them) and returns their placements, which join the
//! cameras' in the same between-frames batch.

use std::collections::HashMap;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::control::VideoSpec;
use crate::error::MixerError;
use crate::layout::{Placement, TileRect};
use crate::looks::{
    label_placement, label_size, logo_placement, slate_size, tile_z, truncate, Look, LABEL_ARGB,
    MAX_TEXT_CHARS, SLATE_ARGB,
};
use crate::stills::{Still, StillKind};

/// One participant as the layout sees it.
pub struct Seat<'a> {
    pub participant_id: &'a str,
    pub display_name: &'a str,
    /// The compositor pad of its camera; `None` = audio only (or its video ended): a slate.
    pub video: Option<gst::Pad>,
    /// Its tile, `None` = not shown.
    pub tile: Option<Placement>,
}

/// A batch entry: a pad and where it goes (`None` = hidden).
pub type PadPlacement = (gst::Pad, Option<Placement>);

pub struct Scene {
    pipeline: gst::Pipeline,
    compositor: gst::Element,
    video: VideoSpec,
    look: Look,
    next_serial: u64,
    /// While nobody is in the room; rebuilt when the title changes.
    idle: Option<Still>,
    /// Per participant without video: its slate and the name it shows.
    slates: HashMap<String, (Still, String)>,
    /// Per labelled participant: its label and the name it shows.
    labels: HashMap<String, (Still, String)>,
    logo: Option<Still>,
}

impl Scene {
    /// Sets up the default look (black, no labels, no logo) with the idle slate showing.
    pub fn new(
        pipeline: &gst::Pipeline,
        compositor: &gst::Element,
        video: VideoSpec,
    ) -> Result<Scene, MixerError> {
        let mut scene = Scene {
            pipeline: pipeline.clone(),
            compositor: compositor.clone(),
            video,
            look: Look::default(),
            next_serial: 0,
            idle: None,
            slates: HashMap::new(),
            labels: HashMap::new(),
            logo: None,
        };
        scene.idle = Some(scene.text_still(&Look::default().idle_text(), false)?);
        Ok(scene)
    }

    /// Switches to `look` (already validated). The caller relayouts afterwards so labels and the
    /// logo get placed on the next frame.
    pub fn set_look(&mut self, look: Look) -> Result<(), MixerError> {
        if look.background_argb() != self.look.background_argb() {
            if let Some(bg) = self.pipeline.by_name("bg-video") {
                set_background_colour(&bg, look.background_argb());
            }
        }
        if look.idle_text() != self.look.idle_text() {
            let fresh = self.text_still(&look.idle_text(), false)?;
            if let Some(old) = self.idle.replace(fresh) {
                old.remove(&self.pipeline);
            }
        }
        if look.logo != self.look.logo {
            if let Some(old) = self.logo.take() {
                old.remove(&self.pipeline);
            }
            if let Some(uri) = &look.logo {
                let serial = self.serial();
                self.logo = Some(Still::start(
                    &self.pipeline,
                    &self.compositor,
                    serial,
                    self.video.fps,
                    StillKind::Png { uri },
                )?);
            }
        }
        if !look.labels {
            for (_, (still, _)) in self.labels.drain() {
                still.remove(&self.pipeline);
            }
        }
        self.look = look;
        Ok(())
    }

    /// Given every participant (join order) with its tile, makes sure the right stills exist and
    /// returns where every pad goes: cameras, slates, labels, the idle slate and the logo.
    pub fn arrange(&mut self, seats: &[Seat<'_>]) -> Vec<PadPlacement> {
        let (cw, ch) = (self.video.width, self.video.height);
        let mut batch = Vec::new();
        // Slates: exactly the participants without video.
        let wanted: Vec<&Seat> = seats.iter().filter(|s| s.video.is_none()).collect();
        self.retain(Kind::Slate, |id, name| {
            wanted
                .iter()
                .any(|s| s.participant_id == id && slate_text(s.display_name) == name)
        });
        for seat in seats {
            let tile = seat.tile.map(|p| Placement {
                rect: p.rect,
                z: tile_z(p.z),
            });
            let pad = match &seat.video {
                Some(pad) => Some(pad.clone()),
                None => self.still_pad(Kind::Slate, seat),
            };
            if let Some(pad) = pad {
                batch.push((pad, tile));
            }
        }
        // Labels: participants with a name, when the look wants them.
        let labels_on = self.look.labels;
        let labelled = move |s: &&Seat| labels_on && !label_text(s.display_name).is_empty();
        let wanted: Vec<(String, String)> = seats
            .iter()
            .filter(labelled)
            .map(|s| (s.participant_id.to_string(), label_text(s.display_name)))
            .collect();
        self.retain(Kind::Label, |id, name| {
            wanted.iter().any(|(i, n)| i == id && n == name)
        });
        for seat in seats.iter().filter(labelled) {
            let place = seat.tile.and_then(|t| label_placement(&t, cw, ch));
            if let Some(pad) = self.still_pad(Kind::Label, seat) {
                batch.push((pad, place));
            }
        }
        if let Some(idle) = &self.idle {
            let full = Placement {
                rect: TileRect {
                    x: 0,
                    y: 0,
                    width: cw,
                    height: ch,
                },
                z: 0,
            };
            batch.push((idle.pad().clone(), seats.is_empty().then_some(full)));
        }
        if let Some(logo) = &self.logo {
            batch.push((logo.pad().clone(), Some(logo_placement(cw, ch))));
        }
        batch
    }

    /// The compositor pad of the "starting soon" slate.
    #[cfg(test)]
    pub fn idle_pad(&self) -> Option<&gst::Pad> {
        self.idle.as_ref().map(Still::pad)
    }

    /// A still's branch failed (bus error): take it out; the rest of the picture goes on.
    pub fn drop_serial(&mut self, serial: u64) -> bool {
        let pipeline = self.pipeline.clone();
        if self.logo.as_ref().is_some_and(|s| s.serial == serial) {
            if let Some(still) = self.logo.take() {
                still.remove(&pipeline);
            }
            return true;
        }
        if self.idle.as_ref().is_some_and(|s| s.serial == serial) {
            if let Some(still) = self.idle.take() {
                still.remove(&pipeline);
            }
            return true;
        }
        for map in [&mut self.slates, &mut self.labels] {
            if let Some(id) = map
                .iter()
                .find(|(_, (s, _))| s.serial == serial)
                .map(|(id, _)| id.clone())
            {
                if let Some((s, _)) = map.remove(&id) {
                    s.remove(&pipeline);
                }
                return true;
            }
        }
        false
    }

    /// Takes every still out, before the final EOS: an imagefreeze never ends by itself, and
    /// the compositor (so the RTMP unpublish) would wait for it.
    pub fn clear(&mut self) {
        let pipeline = self.pipeline.clone();
        let stills = self
            .idle
            .take()
            .into_iter()
            .chain(self.logo.take())
            .chain(self.slates.drain().map(|(_, (s, _))| s))
            .chain(self.labels.drain().map(|(_, (s, _))| s));
        for still in stills {
            still.remove(&pipeline);
        }
    }

    /// The participant's slate or label pad, made on first use (None if it cannot be made: the
    /// tile just goes without it).
    fn still_pad(&mut self, kind: Kind, seat: &Seat<'_>) -> Option<gst::Pad> {
        if !self.stills(kind).contains_key(seat.participant_id) {
            let made = match kind {
                Kind::Slate => {
                    let text = slate_text(seat.display_name);
                    self.text_still(&text, false).map(|still| (still, text))
                }
                Kind::Label => {
                    let text = label_text(seat.display_name);
                    self.label_still(&text).map(|still| (still, text))
                }
            };
            match made {
                Ok(entry) => {
                    self.stills(kind)
                        .insert(seat.participant_id.to_string(), entry);
                }
                Err(e) => {
                    tracing::warn!(participant = %seat.participant_id, error = %e, still = ?kind, "no still");
                    return None;
                }
            }
        }
        self.stills(kind)
            .get(seat.participant_id)
            .map(|(s, _)| s.pad().clone())
    }

    fn stills(&mut self, kind: Kind) -> &mut HashMap<String, (Still, String)> {
        match kind {
            Kind::Slate => &mut self.slates,
            Kind::Label => &mut self.labels,
        }
    }

    fn retain(&mut self, kind: Kind, keep: impl Fn(&str, &str) -> bool) {
        let pipeline = self.pipeline.clone();
        let map = self.stills(kind);
        let gone: Vec<String> = map
            .iter()
            .filter(|(id, (_, text))| !keep(id, text))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some((still, _)) = map.remove(&id) {
                still.remove(&pipeline);
            }
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    fn text_still(&mut self, text: &str, left: bool) -> Result<Still, MixerError> {
        let (width, height) = slate_size(self.video.width, self.video.height);
        let serial = self.serial();
        Still::start(
            &self.pipeline,
            &self.compositor,
            serial,
            self.video.fps,
            StillKind::Text {
                text,
                argb: SLATE_ARGB,
                width,
                height,
                font_px: (height / 9).max(8),
                left,
            },
        )
    }

    fn label_still(&mut self, text: &str) -> Result<Still, MixerError> {
        let (width, height) = label_size(self.video.width, self.video.height);
        let serial = self.serial();
        Still::start(
            &self.pipeline,
            &self.compositor,
            serial,
            self.video.fps,
            StillKind::Text {
                text,
                argb: LABEL_ARGB,
                width,
                height,
                font_px: (height * 7 / 10).max(8),
                left: true,
            },
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Slate,
    Label,
}

fn slate_text(display_name: &str) -> String {
    let name = truncate(display_name.trim(), MAX_TEXT_CHARS);
    if name.is_empty() {
        "Guest".into()
    } else {
        name
    }
}

fn label_text(display_name: &str) -> String {
    truncate(display_name.trim(), MAX_TEXT_CHARS)
}

/// Changes the live background's colour from inside its own streaming thread. videotestsrc
/// (1.22) drops its cached solid-colour frame in `set_property` without a lock while its
/// streaming thread may be copying from it; that race crashed mixers at start (GST_IS_BUFFER
/// criticals on `bg-video`, then a segfault or an "internal data stream error"). Taking the src
/// pad's stream lock instead starved: the source's task re-takes it at once after every frame.
/// A one-shot probe sets the colour between two frames, so the next frame has it.
fn set_background_colour(bg: &gst::Element, argb: u32) {
    let Some(pad) = bg.static_pad("src") else {
        return;
    };
    let source = bg.downgrade();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        if let Some(bg) = source.upgrade() {
            bg.set_property("foreground-color", argb);
        }
        gst::PadProbeReturn::Remove
    });
}
