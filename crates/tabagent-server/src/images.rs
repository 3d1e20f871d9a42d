//! Uploaded images looked at before they go to the ML worker. Only formats whose size this
//! module reads from the header are taken — PNG, JPEG, WebP and BMP — and one too big to
//! analyse is refused from that header, before anything is decoded (a 1 KB file can claim
//! 65535×65535 pixels, and OpenCV would try to allocate them). Anything else (GIF, TIFF, and
//! files that state no size) is refused. A PNG is decoded to RGB here: the `png` crate takes a
//! third of the time OpenCV takes in the worker (1.0 vs 3.3 ms for the 512×512 astronaut); the
//! others, and a PNG this decoder refuses, go to the worker as they came, where OpenCV decodes
//! them or says what is wrong with them.

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
    /// Not PNG, JPEG, WebP or BMP.
    #[error("the image is not PNG, JPEG, WebP or BMP (the formats taken)")]
    Unsupported,
    /// A taken format whose header does not state its size.
    #[error("the {0} image's header does not state its size; the file is damaged or cut short")]
    NoSize(&'static str),
}

/// `Ok(Some)`: decoded here; `Ok(None)`: for the worker's decoder (its size checked).
pub fn decode(data: &[u8]) -> Result<Option<Rgb>, ImageError> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return png_rgb(data);
    }
    let (format, size) = if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        ("JPEG", jpeg_size(data))
    } else if data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        ("WebP", webp_size(data))
    } else if data.starts_with(b"BM") {
        ("BMP", bmp_size(data))
    } else {
        return Err(ImageError::Unsupported);
    };
    let (width, height) = size.ok_or(ImageError::NoSize(format))?;
    check_size(width, height)?;
    Ok(None)
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
    let field = |at: usize| {
        data.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    match (data.get(12..16), field(16), field(20)) {
        (Some(b"IHDR"), Some(width), Some(height)) => check_size(width, height)?,
        _ => return Err(ImageError::NoSize("PNG")),
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

/// The size a JPEG's frame header (SOFn) states; `None` when none comes before the scan. Only
/// the header: a JPEG is smaller to send than its pixels, and OpenCV's libjpeg-turbo decodes it
/// about as fast as Rust does (measured: decoding here and moving the 786 KB of a 512×512 frame
/// cost 0.6 ms more than OpenCV's decode of the 66 KB file in the worker).
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

/// The canvas a WebP file states: in its `VP8X` extended header, or in the first frame's
/// header, lossy (`VP8 `) or lossless (`VP8L`).
fn webp_size(data: &[u8]) -> Option<(u32, u32)> {
    let byte = |at: usize| data.get(at).copied().map(u32::from);
    let le16 = |at: usize| Some(byte(at)? | byte(at + 1)? << 8);
    let le24 = |at: usize| Some(le16(at)? | byte(at + 2)? << 16);
    match data.get(12..16)? {
        b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
        b"VP8 " => {
            // A key frame's start code, then 14-bit width and height (2 bits of scale above).
            if data.get(23..26)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF))
        }
        b"VP8L" => {
            if byte(20)? != 0x2F {
                return None;
            }
            let bits = le16(21)? | le16(23)? << 16;
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        _ => None,
    }
}

/// The size a BMP's info header states (a negative height is a top-down bitmap).
fn bmp_size(data: &[u8]) -> Option<(u32, u32)> {
    let le = |at: usize, n: usize| -> Option<u32> {
        let bytes = data.get(at..at + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u32, |acc, &b| acc << 8 | u32::from(b)),
        )
    };
    match le(14, 4)? {
        // BITMAPCOREHEADER: 16-bit sides.
        12 => Some((le(18, 2)?, le(20, 2)?)),
        // BITMAPINFOHEADER and its successors: signed 32-bit sides.
        40.. => {
            let width = le(18, 4)? as i32;
            let height = le(22, 4)? as i32;
            Some((width.unsigned_abs(), height.unsigned_abs()))
        }
        _ => None,
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
    fn webp_and_bmp_sizes_are_read_from_their_headers() {
        // VP8X: 24-bit sides less one.
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend([0x1F, 0x4E, 0x00, 0x63, 0x00, 0x00]); // 20000 × 100
        assert!(decode(&vp8x).unwrap_err().to_string().contains("20000×100"));
        vp8x[24..27].copy_from_slice(&[0xFF, 0x01, 0x00]); // 512 wide
        assert!(decode(&vp8x).unwrap().is_none());
        // VP8 (lossy): a key frame's start code, then 14-bit sides.
        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\x9d\x01\x2a".to_vec();
        vp8.splice(20..20, [0, 0, 0]);
        vp8.extend((9000u16).to_le_bytes());
        vp8.extend((10u16).to_le_bytes());
        assert!(decode(&vp8).unwrap_err().to_string().contains("9000×10"));
        // VP8L (lossless): 14-bit sides less one, packed.
        let bits: u32 = (9000 - 1) | (10 - 1) << 14;
        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        vp8l.extend(bits.to_le_bytes());
        assert!(decode(&vp8l).unwrap_err().to_string().contains("9000×10"));
        // BMP with a BITMAPINFOHEADER, top-down (negative height).
        let mut bmp = b"BM".to_vec();
        bmp.extend([0; 12]);
        bmp.extend(40u32.to_le_bytes());
        bmp.extend(9000i32.to_le_bytes());
        bmp.extend((-10i32).to_le_bytes());
        assert!(decode(&bmp).unwrap_err().to_string().contains("9000×10"));
        bmp[18..22].copy_from_slice(&640i32.to_le_bytes());
        assert!(decode(&bmp).unwrap().is_none());
    }

    #[test]
    fn other_formats_and_files_without_a_size_are_refused() {
        for (data, why) in [
            (b"GIF89a\x10\x00\x10\x00".to_vec(), "not PNG"),
            (b"II*\x00".to_vec(), "not PNG"),
            (Vec::new(), "not PNG"),
            (
                b"RIFF\x00\x00\x00\x00WEBPVP8 ".to_vec(),
                "WebP image's header",
            ),
            (b"BM not really".to_vec(), "BMP image's header"),
            (
                b"\x89PNG\r\n\x1a\n truncated".to_vec(),
                "PNG image's header",
            ),
            (vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 2], "JPEG image's header"),
        ] {
            let err = decode(&data).unwrap_err().to_string();
            assert!(err.contains(why), "{data:?}: {err}");
        }
    }
}
