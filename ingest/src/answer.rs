//! Repairs to the SDP answer webrtc-rs 0.17 produces when it rejects an m-section (a codec we
//! do not accept). Pure text transformation, applied only to our own answer.
//!
//! - webrtc-rs writes every ICE candidate into the *first* m-section. When that section is
//!   rejected (port 0), clients may ignore candidates there, so they move to the first
//!   accepted section (the BUNDLE transport).
//!
//! Rejected sections also lack `a=mid`. That is left alone on purpose: adding it makes
//! webrtc-rs publishers fail `set_remote_description` (ErrUnsupportedCodec while binding the
//! rejected sender), while without it they skip the section.

/// Returns the answer with the repairs above; unchanged when nothing is rejected.
pub(crate) fn repair_answer(answer: &str) -> String {
    let newline = if answer.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut session: Vec<&str> = Vec::new();
    let mut sections: Vec<Vec<String>> = Vec::new();
    for line in answer.split(newline).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            sections.push(vec![line.to_owned()]);
        } else if let Some(section) = sections.last_mut() {
            section.push(line.to_owned());
        } else {
            session.push(line);
        }
    }
    if !sections.iter().any(|s| is_rejected(s)) {
        return answer.to_owned();
    }

    let first_accepted = sections.iter().position(|s| !is_rejected(s));
    if let (Some(first), Some(target)) = (sections.first(), first_accepted) {
        if is_rejected(first) && target != 0 {
            let (moved, kept): (Vec<String>, Vec<String>) = sections[0]
                .drain(..)
                .partition(|l| l.starts_with("a=candidate:") || l == "a=end-of-candidates");
            sections[0] = kept;
            let target_section = &mut sections[target];
            let already: Vec<String> = target_section.clone();
            target_section.extend(moved.into_iter().filter(|l| !already.contains(l)));
        }
    }

    let mut out = String::with_capacity(answer.len() + 64);
    for line in session
        .iter()
        .copied()
        .chain(sections.iter().flatten().map(String::as_str))
    {
        out.push_str(line);
        out.push_str(newline);
    }
    out
}

fn is_rejected(section: &[String]) -> bool {
    section
        .first()
        .and_then(|m| m.split_whitespace().nth(1))
        .is_some_and(|port| port == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REJECTED_FIRST: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 1\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        a=end-of-candidates\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=rtpmap:96 VP8/90000\r\na=recvonly\r\n";

    #[test]
    fn candidates_move_from_a_rejected_first_section_to_the_bundle_section() {
        let fixed = repair_answer(REJECTED_FIRST);
        let (audio, video) = fixed.split_once("m=video").unwrap();
        assert!(!audio.contains("a=candidate"), "{fixed}");
        assert!(!audio.contains("a=end-of-candidates"), "{fixed}");
        assert_eq!(video.matches("a=candidate").count(), 2, "{fixed}");
        assert!(video.contains("a=end-of-candidates"));
        assert!(fixed.ends_with("\r\n"));
        // The result still parses.
        let mut cursor = std::io::Cursor::new(fixed.as_bytes());
        let parsed = webrtc::sdp::SessionDescription::unmarshal(&mut cursor).unwrap();
        assert_eq!(parsed.media_descriptions.len(), 2);
    }

    #[test]
    fn answers_without_rejected_sections_are_untouched() {
        let ok = REJECTED_FIRST.replace("m=audio 0 ", "m=audio 9 ");
        assert_eq!(repair_answer(&ok), ok);
    }

    #[test]
    fn all_rejected_keeps_candidates_where_they_are() {
        let all = REJECTED_FIRST.replace("m=video 9 ", "m=video 0 ");
        let fixed = repair_answer(&all);
        assert_eq!(fixed.matches("a=candidate").count(), 2);
    }
}
