//! A wall-clock timecode burnt into video frames as a row of big black/white blocks, so a
//! reader at the far end of the chain (the RTMP server) can tell when a frame was captured.
//! The latency bench (`benches/e2e.py`) depends on this layout; keep the two in step.
//!
//! Layout: a strip across the top of the frame, `STRIP_DIVISOR`th of its height, cut into
//! [`BLOCKS`] equal blocks: block 0 white and block 1 black (references, so the reader needs no
//! fixed threshold), then [`DATA_BITS`] bits of the capture time in ms modulo 2^24 (MSB first,
//! white = 1), then a [`CHECK_BITS`]-bit CRC so a half-scaled or smeared strip is rejected
//! rather than misread. Blocks are wide (1/32 of the width) so they survive downscaling into a
//! small picture-in-picture tile and a 2.5 Mbit/s H.264 encode.

/// Blocks in the strip.
pub const BLOCKS: usize = 32;
/// Bits of time (ms modulo 2^24, about 4.6 hours: the reader resolves the wrap with its clock).
pub const DATA_BITS: usize = 24;
/// Checksum bits after the data.
pub const CHECK_BITS: usize = 6;
/// The strip is 1/`STRIP_DIVISOR` of the frame height.
pub const STRIP_DIVISOR: usize = 12;

const _: () = assert!(2 + DATA_BITS + CHECK_BITS == BLOCKS);

/// The time modulus (2^24 ms).
pub const MODULUS: u64 = 1 << DATA_BITS;

/// Checksum of a 24-bit value: CRC-6 (x^6 + x + 1, MSB first, init 0), which catches every
/// single flipped block.
pub fn checksum(value: u32) -> u32 {
    let mut crc = 0u32;
    for i in (0..DATA_BITS).rev() {
        let top = (crc >> 5 & 1) ^ (value >> i & 1);
        crc = (crc << 1) & 0x3F;
        if top == 1 {
            crc ^= 0x03;
        }
    }
    crc
}

/// The [`BLOCKS`] block values (true = white) for `ms`.
pub fn blocks(ms: u64) -> [bool; BLOCKS] {
    let value = (ms % MODULUS) as u32;
    let check = checksum(value);
    let mut out = [false; BLOCKS];
    out[0] = true;
    for i in 0..DATA_BITS {
        out[2 + i] = value >> (DATA_BITS - 1 - i) & 1 == 1;
    }
    for i in 0..CHECK_BITS {
        out[2 + DATA_BITS + i] = check >> (CHECK_BITS - 1 - i) & 1 == 1;
    }
    out
}

/// Decodes block luma means (one per block); `None` when the references are not clearly apart
/// or the checksum fails.
pub fn decode(luma: &[f64; BLOCKS]) -> Option<u32> {
    let (white, black) = (luma[0], luma[1]);
    if white - black < 60.0 {
        return None;
    }
    let threshold = (white + black) / 2.0;
    let bit = |i: usize| u32::from(luma[i] > threshold);
    let value = (0..DATA_BITS).fold(0, |acc, i| acc << 1 | bit(2 + i));
    let check = (0..CHECK_BITS).fold(0, |acc, i| acc << 1 | bit(2 + DATA_BITS + i));
    (check == checksum(value)).then_some(value)
}

/// Reads the strip of a `width` x `height` luma plane (row stride `stride`): the mean of three
/// pixels at the centre of each block, mid-strip (as `benches/e2e.py` reads the output).
pub fn read_luma(y: &[u8], stride: usize, width: usize, height: usize) -> Option<u32> {
    let block_w = width / BLOCKS;
    if block_w < 3 {
        return None;
    }
    let row = (height / STRIP_DIVISOR).max(2) / 2;
    let line = y.get(row * stride..row * stride + width)?;
    let luma: [f64; BLOCKS] = std::array::from_fn(|b| {
        let x = b * block_w + block_w / 2;
        line[x - 1..=x + 1]
            .iter()
            .map(|&p| f64::from(p))
            .sum::<f64>()
            / 3.0
    });
    decode(&luma)
}

/// Burns the strip for `ms` into an I420 frame's planes (luma 235/16, chroma neutral).
pub fn burn_i420(
    planes: [&mut [u8]; 3],
    strides: [usize; 3],
    width: usize,
    height: usize,
    ms: u64,
) {
    let strip_h = (height / STRIP_DIVISOR).max(2) & !1;
    let block_w = width / BLOCKS;
    if block_w < 2 {
        return;
    }
    let values = blocks(ms);
    let [y, u, v] = planes;
    for row in 0..strip_h {
        let line = &mut y[row * strides[0]..];
        for (b, white) in values.iter().enumerate() {
            let luma = if *white { 235 } else { 16 };
            line[b * block_w..(b + 1) * block_w].fill(luma);
        }
    }
    for (plane, stride) in [(u, strides[1]), (v, strides[2])] {
        for row in 0..strip_h / 2 {
            plane[row * stride..row * stride + BLOCKS * block_w / 2].fill(128);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lumas(ms: u64) -> [f64; BLOCKS] {
        blocks(ms).map(|w| if w { 200.0 } else { 40.0 })
    }

    #[test]
    fn round_trips_modulo_2_24() {
        for ms in [0, 1, 1_700_000_000_123, MODULUS - 1, MODULUS, 12_345_678] {
            assert_eq!(decode(&lumas(ms)), Some((ms % MODULUS) as u32), "{ms}");
        }
    }

    #[test]
    fn any_single_flipped_block_is_rejected() {
        for ms in [1_234_567u64, 0, MODULUS - 1] {
            for b in 2..BLOCKS {
                let mut l = lumas(ms);
                l[b] = if l[b] > 100.0 { 40.0 } else { 200.0 };
                assert_eq!(decode(&l), None, "ms {ms}, block {b}");
            }
        }
    }

    #[test]
    fn no_contrast_no_value() {
        assert_eq!(decode(&[100.0; BLOCKS]), None);
    }

    #[test]
    fn burnt_frame_decodes() {
        let (w, h) = (640usize, 360usize);
        let mut y = vec![90u8; w * h];
        let mut u = vec![50u8; w * h / 4];
        let mut v = vec![50u8; w * h / 4];
        burn_i420(
            [&mut y, &mut u, &mut v],
            [w, w / 2, w / 2],
            w,
            h,
            987_654_321,
        );
        assert_eq!(read_luma(&y, w, w, h), Some((987_654_321 % MODULUS) as u32));
        // An unburnt picture reads as nothing.
        assert_eq!(read_luma(&vec![90u8; w * h], w, w, h), None);
    }

    #[test]
    fn padded_stride_reads_the_same() {
        let (w, h, stride) = (1280usize, 720usize, 1344usize);
        let mut y = vec![90u8; stride * h];
        let mut u = vec![50u8; stride * h / 4];
        let mut v = vec![50u8; stride * h / 4];
        burn_i420(
            [&mut y, &mut u, &mut v],
            [stride, stride / 2, stride / 2],
            w,
            h,
            42,
        );
        assert_eq!(read_luma(&y, stride, w, h), Some(42));
        assert_eq!(
            read_luma(&y, w, w, h),
            None,
            "wrong stride must not read a value"
        );
    }
}
