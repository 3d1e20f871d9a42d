//! Uploaded images looked at before they go to the ML worker. A PNG is decoded to RGB here: the
//! `png` crate takes a third of the time OpenCV takes in the worker (1.0 vs 3.3 ms for the
//! 512×512 astronaut). A PNG or JPEG too big to analyse is refused from its header, before
//! anything is decoded (a small file can claim 65535×65535 pixels). Anything else, and a PNG
//! this decoder refuses, goes to the worker as it came, where OpenCV decodes it or says what is
//! wrong with it.

use png::{BitDepth, ColorType, Transformations};

/// The longest side of a frame the vision services take (the worker's limit too).
pub const MAX_SIDE: u32 = 8192;

/// A decoded frame: `width × height × 3` bytes, row by row.
#[derive(Debug)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Why an image is refused here.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Larger than [`MAX_SIDE`] on a side.
    #[error("the image is {width}×{height}; at most {MAX_SIDE} pixels a side")]
    TooLarge { width: u32, height: u32 },
}

/// `Ok(Some)`: decoded here; `Ok(None)`: for the worker's decoder.
pub fn decode(data: &[u8]) -> Result<Option<Rgb>, ImageError> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_rgb(data)
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg_size_check(data)
    } else {
        Ok(None)
    }
}

fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width.max(height) > MAX_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok(())
}

fn png_rgb(data: &[u8]) -> Result<Option<Rgb>, ImageError> {
    // The size from the header chunk itself, so that no decoder limit or error can hand a
    // claimed 60000 × 60000 on to OpenCV.
    if let Some(b"IHDR") = data.get(12..16) {
        let width = data
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes);
        let height = data
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes);
        if let (Some(width), Some(height)) = (width, height) {
            check_size(width, height)?;
        }
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(data));
    // Palettes and low bit depths become 8-bit channels, 16-bit ones 8-bit.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let Ok(mut reader) = decoder.read_info() else {
        return Ok(None);
    };
    let (width, height) = reader.info().size();
    let Some(size) = reader.output_buffer_size() else {
        return Ok(None);
    };
    let mut buffer = vec![0; size];
    let Ok(frame) = reader.next_frame(&mut buffer) else {
        return Ok(None);
    };
    if frame.bit_depth != BitDepth::Eight {
        return Ok(None);
    }
    buffer.truncate(frame.buffer_size());
    // Alpha is dropped, not blended, as OpenCV's IMREAD_COLOR does.
    let pixels = match frame.color_type {
        ColorType::Rgb => buffer,
        ColorType::Rgba => buffer
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        ColorType::Grayscale => buffer.iter().flat_map(|&g| [g, g, g]).collect(),
        ColorType::GrayscaleAlpha => buffer.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        ColorType::Indexed => return Ok(None),
    };
    Ok(frame_of(width, height, pixels))
}

/// Only the header: a JPEG is smaller to send than its pixels, and OpenCV's libjpeg-turbo
/// decodes it about as fast as Rust does (measured: decoding here and moving the 786 KB of a
/// 512×512 frame cost 0.6 ms more than OpenCV's decode of the 66 KB file in the worker).
fn jpeg_size_check(data: &[u8]) -> Result<Option<Rgb>, ImageError> {
    if let Some((width, height)) = jpeg_size(data) {
        check_size(width, height)?;
    }
    Ok(None)
}

/// The size a JPEG's frame header (SOFn) states; `None` when none comes before the scan.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        if *data.get(at)? != 0xFF {
            return None;
        }
        let marker = *data.get(at + 1)?;
        match marker {
            // Fill bytes, and markers without a length.
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            // Start of scan, end of image: no frame header before them.
            0xDA | 0xD9 => return None,
            _ => {
                let length =
                    usize::from(u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]));
                let is_frame =
                    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
                if is_frame {
                    let height = u16::from_be_bytes([*data.get(at + 5)?, *data.get(at + 6)?]);
                    let width = u16::from_be_bytes([*data.get(at + 7)?, *data.get(at + 8)?]);
                    return Some((width.into(), height.into()));
                }
                at += 2 + length;
            }
        }
    }
}

fn frame_of(width: u32, height: u32, pixels: Vec<u8>) -> Option<Rgb> {
    (pixels.len() == width as usize * height as usize * 3).then_some(Rgb {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png(
        width: u32,
        height: u32,
        colour: ColorType,
        depth: BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(colour);
        encoder.set_depth(depth);
        if colour == ColorType::Indexed {
            encoder.set_palette(vec![10, 20, 30, 200, 100, 50]);
        }
        encoder
            .write_header()
            .unwrap()
            .write_image_data(data)
            .unwrap();
        out
    }

    #[test]
    fn pngs_of_each_colour_type_become_rgb() {
        let cases: [(ColorType, BitDepth, Vec<u8>, Vec<u8>); 5] = [
            (
                ColorType::Rgb,
                BitDepth::Eight,
                vec![1, 2, 3, 4, 5, 6],
                vec![1, 2, 3, 4, 5, 6],
            ),
            (
                ColorType::Rgba,
                BitDepth::Eight,
                vec![1, 2, 3, 0, 4, 5, 6, 255],
                vec![1, 2, 3, 4, 5, 6],
            ),
            (
                ColorType::Grayscale,
                BitDepth::Eight,
                vec![7, 9],
                vec![7, 7, 7, 9, 9, 9],
            ),
            (
                ColorType::GrayscaleAlpha,
                BitDepth::Eight,
                vec![7, 0, 9, 1],
                vec![7, 7, 7, 9, 9, 9],
            ),
            // Palette indices 1 and 0 (one byte, high bits first, at 1 bit a pixel).
            (
                ColorType::Indexed,
                BitDepth::One,
                vec![0b1000_0000],
                vec![200, 100, 50, 10, 20, 30],
            ),
        ];
        for (colour, depth, data, expected) in cases {
            let png = encode_png(2, 1, colour, depth, &data);
            let rgb = decode(&png).unwrap().unwrap();
            assert_eq!((rgb.width, rgb.height), (2, 1), "{colour:?}");
            assert_eq!(rgb.pixels, expected, "{colour:?}");
        }
        // 16 bits a channel: the high byte of each is kept.
        let png = encode_png(1, 1, ColorType::Rgb, BitDepth::Sixteen, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(decode(&png).unwrap().unwrap().pixels, vec![1, 3, 5]);
    }

    #[test]
    fn a_frame_too_big_is_refused_from_its_header() {
        // A valid header for 9000 × 1 and no pixel data: refused before anything is decoded.
        let mut png = encode_png(1, 1, ColorType::Grayscale, BitDepth::Eight, &[0]);
        png[16..20].copy_from_slice(&9000u32.to_be_bytes());
        let ihdr_crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&ihdr_crc.to_be_bytes());
        let err = decode(&png).unwrap_err();
        assert!(err.to_string().contains("9000×1"), "{err}");
        // And one claiming 60000 × 60000 (10 GB of pixels: past the decoder's own memory limit,
        // which must not hand it on to OpenCV instead).
        png[16..20].copy_from_slice(&60000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let ihdr_crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&ihdr_crc.to_be_bytes());
        let err = decode(&png).unwrap_err();
        assert!(err.to_string().contains("60000×60000"), "{err}");
    }

    #[test]
    fn a_jpeg_stating_too_many_pixels_is_refused_from_its_header() {
        // SOI, then a baseline frame header (SOF0): 8 bits, 10 high, 9000 wide, one component.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0x00, 0x0A];
        jpeg.extend(9000u16.to_be_bytes());
        jpeg.extend([1, 1, 0x11, 0]);
        jpeg.extend([0xFF, 0xD9]);
        let err = decode(&jpeg).unwrap_err();
        assert!(err.to_string().contains("9000×10"), "{err}");
        // The same header at 900 wide is the worker's to decode (or refuse), and so is one
        // behind an APP0 segment and fill bytes.
        jpeg[9..11].copy_from_slice(&900u16.to_be_bytes());
        assert!(decode(&jpeg).unwrap().is_none());
        let mut with_app0 = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF];
        with_app0.extend(&jpeg[2..]);
        with_app0[16..18].copy_from_slice(&9000u16.to_be_bytes());
        let err = decode(&with_app0).unwrap_err();
        assert!(err.to_string().contains("9000×10"), "{err}");
    }

    #[test]
    fn other_formats_and_broken_files_are_left_to_the_worker() {
        for data in [
            b"RIFF\x00\x00\x00\x00WEBPVP8 ".to_vec(),
            b"BM not really".to_vec(),
            b"\x89PNG\r\n\x1a\n truncated".to_vec(),
            vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 2],
            Vec::new(),
        ] {
            assert!(decode(&data).unwrap().is_none(), "{data:?}");
        }
    }
}
