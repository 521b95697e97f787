//! Cutting a torn last fragment off a fragmented MP4 whose writer died (pure over any
//! `Read + Seek`, plus the one call that truncates a file).
//!
//! A mixer killed mid-write leaves its file ending inside a box: players then report errors at
//! the end (and some refuse the file). The top-level boxes of a fragmented MP4 are `ftyp`,
//! `moov`, then `moof` + `mdat` pairs; keeping every whole box, less a `moof` whose `mdat` never
//! made it, leaves a file that plays to its last whole fragment without a single error.
//! Written by hand because it is eight bytes per box: the MP4 crates parse far more than this
//! needs and none truncates.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The length of the playable prefix of the fragmented MP4 in `file` (`len` bytes long).
pub fn playable_len(file: &mut (impl Read + Seek), len: u64) -> io::Result<u64> {
    let mut pos = 0u64;
    let mut keep = 0u64;
    loop {
        if len - pos < 8 {
            return Ok(keep);
        }
        file.seek(SeekFrom::Start(pos))?;
        let mut header = [0u8; 8];
        file.read_exact(&mut header)?;
        let size32 = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        let kind = &header[4..8];
        let size = match size32 {
            // The box runs to the end of the file: whole by definition.
            0 => len - pos,
            1 => {
                if len - pos < 16 {
                    return Ok(keep);
                }
                let mut large = [0u8; 8];
                file.read_exact(&mut large)?;
                u64::from_be_bytes(large)
            }
            n => u64::from(n),
        };
        let header_len = if size32 == 1 { 16 } else { 8 };
        if size < header_len || size > len - pos {
            // Torn (or garbage): the file ends before this box does.
            return Ok(keep);
        }
        pos += size;
        // A fragment's header alone plays nothing: it counts once its media follows.
        if kind != b"moof" {
            keep = pos;
        }
    }
}

/// Truncates `path` to its playable prefix; returns how many bytes were cut.
pub fn cut_torn_end(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let keep = playable_len(&mut file, len)?;
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(len - keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn mp4_box(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut b = ((payload + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0xAB, payload));
        b
    }

    fn fragmented(fragments: usize) -> (Vec<u8>, Vec<u64>) {
        let mut file = mp4_box(b"ftyp", 16);
        let mut ends = vec![file.len() as u64];
        file.extend(mp4_box(b"moov", 300));
        ends.push(file.len() as u64);
        for i in 0..fragments {
            file.extend(mp4_box(b"moof", 90));
            file.extend(mp4_box(b"mdat", 1000 + i * 7));
            ends.push(file.len() as u64);
        }
        (file, ends)
    }

    fn keep(bytes: &[u8]) -> u64 {
        playable_len(&mut Cursor::new(bytes), bytes.len() as u64).unwrap()
    }

    #[test]
    fn a_whole_file_is_kept_and_a_torn_fragment_is_cut() {
        let (file, ends) = fragmented(3);
        assert_eq!(keep(&file), file.len() as u64);
        // Torn inside the last mdat, and right after the last moof.
        assert_eq!(keep(&file[..file.len() - 10]), ends[3]);
        assert_eq!(keep(&file[..ends[3] as usize + 98]), ends[3]);
        assert_eq!(keep(&file[..ends[3] as usize + 3]), ends[3]);
        // Nothing whole: nothing kept.
        assert_eq!(keep(&file[..5]), 0);
    }

    #[test]
    fn large_sizes_and_to_the_end_boxes_are_understood() {
        let mut file = mp4_box(b"ftyp", 16);
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(16u64 + 40).to_be_bytes());
        large.extend(std::iter::repeat_n(0, 40));
        file.extend(&large);
        assert_eq!(keep(&file), file.len() as u64);
        let mut open_ended = mp4_box(b"ftyp", 16);
        open_ended.extend_from_slice(&0u32.to_be_bytes());
        open_ended.extend_from_slice(b"mdat");
        open_ended.extend(std::iter::repeat_n(1, 77));
        assert_eq!(keep(&open_ended), open_ended.len() as u64);
    }

    #[test]
    fn a_file_is_truncated_in_place() {
        let (file, ends) = fragmented(2);
        let dir = std::env::temp_dir().join(format!("costream-repair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("torn.mp4");
        std::fs::write(&path, &file[..file.len() - 100]).unwrap();
        let cut = cut_torn_end(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[2]);
        assert_eq!(cut, file.len() as u64 - 100 - ends[2]);
        assert_eq!(cut_torn_end(&path).unwrap(), 0, "a repaired file stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        /// Garbage never panics and never keeps more than there is.
        #[test]
        fn any_bytes_give_a_prefix(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let kept = keep(&bytes);
            prop_assert!(kept <= bytes.len() as u64);
        }

        /// Any cut of a good file keeps exactly its whole fragments.
        #[test]
        fn any_cut_keeps_the_whole_fragments(fragments in 1usize..6, cut in 0usize..10_000) {
            let (file, ends) = fragmented(fragments);
            let at = cut.min(file.len());
            let expected = ends.iter().copied().filter(|e| *e <= at as u64).max().unwrap_or(0);
            prop_assert_eq!(keep(&file[..at]), expected);
        }
    }
}
