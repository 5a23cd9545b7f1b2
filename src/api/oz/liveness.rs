//! Oz liveness (`/v1/face/liveness/detect`): one image body -> `{"passed", "score"}`, or a
//! multipart of uniquely named media (images, videos, zip archives of images) plus a
//! `payload` JSON -> one result per analysis and per media, and overall.
//!
//! Scores follow Oz's convention, a spoof score in 0..1 ([`FrameVerdict::spoof_score`]): at or
//! above the analysis's `threshold_spoofing` it is declined. Every frame of every media goes
//! to the batcher in one `submit_many`; each media's frames are fused by an engine
//! [`Session`] (mean raw score of the frames the quality gate accepted), the request's result
//! is its worst media. The best shot is the accepted frame of highest quality
//! ([`autocapture::best_frame`]).

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::media::{expand_all, Media};
use super::{base64_mode, input_bytes, oz_error, score, Failure, Oz};
use crate::api::error::ApiError;
use crate::api::input::{media_type, multipart, Part};
use crate::batcher::Input;
use crate::engine::autocapture;
use crate::engine::decision::{FrameOutcome, FrameVerdict};
use crate::engine::session::{FrameState, Session, SessionOutcome, SessionPolicy};
use crate::engine::{AnalyzeOptions, Calibration, Pipeline};
use crate::server::{json_response, Ctx, HttpResponse};

/// The `payload` part: what to analyse and how. Metadata keys of Oz's payload are taken and
/// ignored; any other key is refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    /// Analyses to run (default: one liveness analysis over every media).
    #[serde(default)]
    analyses: Vec<AnalysisSpec>,
    /// Default `extract_best_shot` of the analyses.
    #[serde(default)]
    extract_best_shot: Option<bool>,
    /// Default `threshold_spoofing` of the analyses.
    #[serde(default)]
    threshold_spoofing: Option<f64>,
    #[serde(default, rename = "folder:meta_data")]
    _folder_meta: Option<Value>,
    #[serde(default, rename = "media:meta_data")]
    _media_meta: Option<Value>,
    #[serde(default, rename = "media:tags")]
    _media_tags: Option<Value>,
}

/// One entry of `analyses`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalysisSpec {
    /// `quality` (Oz's name for liveness) or `liveness`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Media keys it covers (default: every media).
    #[serde(default)]
    source_media: Option<Vec<String>>,
    /// Its parameters.
    #[serde(default)]
    params: Params,
    /// The parameters may also sit in the analysis itself.
    #[serde(default)]
    extract_best_shot: Option<bool>,
    #[serde(default)]
    threshold_spoofing: Option<f64>,
}

/// `params` of an analysis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    extract_best_shot: Option<bool>,
    #[serde(default)]
    threshold_spoofing: Option<f64>,
}

/// An analysis, resolved.
struct Analysis {
    kind: String,
    media: Vec<usize>,
    best_shot: bool,
    threshold: f64,
}

/// One media's fused result.
struct MediaResult {
    verdict: FrameVerdict,
    frames: usize,
    /// Index (in the request's frame list) of its best shot.
    best: usize,
    best_quality: f32,
}

/// How the frames of a session are fused.
const SESSION: Session = Session {
    policy: SessionPolicy::MeanScore,
    pipeline: Pipeline::Dual,
    calibration: Calibration::Regular,
};

impl Oz {
    /// `POST /v1/face/liveness/detect`.
    pub(super) async fn detect(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let b64 = base64_mode(req.headers());
        let t = media_type(req.headers());
        match t.as_str() {
            "image/jpeg" | "image/jpg" | "image/png" => {
                let max = self.cfg.max_body_bytes;
                let bytes = input_bytes(req.into_body(), b64, max, "the image", Failure::Sample)?;
                let p = ctx
                    .app
                    .batcher
                    .submit(bytes, AnalyzeOptions::default(), ctx.route.name)
                    .await
                    .map_err(|e| frame_error("the image", e))?;
                let decider = ctx.app.batcher.decider();
                match decider.frame(&p.analysis, SESSION.pipeline, SESSION.calibration)? {
                    FrameOutcome::Verdict(v) => Ok(json_response(
                        StatusCode::OK,
                        &json!({
                            "passed": v.passes(self.cfg.threshold_spoofing),
                            "score": score(v.spoof_score()),
                        }),
                    )),
                    FrameOutcome::Rejected(r) => Err(oz_error(
                        Failure::Sample,
                        format!("the image: {}", r.message),
                    )),
                    FrameOutcome::NoLiveness => Err(oz_error(Failure::Internal, "")),
                }
            }
            "multipart/form-data" => self.detect_media(req, ctx, b64).await,
            _ => Err(oz_error(
                Failure::ContentType,
                format!("detect takes image/jpeg, image/png or multipart/form-data, got {t:?}"),
            )),
        }
    }

    /// The multipart form of `detect`.
    async fn detect_media(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
        b64: bool,
    ) -> Result<HttpResponse, ApiError> {
        let headers = req.headers().clone();
        let parts = multipart(&headers, req.into_body(), self.cfg.max_media + 1).await?;
        let (payload, media_parts) = self.split(parts, b64)?;
        // Expand every media on a blocking thread (archives inflate, videos decode).
        let oz = self.clone();
        let media: Vec<Media> =
            tokio::task::spawn_blocking(move || expand_all(media_parts, &oz.cfg))
                .await
                .map_err(|e| oz_error(Failure::Internal, format!("media task: {e}")))??;
        let analyses = self.analyses(payload, &media)?;
        let total: usize = media.iter().map(|m| m.frames.len()).sum();
        let best_shots = analyses.iter().any(|a| a.best_shot);
        let mut labels = Vec::with_capacity(total);
        let mut inputs = Vec::with_capacity(total);
        // A copy of each frame only when a best shot is asked (bounded by `max_frames`).
        let mut kept: Vec<Option<Input>> = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(media.len());
        let mut media = media;
        for m in media.iter_mut() {
            let start = inputs.len();
            for f in std::mem::take(&mut m.frames) {
                labels.push(f.label);
                kept.push(best_shots.then(|| f.input.clone()));
                inputs.push(f.input);
            }
            spans.push(start..inputs.len());
        }
        let mut results = ctx
            .app
            .batcher
            .submit_many(inputs, AnalyzeOptions::default(), ctx.route.name)
            .await;
        let decider = ctx.app.batcher.decider();
        let mut per_media = Vec::with_capacity(media.len());
        for (m, span) in media.iter().zip(&spans) {
            let states: Vec<FrameState> = results[span.clone()]
                .iter()
                .map(|r| {
                    FrameState::of(
                        &decider,
                        r.as_ref().map(|p| &p.analysis),
                        SESSION.pipeline,
                        SESSION.calibration,
                    )
                })
                .collect();
            match SESSION.decide(&decider, &states) {
                SessionOutcome::Verdict { verdict, frames } => {
                    let accepted: Vec<usize> = span
                        .clone()
                        .filter(|&i| matches!(states[i - span.start], FrameState::Verdict(_)))
                        .collect();
                    let scored: Vec<_> = accepted
                        .iter()
                        .filter_map(|&i| results[i].as_ref().ok().map(|p| (&p.analysis, &[][..])))
                        .collect();
                    let best = autocapture::best_frame(&scored)
                        .and_then(|k| accepted.get(k).copied())
                        .unwrap_or(span.start);
                    let best_quality = results[best]
                        .as_ref()
                        .ok()
                        .and_then(|p| p.analysis.quality.as_ref())
                        .map_or(0.0, |q| q.score);
                    per_media.push(MediaResult {
                        verdict,
                        frames,
                        best,
                        best_quality,
                    });
                }
                SessionOutcome::Frame(i) => {
                    let at = span.start + i;
                    let taken = std::mem::replace(
                        &mut results[at],
                        Err(crate::Error::Internal("taken".into())),
                    );
                    return Err(match taken {
                        Err(e) => frame_error(&labels[at], e),
                        Ok(p) => match &p.analysis.rejection {
                            Some(r) => oz_error(
                                Failure::Sample,
                                format!(
                                    "{}: no frame of {} was usable; {}: {}",
                                    m.name, m.name, labels[at], r.message
                                ),
                            ),
                            None => oz_error(Failure::Internal, ""),
                        },
                    });
                }
                SessionOutcome::Empty => {
                    return Err(oz_error(
                        Failure::Sample,
                        format!("{}: no frame to analyse", m.name),
                    ))
                }
            }
        }
        let mut out = Vec::with_capacity(analyses.len());
        let (mut all_passed, mut worst) = (true, 0f32);
        for a in &analyses {
            let mut results_media = Vec::new();
            let (mut passed, mut worst_here) = (true, 0f32);
            let mut best: Option<(f32, usize, usize)> = None;
            for &mi in &a.media {
                let r = &per_media[mi];
                let (s, ok) = (
                    r.verdict.spoof_score(),
                    r.verdict.passes(a.threshold as f32),
                );
                passed &= ok;
                worst_here = worst_here.max(s);
                let mut entry = json!({
                    "source_media": media[mi].name,
                    "media_type": media[mi].kind.name(),
                    "passed": ok,
                    "score": score(s),
                    "frames_analysed": r.frames,
                });
                if a.best_shot {
                    let img = self.best_shot(&kept[r.best])?;
                    entry["output_images"] = json!([{"image_b64": img}]);
                    if best.is_none_or(|(q, ..)| r.best_quality > q) {
                        best = Some((r.best_quality, r.best, mi));
                    }
                }
                results_media.push(entry);
            }
            all_passed &= passed;
            worst = worst.max(worst_here);
            let mut entry = json!({
                "type": a.kind,
                "source_media": a.media.iter().map(|&i| media[i].name.clone()).collect::<Vec<_>>(),
                "resolution_status": if passed { "SUCCESS" } else { "DECLINED" },
                "passed": passed,
                "score": score(worst_here),
                "threshold_spoofing": a.threshold,
                "results_media": results_media,
            });
            if let Some((_, frame, mi)) = best {
                entry["output_images"] = json!([{
                    "source_media": media[mi].name,
                    "image_b64": self.best_shot(&kept[frame])?,
                }]);
            }
            out.push(entry);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"passed": all_passed, "score": score(worst), "analyses": out}),
        ))
    }

    /// The payload and the media parts (unique names, accepted part types, base64 decoded in
    /// base64 mode).
    fn split(
        &self,
        parts: Vec<Part>,
        b64: bool,
    ) -> Result<(Payload, Vec<(String, Bytes)>), ApiError> {
        let mut payload = None;
        let mut media = Vec::new();
        let mut names = BTreeSet::new();
        for (i, p) in parts.into_iter().enumerate() {
            if p.name.as_deref() == Some("payload") {
                if !matches!(
                    p.content_type.as_deref(),
                    None | Some("application/json") | Some("text/plain")
                ) {
                    return Err(oz_error(
                        Failure::PartType,
                        format!(
                            "payload part of type {:?}; it takes application/json",
                            p.content_type.unwrap_or_default()
                        ),
                    ));
                }
                let parsed: Payload = serde_json::from_slice(&p.bytes)
                    .map_err(|e| oz_error(Failure::Sample, format!("payload: {e}")))?;
                payload = Some(parsed);
                continue;
            }
            let name = p
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("media{i}"));
            let allowed = match p.content_type.as_deref() {
                None => true,
                Some(t) => {
                    matches!(
                        t,
                        "image/jpeg"
                            | "image/jpg"
                            | "image/png"
                            | "application/zip"
                            | "application/x-zip-compressed"
                            | "application/octet-stream"
                    ) || t.starts_with("video/")
                        || (b64 && t == "text/plain")
                }
            };
            if !allowed {
                return Err(oz_error(
                    Failure::PartType,
                    format!(
                        "{name} part of type {:?}; media are images, videos or zip archives",
                        p.content_type.unwrap_or_default()
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(oz_error(
                    Failure::Sample,
                    format!("two media named {name:?}: every media needs its own name"),
                ));
            }
            let bytes = input_bytes(
                p.bytes,
                b64,
                self.cfg.max_body_bytes,
                &name,
                Failure::Sample,
            )?;
            if bytes.is_empty() {
                return Err(oz_error(Failure::Sample, format!("{name} is empty")));
            }
            media.push((name, bytes));
        }
        if media.is_empty() {
            return Err(oz_error(Failure::Sample, "no media in the request"));
        }
        Ok((payload.unwrap_or_default(), media))
    }

    /// The analyses of a payload, resolved against the media.
    fn analyses(&self, payload: Payload, media: &[Media]) -> Result<Vec<Analysis>, ApiError> {
        let threshold = |t: Option<f64>| -> Result<f64, ApiError> {
            let t = t
                .or(payload.threshold_spoofing)
                .unwrap_or(f64::from(self.cfg.threshold_spoofing));
            if t > 0.0 && t <= 1.0 {
                Ok(t)
            } else {
                Err(oz_error(
                    Failure::Sample,
                    format!("payload: threshold_spoofing {t} is not in (0, 1]"),
                ))
            }
        };
        let all: Vec<usize> = (0..media.len()).collect();
        if payload.analyses.is_empty() {
            return Ok(vec![Analysis {
                kind: "quality".into(),
                media: all,
                best_shot: payload.extract_best_shot.unwrap_or(false),
                threshold: threshold(None)?,
            }]);
        }
        let mut out = Vec::new();
        for spec in &payload.analyses {
            let kind = spec
                .kind
                .clone()
                .unwrap_or_else(|| "quality".into())
                .to_ascii_lowercase();
            if kind != "quality" && kind != "liveness" {
                return Err(oz_error(
                    Failure::Sample,
                    format!(
                        "payload: analysis type {kind:?} is not run by detect (quality, liveness)"
                    ),
                ));
            }
            let chosen = match &spec.source_media {
                None => all.clone(),
                Some(keys) => keys
                    .iter()
                    .map(|k| {
                        media.iter().position(|m| &m.name == k).ok_or_else(|| {
                            oz_error(
                                Failure::Sample,
                                format!(
                                    "payload: source_media {k:?} is not a media of the request"
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if chosen.is_empty() {
                return Err(oz_error(
                    Failure::Sample,
                    "payload: an analysis has no media",
                ));
            }
            out.push(Analysis {
                kind,
                media: chosen,
                best_shot: spec
                    .params
                    .extract_best_shot
                    .or(spec.extract_best_shot)
                    .or(payload.extract_best_shot)
                    .unwrap_or(false),
                threshold: threshold(spec.params.threshold_spoofing.or(spec.threshold_spoofing))?,
            });
        }
        Ok(out)
    }

    /// A frame as base64: an encoded image as sent, a decoded video frame as JPEG.
    fn best_shot(&self, frame: &Option<Input>) -> Result<String, ApiError> {
        match frame {
            Some(Input::Encoded(b)) => Ok(STANDARD.encode(b)),
            Some(Input::Frame(img)) => {
                let mut out = Cursor::new(Vec::new());
                image::codecs::jpeg::JpegEncoder::new_with_quality(
                    &mut out,
                    self.cfg.best_shot_quality,
                )
                .encode_image(img)
                .map_err(|e| oz_error(Failure::Internal, format!("best shot: {e}")))?;
                Ok(STANDARD.encode(out.into_inner()))
            }
            None => Err(oz_error(Failure::Internal, "best shot not kept")),
        }
    }
}

/// An engine error about one frame: the client's fault names the frame (LDE-002004), a
/// server fault stays what it is.
fn frame_error(label: &str, e: crate::Error) -> ApiError {
    if e.is_client_error() {
        oz_error(Failure::Sample, format!("{label}: {e}"))
    } else {
        e.into()
    }
}
