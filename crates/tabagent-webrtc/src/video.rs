//! Decoding a session's H.264 video to RGB frames, on a thread of its own so that decoding never
//! holds up the session's network loop. Frames that arrive while the decoder is behind are
//! dropped (and counted); the decoder recovers at the next keyframe.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::session::VideoStats;
use crate::SessionHooks;

/// One decoded frame: `width` × `height` pixels, three bytes (R, G, B) each, row by row.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Counts decoded frames of the session from 0.
    pub index: u64,
    /// In pixels.
    pub width: u32,
    /// In pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

/// Encoded frames waiting for the decoder; beyond this they are dropped.
const BACKLOG: usize = 8;

/// The sending side of a session's decoder thread.
pub struct VideoDecoder {
    queue: Option<SyncSender<Arc<[u8]>>>,
    stats: Arc<Mutex<VideoStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VideoDecoder {
    pub fn start(hooks: Arc<dyn SessionHooks>, stats: Arc<Mutex<VideoStats>>) -> VideoDecoder {
        let (queue, frames) = sync_channel::<Arc<[u8]>>(BACKLOG);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("webrtc-video".to_string())
            .spawn(move || decode_all(&frames, hooks.as_ref(), &thread_stats))
            .ok();
        if thread.is_none() {
            tracing::warn!("cannot start a video decoder thread: video frames will be dropped");
        }
        VideoDecoder {
            queue: thread.as_ref().map(|_| queue),
            stats,
            thread,
        }
    }

    /// Queues one encoded frame (H.264 Annex B, as str0m depacketizes it).
    pub fn push(&self, frame: Arc<[u8]>) {
        let mut stats = lock(&self.stats);
        stats.frames_received += 1;
        let queued = self.queue.as_ref().map(|queue| queue.try_send(frame));
        if !matches!(queued, Some(Ok(()))) {
            stats.frames_dropped += 1;
            if let Some(Err(TrySendError::Disconnected(_))) = queued {
                tracing::debug!("the video decoder has stopped");
            }
        }
    }
}

impl Drop for VideoDecoder {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn decode_all(
    frames: &std::sync::mpsc::Receiver<Arc<[u8]>>,
    hooks: &dyn SessionHooks,
    stats: &Mutex<VideoStats>,
) {
    let mut decoder = match openh264::decoder::Decoder::new() {
        Ok(decoder) => decoder,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the H.264 decoder");
            return;
        }
    };
    let mut index = 0u64;
    while let Ok(encoded) = frames.recv() {
        match decoder.decode(&encoded) {
            Ok(Some(yuv)) => {
                use openh264::formats::YUVSource;
                let (width, height) = yuv.dimensions();
                let mut rgb = vec![0u8; width * height * 3];
                yuv.write_rgb8(&mut rgb);
                {
                    let mut stats = lock(stats);
                    stats.frames_decoded += 1;
                    stats.width = width as u32;
                    stats.height = height as u32;
                }
                hooks.frame(VideoFrame {
                    index,
                    width: width as u32,
                    height: height as u32,
                    rgb,
                });
                index += 1;
            }
            // The decoder buffers until it has a picture.
            Ok(None) => {}
            Err(err) => {
                lock(stats).decode_errors += 1;
                tracing::debug!(error = %err, "an H.264 frame did not decode");
            }
        }
    }
}

/// A poisoned lock still holds sound counters.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
