//! Oz biometry (`/v1/face/pattern/...`): templates out of images, 1:1 and 1:N comparisons.
//!
//! Images of one request go to the batcher together (`submit_many`: one batched descriptor
//! run); the N templates of a 1:N request form one [`Gallery`] compared to the probe in one
//! pass. Scores are [`crate::engine::Match::similarity`] (`clamp(1 - distance, 0, 1)`), the
//! recommendation is [`crate::engine::MatchPolicy::decide`].

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{base64_mode, binary, input_bytes, output_bytes, oz_error, score, Failure, Oz};
use crate::api::error::ApiError;
use crate::api::input::{media_type, multipart, Part};
use crate::batcher::Input;
use crate::engine::template::TEMPLATE_VERSION;
use crate::engine::{AnalyzeOptions, FaceTemplate, Gallery, Match, Rejection};
use crate::server::{json_response, Ctx, HttpResponse};

/// The biometry methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Image body -> template.
    Extract,
    /// `bio_feature` + `bio_template` -> score, decision.
    Compare,
    /// `sample` + `bio_template` -> multipart score, bio_feature.
    Verify,
    /// `sample_1` + `sample_2` -> score, decision.
    ExtractAndCompare,
    /// `template_1` + N `templates_n` -> results.
    CompareN,
    /// `sample_1` + N `templates_n` -> results.
    VerifyN,
    /// `sample_1` + N `samples_n` -> results.
    ExtractAndCompareN,
}

/// Whether a media type is an image body the extract method takes (case-insensitive, as
/// [`media_type`] lowers it; a JPEG labelled PNG is still read, the decoder sniffs).
fn is_image_type(t: &str) -> bool {
    matches!(t, "image/jpeg" | "image/jpg" | "image/png")
}

/// One named input of a multipart request, its bytes decoded from base64 when asked.
struct Named {
    /// File name, else field name.
    name: String,
    /// The bytes.
    bytes: Bytes,
}

impl Oz {
    /// Every `/v1/face/pattern/` method but health.
    pub(super) async fn pattern(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
        p: Pattern,
    ) -> Result<HttpResponse, ApiError> {
        let b64 = base64_mode(req.headers());
        let t = media_type(req.headers());
        if let Some(info) = ctx.app.batcher.info() {
            if !info.models.contains(&"face-descriptor") {
                return Err(oz_error(
                    Failure::NotReady,
                    "the face descriptor is not loaded (load_descriptor = false)",
                ));
            }
        }
        if p == Pattern::Extract {
            if !is_image_type(&t) {
                return Err(oz_error(
                    Failure::ContentType,
                    format!("extract takes image/jpeg or image/png, got {t:?}"),
                ));
            }
            let max = self.cfg.max_body_bytes;
            let bytes = input_bytes(req.into_body(), b64, max, "the sample", Failure::Sample)?;
            let mut t = self
                .extract(
                    &ctx,
                    vec![Named {
                        name: "sample".into(),
                        bytes,
                    }],
                )
                .await?;
            let t = t.pop().ok_or_else(|| oz_error(Failure::Internal, ""))?;
            return Ok(binary(
                "application/octet-stream",
                output_bytes(t.to_bytes(), b64),
                b64,
            ));
        }
        if t != "multipart/form-data" {
            return Err(oz_error(
                Failure::ContentType,
                format!("this method takes multipart/form-data, got {t:?}"),
            ));
        }
        let max_parts = self.cfg.max_templates.max(self.cfg.max_samples) + 2;
        let headers = req.headers().clone();
        let parts = multipart(&headers, req.into_body(), max_parts).await?;
        let mut form = Form {
            parts,
            b64,
            oz: &self,
        };
        match p {
            Pattern::Extract => Err(oz_error(Failure::Internal, "")),
            Pattern::Compare => {
                let a = form.template("bio_feature")?;
                let b = form.template("bio_template")?;
                self.one_to_one(&a, &b)
            }
            Pattern::Verify => {
                let sample = form.sample("sample")?;
                let b = form.template("bio_template")?;
                let a = self.extract_one(&ctx, sample).await?;
                let m = compare(&a, &b)?;
                Ok(verify_answer(m.similarity, &a.to_bytes(), b64))
            }
            Pattern::ExtractAndCompare => {
                let s1 = form.sample("sample_1")?;
                let s2 = form.sample("sample_2")?;
                let mut t = self.extract(&ctx, vec![s1, s2]).await?;
                let (b, a) = (t.pop(), t.pop());
                match (a, b) {
                    (Some(a), Some(b)) => self.one_to_one(&a, &b),
                    _ => Err(oz_error(Failure::Internal, "")),
                }
            }
            Pattern::CompareN => {
                let probe = form.template("template_1")?;
                let (names, gallery) = form.gallery()?;
                self.one_to_many(&probe, &names, &gallery)
            }
            Pattern::VerifyN => {
                let sample = form.sample("sample_1")?;
                let (names, gallery) = form.gallery()?;
                let probe = self.extract_one(&ctx, sample).await?;
                self.one_to_many(&probe, &names, &gallery)
            }
            Pattern::ExtractAndCompareN => {
                let probe = form.sample("sample_1")?;
                let samples = form.samples("samples_n")?;
                let names: Vec<String> = samples.iter().map(|s| s.name.clone()).collect();
                let mut all = vec![probe];
                all.extend(samples);
                let templates = self.extract(&ctx, all).await?;
                let (probe, rest) = templates
                    .split_first()
                    .ok_or_else(|| oz_error(Failure::Internal, ""))?;
                let mut gallery = Gallery::with_capacity(TEMPLATE_VERSION, 128, rest.len());
                for t in rest {
                    gallery
                        .push(t)
                        .map_err(|e| oz_error(Failure::Extract, e.to_string()))?;
                }
                self.one_to_many(probe, &names, &gallery)
            }
        }
    }

    /// `{"score", "decision"}` of two templates.
    fn one_to_one(&self, a: &FaceTemplate, b: &FaceTemplate) -> Result<HttpResponse, ApiError> {
        let m = compare(a, b)?;
        let decision = self.cfg.policy().decide(m.similarity).name();
        Ok(json_response(
            StatusCode::OK,
            &json!({"score": score(m.similarity), "decision": decision}),
        ))
    }

    /// `{"results": [{"filename", "score", "decision"}]}` of a probe against a gallery.
    fn one_to_many(
        &self,
        probe: &FaceTemplate,
        names: &[String],
        gallery: &Gallery,
    ) -> Result<HttpResponse, ApiError> {
        let policy = self.cfg.policy();
        let matches = gallery
            .compare(probe, 0.0)
            .map_err(|e| oz_error(Failure::Template, e.to_string()))?;
        let results: Vec<_> = names
            .iter()
            .zip(matches)
            .map(|(name, m)| {
                json!({"filename": name, "score": score(m.similarity), "decision": policy.decide(m.similarity).name()})
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "results": results }),
        ))
    }

    /// The template of one image.
    async fn extract_one(&self, ctx: &Ctx, sample: Named) -> Result<FaceTemplate, ApiError> {
        self.extract(ctx, vec![sample])
            .await?
            .pop()
            .ok_or_else(|| oz_error(Failure::Internal, ""))
    }

    /// The templates of several images, submitted together (one batched descriptor run);
    /// the first image that fails decides the error, named by its part.
    async fn extract(&self, ctx: &Ctx, samples: Vec<Named>) -> Result<Vec<FaceTemplate>, ApiError> {
        let opts = AnalyzeOptions {
            liveness: false,
            template: true,
            ignore_quality: true,
            ..AnalyzeOptions::default()
        };
        let names: Vec<String> = samples.iter().map(|s| s.name.clone()).collect();
        let inputs = samples
            .into_iter()
            .map(|s| Input::Encoded(s.bytes))
            .collect();
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, opts, ctx.route.name)
            .await;
        let mut out = Vec::with_capacity(results.len());
        for (name, r) in names.iter().zip(results) {
            let p = match r {
                Ok(p) => p,
                Err(e) if e.is_client_error() => {
                    return Err(oz_error(Failure::Sample, format!("{name}: {e}")))
                }
                Err(e) => return Err(e.into()),
            };
            let a = &p.analysis;
            // The quality gate's face count (engine `quality.max_faces`, comparable faces by
            // `quality.secondary_face_ratio`) decides; the other gate reasons do not stop a
            // template.
            match a.rejection.as_ref().map(|r| r.code) {
                Some(Rejection::FaceNotFound) => {
                    return Err(oz_error(
                        Failure::NoFace,
                        format!("no face found in {name}"),
                    ))
                }
                Some(Rejection::TooManyFaces) => {
                    return Err(oz_error(
                        Failure::ManyFaces,
                        format!("{name} shows {} faces", a.faces.len()),
                    ))
                }
                _ => {}
            }
            match &a.template {
                Some(t) => out.push(t.clone()),
                None => {
                    return Err(oz_error(
                        Failure::Extract,
                        format!("the face of {name} gave no template"),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// The parts of a multipart request, taken by field name.
struct Form<'a> {
    /// Parts not taken yet.
    parts: Vec<Part>,
    /// Base64 mode.
    b64: bool,
    /// The dialect (bounds).
    oz: &'a Oz,
}

impl Form<'_> {
    /// Field names received, for errors.
    fn received(&self) -> String {
        let names: Vec<&str> = self
            .parts
            .iter()
            .map(|p| p.name.as_deref().unwrap_or("(unnamed)"))
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// Removes and returns every part called `field`.
    fn take_all(&mut self, field: &str) -> Vec<Part> {
        let (taken, rest) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(|p| p.name.as_deref() == Some(field));
        self.parts = rest;
        taken
    }

    /// The one part called `field`; missing is `failure`.
    fn take(&mut self, field: &str, failure: Failure) -> Result<Part, ApiError> {
        let received = self.received();
        let mut all = self.take_all(field);
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(oz_error(
                failure,
                format!("the {field} part is missing (parts received: {received})"),
            )),
            n => Err(oz_error(
                failure,
                format!("{n} {field} parts, the method takes one"),
            )),
        }
    }

    /// A part's Content-Type must be one of `allowed` (or absent).
    fn check_type(&self, p: &Part, field: &str, allowed: &[&str]) -> Result<(), ApiError> {
        match p.content_type.as_deref() {
            None => Ok(()),
            Some(t) if allowed.contains(&t) || (self.b64 && t == "text/plain") => Ok(()),
            Some(t) => Err(oz_error(
                Failure::PartType,
                format!(
                    "{field} part of type {t:?}; it takes {}",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// The image part `field`.
    fn sample(&mut self, field: &str) -> Result<Named, ApiError> {
        let p = self.take(field, Failure::Sample)?;
        self.named_sample(p, field)
    }

    fn named_sample(&self, p: Part, field: &str) -> Result<Named, ApiError> {
        self.check_type(
            &p,
            field,
            &[
                "image/jpeg",
                "image/jpg",
                "image/png",
                "application/octet-stream",
            ],
        )?;
        let name = p
            .file_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| field.to_string());
        let bytes = input_bytes(
            p.bytes,
            self.b64,
            self.oz.cfg.max_body_bytes,
            &name,
            Failure::Sample,
        )?;
        Ok(Named { name, bytes })
    }

    /// Every image part `field` (at least one, at most `max_samples`), named by file name.
    fn samples(&mut self, field: &str) -> Result<Vec<Named>, ApiError> {
        let parts = self.take_all(field);
        let max = self.oz.cfg.max_samples;
        if parts.is_empty() {
            return Err(oz_error(
                Failure::Sample,
                format!("no {field} part (parts received: {})", self.received()),
            ));
        }
        if parts.len() > max {
            return Err(oz_error(
                Failure::Sample,
                format!("{} {field} parts, the limit is {max}", parts.len()),
            ));
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                if p.file_name.as_deref().is_none_or(str::is_empty) {
                    return Err(oz_error(
                        Failure::Sample,
                        format!("{field} part {i} has no filename (results are keyed by it)"),
                    ));
                }
                self.named_sample(p, field)
            })
            .collect()
    }

    /// The template part `field`, of this server's model.
    fn template(&mut self, field: &str) -> Result<FaceTemplate, ApiError> {
        let p = self.take(field, Failure::Template)?;
        self.parse_template(p, field)
    }

    fn parse_template(&self, p: Part, field: &str) -> Result<FaceTemplate, ApiError> {
        self.check_type(&p, field, &["application/octet-stream"])?;
        let bytes = input_bytes(p.bytes, self.b64, 1 << 20, field, Failure::Template)?;
        FaceTemplate::from_bytes(&bytes, TEMPLATE_VERSION)
            .map_err(|e| oz_error(Failure::Template, format!("{field}: {e}")))
    }

    /// Every `templates_n` part (at least one, at most `max_templates`) as one gallery, with
    /// their file names.
    fn gallery(&mut self) -> Result<(Vec<String>, Gallery), ApiError> {
        let parts = self.take_all("templates_n");
        let max = self.oz.cfg.max_templates;
        if parts.is_empty() {
            return Err(oz_error(
                Failure::Template,
                format!("no templates_n part (parts received: {})", self.received()),
            ));
        }
        if parts.len() > max {
            return Err(oz_error(
                Failure::Template,
                format!("{} templates_n parts, the limit is {max}", parts.len()),
            ));
        }
        let mut names = Vec::with_capacity(parts.len());
        let mut gallery = Gallery::with_capacity(TEMPLATE_VERSION, 128, parts.len());
        for (i, p) in parts.into_iter().enumerate() {
            let name = match p.file_name.clone().filter(|n| !n.is_empty()) {
                Some(n) => n,
                None => {
                    return Err(oz_error(
                        Failure::Template,
                        format!("templates_n part {i} has no filename (results are keyed by it)"),
                    ))
                }
            };
            let t = self.parse_template(p, &format!("templates_n {name:?}"))?;
            gallery
                .push(&t)
                .map_err(|e| oz_error(Failure::Template, format!("templates_n {name:?}: {e}")))?;
            names.push(name);
        }
        Ok((names, gallery))
    }
}

/// Two templates compared (both already checked to be of this server's model).
fn compare(a: &FaceTemplate, b: &FaceTemplate) -> Result<Match, ApiError> {
    a.compare(b, 0.0).ok_or_else(|| {
        oz_error(
            Failure::Template,
            "the templates come from different models or dimensions",
        )
    })
}

/// `verify`'s multipart answer: a `score` part and the `bio_feature` template.
fn verify_answer(similarity: f32, template: &[u8], b64: bool) -> HttpResponse {
    let feature = output_bytes(template.to_vec(), b64);
    // A boundary that occurs in neither part (the template is binary).
    let mut boundary = String::from("facegate-oz-verify");
    while feature
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let mut body = BytesMut::new();
    let mut part = |headers: String, data: &[u8]| {
        body.put_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.put_slice(data);
        body.put_slice(b"\r\n");
    };
    part(
        "Content-Disposition: form-data; name=\"score\"\r\nContent-Type: text/plain".into(),
        similarity.to_string().as_bytes(),
    );
    let encoding = if b64 {
        "\r\nContent-Transfer-Encoding: base64"
    } else {
        ""
    };
    part(
        format!(
            "Content-Disposition: form-data; name=\"bio_feature\"; filename=\"bio_feature\"\r\n\
             Content-Type: application/octet-stream{encoding}"
        ),
        &feature,
    );
    body.put_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut r = Response::new(Full::new(body.freeze()));
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}
