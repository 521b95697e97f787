//! Log hygiene: SDP carries ICE passwords and DTLS fingerprints, which must never reach logs
//! in full. Pure string functions, tested below.

/// Returns the SDP with `a=ice-pwd` values removed and fingerprints shortened, for trace logs.
pub(crate) fn redact_sdp(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(_pwd) = line.strip_prefix("a=ice-pwd:") {
            out.push_str("a=ice-pwd:<redacted>");
        } else if let Some(value) = line.strip_prefix("a=fingerprint:") {
            out.push_str("a=fingerprint:");
            out.push_str(&shorten(value, 16));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The first `keep` characters and a marker; enough to correlate, useless to an attacker.
pub(crate) fn shorten(value: &str, keep: usize) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(keep).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_fingerprints_do_not_survive() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:supersecretpassword123\r\n\
                   a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n";
        let red = redact_sdp(sdp);
        assert!(!red.contains("supersecretpassword123"));
        assert!(!red.contains("AB:CD:EF:01:23:45:67:89:AB:CD"));
        assert!(red.contains("a=ice-ufrag:abcd"));
        assert!(red.contains("a=ice-pwd:<redacted>"));
    }

    #[test]
    fn shorten_keeps_short_values() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdefgh", 3), "abc…");
    }
}
