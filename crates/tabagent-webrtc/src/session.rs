//! One session's task: drives its `Rtc` with its UDP socket and the clock, moves data-channel
//! messages between the browser and the owner's queues, and hands video to the decoder.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};

use crate::video::{lock, VideoDecoder};
use crate::SessionHooks;

/// A session as its owner can see it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its id, as the signaling endpoints name it.
    pub id: String,
    /// Who opened it (the owner's word for it: an API key's caller name).
    pub owner: String,
    /// `connecting`, `connected` or `closed`.
    pub state: &'static str,
    /// Seconds since the Unix epoch when the offer came.
    pub created: u64,
    /// The UDP address the session listens on.
    pub local_address: String,
    /// The browser's address, once ICE has chosen one.
    pub remote_address: Option<String>,
    /// Labels of the open data channels.
    pub channels: Vec<String>,
    /// Data-channel messages from the browser.
    pub messages_received: u64,
    /// Data-channel messages to the browser.
    pub messages_sent: u64,
    /// Its video track, if it has one.
    pub video: VideoStats,
    /// Why it closed, once it has.
    pub closed_because: Option<String>,
}

/// What a session's video track brought.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoStats {
    /// Encoded frames that arrived.
    pub frames_received: u64,
    /// Frames decoded to RGB and handed on.
    pub frames_decoded: u64,
    /// Frames dropped because the decoder was behind.
    pub frames_dropped: u64,
    /// Frames the decoder refused.
    pub decode_errors: u64,
    /// The last decoded frame's width, in pixels.
    pub width: u32,
    /// Its height.
    pub height: u32,
}

/// What the owner can tell a running session.
#[derive(Debug)]
pub enum Control {
    /// A trickled ICE candidate from the browser.
    Candidate(Candidate),
    /// End the session.
    Close,
}

/// The parts of a session that outlive its task's locals.
pub struct Shared {
    pub info: Mutex<SessionInfo>,
    pub video: Arc<Mutex<VideoStats>>,
}

impl Shared {
    pub fn snapshot(&self) -> SessionInfo {
        let mut info = lock(&self.info).clone();
        info.video = lock(&self.video).clone();
        info
    }
}

/// Timing limits of one session.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
}

/// An open data channel: where its messages go, and what waits to be sent on it.
struct OpenChannel {
    label: String,
    inbound: Option<mpsc::Sender<Vec<u8>>>,
    pending: VecDeque<Vec<u8>>,
}

/// Keeps what SCTP will buffer per channel before a write waits.
const LOW_WATER: usize = 256 * 1024;
/// Replies a channel's owner may queue before it waits for the session to send them.
const OUTBOUND_QUEUE: usize = 64;

pub struct Session {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub hooks: Arc<dyn SessionHooks>,
    pub shared: Arc<Shared>,
    pub control: mpsc::Receiver<Control>,
    pub timeouts: Timeouts,
}

impl Session {
    /// Runs until the browser leaves, the owner closes it, or it idles out; returns why.
    pub async fn run(mut self) -> String {
        let reason = match self.drive().await {
            Ok(reason) => reason,
            Err(err) => format!("failed: {err}"),
        };
        self.close_politely().await;
        let mut info = lock(&self.shared.info);
        info.state = "closed";
        info.channels.clear();
        info.closed_because = Some(reason.clone());
        reason
    }

    async fn drive(&mut self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let mut buffer = vec![0u8; 2048];
        let mut channels: HashMap<ChannelId, OpenChannel> = HashMap::new();
        let mut outbound: StreamMap<ChannelId, ReceiverStream<Vec<u8>>> = StreamMap::new();
        let mut video: Option<VideoDecoder> = None;
        let mut connected = false;
        let mut checked = CheckedSources::default();
        let mut last_activity = Instant::now();
        let started = Instant::now();
        loop {
            let wake = loop {
                match self.rtc.poll_output()? {
                    Output::Timeout(at) => break at,
                    Output::Transmit(packet) => {
                        self.socket
                            .send_to(&packet.contents, packet.destination)
                            .await?;
                    }
                    Output::Event(event) => match event {
                        Event::Connected => {
                            connected = true;
                            last_activity = Instant::now();
                            lock(&self.shared.info).state = "connected";
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            return Ok("the browser disconnected".to_string());
                        }
                        Event::Closed => return Ok("the browser closed the connection".to_string()),
                        Event::ChannelOpen(id, label) => {
                            let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
                            let inbound = self.hooks.channel_opened(&label, out_tx);
                            outbound.insert(id, ReceiverStream::new(out_rx));
                            if let Some(mut channel) = self.rtc.channel(id) {
                                channel.set_buffered_amount_low_threshold(LOW_WATER);
                            }
                            lock(&self.shared.info).channels.push(label.clone());
                            channels.insert(
                                id,
                                OpenChannel {
                                    label,
                                    inbound,
                                    pending: VecDeque::new(),
                                },
                            );
                        }
                        Event::ChannelData(data) => {
                            last_activity = Instant::now();
                            lock(&self.shared.info).messages_received += 1;
                            if let Some(inbound) =
                                channels.get(&data.id).and_then(|c| c.inbound.as_ref())
                            {
                                // A full queue means the owner is far behind; the browser's
                                // message is dropped rather than the session stalled.
                                if inbound.try_send(data.data).is_err() {
                                    tracing::warn!("a data channel's messages arrive faster than they are served; one was dropped");
                                }
                            }
                        }
                        Event::ChannelClose(id) => {
                            outbound.remove(&id);
                            if let Some(channel) = channels.remove(&id) {
                                let mut info = lock(&self.shared.info);
                                if let Some(at) =
                                    info.channels.iter().position(|l| *l == channel.label)
                                {
                                    info.channels.remove(at);
                                }
                            }
                        }
                        Event::MediaAdded(added) if added.kind == MediaKind::Video => {
                            if let Some(mut writer) = self.rtc.writer(added.mid) {
                                let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                            }
                        }
                        Event::MediaData(data) => {
                            last_activity = Instant::now();
                            if data.params.spec().codec == Codec::H264 {
                                let decoder = video.get_or_insert_with(|| {
                                    VideoDecoder::start(
                                        self.hooks.clone(),
                                        self.shared.video.clone(),
                                    )
                                });
                                decoder.push(data.data.clone());
                                if !data.contiguous {
                                    if let Some(mut writer) = self.rtc.writer(data.mid) {
                                        let _ =
                                            writer.request_keyframe(None, KeyframeRequestKind::Pli);
                                    }
                                }
                            }
                        }
                        Event::IceConnectionStateChange(_) | Event::ChannelBufferedAmountLow(_) => {
                        }
                        _ => {}
                    },
                }
            };
            // A write produces packets only at the next poll: go round again at once, or the
            // message would wait for the next timer (a fifth of a second).
            if self.flush(&mut channels)? {
                continue;
            }
            let now = Instant::now();
            let deadline = if connected {
                if now.duration_since(last_activity) >= self.timeouts.idle {
                    return Ok(format!("idle for {} s", self.timeouts.idle.as_secs()));
                }
                last_activity + self.timeouts.idle
            } else {
                if now.duration_since(started) >= self.timeouts.connect {
                    return Ok(format!(
                        "not connected within {} s",
                        self.timeouts.connect.as_secs()
                    ));
                }
                started + self.timeouts.connect
            };
            let wake = wake.min(deadline);
            let waiting = channels.values().any(|c| !c.pending.is_empty());
            tokio::select! {
                received = self.socket.recv_from(&mut buffer) => {
                    let (n, source) = received?;
                    let Ok(contents) = buffer[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    });
                    let accepted = self.rtc.accepts(&input);
                    if accepted && is_stun(buffer[0]) {
                        checked.remember(source);
                    }
                    // str0m takes DTLS only from a pair whose check it has seen succeed; the
                    // browser starts DTLS as soon as its own check succeeds, often first, and
                    // a dropped ClientHello waits for Chromium's retransmit (50 ms). A source
                    // that sent STUN signed with this session's ICE password is the browser.
                    if accepted || (is_dtls(buffer[0]) && checked.contains(source)) {
                        self.rtc.handle_input(input)?;
                        if connected {
                            lock(&self.shared.info).remote_address.get_or_insert_with(|| source.to_string());
                        }
                    } else {
                        tracing::debug!(%source, bytes = n, "a WebRTC datagram from an unknown source was dropped");
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now()))?;
                }
                Some((id, message)) = outbound.next(), if !waiting && !outbound.is_empty() => {
                    if let Some(channel) = channels.get_mut(&id) {
                        channel.pending.push_back(message);
                    }
                }
                control = self.control.recv() => match control {
                    Some(Control::Candidate(candidate)) => self.rtc.add_remote_candidate(candidate),
                    Some(Control::Close) | None => return Ok("closed by request".to_string()),
                },
            }
        }
    }

    /// Tells the browser the session is over (SCTP shutdown, DTLS close_notify), so that its
    /// channels close now rather than when its connectivity checks give up, half a minute later.
    /// Replies are not awaited.
    async fn close_politely(&mut self) {
        if self.rtc.close().is_err() {
            self.rtc.disconnect();
            return;
        }
        // Bounded: closing queues a handful of packets.
        for _ in 0..64 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(packet)) => {
                    let _ = self
                        .socket
                        .send_to(&packet.contents, packet.destination)
                        .await;
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        self.rtc.disconnect();
    }

    /// Writes what waits on each channel, as far as SCTP takes it; says whether it wrote any.
    fn flush(
        &mut self,
        channels: &mut HashMap<ChannelId, OpenChannel>,
    ) -> Result<bool, str0m::RtcError> {
        let mut wrote = false;
        for (id, channel) in channels.iter_mut() {
            while let Some(message) = channel.pending.front() {
                let Some(mut writer) = self.rtc.channel(*id) else {
                    channel.pending.clear();
                    break;
                };
                if !writer.write(false, message)? {
                    break;
                }
                channel.pending.pop_front();
                lock(&self.shared.info).messages_sent += 1;
                wrote = true;
            }
        }
        Ok(wrote)
    }
}

/// RFC 7983's demultiplexing by the first byte of a datagram.
fn is_stun(first: u8) -> bool {
    first <= 3
}

fn is_dtls(first: u8) -> bool {
    (20..=63).contains(&first)
}

/// Addresses that sent STUN signed with this session's ICE password (a few: a browser checks from
/// one address per local candidate).
#[derive(Default)]
struct CheckedSources(Vec<SocketAddr>);

impl CheckedSources {
    const MOST: usize = 16;

    fn remember(&mut self, source: SocketAddr) {
        if !self.0.contains(&source) && self.0.len() < Self::MOST {
            self.0.push(source);
        }
    }

    fn contains(&self, source: SocketAddr) -> bool {
        self.0.contains(&source)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
