use super::*;

/// A minimal WebRTC-style offer with the given media sections (each a block of lines after
/// its m= line).
fn offer(sections: &[(&str, &str, &[&str])]) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\n",
    );
    for (mid, (media, formats, lines)) in sections.iter().enumerate() {
        sdp.push_str(&format!(
            "m={media} 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n\
             a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
             a=setup:actpass\r\na=rtcp-mux\r\n"
        ));
        for line in lines.iter() {
            sdp.push_str(line);
            sdp.push_str("\r\n");
        }
    }
    sdp
}

fn check(sdp: &str) -> Result<OfferSummary, IngestError> {
    check_offer(&parse_sdp(sdp)?)
}

#[test]
fn browser_style_vp8_and_opus_is_accepted() {
    let sdp = offer(&[
        (
            "audio",
            "111 0",
            &[
                "a=sendonly",
                "a=rtpmap:111 opus/48000/2",
                "a=fmtp:111 minptime=10;useinbandfec=1",
            ],
        ),
        (
            "video",
            "96 97 98",
            &[
                "a=sendonly",
                "a=rtpmap:96 VP8/90000",
                "a=rtpmap:97 rtx/90000",
                "a=fmtp:97 apt=96",
                "a=rtpmap:98 VP9/90000",
            ],
        ),
    ]);
    let summary = check(&sdp).unwrap();
    assert_eq!(summary.accepted, vec![CodecName::Opus, CodecName::Vp8]);
}

#[test]
fn h264_needs_packetization_mode_1() {
    let mode1 = offer(&[(
        "video",
        "102",
        &[
            "a=sendonly",
            "a=rtpmap:102 H264/90000",
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f",
        ],
    )]);
    assert_eq!(check(&mode1).unwrap().accepted, vec![CodecName::H264]);

    let mode0 = offer(&[(
        "video",
        "102",
        &[
            "a=sendonly",
            "a=rtpmap:102 H264/90000",
            "a=fmtp:102 profile-level-id=42e01f",
        ],
    )]);
    match check(&mode0) {
        Err(IngestError::UnsupportedCodec(message)) => {
            assert!(message.contains("packetization-mode=0"), "{message}")
        }
        other => panic!("expected UnsupportedCodec, got {other:?}"),
    }
}

#[test]
fn only_unsupported_video_is_rejected_with_the_offered_codecs_named() {
    let sdp = offer(&[(
        "video",
        "98 45",
        &[
            "a=sendonly",
            "a=rtpmap:98 VP9/90000",
            "a=rtpmap:45 AV1/90000",
        ],
    )]);
    match check(&sdp) {
        Err(IngestError::UnsupportedCodec(message)) => {
            assert!(message.contains("VP9/90000"), "{message}");
            assert!(message.contains("AV1/90000"), "{message}");
            let display = IngestError::UnsupportedCodec(message).to_string();
            assert!(display.contains("VP8"), "{display}");
        }
        other => panic!("expected UnsupportedCodec, got {other:?}"),
    }
}

#[test]
fn unsupported_section_next_to_a_good_one_is_tolerated() {
    let sdp = offer(&[
        ("audio", "0", &["a=sendonly", "a=rtpmap:0 PCMU/8000"]),
        ("video", "96", &["a=sendonly", "a=rtpmap:96 VP8/90000"]),
    ]);
    let summary = check(&sdp).unwrap();
    assert_eq!(summary.accepted, vec![CodecName::Vp8]);
    assert_eq!(summary.ignored.len(), 1);
    assert!(summary.ignored[0].contains("PCMU"));
}

#[test]
fn no_media_sections_is_no_media() {
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    assert!(matches!(check(sdp), Err(IngestError::NoMedia)));
    let data_only = offer(&[("application", "webrtc-datachannel", &[])]);
    assert!(matches!(check(&data_only), Err(IngestError::NoMedia)));
}

#[test]
fn receive_only_offers_are_explained() {
    let sdp = offer(&[("video", "96", &["a=recvonly", "a=rtpmap:96 VP8/90000"])]);
    match check(&sdp) {
        Err(IngestError::InvalidSdp(message)) => assert!(message.contains("recvonly"), "{message}"),
        other => panic!("expected InvalidSdp, got {other:?}"),
    }
}

#[test]
fn garbage_is_invalid_sdp_not_a_panic() {
    let inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   \r\n".to_vec(),
        b"hello".to_vec(),
        b"v=0".to_vec(),
        b"v=0\r\nm=video".to_vec(),
        b"v=0\r\no=\r\ns=\r\nm=video x y z\r\n".to_vec(),
        b"v=0\r\na=rtpmap:\r\nm=\r\n".to_vec(),
        (0u8..=255).collect(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    ];
    for input in inputs {
        let text = String::from_utf8_lossy(&input);
        match check(&text) {
            Err(IngestError::InvalidSdp(_)) | Err(IngestError::NoMedia) => {}
            other => panic!("{text:?} gave {other:?}"),
        }
    }
}

#[test]
fn codec_names_from_mime_types() {
    assert_eq!(CodecName::from_mime("video/VP8"), Some(CodecName::Vp8));
    assert_eq!(CodecName::from_mime("video/h264"), Some(CodecName::H264));
    assert_eq!(CodecName::from_mime("audio/opus"), Some(CodecName::Opus));
    assert_eq!(CodecName::from_mime("video/VP9"), None);
    assert_eq!(CodecName::from_mime("garbage"), None);
    assert_eq!(CodecName::Opus.clock_rate(), 48_000);
    assert_eq!(CodecName::H264.kind(), MediaKind::Video);
}

#[test]
fn media_engine_accepts_our_registrations() {
    let mut engine = MediaEngine::default();
    register_codecs(&mut engine).unwrap();
}
