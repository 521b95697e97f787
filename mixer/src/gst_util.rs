//! Small GStreamer helpers shared by the pipeline modules.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::error::MixerError;

/// Locks a mutex shared with pad probes, recovering it if a holder panicked: a probe runs on a
/// streaming thread, where a second panic would take the pipeline down.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates element `factory` named `name`; a missing plugin becomes a typed error naming it.
pub fn make(factory: &'static str, name: &str) -> Result<gst::Element, MixerError> {
    if gst::ElementFactory::find(factory).is_none() {
        return Err(MixerError::MissingElement { factory });
    }
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| MixerError::MissingElement { factory })
}

/// A capsfilter named `name` with `caps`.
pub fn capsfilter(name: &str, caps: gst::Caps) -> Result<gst::Element, MixerError> {
    let f = make("capsfilter", name)?;
    f.set_property("caps", caps);
    Ok(f)
}

/// Links a chain of elements in order.
pub fn link_chain(elements: &[&gst::Element]) -> Result<(), MixerError> {
    for pair in elements.windows(2) {
        pair[0].link(pair[1]).map_err(|_| MixerError::Link {
            from: pair[0].name().to_string(),
            to: pair[1].name().to_string(),
        })?;
    }
    Ok(())
}

/// Links `src`'s static "src" pad to an already requested aggregator/mux pad.
pub fn link_to_pad(src: &gst::Element, sinkpad: &gst::Pad) -> Result<(), MixerError> {
    let srcpad = src.static_pad("src").ok_or_else(|| MixerError::Link {
        from: src.name().to_string(),
        to: sinkpad.name().to_string(),
    })?;
    srcpad.link(sinkpad).map_err(|e| MixerError::Link {
        from: format!("{}: {e:?}", src.name()),
        to: sinkpad.name().to_string(),
    })?;
    Ok(())
}

/// Requests pad `template` (e.g. "sink_%u") of `element`.
pub fn request_pad(element: &gst::Element, template: &str) -> Result<gst::Pad, MixerError> {
    element
        .request_pad_simple(template)
        .ok_or_else(|| MixerError::Gst(format!("{}: no pad from {template}", element.name())))
}

/// Sets a whole pipeline's state and waits (bounded) for it, so a stuck element becomes an
/// error instead of a hang.
pub fn set_state_bounded(
    element: &gst::Element,
    state: gst::State,
    timeout: Duration,
) -> Result<(), MixerError> {
    let err = || MixerError::StateChange {
        element: element.name().to_string(),
        state: format!("{state:?}"),
    };
    let ret = element.set_state(state).map_err(|_| err())?;
    if ret == gst::StateChangeSuccess::Async {
        let (res, _, _) = element.state(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64));
        res.map_err(|_| err())?;
    }
    Ok(())
}

/// The upstream "GstForceKeyUnit" event encoders understand (what
/// `gst_video_event_new_upstream_force_key_unit` builds), without pulling in gstreamer-video.
pub fn force_key_unit_event() -> gst::Event {
    let s = gst::Structure::builder("GstForceKeyUnit")
        .field("all-headers", true)
        .field("count", 0u32)
        .build();
    gst::event::CustomUpstream::new(s)
}

/// Whether `event` is an upstream force-key-unit request.
pub fn is_force_key_unit(event: &gst::EventRef) -> bool {
    event.type_() == gst::EventType::CustomUpstream
        && event
            .structure()
            .is_some_and(|s| s.name() == "GstForceKeyUnit")
}

/// Names of `obj` and its ancestors, innermost first (for bus classification).
pub fn object_path(obj: &gst::Object) -> Vec<String> {
    let mut names = vec![obj.name().to_string()];
    let mut cur = obj.parent();
    while let Some(p) = cur {
        names.push(p.name().to_string());
        cur = p.parent();
    }
    names
}
