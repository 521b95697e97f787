//! CMAF / fragmented MP4 for HLS: the init segment (`ftyp` + `moov`) and one fragment
//! (`moof` + `mdat`) per partial segment, built from the origin's FLV payloads with
//! `mp4-atom`. Pure: configuration and samples in, bytes out.
//!
//! An FLV AVC payload already carries length-prefixed NAL units (the MP4 sample format) and
//! an FLV AAC payload a raw AAC frame, so samples are copied, never re-encoded.

use bytes::Bytes;
use mp4_atom::{
    esds, u24, Audio, Avc1, Avcc, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Mdat, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
/// Video clock: 90 kHz, so FLV's milliseconds convert exactly.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on nothing.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_depends_on = 1` and `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("malformed AVC decoder configuration record: {0}")]
    Avc(String),
    #[error("malformed AAC AudioSpecificConfig")]
    Aac,
}

/// H.264 codec configuration, from the FLV AVC sequence header.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    avcc: Avcc,
    pub width: u16,
    pub height: u16,
}

impl VideoConfig {
    /// `record` is an AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
    pub fn from_record(record: &[u8], width: u16, height: u16) -> Result<Self, ConfigError> {
        use mp4_atom::Atom;
        let mut body = record;
        let avcc = Avcc::decode_body(&mut body).map_err(|e| ConfigError::Avc(e.to_string()))?;
        if avcc.sequence_parameter_sets.is_empty() || avcc.length_size != 4 {
            return Err(ConfigError::Avc(
                "needs an SPS and 4-byte NAL lengths".to_string(),
            ));
        }
        Ok(Self {
            avcc,
            width,
            height,
        })
    }

    /// The RFC 6381 codec name, e.g. `avc1.64001f`.
    pub fn codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.avcc.avc_profile_indication,
            self.avcc.profile_compatibility,
            self.avcc.avc_level_indication
        )
    }
}

/// AAC codec configuration, from the FLV AAC sequence header.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    /// The AudioSpecificConfig as sent.
    asc: Vec<u8>,
    object_type: u8,
    freq_index: u8,
    pub channels: u8,
    pub sample_rate: u32,
}

/// ISO/IEC 14496-3 sampling frequency table.
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Samples per AAC frame (AAC-LC).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

impl AudioConfig {
    pub fn from_asc(asc: &[u8]) -> Result<Self, ConfigError> {
        let [first, second, ..] = *asc else {
            return Err(ConfigError::Aac);
        };
        let object_type = first >> 3;
        let freq_index = ((first & 0x07) << 1) | (second >> 7);
        let channels = (second >> 3) & 0x0f;
        // 15 (an explicit 24-bit rate) and escape object types are not what an encoder for
        // live streaming sends; refuse rather than guess the layout.
        let sample_rate = *AAC_RATES
            .get(usize::from(freq_index))
            .ok_or(ConfigError::Aac)?;
        if object_type == 0 || object_type == 31 || channels == 0 {
            return Err(ConfigError::Aac);
        }
        Ok(Self {
            asc: asc.to_vec(),
            object_type,
            freq_index,
            channels,
            sample_rate,
        })
    }

    /// The RFC 6381 codec name, e.g. `mp4a.40.2`.
    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// `ftyp` + `moov` describing the tracks present (video is track 1, audio track 2).
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = video {
        traks.push(video_trak(video));
        trex.push(track_defaults(VIDEO_TRACK));
    }
    if let Some(audio) = audio {
        traks.push(audio_trak(audio));
        trex.push(track_defaults(AUDIO_TRACK));
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Moov::default()
    };
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"cmfc"),
            FourCC::new(b"mp41"),
        ],
    };
    let mut out = Vec::with_capacity(1024);
    // Encoding a well-formed in-memory structure into a Vec cannot fail.
    ftyp.encode(&mut out).expect("ftyp encodes");
    moov.encode(&mut out).expect("moov encodes");
    Bytes::from(out)
}

fn track_defaults(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Trex::default()
    }
}

fn data_information() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn video_trak(video: &VideoConfig) -> Trak {
    Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: video.width.into(),
            height: video.height.into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"vide"),
                name: "costream video".to_string(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: data_information(),
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![Avc1 {
                            visual: Visual {
                                data_reference_index: 1,
                                width: video.width,
                                height: video.height,
                                ..Visual::default()
                            },
                            avcc: video.avcc.clone(),
                            ..Avc1::default()
                        }
                        .into()],
                    },
                    stco: Some(Stco::default()),
                    ..Stbl::default()
                },
                ..Minf::default()
            },
        },
        ..Trak::default()
    }
}

fn audio_trak(audio: &AudioConfig) -> Trak {
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            alternate_group: 1,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: audio.sample_rate,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"soun"),
                name: "costream audio".to_string(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: data_information(),
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![Mp4a {
                            audio: Audio {
                                data_reference_index: 1,
                                channel_count: audio.channels.into(),
                                sample_size: 16,
                                // 16.16 fixed point: rates above 65535 Hz do not fit, and the
                                // decoder takes the rate from the AudioSpecificConfig anyway.
                                sample_rate: (audio.sample_rate.min(u16::MAX.into()) as u16).into(),
                            },
                            esds: Esds {
                                es_desc: esds::EsDescriptor {
                                    es_id: AUDIO_TRACK as u16,
                                    dec_config: esds::DecoderConfig {
                                        // 0x40: MPEG-4 audio; stream type 5: audio.
                                        object_type_indication: 0x40,
                                        stream_type: 5,
                                        up_stream: 0,
                                        buffer_size_db: u24::default(),
                                        max_bitrate: 0,
                                        avg_bitrate: 0,
                                        dec_specific: Some(esds::DecoderSpecific {
                                            profile: audio.object_type,
                                            freq_index: audio.freq_index,
                                            chan_conf: audio.channels,
                                            raw: audio.asc.clone(),
                                        }),
                                    },
                                    ..esds::EsDescriptor::default()
                                },
                            },
                            btrt: None,
                            taic: None,
                        }
                        .into()],
                    },
                    stco: Some(Stco::default()),
                    ..Stbl::default()
                },
                ..Minf::default()
            },
        },
        ..Trak::default()
    }
}

/// One access unit: a video frame or an AAC frame, in its track's timescale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub data: Bytes,
    pub duration: u32,
    /// Presentation minus decode time (B-frames); 0 for audio.
    pub composition_offset: i32,
    pub sync: bool,
}

/// The samples of one track in one fragment, starting at `base_decode_time`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRun {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: Vec<Sample>,
}

/// `moof` + `mdat` holding every run (empty runs are left out).
pub fn fragment(sequence_number: u32, runs: &[TrackRun]) -> Bytes {
    let runs: Vec<&TrackRun> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: runs
            .iter()
            .map(|run| Traf {
                tfhd: Tfhd {
                    track_id: run.track_id,
                    default_base_is_moof: true,
                    ..Tfhd::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: run.base_decode_time,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    samples: run
                        .samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.data.len() as u32),
                            flags: Some(if s.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                            cts: Some(i64::from(s.composition_offset)),
                        })
                        .collect::<Vec<_>>()
                        .into(),
                }],
                ..Traf::default()
            })
            .collect(),
    };
    // The data offsets point from the start of the moof into the mdat; the moof's size does
    // not depend on their values, so measure it once and fill them in.
    let mut sized = Vec::new();
    moof.encode(&mut sized).expect("moof encodes");
    let mdat_header = 8;
    let mut offset = sized.len() + mdat_header;
    let mut payload = Vec::new();
    for (traf, run) in moof.traf.iter_mut().zip(&runs) {
        traf.trun[0].data_offset = Some(offset as i32);
        for sample in &run.samples {
            payload.extend_from_slice(&sample.data);
            offset += sample.data.len();
        }
    }
    let mut out = Vec::with_capacity(offset);
    moof.encode(&mut out).expect("moof encodes");
    Mdat { data: payload }
        .encode(&mut out)
        .expect("mdat encodes");
    Bytes::from(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};

    /// An AVCDecoderConfigurationRecord for High profile 3.1 with one SPS and one PPS.
    pub const RECORD: &[u8] = &[
        1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x1f, 0x01, 0x00, 0x02,
        0x68, 0xee,
    ];
    /// AAC-LC, 48 kHz, stereo.
    pub const ASC: &[u8] = &[0x11, 0x90];

    #[test]
    fn configurations_name_their_codecs() {
        let video = VideoConfig::from_record(RECORD, 1280, 720).unwrap();
        assert_eq!(video.codec(), "avc1.64001f");
        let audio = AudioConfig::from_asc(ASC).unwrap();
        assert_eq!(audio.codec(), "mp4a.40.2");
        assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
        assert!(VideoConfig::from_record(&RECORD[..5], 1, 1).is_err());
        assert!(AudioConfig::from_asc(&[0x11]).is_err());
        assert!(
            AudioConfig::from_asc(&[0x17, 0x90]).is_err(),
            "rate index 14"
        );
    }

    #[test]
    fn the_init_segment_decodes_back_to_its_tracks() {
        let video = VideoConfig::from_record(RECORD, 1280, 720).unwrap();
        let audio = AudioConfig::from_asc(ASC).unwrap();
        let init = init_segment(Some(&video), Some(&audio));
        let buf = &mut &init[..];
        assert!(matches!(Any::decode(buf).unwrap(), Any::Ftyp(_)));
        let Any::Moov(moov) = Any::decode(buf).unwrap() else {
            panic!("no moov")
        };
        assert!(buf.is_empty());
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, VIDEO_TIMESCALE);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, 48_000);
        assert_eq!(moov.mvex.unwrap().trex.len(), 2);
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_samples() {
        let video = TrackRun {
            track_id: VIDEO_TRACK,
            base_decode_time: 90_000,
            samples: vec![
                Sample {
                    data: Bytes::from_static(b"key-frame"),
                    duration: 3000,
                    composition_offset: 3000,
                    sync: true,
                },
                Sample {
                    data: Bytes::from_static(b"p"),
                    duration: 3000,
                    composition_offset: 0,
                    sync: false,
                },
            ],
        };
        let audio = TrackRun {
            track_id: AUDIO_TRACK,
            base_decode_time: 48_000,
            samples: vec![Sample {
                data: Bytes::from_static(b"aac"),
                duration: AAC_FRAME_SAMPLES,
                composition_offset: 0,
                sync: true,
            }],
        };
        let empty = TrackRun {
            track_id: 3,
            base_decode_time: 0,
            samples: vec![],
        };
        let bytes = fragment(7, &[video, audio, empty]);
        let buf = &mut &bytes[..];
        let Any::Moof(moof) = Any::decode(buf).unwrap() else {
            panic!("no moof")
        };
        assert_eq!(moof.mfhd.sequence_number, 7);
        assert_eq!(moof.traf.len(), 2, "the empty run is left out");
        let at = |traf: usize| moof.traf[traf].trun[0].data_offset.unwrap() as usize;
        assert_eq!(&bytes[at(0)..at(0) + 10], b"key-framep");
        assert_eq!(&bytes[at(1)..at(1) + 3], b"aac");
        assert_eq!(
            moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time,
            90_000
        );
        let Any::Mdat(mdat) = Any::decode(buf).unwrap() else {
            panic!("no mdat")
        };
        assert_eq!(mdat.data, b"key-framepaac");
    }
}
