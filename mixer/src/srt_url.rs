//! Pure parsing of SRT output URLs: `srt://host:port?streamid=…&passphrase=…&latency=…`.
//!
//! The mixer pushes MPEG-TS to such a URL as an SRT caller. The query carries the settings
//! `srtsink` needs; they are handed to it as properties, never inside its `uri` (whose text
//! shows up in GStreamer's own messages), because `streamid` and `passphrase` are secrets like
//! an RTMP stream key. Unknown keys are refused rather than ignored: a misspelt `passphrase`
//! would otherwise send the stream unencrypted.

use std::fmt;

/// The SRT latency when the URL does not say (ms). SRT's own default is 120 ms; on the public
/// internet a few times the round trip is usual, so the URL may raise it up to [`MAX_LATENCY_MS`].
pub const DEFAULT_LATENCY_MS: u32 = 120;
/// Above this a "live" stream is no longer live; it is also SRT's practical ceiling.
pub const MAX_LATENCY_MS: u32 = 10_000;
/// libsrt accepts passphrases of 10 to 79 characters (`SRTO_PASSPHRASE`).
pub const PASSPHRASE_LEN: std::ops::RangeInclusive<usize> = 10..=79;
/// libsrt refuses stream ids longer than 512 bytes (`SRTO_STREAMID`).
pub const MAX_STREAMID_LEN: usize = 512;

/// The query keys an SRT output URL may carry.
pub const KNOWN_KEYS: [&str; 5] = ["streamid", "passphrase", "pbkeylen", "latency", "mode"];
/// Keys whose values are secrets: redacted wherever a URL is shown.
pub const SECRET_KEYS: [&str; 2] = ["streamid", "passphrase"];

/// A valid SRT output destination.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtTarget {
    /// Host name or IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// Receiver buffer latency, ms.
    pub latency_ms: u32,
    pub streamid: Option<String>,
    pub passphrase: Option<String>,
    /// AES key length in bytes (16, 24 or 32); `None`: libsrt's default (16 with a passphrase).
    pub pbkeylen: Option<u32>,
}

impl fmt::Debug for SrtTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("latency_ms", &self.latency_ms)
            .field("streamid", &self.streamid.as_ref().map(|_| "***"))
            .field("passphrase", &self.passphrase.as_ref().map(|_| "***"))
            .field("pbkeylen", &self.pbkeylen)
            .finish()
    }
}

impl SrtTarget {
    /// The `uri` for `srtsink`: host and port only, secrets go in as properties.
    pub fn sink_uri(&self) -> String {
        if self.host.contains(':') {
            format!("srt://[{}]:{}", self.host, self.port)
        } else {
            format!("srt://{}:{}", self.host, self.port)
        }
    }

    /// The secret values of this URL, for scrubbing them out of error texts.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.streamid
            .iter()
            .chain(&self.passphrase)
            .map(String::as_str)
    }
}

/// Why an SRT URL is refused; the message names the part to fix and never repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtUrlError {
    #[error("not a URL: {0}")]
    NotAUrl(url::ParseError),
    #[error("an SRT URL starts with srt://")]
    Scheme,
    #[error("the SRT URL has no host")]
    NoHost,
    #[error("the SRT URL needs a port (srt://host:port), SRT has no default port")]
    NoPort,
    #[error("an SRT URL has no user, password, path or fragment: only srt://host:port?query")]
    Extra,
    #[error(
        "unknown SRT URL parameter {key:?} (known: streamid, passphrase, pbkeylen, latency, mode)"
    )]
    UnknownKey { key: String },
    #[error("SRT URL parameter {key} is given twice")]
    Repeated { key: String },
    #[error("SRT latency must be a number of milliseconds from 0 to {MAX_LATENCY_MS}")]
    Latency,
    #[error("SRT passphrase must be 10 to 79 characters (it has {len})")]
    PassphraseLength { len: usize },
    #[error("SRT pbkeylen must be 16, 24 or 32")]
    KeyLength,
    #[error("SRT pbkeylen needs a passphrase")]
    KeyLengthWithoutPassphrase,
    #[error("SRT streamid must be 1 to 512 bytes")]
    StreamId,
    #[error("an SRT output connects as caller: mode may only be caller")]
    Mode,
}

/// Whether `raw` is meant as an SRT URL (whatever else is wrong with it).
pub fn is_srt(raw: &str) -> bool {
    raw.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("srt://"))
}

/// Parses and validates an SRT output URL.
pub fn parse_srt_url(raw: &str) -> Result<SrtTarget, SrtUrlError> {
    let url = url::Url::parse(raw).map_err(SrtUrlError::NotAUrl)?;
    if url.scheme() != "srt" {
        return Err(SrtUrlError::Scheme);
    }
    let host = match url.host() {
        Some(url::Host::Domain("")) | None => return Err(SrtUrlError::NoHost),
        Some(url::Host::Domain(name)) => name.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
    };
    let port = url.port().ok_or(SrtUrlError::NoPort)?;
    if port == 0 {
        return Err(SrtUrlError::NoPort);
    }
    let has_path = !matches!(url.path(), "" | "/");
    if !url.username().is_empty()
        || url.password().is_some()
        || has_path
        || url.fragment().is_some()
    {
        return Err(SrtUrlError::Extra);
    }
    let mut target = SrtTarget {
        host,
        port,
        latency_ms: DEFAULT_LATENCY_MS,
        streamid: None,
        passphrase: None,
        pbkeylen: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in url.query_pairs() {
        let key = key.into_owned();
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(SrtUrlError::UnknownKey { key });
        }
        if seen.contains(&key) {
            return Err(SrtUrlError::Repeated { key });
        }
        match key.as_str() {
            "latency" => {
                target.latency_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms <= MAX_LATENCY_MS)
                    .ok_or(SrtUrlError::Latency)?;
            }
            "passphrase" => {
                let len = value.chars().count();
                if !PASSPHRASE_LEN.contains(&len) {
                    return Err(SrtUrlError::PassphraseLength { len });
                }
                target.passphrase = Some(value.into_owned());
            }
            "streamid" => {
                if value.is_empty() || value.len() > MAX_STREAMID_LEN {
                    return Err(SrtUrlError::StreamId);
                }
                target.streamid = Some(value.into_owned());
            }
            "pbkeylen" => {
                target.pbkeylen = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| matches!(n, 16 | 24 | 32))
                        .ok_or(SrtUrlError::KeyLength)?,
                );
            }
            "mode" if value == "caller" => {}
            _ => return Err(SrtUrlError::Mode),
        }
        seen.push(key);
    }
    if target.pbkeylen.is_some() && target.passphrase.is_none() {
        return Err(SrtUrlError::KeyLengthWithoutPassphrase);
    }
    Ok(target)
}

/// `raw` with the values of [`SECRET_KEYS`] (and of any key not known) replaced by `***`, the
/// rest kept so a person can still tell outputs apart. `None` if `raw` is not a URL.
pub fn redact_srt_url(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let shown = KNOWN_KEYS.contains(&k.as_ref()) && !SECRET_KEYS.contains(&k.as_ref());
            let v = if shown { v.into_owned() } else { "***".into() };
            (k.into_owned(), v)
        })
        .collect();
    if url.query().is_some() {
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                let k: String = url::form_urlencoded::byte_serialize(k.as_bytes()).collect();
                let v = if v == "***" {
                    v.clone()
                } else {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
                };
                format!("{k}={v}")
            })
            .collect();
        url.set_query(Some(&query.join("&")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("***");
        let _ = url.set_password(None);
    }
    if !matches!(url.path(), "" | "/") {
        url.set_path("/***");
    }
    if url.fragment().is_some() {
        url.set_fragment(Some("***"));
    }
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_parses() {
        let t = parse_srt_url(
            "srt://ingest.example:9000?streamid=%23!::r=live/k,m=publish&passphrase=0123456789ab&pbkeylen=32&latency=400",
        )
        .unwrap();
        assert_eq!(t.host, "ingest.example");
        assert_eq!(t.port, 9000);
        assert_eq!(t.latency_ms, 400);
        assert_eq!(t.streamid.as_deref(), Some("#!::r=live/k,m=publish"));
        assert_eq!(t.passphrase.as_deref(), Some("0123456789ab"));
        assert_eq!(t.pbkeylen, Some(32));
        assert_eq!(t.sink_uri(), "srt://ingest.example:9000");
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("0123456789ab") && !dbg.contains("live/k"),
            "{dbg}"
        );
    }

    #[test]
    fn defaults_and_literal_hosts() {
        let t = parse_srt_url("srt://127.0.0.1:9000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.latency_ms),
            ("127.0.0.1", DEFAULT_LATENCY_MS)
        );
        assert_eq!(t.streamid, None);
        let t = parse_srt_url("srt://[::1]:9000/?mode=caller").unwrap();
        assert_eq!(t.sink_uri(), "srt://[::1]:9000");
        assert!(is_srt("SRT://x:1") && !is_srt("rtmp://x/a/k") && !is_srt("srt"));
    }

    #[test]
    fn bad_urls_are_refused_with_a_clear_reason() {
        let err = |u: &str| parse_srt_url(u).unwrap_err();
        assert_eq!(err("srt://host"), SrtUrlError::NoPort);
        assert_eq!(err("srt://host:0"), SrtUrlError::NoPort);
        assert!(matches!(err("srt://host:99999"), SrtUrlError::NotAUrl(_)));
        assert!(matches!(
            err("srt://:9000"),
            SrtUrlError::NotAUrl(_) | SrtUrlError::NoHost
        ));
        assert_eq!(err("rtmp://host:9000"), SrtUrlError::Scheme);
        assert_eq!(err("srt://host:9000/app"), SrtUrlError::Extra);
        assert_eq!(err("srt://u:p@host:9000"), SrtUrlError::Extra);
        assert_eq!(
            err("srt://host:9000?pasphrase=0123456789"),
            SrtUrlError::UnknownKey {
                key: "pasphrase".into()
            }
        );
        assert_eq!(
            err("srt://host:9000?latency=5&latency=6"),
            SrtUrlError::Repeated {
                key: "latency".into()
            }
        );
        assert_eq!(err("srt://host:9000?latency=-1"), SrtUrlError::Latency);
        assert_eq!(err("srt://host:9000?latency=10001"), SrtUrlError::Latency);
        assert_eq!(
            err("srt://host:9000?passphrase=short"),
            SrtUrlError::PassphraseLength { len: 5 }
        );
        let long = "x".repeat(80);
        assert_eq!(
            err(&format!("srt://host:9000?passphrase={long}")),
            SrtUrlError::PassphraseLength { len: 80 }
        );
        assert!(parse_srt_url(&format!("srt://host:9000?passphrase={}", &long[..79])).is_ok());
        assert_eq!(
            err("srt://host:9000?pbkeylen=20&passphrase=0123456789"),
            SrtUrlError::KeyLength
        );
        assert_eq!(
            err("srt://host:9000?pbkeylen=16"),
            SrtUrlError::KeyLengthWithoutPassphrase
        );
        assert_eq!(err("srt://host:9000?mode=listener"), SrtUrlError::Mode);
        assert_eq!(err("srt://host:9000?streamid="), SrtUrlError::StreamId);
        // A refusal never repeats the secret it refused.
        let msg = err("srt://host:9000?passphrase=hunter2").to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn redaction_hides_streamid_and_passphrase_only() {
        let shown = redact_srt_url(
            "srt://ingest.example:9000?streamid=SECRETID&passphrase=SECRETPASS&latency=300&pbkeylen=16",
        )
        .unwrap();
        assert_eq!(
            shown,
            "srt://ingest.example:9000?streamid=***&passphrase=***&latency=300&pbkeylen=16"
        );
        // Unknown keys (refused anyway) and odd parts are hidden too, should one get this far.
        let shown = redact_srt_url("srt://u:pw@h:1/path?token=SECRET#frag").unwrap();
        assert!(
            !shown.contains("SECRET") && !shown.contains("pw") && !shown.contains("path"),
            "{shown}"
        );
        assert_eq!(redact_srt_url("nonsense"), None);
    }
}
