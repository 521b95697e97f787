//! Pure bus-message classification: which part of the pipeline an error came from decides what
//! to do about it. An output's error must never take the room down; an input's error drops only
//! that input; anything in the shared core (mixers, encoders, muxer) is fatal.
//!
//! Element names carry the owner: `out{n}-…` belongs to output branch `n`, `in{n}-…` to input
//! `n`, `rec{n}-…` to recording `n` (a serial number, not the caller's id, so ids never need escaping into element names).

/// Who owns a pipeline element, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Output(usize),
    Input(u64),
    /// A recording branch (see `recording`).
    Recording(usize),
    /// A still picture (slate, label, logo) of the room's look.
    Look(u64),
    Core,
}

/// What to do about an ERROR message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Reset or fail that output branch; the rest keeps running.
    Output(usize),
    /// Fail that recording alone; the broadcast keeps running.
    Recording(usize),
    /// Remove that input; the rest keeps running.
    DropInput(u64),
    /// Remove that still picture; the rest keeps running.
    DropLook(u64),
    /// Report Fatal and exit.
    Fatal,
}

/// Element name for part `part` of output branch `n`.
pub fn output_element(n: usize, part: &str) -> String {
    format!("out{n}-{part}")
}

/// Element name for part `part` of recording branch `n`.
pub fn recording_element(n: usize, part: &str) -> String {
    format!("rec{n}-{part}")
}

/// Element name for part `part` of input `n`.
pub fn input_element(n: u64, part: &str) -> String {
    format!("in{n}-{part}")
}

/// Element name for part `part` of still picture `n` (see `stills`).
pub fn look_element(n: u64, part: &str) -> String {
    format!("look{n}-{part}")
}

/// Parses the owner out of one element name.
pub fn owner_of(name: &str) -> Owner {
    let parse = |prefix: &str| -> Option<u64> {
        let rest = name.strip_prefix(prefix)?;
        let (num, _) = rest.split_once('-')?;
        num.parse().ok()
    };
    if let Some(n) = parse("out") {
        return Owner::Output(n as usize);
    }
    if let Some(n) = parse("rec") {
        return Owner::Recording(n as usize);
    }
    if let Some(n) = parse("in") {
        return Owner::Input(n);
    }
    if let Some(n) = parse("look") {
        return Owner::Look(n);
    }
    Owner::Core
}

/// Classifies an ERROR from the object named `path[0]`, whose parents are `path[1..]`: the
/// innermost name that belongs to a branch wins (errors can come from a bin's internals).
pub fn classify_error(path: &[&str]) -> ErrorAction {
    for name in path {
        match owner_of(name) {
            Owner::Output(n) => return ErrorAction::Output(n),
            Owner::Recording(n) => return ErrorAction::Recording(n),
            Owner::Input(n) => return ErrorAction::DropInput(n),
            Owner::Look(n) => return ErrorAction::DropLook(n),
            Owner::Core => {}
        }
    }
    ErrorAction::Fatal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(owner_of(&output_element(3, "sink")), Owner::Output(3));
        assert_eq!(owner_of(&input_element(17, "depay")), Owner::Input(17));
        assert_eq!(owner_of(&look_element(5, "dec")), Owner::Look(5));
        assert_eq!(owner_of(&recording_element(2, "sink")), Owner::Recording(2));
        assert_eq!(owner_of("compositor"), Owner::Core);
        assert_eq!(owner_of("outX-sink"), Owner::Core);
        assert_eq!(owner_of("input"), Owner::Core);
    }

    #[test]
    fn sink_error_retries_output_input_error_drops_input_core_is_fatal() {
        assert_eq!(
            classify_error(&["out1-sink", "mixer"]),
            ErrorAction::Output(1)
        );
        assert_eq!(
            classify_error(&["in4-dec", "mixer"]),
            ErrorAction::DropInput(4)
        );
        assert_eq!(
            classify_error(&["look3-dec", "mixer"]),
            ErrorAction::DropLook(3)
        );
        assert_eq!(
            classify_error(&["rec0-sink", "mixer"]),
            ErrorAction::Recording(0)
        );
        assert_eq!(classify_error(&["x264", "mixer"]), ErrorAction::Fatal);
        assert_eq!(
            classify_error(&["internal", "in2-bin", "mixer"]),
            ErrorAction::DropInput(2)
        );
        assert_eq!(classify_error(&[]), ErrorAction::Fatal);
    }
}
