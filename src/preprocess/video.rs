//! Bounded, in-memory video decoding: a few frames sampled evenly over a short clip (a selfie
//! video, a liveness challenge), as upright RGB images.
//!
//! The decoding is libavformat/libavcodec/swscale through `ffmpeg-next`, behind the cargo
//! feature `video` (the system's libav*, see `scripts/setup-system.sh`). Without the feature
//! the module still compiles: container sniffing works and [`decode_sampled`] answers that
//! video is not built in.
//!
//! The media never touches the disk (no biometric data on disk): libavformat reads the upload
//! from RAM through a custom `AVIOContext` (`ffmpeg-next`'s safe `StreamIo` over a
//! `Cursor<Vec<u8>>`), and [`encode_h264_mp4`] muxes into a `Vec<u8>` the same way. That was
//! preferred over a `memfd_create` file opened as `/proc/self/fd/N`: no file descriptor or
//! path exists, the `file` protocol (and every other protocol) stays disabled, and it works
//! beyond Linux; the price is one copy of the upload.
//!
//! Every bound is checked before the work it protects: bytes before anything is opened,
//! pixels (from the stream parameters) before any frame is decoded, duration and frame count
//! from the container before decoding and again while decoding. Only MP4/MOV, Matroska/WebM,
//! AVI and MPEG-TS demuxers are allowed, and no protocol, so a playlist or a reference to an
//! external file cannot make libavformat open anything else.

#[cfg(any(feature = "video", test))]
use std::collections::VecDeque;

use image::RgbImage;

use crate::Result;

/// Bounds on one video.
///
/// Memory held while decoding is about `sample_frames` decoded frames plus the decoder's own
/// reference frames, each at most `max_pixels`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoLimits {
    /// Largest accepted encoded size, bytes (default 32 MiB).
    pub max_bytes: usize,
    /// Longest accepted duration, seconds (default 60).
    pub max_duration_s: f64,
    /// Most frames decoded from one video (default 1800: 60 s at 30 fps).
    pub max_decoded_frames: usize,
    /// Largest accepted width * height of one frame (default 4096 * 2160).
    pub max_pixels: u64,
    /// Frames kept, spread evenly over the video (default 8, at least 1).
    pub sample_frames: usize,
}

impl Default for VideoLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 20,
            max_duration_s: 60.0,
            max_decoded_frames: 1800,
            max_pixels: 4096 * 2160,
            sample_frames: 8,
        }
    }
}

/// What came out of one video.
#[derive(Clone)]
pub struct DecodedVideo {
    /// The sampled frames, upright RGB at the stream's size, in presentation order.
    pub frames: Vec<RgbImage>,
    /// Presentation time of each sampled frame, seconds from the start of the stream.
    pub timestamps_s: Vec<f64>,
    /// How many frames were decoded in all.
    pub decoded: usize,
    /// Width of the frames (after rotation), pixels.
    pub width: u32,
    /// Height of the frames (after rotation), pixels.
    pub height: u32,
    /// Duration of the video stream (or the container), seconds.
    pub duration_s: f64,
    /// The decoder's name, e.g. `h264`.
    pub codec: String,
    /// The codec profile as libavcodec names it, e.g. `High`.
    pub profile: Option<String>,
    /// Whether the stream reorders frames (B-frames).
    pub has_b_frames: bool,
}

impl std::fmt::Debug for DecodedVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedVideo")
            .field("frames", &self.frames.len())
            .field("timestamps_s", &self.timestamps_s)
            .field("decoded", &self.decoded)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("duration_s", &self.duration_s)
            .field("codec", &self.codec)
            .field("profile", &self.profile)
            .field("has_b_frames", &self.has_b_frames)
            .finish()
    }
}

/// Container sniffing on the first bytes (no decoding): ISO-BMFF/MP4/MOV (`ftyp` at offset 4),
/// Matroska/WebM (`1A 45 DF A3`), AVI (`RIFF....AVI `), MPEG-TS (0x47 sync every 188 bytes).
/// Always compiled.
pub fn looks_like_video(bytes: &[u8]) -> bool {
    const TS_PACKET: usize = 188;
    let mp4 = bytes.get(4..8) == Some(b"ftyp".as_slice());
    let mkv = bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]);
    let avi = bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"AVI ".as_slice());
    // At least two packets, and every packet start among the first five carries the sync byte.
    let packets = (bytes.len() / TS_PACKET).min(5);
    let ts = packets >= 2 && (0..packets).all(|k| bytes[k * TS_PACKET] == 0x47);
    mp4 || mkv || avi || ts
}

/// Whether this build can decode video (the `video` feature).
pub const VIDEO_SUPPORTED: bool = cfg!(feature = "video");

/// Decodes `bytes` entirely in memory and returns `limits.sample_frames` frames spread evenly
/// over the video (fewer when it has fewer frames), converted to upright RGB24 at the stream's
/// size.
///
/// The frames are chosen while decoding, once: targets are spread over the frame count the
/// container announces (or duration * frame rate). When the announcement is wrong the result
/// still has `min(sample_frames, decoded)` frames: too few frames leave the last ones filling
/// in, too many re-spread the targets over a doubled count.
///
/// The stream's display matrix (phones store portrait video as landscape plus a rotation) is
/// applied for quarter turns; a mirrored or non-right-angle matrix is ignored.
///
/// Errors: [`crate::Error::EmptyImage`], [`crate::Error::ImageTooLarge`] (bytes),
/// [`crate::Error::TooManyPixels`], [`crate::Error::InvalidArgument`] (duration, frame count,
/// `sample_frames`, or a build without the `video` feature), [`crate::Error::CorruptImage`]
/// (not a container, no video stream, undecodable).
pub fn decode_sampled(bytes: &[u8], limits: &VideoLimits) -> Result<DecodedVideo> {
    #[cfg(feature = "video")]
    {
        imp::decode_sampled(bytes, limits)
    }
    #[cfg(not(feature = "video"))]
    {
        let _ = (bytes, limits);
        Err(crate::Error::InvalidArgument(
            "video decoding is not built into this server (cargo feature `video`)".into(),
        ))
    }
}

/// Encodes frames (all the same size, even width/height) as an H.264 High-profile MP4 with
/// B-frames at `fps`, in memory (libx264 through libavcodec). For tests and benchmarks that
/// build their own videos from photos.
#[cfg(feature = "video")]
pub fn encode_h264_mp4(frames: &[RgbImage], fps: u32) -> Result<Vec<u8>> {
    imp::encode_h264(frames, fps, 0.0, "mp4")
}

/// Chooses which of a stream of frames to keep, without knowing their number: at most `want`
/// items are held at any time, and [`Sampler::finish`] returns `min(want, pushed)` of them in
/// push order, the first one always among them.
///
/// Targets are spread evenly over an estimated count. A frame at or past the next target is
/// kept; the others wait in a queue of the most recent ones, as long as there is room, so that
/// a video shorter than announced still fills every slot. A video longer than announced
/// doubles the estimate and re-spreads the targets over what was kept.
#[cfg(any(feature = "video", test))]
struct Sampler<T> {
    want: usize,
    estimate: usize,
    /// The next target, 0..want.
    next: usize,
    kept: Vec<(usize, T)>,
    recent: VecDeque<(usize, T)>,
}

#[cfg(any(feature = "video", test))]
impl<T> Sampler<T> {
    fn new(want: usize, estimate: usize) -> Self {
        Self {
            want: want.max(1),
            estimate: estimate.max(1),
            next: 0,
            kept: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    /// Frame index of target `k` under `estimate`: `round(k * (estimate - 1) / (want - 1))`.
    fn target(&self, k: usize, estimate: usize) -> usize {
        if self.want <= 1 {
            return 0;
        }
        let span = (self.want - 1) as u128;
        let t = (k as u128 * (estimate as u128 - 1) + span / 2) / span;
        usize::try_from(t).unwrap_or(usize::MAX)
    }

    /// Skips targets at or before `index` (several targets share a frame when the estimate is
    /// below `want`).
    fn skip_targets_through(&mut self, index: usize) {
        while self.next < self.want && self.target(self.next, self.estimate) <= index {
            self.next += 1;
        }
    }

    fn push(&mut self, index: usize, item: T) {
        if index >= self.estimate {
            self.replan(index);
        }
        if self.next < self.want && index >= self.target(self.next, self.estimate) {
            self.kept.push((index, item));
            self.skip_targets_through(index);
        } else {
            self.recent.push_back((index, item));
        }
        let room = self.want - self.kept.len();
        while self.recent.len() > room {
            self.recent.pop_front();
        }
    }

    /// The video runs past the estimate: doubles it and keeps, for every new target before
    /// `index`, the held frame closest to it.
    fn replan(&mut self, index: usize) {
        self.estimate = self.estimate.saturating_mul(2).max(index.saturating_add(1));
        let mut pool: Vec<(usize, T)> = self.kept.drain(..).chain(self.recent.drain(..)).collect();
        pool.sort_by_key(|(i, _)| *i);
        let mut pool: VecDeque<(usize, T)> = pool.into();
        let mut k = 0;
        while k < self.want {
            let t = self.target(k, self.estimate);
            if t >= index || pool.is_empty() {
                break;
            }
            // The closest held frame to `t`: skip those before it while the next one is closer.
            while pool.len() > 1 && pool[1].0.abs_diff(t) <= pool[0].0.abs_diff(t) {
                if let Some(dropped) = pool.pop_front() {
                    self.recent.push_back(dropped);
                }
            }
            if let Some(chosen) = pool.pop_front() {
                self.kept.push(chosen);
            }
            k += 1;
        }
        self.next = k;
        if let Some(&(last, _)) = self.kept.last() {
            self.skip_targets_through(last);
        }
        self.recent.extend(pool);
        let mut recent: Vec<(usize, T)> = self.recent.drain(..).collect();
        recent.sort_by_key(|(i, _)| *i);
        self.recent = recent.into();
    }

    /// The chosen items with their indices, in index order.
    fn finish(self) -> Vec<(usize, T)> {
        let mut all: Vec<(usize, T)> = self.kept.into_iter().chain(self.recent).collect();
        all.sort_by_key(|(i, _)| *i);
        all
    }
}

#[cfg(feature = "video")]
mod imp {
    use std::io::{Cursor, Seek, SeekFrom, Write};
    use std::sync::{Arc, Mutex, OnceLock};

    use ff::format::context::{Input, StreamIo};
    use ff::software::scaling;
    use ff::{codec, decoder, encoder, ffi, format, frame, media, picture, Dictionary, Rational};
    use ffmpeg_next as ff;
    use image::metadata::Orientation;
    use image::RgbImage;

    use super::{DecodedVideo, Sampler, VideoLimits};
    use crate::{Error, Result};

    /// The only demuxers allowed (libavformat's names): the containers [`super::looks_like_video`]
    /// accepts.
    const DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts";
    /// Decoding errors tolerated in one video (a transport stream cut mid-GOP starts with a few
    /// undecodable packets); more is a corrupt video.
    const MAX_DECODE_ERRORS: usize = 16;
    /// Packets the decoder may swallow without a frame (edit-list lead-in, reordering delay).
    const PACKET_SLACK: usize = 32;
    /// Decoder threads per video (frame threading); requests run side by side as well.
    const MAX_DECODER_THREADS: usize = 4;

    /// One-time libav setup. Logging is silenced process-wide: every failure comes back as an
    /// [`Error`] naming it, and a server must not print what libav says about client data.
    fn init() -> Result<()> {
        static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        INIT.get_or_init(|| {
            ff::init().map_err(|e| e.to_string())?;
            ff::util::log::set_level(ff::util::log::Level::Quiet);
            Ok(())
        })
        .clone()
        .map_err(|e| Error::Internal(format!("libav initialisation failed: {e}")))
    }

    fn corrupt(what: &str, e: ff::Error) -> Error {
        Error::CorruptImage(format!("{what}: {e}"))
    }

    fn internal(what: &str, e: ff::Error) -> Error {
        Error::Internal(format!("{what}: {e}"))
    }

    fn is_again(e: &ff::Error) -> bool {
        matches!(e, ff::Error::Other { errno } if *errno == ff::error::EAGAIN)
    }

    fn seconds(ticks: i64, tb: Rational) -> f64 {
        if tb.denominator() == 0 {
            return 0.0;
        }
        ticks as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
    }

    fn too_long(duration_s: f64, limit: f64, at_least: bool) -> Error {
        let at = if at_least { "at least " } else { "" };
        Error::InvalidArgument(format!(
            "video too long: {at}{duration_s:.1} s, the limit is {limit} s"
        ))
    }

    fn too_many_frames(frames: String, limit: usize) -> Error {
        Error::InvalidArgument(format!(
            "video has too many frames: {frames}, the limit is {limit} frames"
        ))
    }

    fn check_pixels(width: u32, height: u32, limit: u64) -> Result<()> {
        if u64::from(width) * u64::from(height) > limit {
            return Err(Error::TooManyPixels {
                width,
                height,
                limit,
            });
        }
        Ok(())
    }

    /// What the container says about the video stream, before or after probing.
    struct Header {
        width: u32,
        height: u32,
        /// Video stream duration, else the container's, seconds (0 when unknown).
        duration_s: f64,
        /// The longest of the two, for the bound.
        longest_s: f64,
        /// Frame count the container announces (0 when unknown).
        frames: usize,
    }

    fn header(input: &Input, index: usize) -> Result<Header> {
        let stream = input
            .stream(index)
            .ok_or_else(|| Error::CorruptImage("the video stream vanished".into()))?;
        // SAFETY: `parameters()` wraps the stream's live AVCodecParameters, owned by `input`,
        // which outlives this read of two plain fields.
        let (width, height) = unsafe {
            let par = stream.parameters();
            let p = par.as_ptr();
            (
                u32::try_from((*p).width).unwrap_or(0),
                u32::try_from((*p).height).unwrap_or(0),
            )
        };
        let stream_s = if stream.duration() > 0 {
            seconds(stream.duration(), stream.time_base())
        } else {
            0.0
        };
        let container_s = if input.duration() > 0 {
            input.duration() as f64 / f64::from(ffi::AV_TIME_BASE)
        } else {
            0.0
        };
        let frames = usize::try_from(stream.frames()).unwrap_or(0);
        Ok(Header {
            width,
            height,
            duration_s: if stream_s > 0.0 {
                stream_s
            } else {
                container_s
            },
            longest_s: stream_s.max(container_s),
            frames,
        })
    }

    fn check_header(h: &Header, limits: &VideoLimits) -> Result<()> {
        if h.width > 0 && h.height > 0 {
            check_pixels(h.width, h.height, limits.max_pixels)?;
        }
        if h.longest_s > limits.max_duration_s {
            return Err(too_long(h.longest_s, limits.max_duration_s, false));
        }
        if h.frames > limits.max_decoded_frames {
            return Err(too_many_frames(
                h.frames.to_string(),
                limits.max_decoded_frames,
            ));
        }
        Ok(())
    }

    /// Opens the demuxer over a copy of `bytes` in RAM. Stream probing
    /// (`avformat_find_stream_info`, which decodes a few frames) is left to [`probe`], after the
    /// header has been checked against the bounds.
    fn open(bytes: &[u8]) -> Result<Input> {
        let mut io = StreamIo::from_read_seek(Cursor::new(bytes.to_vec()))
            .map_err(|e| internal("cannot set up in-memory I/O", e))?;
        let mut options = Dictionary::new();
        options.set("format_whitelist", DEMUXERS);
        // No protocol at all: the data comes from `io`; nothing else may be opened (HLS
        // playlists, MOV data references, concat lists).
        options.set("protocol_whitelist", "none");
        // SAFETY: this mirrors `ffmpeg_next::format::input_from_stream`, minus its stream
        // probing. The context is allocated here, gets `io`'s AVIOContext with the custom-I/O
        // flag (so libavformat never closes it), and on success is handed, with `io`, to
        // `Input::wrap_with_custom_io`, whose destructor closes the context before freeing
        // `io`. On failure `avformat_open_input` frees the context itself and `io` is dropped
        // here. The options dictionary is disowned for the call and owned (freed) again after.
        unsafe {
            let mut ctx = ffi::avformat_alloc_context();
            if ctx.is_null() {
                return Err(Error::Internal("out of memory opening a video".into()));
            }
            (*ctx).pb = io.as_mut_ptr();
            (*ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
            let mut opts = options.disown();
            let rc = ffi::avformat_open_input(
                &mut ctx,
                std::ptr::null(),
                std::ptr::null_mut(),
                &mut opts,
            );
            let unused: Vec<String> = Dictionary::own(opts)
                .iter()
                .map(|(k, _)| k.to_string())
                .collect();
            if rc < 0 {
                return Err(corrupt("not a readable video", ff::Error::from(rc)));
            }
            let input = Input::wrap_with_custom_io(ctx, io);
            // Both whitelists must have been taken: an unknown option would leave them off.
            if !unused.is_empty() {
                return Err(Error::Internal(format!(
                    "libavformat ignored the options {unused:?}"
                )));
            }
            Ok(input)
        }
    }

    /// `avformat_find_stream_info` with libavcodec's own pixel bound on every decoder it opens,
    /// so that probing cannot allocate frames beyond `max_pixels` either.
    fn probe(input: &mut Input, max_pixels: u64) -> Result<()> {
        let streams = input.nb_streams() as usize;
        let max_pixels = max_pixels.min(i32::MAX as u64).to_string();
        // SAFETY: one dictionary per stream, as `avformat_find_stream_info` requires, disowned
        // for the call; it may replace them (unused entries come back), and all are owned and
        // freed afterwards.
        let rc = unsafe {
            let mut per_stream: Vec<*mut ffi::AVDictionary> = (0..streams)
                .map(|_| {
                    let mut d = Dictionary::new();
                    d.set("max_pixels", &max_pixels);
                    d.disown()
                })
                .collect();
            let rc = ffi::avformat_find_stream_info(input.as_mut_ptr(), per_stream.as_mut_ptr());
            for d in per_stream.drain(..) {
                drop(Dictionary::own(d));
            }
            rc
        };
        if rc < 0 {
            return Err(corrupt(
                "cannot read the video streams",
                ff::Error::from(rc),
            ));
        }
        Ok(())
    }

    /// The video stream to decode: the default one, else the first, never a cover picture.
    fn video_stream(input: &Input) -> Option<usize> {
        let candidates: Vec<_> = input
            .streams()
            .filter(|s| s.parameters().medium() == media::Type::Video)
            .filter(|s| {
                !s.disposition()
                    .contains(format::stream::Disposition::ATTACHED_PIC)
            })
            .collect();
        candidates
            .iter()
            .find(|s| {
                s.disposition()
                    .contains(format::stream::Disposition::DEFAULT)
            })
            .or(candidates.first())
            .map(|s| s.index())
    }

    /// The clockwise quarter turn that shows the stream upright, from its display matrix.
    fn display_orientation(input: &Input, index: usize) -> Orientation {
        let Some(stream) = input.stream(index) else {
            return Orientation::NoTransforms;
        };
        for side in stream.side_data() {
            if side.kind() == codec::packet::side_data::Type::DisplayMatrix {
                if let Some(m) = display_matrix(side.data()) {
                    return orientation_of(&m);
                }
            }
        }
        Orientation::NoTransforms
    }

    /// The 3x3 display matrix (native-endian i32, as libavutil stores it).
    fn display_matrix(data: &[u8]) -> Option<[i32; 9]> {
        let mut m = [0i32; 9];
        for (v, b) in m.iter_mut().zip(data.get(..36)?.chunks_exact(4)) {
            *v = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        Some(m)
    }

    /// The turn `ffmpeg`'s autorotate applies: clockwise by `-av_display_rotation_get` (an
    /// iPhone portrait video reads -90 there, so its frames are turned 90 degrees clockwise).
    /// Mirroring and angles that are not quarter turns are ignored.
    pub(super) fn orientation_of(m: &[i32; 9]) -> Orientation {
        let det = i64::from(m[0]) * i64::from(m[4]) - i64::from(m[1]) * i64::from(m[3]);
        if det <= 0 {
            return Orientation::NoTransforms;
        }
        // SAFETY: `m` is 9 i32, the size libavutil reads.
        let ccw = unsafe { ffi::av_display_rotation_get(m.as_ptr()) };
        if !ccw.is_finite() {
            return Orientation::NoTransforms;
        }
        let clockwise = (-ccw).rem_euclid(360.0);
        let quarter = (clockwise / 90.0).round();
        if (clockwise - quarter * 90.0).abs() > 1.0 {
            return Orientation::NoTransforms;
        }
        match quarter as i64 % 4 {
            1 => Orientation::Rotate90,
            2 => Orientation::Rotate180,
            3 => Orientation::Rotate270,
            _ => Orientation::NoTransforms,
        }
    }

    /// Converts decoded frames to RGB24 at one output size, rebuilding the scaler when a frame's
    /// format or size differs from the last one's.
    struct ToRgb {
        width: u32,
        height: u32,
        scaler: Option<(format::Pixel, u32, u32, scaling::Context)>,
    }

    impl ToRgb {
        fn convert(&mut self, src: &frame::Video) -> Result<RgbImage> {
            let key = (src.format(), src.width(), src.height());
            let reuse = matches!(&self.scaler, Some((f, w, h, _)) if (*f, *w, *h) == key);
            if !reuse {
                let mut ctx = scaling::Context::get(
                    key.0,
                    key.1,
                    key.2,
                    format::Pixel::RGB24,
                    self.width,
                    self.height,
                    scaling::Flags::BILINEAR,
                )
                .map_err(|e| corrupt("cannot convert the video's pixels", e))?;
                set_colorspace(&mut ctx, src);
                self.scaler = Some((key.0, key.1, key.2, ctx));
            }
            let Some((_, _, _, ctx)) = self.scaler.as_mut() else {
                return Err(Error::Internal("no scaler".into()));
            };
            let mut rgb = frame::Video::empty();
            ctx.run(src, &mut rgb)
                .map_err(|e| corrupt("cannot convert the video's pixels", e))?;
            // Rows of the RGB frame are padded to the line size; copy the pixels only.
            let (w, h) = (self.width as usize, self.height as usize);
            let stride = rgb.stride(0);
            let data = rgb.data(0);
            let mut out = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                let row = data
                    .get(y * stride..y * stride + w * 3)
                    .ok_or_else(|| Error::Internal("converted frame is short".into()))?;
                out.extend_from_slice(row);
            }
            RgbImage::from_raw(self.width, self.height, out)
                .ok_or_else(|| Error::Internal("converted frame has the wrong size".into()))
        }
    }

    /// YUV to RGB with the frame's own matrix (BT.709 for HD video, else BT.601) and range
    /// (full or limited); swscale assumes limited-range BT.601 otherwise.
    fn set_colorspace(ctx: &mut scaling::Context, src: &frame::Video) {
        use ff::color::{Range, Space};
        let space = match src.color_space() {
            Space::BT709 => ffi::SWS_CS_ITU709,
            Space::FCC => ffi::SWS_CS_FCC,
            Space::SMPTE240M => ffi::SWS_CS_SMPTE240M,
            Space::BT2020NCL | Space::BT2020CL => ffi::SWS_CS_BT2020,
            _ => ffi::SWS_CS_DEFAULT,
        };
        let full = i32::from(src.color_range() == Range::JPEG);
        // SAFETY: a live scaler; the coefficient tables are libswscale's static ones. Formats
        // without YUV input ignore the call (it returns an error that changes nothing).
        unsafe {
            let coefficients = ffi::sws_getCoefficients(space);
            let rgb = ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT);
            ffi::sws_setColorspaceDetails(
                ctx.as_mut_ptr(),
                coefficients,
                full,
                rgb,
                1,
                0,
                1 << 16,
                1 << 16,
            );
        }
    }

    /// Decoder state for one video: bounds, timestamps and the sampler.
    struct Run<'a> {
        limits: &'a VideoLimits,
        time_base: Rational,
        /// Start of the stream in `time_base` ticks (`None`: the first frame's time).
        origin: Option<i64>,
        /// Ticks per frame, for frames without a timestamp.
        frame_ticks: i64,
        last_ts: Option<i64>,
        decoded: usize,
        saw_b: bool,
        errors: usize,
        last_error: Option<ff::Error>,
        sampler: Sampler<(f64, frame::Video)>,
    }

    impl Run<'_> {
        fn take(&mut self, frame: frame::Video) -> Result<()> {
            if self.decoded >= self.limits.max_decoded_frames {
                return Err(too_many_frames(
                    format!("more than {}", self.limits.max_decoded_frames),
                    self.limits.max_decoded_frames,
                ));
            }
            check_pixels(frame.width(), frame.height(), self.limits.max_pixels)?;
            let ts = match (frame.timestamp(), self.last_ts) {
                (Some(t), _) => t,
                (None, Some(prev)) => prev.saturating_add(self.frame_ticks),
                (None, None) => self.origin.unwrap_or(0),
            };
            if let Some(prev) = self.last_ts {
                if ts <= prev {
                    return Err(Error::CorruptImage(format!(
                        "video frame timestamps do not increase: {:.3} s after {:.3} s",
                        seconds(ts, self.time_base),
                        seconds(prev, self.time_base)
                    )));
                }
            }
            let origin = *self.origin.get_or_insert(ts);
            let at_s = seconds(ts.saturating_sub(origin), self.time_base);
            if at_s > self.limits.max_duration_s {
                return Err(too_long(at_s, self.limits.max_duration_s, true));
            }
            self.last_ts = Some(ts);
            self.saw_b |= frame.kind() == picture::Type::B;
            self.sampler.push(self.decoded, (at_s, frame));
            self.decoded += 1;
            Ok(())
        }

        fn failed(&mut self, e: ff::Error) -> Result<()> {
            self.errors += 1;
            if self.errors > MAX_DECODE_ERRORS {
                return Err(corrupt(
                    &format!("undecodable video ({} decoding errors)", self.errors),
                    e,
                ));
            }
            self.last_error = Some(e);
            Ok(())
        }

        fn drain(&mut self, dec: &mut decoder::Video) -> Result<()> {
            loop {
                let mut frame = frame::Video::empty();
                match dec.receive_frame(&mut frame) {
                    Ok(()) => self.take(frame)?,
                    Err(ff::Error::Eof) => return Ok(()),
                    Err(e) if is_again(&e) => return Ok(()),
                    Err(e) => {
                        self.failed(e)?;
                        return Ok(());
                    }
                }
            }
        }

        fn send(&mut self, dec: &mut decoder::Video, packet: &ff::Packet) -> Result<()> {
            match dec.send_packet(packet) {
                Ok(()) => {}
                Err(e) if is_again(&e) => {
                    // Output must be taken first; then the packet goes in.
                    self.drain(dec)?;
                    if let Err(e) = dec.send_packet(packet) {
                        self.failed(e)?;
                    }
                }
                Err(e) => self.failed(e)?,
            }
            self.drain(dec)
        }
    }

    pub(super) fn decode_sampled(bytes: &[u8], limits: &VideoLimits) -> Result<DecodedVideo> {
        if limits.sample_frames == 0 {
            return Err(Error::InvalidArgument(
                "sample_frames is 0: at least 1 frame must be kept".into(),
            ));
        }
        if limits.max_duration_s.is_nan() || limits.max_duration_s <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "max_duration_s is {}: it must be above 0",
                limits.max_duration_s
            )));
        }
        crate::preprocess::decode::check_bytes(bytes, limits.max_bytes)?;
        if !super::looks_like_video(bytes) {
            return Err(Error::CorruptImage(
                "not a video container: MP4/MOV, Matroska/WebM, AVI or MPEG-TS expected".into(),
            ));
        }
        init()?;

        let mut input = open(bytes)?;
        let no_video = || Error::CorruptImage("the container holds no video stream".into());
        // Headers first (MP4 and Matroska carry size, duration and frame count): refused
        // before any decoding, probing included.
        if let Some(index) = video_stream(&input) {
            check_header(&header(&input, index)?, limits)?;
        }
        probe(&mut input, limits.max_pixels)?;
        let index = video_stream(&input).ok_or_else(no_video)?;
        let head = header(&input, index)?;
        check_header(&head, limits)?;
        if head.width == 0 || head.height == 0 {
            return Err(Error::CorruptImage(
                "the video stream has no frame size".into(),
            ));
        }
        let orientation = display_orientation(&input, index);

        // Only the chosen stream's packets are demuxed.
        for mut stream in input.streams_mut() {
            if stream.index() != index {
                // SAFETY: a plain field of a live stream owned by `input`.
                unsafe { (*stream.as_mut_ptr()).discard = ffi::AVDiscard::AVDISCARD_ALL };
            }
        }

        let stream = input.stream(index).ok_or_else(no_video)?;
        let time_base = stream.time_base();
        let origin = Some(stream.start_time()).filter(|&t| t != ffi::AV_NOPTS_VALUE);
        let rate = stream.avg_frame_rate();
        let fps = if rate.numerator() > 0 && rate.denominator() > 0 {
            f64::from(rate)
        } else {
            0.0
        };
        let estimate = if head.frames > 0 {
            head.frames
        } else if head.duration_s > 0.0 && fps > 0.0 {
            (head.duration_s * fps).round() as usize
        } else {
            limits.max_decoded_frames
        };
        let frame_ticks = if fps > 0.0 && time_base.numerator() > 0 {
            let ticks = f64::from(time_base.denominator()) / f64::from(time_base.numerator()) / fps;
            (ticks.round() as i64).max(1)
        } else {
            1
        };
        let id = stream.parameters().id();
        // SAFETY: a plain field of the stream's live AVCodecParameters.
        let profile_id = unsafe { (*stream.parameters().as_ptr()).profile };
        let codec_ctx = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| corrupt("cannot read the video codec parameters", e))?;

        let codec = decoder::find(id)
            .ok_or_else(|| Error::CorruptImage(format!("no decoder for the video codec {id:?}")))?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_DECODER_THREADS);
        let mut options = Dictionary::new();
        options.set(
            "max_pixels",
            &limits.max_pixels.min(i32::MAX as u64).to_string(),
        );
        options.set("threads", &threads.to_string());
        let mut dec = codec_ctx
            .decoder()
            .open_as_with(codec, options)
            .and_then(|d| d.video())
            .map_err(|e| corrupt("cannot open the video decoder", e))?;

        let mut run = Run {
            limits,
            time_base,
            origin,
            frame_ticks,
            last_ts: None,
            decoded: 0,
            saw_b: false,
            errors: 0,
            last_error: None,
            sampler: Sampler::new(limits.sample_frames, estimate),
        };
        let max_packets = limits.max_decoded_frames.saturating_add(PACKET_SLACK);
        let mut packets = 0usize;
        let mut packet = ff::Packet::empty();
        loop {
            match packet.read(&mut input) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(corrupt("the video data is truncated or corrupt", e)),
            }
            if packet.stream() != index {
                continue;
            }
            packets += 1;
            if packets > max_packets {
                return Err(too_many_frames(
                    format!("more than {}", limits.max_decoded_frames),
                    limits.max_decoded_frames,
                ));
            }
            run.send(&mut dec, &packet)?;
        }
        match dec.send_eof() {
            Ok(()) => run.drain(&mut dec)?,
            Err(e) => run.failed(e)?,
        }
        if run.decoded == 0 {
            return Err(match run.last_error {
                Some(e) => corrupt("undecodable video", e),
                None => Error::CorruptImage("the video stream has no frames".into()),
            });
        }

        let has_b_frames = run.saw_b || dec.has_b_frames();
        let codec_name = codec.name().to_string();
        // SAFETY: libavcodec returns a static string or null.
        let profile = unsafe {
            let p = ffi::avcodec_profile_name(id.into(), profile_id);
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let decoded = run.decoded;
        let last_s = run
            .last_ts
            .map(|t| seconds(t.saturating_sub(run.origin.unwrap_or(t)), time_base))
            .unwrap_or(0.0);
        let duration_s = if head.duration_s > 0.0 {
            head.duration_s
        } else {
            last_s + if fps > 0.0 { 1.0 / fps } else { 0.0 }
        };
        drop(dec);
        drop(input);

        let mut to_rgb = ToRgb {
            width: head.width,
            height: head.height,
            scaler: None,
        };
        let chosen = run.sampler.finish();
        let mut frames = Vec::with_capacity(chosen.len());
        let mut timestamps_s = Vec::with_capacity(chosen.len());
        for (_, (at_s, frame)) in chosen {
            let rgb = to_rgb.convert(&frame)?;
            drop(frame);
            frames.push(crate::preprocess::decode::orient(rgb, orientation));
            timestamps_s.push(at_s);
        }
        let (width, height) = match orientation {
            Orientation::Rotate90 | Orientation::Rotate270 => (head.height, head.width),
            _ => (head.width, head.height),
        };
        Ok(DecodedVideo {
            frames,
            timestamps_s,
            decoded,
            width,
            height,
            duration_s,
            codec: codec_name,
            profile,
            has_b_frames,
        })
    }

    /// A `Vec<u8>` the muxer writes and seeks in, shared so that the bytes can be taken back
    /// once the output context (which owns its `StreamIo`) is dropped.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Cursor<Vec<u8>>>>);

    impl SharedBuf {
        fn with<R>(
            &self,
            f: impl FnOnce(&mut Cursor<Vec<u8>>) -> std::io::Result<R>,
        ) -> std::io::Result<R> {
            let mut guard = self
                .0
                .lock()
                .map_err(|_| std::io::Error::other("output buffer lock poisoned"))?;
            f(&mut guard)
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.with(|c| c.write(buf))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for SharedBuf {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.with(|c| c.seek(pos))
        }
    }

    /// [`super::encode_h264_mp4`] into any of libavformat's muxers (`mp4`, `matroska`,
    /// `mpegts`), with a display matrix for the rotation tests: `av_display_rotation_set
    /// (rotation)`, which players undo by turning the frames `rotation` degrees clockwise (0: no
    /// matrix).
    pub(super) fn encode_h264(
        frames: &[RgbImage],
        fps: u32,
        rotation: f64,
        container: &str,
    ) -> Result<Vec<u8>> {
        let first = frames
            .first()
            .ok_or_else(|| Error::InvalidArgument("no frames to encode".into()))?;
        let (w, h) = first.dimensions();
        if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
            return Err(Error::InvalidArgument(format!(
                "frames are {w}x{h}: width and height must be even and above 0"
            )));
        }
        if let Some(other) = frames.iter().find(|f| f.dimensions() != (w, h)) {
            let (ow, oh) = other.dimensions();
            return Err(Error::InvalidArgument(format!(
                "frames differ in size: {w}x{h} and {ow}x{oh}"
            )));
        }
        let fps_i = i32::try_from(fps)
            .ok()
            .filter(|f| (1..=1000).contains(f))
            .ok_or_else(|| Error::InvalidArgument(format!("fps is {fps}: 1 to 1000")))?;
        init()?;
        let codec = encoder::find_by_name("libx264")
            .ok_or_else(|| Error::Internal("this libavcodec has no libx264 encoder".into()))?;

        let sink = SharedBuf::default();
        let io = StreamIo::from_write_seek(sink.clone())
            .map_err(|e| internal("cannot set up in-memory output", e))?;
        let mut octx = format::output_to_stream(io, None, Some(container))
            .map_err(|e| internal(&format!("cannot create the {container} muxer"), e))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);

        let time_base = Rational::new(1, fps_i);
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| internal("cannot create the H.264 encoder", e))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(format::Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(Rational::new(fps_i, 1)));
        enc.set_gop(fps.clamp(2, 250));
        enc.set_max_b_frames(2);
        if global_header {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        // veryfast keeps B-frames (ultrafast turns them off); crf 18 keeps the test frames
        // close to their sources.
        options.set("preset", "veryfast");
        options.set("profile", "high");
        options.set("crf", "18");
        options.set("threads", "2");
        let mut enc = enc
            .open_with(options)
            .map_err(|e| internal("cannot open libx264", e))?;

        let index = {
            let mut ost = octx
                .add_stream(codec)
                .map_err(|e| internal("cannot add the video stream", e))?;
            ost.set_parameters(&enc);
            ost.set_time_base(time_base);
            if rotation != 0.0 {
                // SAFETY: a live stream of `octx`; libavformat allocates the 36-byte side data
                // and frees it with the stream. FFmpeg 5.1/6/7 API (removed in FFmpeg 8).
                unsafe {
                    let sd = ffi::av_stream_new_side_data(
                        ost.as_mut_ptr(),
                        ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                        36,
                    );
                    if sd.is_null() {
                        return Err(Error::Internal("cannot add the display matrix".into()));
                    }
                    ffi::av_display_rotation_set(sd.cast::<i32>(), rotation);
                }
            }
            ost.index()
        };
        octx.write_header()
            .map_err(|e| internal("cannot write the MP4 header", e))?;
        let stream_tb = octx
            .stream(index)
            .map(|s| s.time_base())
            .ok_or_else(|| Error::Internal("the MP4 stream vanished".into()))?;

        let mut scaler = scaling::Context::get(
            format::Pixel::RGB24,
            w,
            h,
            format::Pixel::YUV420P,
            w,
            h,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| internal("cannot create the RGB to YUV converter", e))?;
        let write_packets =
            |enc: &mut encoder::Video, octx: &mut format::context::Output| -> Result<()> {
                let mut packet = ff::Packet::empty();
                loop {
                    match enc.receive_packet(&mut packet) {
                        Ok(()) => {
                            packet.set_stream(index);
                            packet.rescale_ts(time_base, stream_tb);
                            packet
                                .write_interleaved(octx)
                                .map_err(|e| internal("cannot write a packet", e))?;
                        }
                        Err(ff::Error::Eof) => return Ok(()),
                        Err(e) if is_again(&e) => return Ok(()),
                        Err(e) => return Err(internal("libx264 failed", e)),
                    }
                }
            };
        let row = w as usize * 3;
        for (i, img) in frames.iter().enumerate() {
            let mut rgb = frame::Video::new(format::Pixel::RGB24, w, h);
            let stride = rgb.stride(0);
            let data = rgb.data_mut(0);
            for (y, src) in img.as_raw().chunks_exact(row).enumerate() {
                let dst = data
                    .get_mut(y * stride..y * stride + row)
                    .ok_or_else(|| Error::Internal("RGB frame is short".into()))?;
                dst.copy_from_slice(src);
            }
            // A fresh YUV frame each time: the encoder may still hold the previous one.
            let mut yuv = frame::Video::empty();
            scaler
                .run(&rgb, &mut yuv)
                .map_err(|e| internal("cannot convert a frame to YUV", e))?;
            yuv.set_pts(Some(i as i64));
            enc.send_frame(&yuv)
                .map_err(|e| internal("libx264 refused a frame", e))?;
            write_packets(&mut enc, &mut octx)?;
        }
        enc.send_eof()
            .map_err(|e| internal("libx264 refused the end of stream", e))?;
        write_packets(&mut enc, &mut octx)?;
        octx.write_trailer()
            .map_err(|e| internal("cannot finish the MP4", e))?;
        drop(octx);
        sink.with(|c| Ok(std::mem::take(c.get_mut())))
            .map_err(|e| Error::Internal(format!("cannot take the MP4 bytes: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_containers() {
        let mut mp4 = vec![0, 0, 0, 0x18];
        mp4.extend_from_slice(b"ftypisom");
        assert!(looks_like_video(&mp4));
        assert!(looks_like_video(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]));
        assert!(looks_like_video(b"RIFF\x10\x00\x00\x00AVI LIST"));
        let mut ts = vec![0u8; 188 * 3];
        for k in 0..3 {
            ts[k * 188] = 0x47;
        }
        assert!(looks_like_video(&ts));

        assert!(!looks_like_video(b""));
        assert!(!looks_like_video(b"ftyp"));
        assert!(!looks_like_video(b"RIFF\x10\x00\x00\x00WAVEfmt "));
        assert!(!looks_like_video(&[0xFF, 0xD8, 0xFF, 0xE0]));
        // One sync byte is not a transport stream, nor is a broken second packet.
        assert!(!looks_like_video(&ts[..188]));
        ts[188 * 2] = 0;
        assert!(!looks_like_video(&ts));
    }

    #[test]
    fn default_limits_and_serde() {
        let l = VideoLimits::default();
        assert_eq!(
            (
                l.max_bytes,
                l.max_decoded_frames,
                l.max_pixels,
                l.sample_frames
            ),
            (32 << 20, 1800, 4096 * 2160, 8)
        );
        assert_eq!(l.max_duration_s, 60.0);
        let parsed: VideoLimits = serde_json::from_str(r#"{"sample_frames": 3}"#).unwrap();
        assert_eq!((parsed.sample_frames, parsed.max_bytes), (3, 32 << 20));
        assert!(serde_json::from_str::<VideoLimits>(r#"{"frames": 3}"#).is_err());
    }

    #[cfg(not(feature = "video"))]
    #[test]
    fn without_the_feature_decoding_is_refused() {
        const { assert!(!VIDEO_SUPPORTED) };
        let e = decode_sampled(b"\0\0\0\x18ftypisom", &VideoLimits::default()).unwrap_err();
        assert_eq!(e.kind(), "invalid_argument");
        assert!(e.to_string().contains("cargo feature `video`"), "{e}");
    }

    /// Runs a sampler over `actual` frames announced as `estimate`.
    fn sample(want: usize, estimate: usize, actual: usize) -> Vec<usize> {
        let mut s = Sampler::new(want, estimate);
        let mut held_max = 0;
        for i in 0..actual {
            s.push(i, i);
            held_max = held_max.max(s.kept.len() + s.recent.len());
        }
        assert!(held_max <= want, "held {held_max} > {want}");
        let out = s.finish();
        assert!(out.iter().all(|(i, v)| i == v));
        out.into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn sampler_spreads_frames_evenly_when_the_count_is_known() {
        assert_eq!(sample(8, 30, 30), vec![0, 4, 8, 12, 17, 21, 25, 29]);
        assert_eq!(sample(3, 100, 100), vec![0, 50, 99]);
        assert_eq!(sample(1, 100, 100), vec![0]);
        assert_eq!(sample(8, 5, 5), vec![0, 1, 2, 3, 4]);
        assert!(sample(4, 10, 0).is_empty());
    }

    #[test]
    fn sampler_fills_every_slot_whatever_the_estimate() {
        for want in 1..10 {
            for estimate in [1, 2, 3, 5, 8, 13, 30, 100, 1000] {
                for actual in 0..70 {
                    let got = sample(want, estimate, actual);
                    assert_eq!(got.len(), want.min(actual), "{want} {estimate} {actual}");
                    assert!(got.windows(2).all(|p| p[0] < p[1]), "{got:?}");
                    if actual > 0 {
                        assert_eq!(got[0], 0, "{want} {estimate} {actual}: {got:?}");
                        if want > 1 {
                            assert_eq!(got.last(), Some(&(actual - 1)), "{got:?}");
                        }
                    }
                }
            }
        }
        // Announced 10, decoded 100: still spread over the whole video.
        let got = sample(8, 10, 100);
        assert!(got.iter().filter(|&&i| i < 50).count() >= 3, "{got:?}");
    }

    #[cfg(feature = "video")]
    mod ffmpeg {
        use super::super::imp;
        use super::super::*;
        use image::imageops::FilterType;
        use image::metadata::Orientation;

        const W: u32 = 640;
        const H: u32 = 480;
        const FPS: u32 = 15;

        fn photo() -> RgbImage {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/faces/image_T1.jpg");
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display()));
            image::load_from_memory(&bytes).unwrap().into_rgb8()
        }

        /// `n` frames of the photo, a window moving 4 pixels a frame, resized to 640x480.
        fn frames(n: usize) -> Vec<RgbImage> {
            let src = photo();
            let (sw, sh) = src.dimensions();
            let (cw, ch) = (sw * 3 / 4, sh * 3 / 4);
            (0..n)
                .map(|i| {
                    let dx = (i as u32 * 4) % (sw - cw);
                    let dy = (i as u32 * 2) % (sh - ch);
                    let crop = image::imageops::crop_imm(&src, dx, dy, cw, ch).to_image();
                    image::imageops::resize(&crop, W, H, FilterType::Triangle)
                })
                .collect()
        }

        fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
            assert_eq!(a.dimensions(), b.dimensions());
            let sum: u64 = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(&x, &y)| u64::from(x.abs_diff(y)))
                .sum();
            sum as f64 / a.as_raw().len() as f64
        }

        fn video(n: usize) -> (Vec<RgbImage>, Vec<u8>) {
            let src = frames(n);
            let mp4 = encode_h264_mp4(&src, FPS).unwrap();
            (src, mp4)
        }

        #[test]
        fn round_trip_h264_high_with_b_frames() {
            const { assert!(VIDEO_SUPPORTED) };
            let (src, mp4) = video(24);
            assert!(looks_like_video(&mp4));
            let limits = VideoLimits::default();
            let out = decode_sampled(&mp4, &limits).unwrap();
            assert_eq!(out.codec, "h264");
            assert_eq!(out.profile.as_deref(), Some("High"));
            assert!(out.has_b_frames, "{out:?}");
            assert_eq!(out.decoded, 24);
            assert_eq!(out.frames.len(), limits.sample_frames);
            assert_eq!(out.timestamps_s.len(), limits.sample_frames);
            assert!(out.timestamps_s.windows(2).all(|p| p[0] < p[1]), "{out:?}");
            assert!(out.timestamps_s[0].abs() < 1e-6, "{out:?}");
            assert!((out.duration_s - 24.0 / 15.0).abs() < 0.1, "{out:?}");
            assert_eq!((out.width, out.height), (W, H));
            assert!(out.frames.iter().all(|f| f.dimensions() == (W, H)));
            // Evenly spread over 24 frames: indices 0, 3, 7, 10, 13, 16, 20, 23.
            let expected = [0usize, 3, 7, 10, 13, 16, 20, 23];
            for (k, (&i, f)) in expected.iter().zip(&out.frames).enumerate() {
                assert!(
                    (out.timestamps_s[k] - i as f64 / 15.0).abs() < 1e-3,
                    "{out:?}"
                );
                let d = mean_abs_diff(f, &src[i]);
                assert!(d < 4.0, "frame {i}: mean abs diff {d}");
                // And it is that frame, not a neighbour (frames move 4 pixels apart).
                if i + 1 < src.len() {
                    assert!(d < mean_abs_diff(f, &src[i + 1]), "frame {i}");
                }
            }
        }

        #[test]
        fn rotation_metadata_is_applied() {
            let src = frames(6);
            // What an iPhone writes for a portrait video: shown by turning 90 degrees clockwise.
            let mp4 = imp::encode_h264(&src, FPS, 90.0, "mp4").unwrap();
            let limits = VideoLimits {
                sample_frames: 2,
                ..VideoLimits::default()
            };
            let out = decode_sampled(&mp4, &limits).unwrap();
            assert_eq!((out.width, out.height), (H, W));
            let upright = crate::preprocess::decode::orient(src[0].clone(), Orientation::Rotate90);
            assert_eq!(out.frames[0].dimensions(), (H, W));
            let d = mean_abs_diff(&out.frames[0], &upright);
            assert!(d < 4.0, "mean abs diff {d}");
        }

        #[test]
        fn display_matrix_angles() {
            let turn = |ccw: f64| {
                let mut m = [0i32; 9];
                // SAFETY: 9 i32, what libavutil writes.
                unsafe { ffmpeg_next::ffi::av_display_rotation_set(m.as_mut_ptr(), ccw) };
                imp::orientation_of(&m)
            };
            assert_eq!(turn(0.0), Orientation::NoTransforms);
            assert_eq!(turn(90.0), Orientation::Rotate90);
            assert_eq!(turn(-270.0), Orientation::Rotate90);
            assert_eq!(turn(-90.0), Orientation::Rotate270);
            assert_eq!(turn(270.0), Orientation::Rotate270);
            assert_eq!(turn(180.0), Orientation::Rotate180);
            assert_eq!(turn(45.0), Orientation::NoTransforms);
            // A mirrored matrix is left alone.
            let mut m = [0i32; 9];
            unsafe { ffmpeg_next::ffi::av_display_rotation_set(m.as_mut_ptr(), 90.0) };
            m[0] = -m[0];
            m[3] = -m[3];
            assert_eq!(imp::orientation_of(&m), Orientation::NoTransforms);
        }

        #[test]
        fn matroska_and_transport_stream() {
            // Neither announces a frame count: the sampler works from duration * frame rate.
            let src = frames(20);
            for container in ["matroska", "mpegts"] {
                let bytes = imp::encode_h264(&src, FPS, 0.0, container).unwrap();
                assert!(looks_like_video(&bytes), "{container}");
                let out = decode_sampled(&bytes, &VideoLimits::default()).unwrap();
                assert_eq!(
                    (out.decoded, out.frames.len()),
                    (20, 8),
                    "{container}: {out:?}"
                );
                assert!(out.has_b_frames, "{container}");
                assert_eq!(out.profile.as_deref(), Some("High"), "{container}");
                assert!(out.timestamps_s.windows(2).all(|p| p[0] < p[1]), "{out:?}");
                let d = mean_abs_diff(&out.frames[0], &src[0]);
                assert!(d < 4.0, "{container}: mean abs diff {d}");
                let last = out.timestamps_s[7];
                assert!((last - 19.0 / 15.0).abs() < 1e-3, "{container}: {out:?}");

                // The frame bound, while decoding: no count in the header to refuse upfront.
                let limits = VideoLimits {
                    max_decoded_frames: 12,
                    ..VideoLimits::default()
                };
                let e = decode_sampled(&bytes, &limits).unwrap_err();
                assert_eq!(e.kind(), "invalid_argument", "{container}");
                assert!(e.to_string().contains("the limit is 12 frames"), "{e}");
            }
        }

        #[test]
        fn fewer_frames_than_samples() {
            let (_, mp4) = video(3);
            let out = decode_sampled(&mp4, &VideoLimits::default()).unwrap();
            assert_eq!((out.decoded, out.frames.len()), (3, 3));
        }

        #[test]
        fn bounds_are_refused_naming_them() {
            let (_, mp4) = video(20);
            let base = VideoLimits::default();
            let refuse = |limits: VideoLimits| decode_sampled(&mp4, &limits).unwrap_err();

            let e = refuse(VideoLimits {
                max_decoded_frames: 10,
                ..base
            });
            assert_eq!(e.kind(), "invalid_argument");
            assert!(e.to_string().contains("the limit is 10 frames"), "{e}");

            let e = refuse(VideoLimits {
                max_duration_s: 0.5,
                ..base
            });
            assert_eq!(e.kind(), "invalid_argument");
            assert!(e.to_string().contains("video too long"), "{e}");
            assert!(e.to_string().contains("the limit is 0.5 s"), "{e}");

            let e = refuse(VideoLimits {
                max_bytes: mp4.len() - 1,
                ..base
            });
            assert!(
                matches!(e, crate::Error::ImageTooLarge { size, limit } if size == mp4.len() && limit == mp4.len() - 1),
                "{e}"
            );

            let e = refuse(VideoLimits {
                max_pixels: 640 * 479,
                ..base
            });
            assert!(
                matches!(
                    e,
                    crate::Error::TooManyPixels {
                        width: 640,
                        height: 480,
                        limit
                    } if limit == 640 * 479
                ),
                "{e}"
            );

            let e = refuse(VideoLimits {
                sample_frames: 0,
                ..base
            });
            assert_eq!(e.kind(), "invalid_argument");
            assert!(e.to_string().contains("sample_frames"), "{e}");
        }

        #[test]
        fn garbage_is_refused_cleanly() {
            let (_, mp4) = video(10);
            let limits = VideoLimits::default();
            let kind = |bytes: &[u8]| decode_sampled(bytes, &limits).map(|_| ()).unwrap_err();

            assert_eq!(kind(b"").kind(), "empty_image");
            assert_eq!(kind(b"hello, not a video").kind(), "corrupt_image");
            // Truncated at many points: each is an error, never a panic.
            for cut in [
                9,
                40,
                200,
                1000,
                mp4.len() / 3,
                mp4.len() / 2,
                mp4.len() - 100,
            ] {
                let e = kind(&mp4[..cut]);
                assert!(e.is_client_error(), "cut {cut}: {e}");
            }
            // An MP4 header followed by garbage.
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut noise = |n: usize| -> Vec<u8> {
                (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect()
            };
            for len in [0usize, 16, 300, 5000, 100_000] {
                let mut bytes = mp4[..32].to_vec();
                bytes.extend(noise(len));
                let e = kind(&bytes);
                assert_eq!(e.kind(), "corrupt_image", "{len}: {e}");
            }
            // Random bytes under each container's magic, and bytes flipped inside a real MP4.
            for magic in [
                &b"\0\0\0\x20ftypmp42"[..],
                &[0x1A, 0x45, 0xDF, 0xA3],
                b"RIFF\xff\xff\0\0AVI LIST",
            ] {
                for len in [10usize, 1000, 50_000] {
                    let mut bytes = magic.to_vec();
                    bytes.extend(noise(len));
                    let e = kind(&bytes);
                    assert!(e.is_client_error(), "{e}");
                }
            }
            let mut ts = noise(188 * 40);
            for k in 0..40 {
                ts[k * 188] = 0x47;
            }
            assert!(kind(&ts).is_client_error());
            for round in 0..12 {
                let mut bytes = mp4.clone();
                let flips = noise(64);
                for (j, b) in flips.iter().enumerate() {
                    let at = (usize::from(*b) * 7919 + j * 104_729 + round * 31) % bytes.len();
                    bytes[at] ^= 0x5A;
                }
                // A corrupted video may still decode (concealment) or fail: never panic.
                if let Ok(out) = decode_sampled(&bytes, &limits) {
                    assert!(out.frames.len() <= limits.sample_frames);
                }
            }
        }

        #[test]
        fn encoder_refuses_bad_frames() {
            let odd = vec![RgbImage::new(15, 10)];
            assert!(encode_h264_mp4(&odd, 15).is_err());
            assert!(encode_h264_mp4(&[], 15).is_err());
            let mixed = vec![RgbImage::new(16, 16), RgbImage::new(32, 16)];
            assert!(encode_h264_mp4(&mixed, 15).is_err());
            assert!(encode_h264_mp4(&[RgbImage::new(16, 16)], 0).is_err());
        }

        #[test]
        fn decode_speed() {
            let (_, mp4) = video(60);
            let start = std::time::Instant::now();
            let out = decode_sampled(&mp4, &VideoLimits::default()).unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(out.decoded, 60);
            if std::env::var_os("FACEGATE_VIDEO_TIMING").is_some() {
                eprintln!(
                    "decoded {} frames of {W}x{H} in {:.1} ms: {:.0} frames/s",
                    out.decoded,
                    secs * 1e3,
                    out.decoded as f64 / secs
                );
            }
        }
    }
}
