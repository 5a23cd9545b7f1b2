//! OpenAPI description of the two ID R&D dialects: IDLive Face (`crate::api::idlive`) and IAD
//! (`crate::api::iad`).
//!
//! IDLive answers 200 for every error (the reference's "always 200"), with `{"error",
//! "error_code"}`, except 400 for malformed request data on `/check_image` and the BI reads and
//! 401 for a refused credential: the edge's refusals (late body, body over the limit, overload,
//! loading) are 200 bodies there too. IAD answers `{"timestamp","status","error","message",
//! "path","error_code"}` with 400 (bundle errors, bad parameters, late or oversized bodies),
//! 401, 429 (overload), 500 and 503 (no capture key, models loading, BI not committed).

use serde_json::{json, Map, Value};

use super::{DialectDoc, Op, Param, ParamIn};
use crate::api::iad::capture::{CaptureRejection, FaceError};
use crate::api::idlive::{
    FAILED_TO_READ_IMAGE, IMAGE_TOO_SMALL, MAX_PARTS, MAX_PIPELINE_RUNS, UNSUPPORTED_PIPELINE,
};
use crate::api::idrnd::{BI_PAGE_DEFAULT, BI_PAGE_MAX, DEFAULT_LICENSE_EXPIRATION};
use crate::engine::{Calibration, Pipeline, Rejection};

/// Every quality rejection of the engine (`engine::Rejection`).
const REJECTIONS: [Rejection; 9] = [
    Rejection::FaceNotFound,
    Rejection::TooManyFaces,
    Rejection::FaceTooSmall,
    Rejection::FaceCropped,
    Rejection::FaceCloseToBorder,
    Rejection::FaceTooClose,
    Rejection::FaceAngleTooLarge,
    Rejection::FaceTooBlurry,
    Rejection::FaceBadExposure,
];

/// IAD's capture rejection reasons, in the reference's order.
const CAPTURE_REJECTIONS: [CaptureRejection; 7] = [
    CaptureRejection::UntrustedEnvironment,
    CaptureRejection::SuspiciousActivity,
    CaptureRejection::UntrustedDevice,
    CaptureRejection::SdkIntegrityViolation,
    CaptureRejection::UntrustedCorruptedPayload,
    CaptureRejection::UntrustedContent,
    CaptureRejection::UntrustedContentLowConfidence,
];

/// The OS values of BI records and the `Meta` header's reading.
const OS: [&str; 4] = ["IOS", "ANDROID", "DESKTOP", "UNKNOWN"];

/// Names of every pipeline.
fn pipelines() -> Vec<&'static str> {
    Pipeline::ALL.iter().map(|p| p.name()).collect()
}

/// Names of every calibration.
fn calibrations() -> Vec<&'static str> {
    Calibration::ALL.iter().map(|c| c.name()).collect()
}

/// An object schema from its properties: every property required unless listed in
/// `optional`, no other property allowed.
fn object(props: Value, optional: &[&str]) -> Value {
    let required: Vec<&String> = props
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !optional.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": false
    })
}

/// `a`'s properties followed by `b`'s.
fn merged(a: &Value, b: &Value) -> Value {
    let mut m: Map<String, Value> = a.as_object().cloned().unwrap_or_default();
    if let Some(b) = b.as_object() {
        m.extend(b.clone());
    }
    Value::Object(m)
}

/// A probability or quality in 0..1.
fn unit(description: &str) -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 1, "description": description})
}

// ---------------------------------------------------------------------------------------------
// IDLive Face

/// Every non-null `error_code` of IDLive.
fn idlive_codes() -> Vec<Value> {
    let mut codes: Vec<Value> = REJECTIONS.iter().map(|r| json!(r.code())).collect();
    codes.push(json!(IMAGE_TOO_SMALL));
    codes.push(json!(FAILED_TO_READ_IMAGE));
    codes.push(Value::Null);
    codes
}

/// The properties of an IDLive verdict.
fn verdict_props() -> Value {
    json!({
        "probability": unit("Liveness probability: 0 spoof, 1 live; live from 0.5."),
        "quality": unit("How appropriate the image is for the liveness check (not its technical quality)."),
        "score": {"type": "number", "description": "The raw, unbounded liveness score (the bigger, the more live)."}
    })
}

/// The properties of an IDLive error.
fn error_props() -> Value {
    json!({
        "error": {"type": "string", "description": "What went wrong."},
        "error_code": {
            "type": ["string", "null"],
            "enum": idlive_codes(),
            "description": format!(
                "Why the image was rejected (a quality code, {IMAGE_TOO_SMALL}, or \
                 {FAILED_TO_READ_IMAGE} for an image that cannot be decoded, is over the decode \
                 limits, or a body over the size limit); null for a request error or a server fault."
            )
        }
    })
}

/// IDLive's error body `{"error","error_code"}`.
fn idlive_error() -> Value {
    let mut s = object(error_props(), &[]);
    s["description"] =
        json!("IDLive's error: a rejected image, a request error or a server fault.");
    s
}

/// IDLive's 200 body: `success` or an error.
fn or_error(success: Value) -> Value {
    json!({"oneOf": [success, idlive_error()]})
}

/// The description of an IDLive 200: `what`, or an error body (the reference's "always 200").
fn idlive_200(what: &str) -> String {
    format!(
        "{what}; or, still 200 as the reference says, `{{\"error\",\"error_code\"}}` for any \
         other error: a malformed request or request head, a body not received in time, a body \
         over the size limit (error_code FAILED_TO_READ_IMAGE), overload (with Retry-After), a \
         server fault"
    )
}

/// The `Meta` header.
fn meta(op: Op) -> Op {
    op.header(
        "Meta",
        "Additional image characteristics: a JSON object (`{\"os\": \"IOS\", ...}`), `key=value` \
         pairs (`os=ANDROID; model=...`) or a bare OS name. Only the OS is read (IOS, ANDROID, \
         DESKTOP, else UNKNOWN), for the BI records; anything unreadable is ignored.",
        false,
    )
}

/// The `pipeline` query parameter.
fn pipeline_param(op: Op) -> Op {
    op.query(
        "pipeline",
        json!({"type": "string", "enum": pipelines(), "default": Pipeline::default().name()}),
        "Pipeline to use (case-insensitive; absent or empty: the default). A pipeline this server \
         does not have, or whose network is not loaded (minifasnet-triple needs load_celeba), is \
         answered 200 with `The request contains an unsupported pipeline, rejecting`.",
    )
}

/// The multipart body of the liveness endpoints.
fn images_multipart(what: &str) -> Value {
    json!({
        "type": "object",
        "description": format!(
            "{what} Every part is an image (JPEG, PNG, ...), whatever its name; at most \
             {MAX_PARTS} parts, each image within the decode limits (decode.max_bytes, pixels)."
        ),
        "additionalProperties": {"type": "string", "contentMediaType": "application/octet-stream"},
        "properties": {
            "image": {"type": "string", "contentMediaType": "application/octet-stream", "description": "An image file."}
        }
    })
}

/// `Retry-After` on IDLive's last response (a 200 that may be a transient error).
fn retry_after(op: Op) -> Op {
    op.response_header(
        "Retry-After",
        "When the answer (or one of its results) says to retry later (overload, models loading, \
         BI not committed): seconds to wait, 1 or the refusing budget's hint.",
    )
}

/// The timing and retry headers of an IDLive liveness 200.
fn liveness_headers(op: Op) -> Op {
    retry_after(op)
        .response_header(
            "x-queue-time",
            "Largest time an image waited in the batcher, ms.",
        )
        .response_header(
            "x-inference-time",
            "Largest inference time of an image, ms.",
        )
}

/// IDLive's 401 with its example.
fn idlive_401(op: Op) -> Op {
    op.json(
        401,
        "The route's authentication refused the request (`error_code` null)",
        idlive_error(),
        Some(json!({
            "error": "unauthorized: an API key is required: send it in the X-API-Key header or as Authorization: Bearer <key>",
            "error_code": null
        })),
    )
}

/// A BI record of `dialect`.
fn bi_record(dialect: &str, pipeline: Value, domain: Value) -> Value {
    let mut cal: Vec<Value> = calibrations().into_iter().map(Value::from).collect();
    cal.push(Value::Null);
    object(
        json!({
            "time": {"type": "string", "format": "date-time", "description": "When the decision was made (UTC, ms)."},
            "route": {"type": "string", "description": "The reference's path of the request, e.g. /check_liveness."},
            "dialect": {"type": "string", "enum": [dialect]},
            "pipeline": pipeline,
            "calibration": {"type": ["string", "null"], "enum": cal},
            "domain": domain,
            "os": {"type": "string", "enum": OS},
            "probability": {"type": ["number", "null"], "description": "Liveness probability; null when rejected."},
            "quality": {"type": ["number", "null"], "description": "Quality score; null when rejected."},
            "error_code": {"type": ["string", "null"], "description": "The rejection's code (UNKNOWN for a request or server error); null on a verdict."},
            "latency_ms": {"type": "number", "minimum": 0, "description": "Time from request to answer, ms."}
        }),
        &[],
    )
}

/// The `date_from`/`date_to` query parameters.
fn dates(op: Op) -> Op {
    let date = json!({"type": "string", "format": "date"});
    op.query(
        "date_from",
        date.clone(),
        "The beginning of the time frame, `yyyy-MM-dd` (UTC, inclusive).",
    )
    .query(
        "date_to",
        date,
        "The end of the time frame, `yyyy-MM-dd` (UTC, inclusive); not before date_from.",
    )
}

/// `limit` and `after` of `/bi_records`.
fn paging(op: Op) -> Op {
    op.query(
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": BI_PAGE_MAX, "default": BI_PAGE_DEFAULT}),
        "Most records of this page (facegate extension).",
    )
    .query(
        "after",
        json!({"type": "string", "description": "`<time_ms>.<id>`"}),
        "Resume after this cursor: the `x-next-cursor` of the previous page (facegate extension).",
    )
}

/// An example BI record.
fn bi_record_example(dialect: &str, route: &str, pipeline: &str, os: &str) -> Value {
    json!({
        "time": "2025-03-31T12:00:00.123Z",
        "route": route,
        "dialect": dialect,
        "pipeline": pipeline,
        "calibration": "REGULAR",
        "domain": null,
        "os": os,
        "probability": 0.9946032,
        "quality": 0.72107375,
        "error_code": null,
        "latency_ms": 41.7
    })
}

/// IDLive's example error for a malformed date.
fn date_error_example() -> Value {
    json!({
        "error": "date_from: invalid date \"2024-13-01\": expected yyyy-MM-dd, e.g. 2024-03-31",
        "error_code": null
    })
}

/// IDLive Face's operations.
pub fn idlive() -> DialectDoc {
    let verdict = object(verdict_props(), &[]);
    let error = idlive_error();

    let version = object(
        json!({
            "product": {"type": "string", "enum": [crate::api::idlive::PRODUCT]},
            "version": {"type": "string", "description": "The server's version."},
            "defaultPipeline": {"type": "string", "enum": [Pipeline::default().name()]},
            "availablePipelines": {
                "type": "array",
                "items": {"type": "string", "enum": pipelines()},
                "description": "The pipelines the loaded networks serve (while loading: those of the default networks)."
            },
            "expirationDate": {"type": "string", "description": "The configured licence expiry (idlive.license_expiration), ISO 8601."}
        }),
        &[],
    );
    let api_version = idlive_401(
        Op::new(
            "Server version, pipelines and licence expiry",
            "The product, its version, the default and available pipelines and the licence \
             expiry (facegate has no licence: a far-future date unless configured).",
        )
        .json(
            200,
            idlive_200("The version"),
            or_error(version),
            Some(json!({
                "product": crate::api::idlive::PRODUCT,
                "version": env!("CARGO_PKG_VERSION"),
                "defaultPipeline": Pipeline::default().name(),
                "availablePipelines": ["minifasnet-dual", "minifasnet-v2", "minifasnet-v1se"],
                "expirationDate": DEFAULT_LICENSE_EXPIRATION
            })),
        )
        .response_header(
            "Retry-After",
            "When the error says to retry later (overload): seconds to wait.",
        ),
    );

    let check_liveness = idlive_401(liveness_headers(
        meta(pipeline_param(Op::new(
            "Liveness of one image or of a series",
            "One result for one image or a series of images (multipart/form-data). A series is \
             accumulated: the mean raw score of the images that got a verdict, the probability \
             from that mean (REGULAR calibration), the mean quality; when none got a verdict, \
             the first image's error. Always 200: a rejected image or any other error is an \
             `error` with its `error_code`.",
        )))
        .multipart(images_multipart(
            "One image, or a series accumulated into one result.",
        ))
        .json(
            200,
            idlive_200(
                "The verdict, or the rejection (or error) of the image that decides; an unsupported \
                 pipeline, no image, the models loading (Retry-After), the BI record not committed \
                 (Retry-After)",
            ),
            json!({"oneOf": [verdict.clone(), error.clone()]}),
            Some(json!({"probability": 0.9946032, "quality": 0.72107375, "score": 5.2165456})),
        ),
    ));

    let entry = |extra: &Value| {
        json!({"oneOf": [
            object(merged(extra, &verdict_props()), &[]),
            object(merged(extra, &error_props()), &[]),
        ]})
    };
    let file_name = json!({"file_name": {"type": "string", "description": "The part's file name, else its field name, else `image<i>`."}});
    let batch = json!({"type": "array", "items": entry(&file_name)});
    let check_liveness_batch = idlive_401(liveness_headers(
        meta(pipeline_param(Op::new(
            "Liveness of each image of a batch",
            "One entry per image (multipart/form-data), keyed by `file_name`, each with its \
             verdict or its rejection. Always 200: a request-level error is one error object \
             instead of the array.",
        )))
        .multipart(images_multipart("Images, each answered by its own entry."))
        .json(
            200,
            idlive_200(
                "One entry per image, each a verdict or its image's rejection or error (the models \
                 loading: Retry-After); a request-level error (an unsupported pipeline, no image, \
                 the BI record not committed) is one error object",
            ),
            json!({"oneOf": [batch, error.clone()]}),
            Some(json!([
                {"file_name": "image1.jpg", "probability": 0.94960946, "quality": 0.72107375, "score": 2.9362469},
                {"file_name": "image2.jpg", "probability": 1.2596924e-5, "quality": 0.8110471, "score": -11.282045},
                {"file_name": "image3.jpg", "error": "Too many faces detected", "error_code": "TOO_MANY_FACES"}
            ])),
        ),
    ));

    let run = json!({
        "pipeline": {"type": "string", "enum": pipelines()},
        "calibration": {"type": "string", "enum": calibrations()}
    });
    let image_result = object(
        json!({
            "serverVersion": {"type": "string"},
            "licenseExpirationDate": {"type": "string", "description": "The date of the licence expiry, `yyyy-MM-dd`."},
            "results": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PIPELINE_RUNS,
                "description": "One result per requested pipeline and calibration, in request order.",
                "items": entry(&run)
            }
        }),
        &[],
    );
    let data = json!({
        "type": "object",
        "description": "A JSON part: the domain and the pipelines to run.",
        "properties": {
            "domain": {"type": "string", "enum": ["GENERAL", "DESKTOP"], "default": "GENERAL", "description": "Image domain (case-insensitive)."},
            "pipelines": {
                "type": "array",
                "maxItems": MAX_PIPELINE_RUNS,
                "description": "Pipelines to run on the image; absent or empty: the default pipeline under REGULAR.",
                "items": {
                    "type": "object",
                    "required": ["pipeline"],
                    "properties": {
                        "pipeline": {"type": "string", "enum": pipelines(), "description": "Case-insensitive."},
                        "calibration": {"type": "string", "enum": calibrations(), "default": "REGULAR", "description": "Case-insensitive."}
                    }
                }
            }
        }
    });
    let check_image = idlive_401(
        meta(Op::new(
            "One image under several pipelines and calibrations",
            "Checks one image (multipart `image`) under every pipeline and calibration the \
             `data` part lists. 400 for malformed request data; every other outcome is 200, a \
             rejected image with an `error` in each result.",
        ))
        .multipart(json!({
            "type": "object",
            "required": ["data", "image"],
            "description": format!("At most {MAX_PARTS} parts; others are ignored."),
            "properties": {
                "data": data,
                "image": {"type": "string", "contentMediaType": "application/octet-stream", "description": "The image file (non-empty)."}
            }
        }))
        .json(
            200,
            idlive_200(
                "One result per pipeline and calibration, each a verdict or the image's rejection \
                 or error (the models loading: Retry-After); the BI records not committed is one \
                 error object (Retry-After)",
            ),
            or_error(image_result),
            Some(json!({
                "serverVersion": env!("CARGO_PKG_VERSION"),
                "licenseExpirationDate": "2999-12-31",
                "results": [
                    {"pipeline": "minifasnet-dual", "calibration": "HARDENED", "score": 3.1832, "probability": 0.9946032, "quality": 0.72107375},
                    {"pipeline": "minifasnet-v2", "calibration": "REGULAR", "score": 2.9362469, "probability": 0.8854023, "quality": 0.72107375}
                ]
            })),
        )
        .response_header("Retry-After", "When the answer or one of its results says to retry later (overload, models loading, BI not committed): seconds to wait, 1 or the refusing budget's hint.")
        .response_header("x-queue-time", "Time the image waited in the batcher, ms.")
        .response_header("x-inference-time", "Inference time of the image, ms.")
        .json(
            400,
            format!(
                "Malformed request data: not multipart, a missing `data` or `image` part, an \
                 empty image, malformed JSON, an unknown domain or calibration, an unsupported \
                 pipeline, more than {MAX_PIPELINE_RUNS} pipelines entries, more than {MAX_PARTS} parts, \
                 a malformed request head"
            ),
            error.clone(),
            Some(json!({"error": UNSUPPORTED_PIPELINE, "error_code": null})),
        ),
    );

    let report = json!({
        "type": "object",
        "required": ["total"],
        "description": "`total`, and counts keyed `<pipeline>_<os>_probability_<bin>`, `<pipeline>_<os>_quality_<bin>` (0.1-wide bins, e.g. `0.9-1.0`) and `<pipeline>_<os>_<error_code>`; only non-zero counts.",
        "properties": {"total": {"type": "integer", "minimum": 0}},
        "additionalProperties": {"type": "integer", "minimum": 1}
    });
    let bi_report = dates(Op::new(
        "Aggregated BI metrics",
        "Histograms (0.1 bins) of the probability and quality of IDLive's recorded \
             decisions, and counts of their error codes, by pipeline and OS, within the \
             optional time frame. Records queued before the call are counted.",
    ))
    .json(
        200,
        idlive_200("The counts; the BI store could not be read is an error object"),
        or_error(report),
        Some(json!({
            "minifasnet-dual_ANDROID_TOO_MANY_FACES": 1,
            "minifasnet-dual_IOS_probability_0.9-1.0": 1,
            "minifasnet-dual_IOS_quality_0.7-0.8": 1,
            "minifasnet-dual_UNKNOWN_probability_0.9-1.0": 1,
            "minifasnet-dual_UNKNOWN_quality_0.7-0.8": 1,
            "total": 3
        })),
    );
    let bi_report = idlive_401(retry_after(bi_report).json(
        400,
        "A malformed date (not `yyyy-MM-dd`), date_from after date_to, a malformed query or request head",
        error.clone(),
        Some(date_error_example()),
    ));

    let records = json!({
        "type": "array",
        "items": bi_record(
            "idlive",
            json!({"type": "string", "description": "The pipeline of the decision."}),
            json!({"type": ["string", "null"], "enum": ["GENERAL", "DESKTOP", null], "description": "The domain /check_image named."})
        )
    });
    let bi_records = paging(dates(Op::new(
        "BI records",
        "IDLive's recorded decisions within the optional time frame, oldest first, in pages \
             (a full page carries `x-next-cursor`). Records queued before the call are included.",
    )))
    .json(
        200,
        idlive_200("The records; the BI store could not be read is an error object"),
        or_error(records),
        Some(json!([bi_record_example(
            "idlive",
            "/check_liveness",
            "minifasnet-dual",
            "IOS"
        )])),
    );
    let bi_records = idlive_401(
        retry_after(bi_records)
        .response_header(
            "x-next-cursor",
            "On a full page: the `after` of the next page.",
        )
        .json(
            400,
            "A malformed date, date_from after date_to, a limit out of range, a malformed cursor, an unknown query parameter, a malformed request head",
            error,
            Some(date_error_example()),
        ),
    );

    DialectDoc::new("idlive", "ID R&D IDLive Face")
        .op("idlive.api_version", api_version)
        .op("idlive.check_liveness", check_liveness)
        .op("idlive.check_image", check_image)
        .op("idlive.check_liveness_batch", check_liveness_batch)
        .op("idlive.bi_report", bi_report)
        .op("idlive.bi_records", bi_records)
}

// ---------------------------------------------------------------------------------------------
// IAD

/// IAD's error document with status `status` and one of `codes`.
fn iad_error(status: u16, codes: &[&str]) -> Value {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    object(
        json!({
            "timestamp": {"type": "string", "description": "When, ISO 8601 with `+00:00`."},
            "status": {"type": "integer", "enum": [status]},
            "error": {"type": "string", "enum": [reason]},
            "message": {"type": "string"},
            "path": {"type": "string", "description": "The request's path."},
            "error_code": {"type": "string", "enum": codes}
        }),
        &[],
    )
}

/// An IAD error example.
fn iad_example(status: u16, message: &str, code: &str, path: &str) -> Value {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    json!({
        "timestamp": "2025-03-31T12:00:00.123+00:00",
        "status": status,
        "error": reason,
        "message": message,
        "path": path,
        "error_code": code
    })
}

/// Which of IAD's shared error statuses a route can answer.
#[derive(Clone, Copy)]
struct IadErrors {
    /// 400's description.
    bad_request: &'static str,
    /// 400's example.
    example: (&'static str, &'static str),
    /// 500: a server fault is possible.
    internal: bool,
    /// 503's description, when the route can answer it.
    unavailable: Option<&'static str>,
}

/// Adds IAD's 400 (with its example), 401, 429 and, as `e` says, 500 and 503.
fn iad_errors(op: Op, e: IadErrors) -> Op {
    let op = op.json(
        400,
        format!(
            "{}; also a malformed request head, a body not received in time, a body over the \
             size limit, a body that could not be read (error_code UNKNOWN)",
            e.bad_request
        ),
        iad_error(400, &[crate::api::iad::UNKNOWN]),
        Some(iad_example(
            400,
            e.example.0,
            crate::api::iad::UNKNOWN,
            e.example.1,
        )),
    );
    iad_errors_after_400(op, e.internal, e.unavailable)
}

/// The bundle body.
fn bundle_body(op: Op) -> Op {
    op.body("application/octet-stream", json!({
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": "An FGCB capture bundle sealed for the server's public key (docs/capture-bundle.md), at most iad.capture.max_bundle_bytes (and server.max_body_bytes). Its Content-Type is not checked."
    }), None)
}

/// The bundle-error text of IAD's 400.
const BUNDLE_400: &str = "A bundle that cannot be opened: `Failed to parse file` (not a bundle, \
    corrupt, over iad.capture.max_bundle_bytes), `Failed to read a meta data` (malformed \
    metadata or image), `Failed to decrypt message` (sealed for another key, or tampered)";

/// 503 of the routes that need the capture verifier.
const NO_VERIFIER: &str =
    "Capture verification is not configured on this server (no verifier), or a worker task failed";

/// IAD's operations.
pub fn iad() -> DialectDoc {
    let api_version = iad_errors(
        Op::new(
            "Server version and licence expiry",
            "The product, its version and the licence expiry (facegate has no licence: a \
             far-future date unless configured).",
        )
        .json(
            200,
            "The version",
            object(
                json!({
                    "product": {"type": "string", "enum": [crate::api::iad::PRODUCT]},
                    "version": {"type": "string"},
                    "expirationDate": {"type": "string", "description": "The configured licence expiry (iad.license_expiration), ISO 8601."}
                }),
                &[],
            ),
            Some(json!({
                "product": crate::api::iad::PRODUCT,
                "version": env!("CARGO_PKG_VERSION"),
                "expirationDate": DEFAULT_LICENSE_EXPIRATION
            })),
        ),
        IadErrors {
            bad_request: "The request could not be read",
            example: (
                "request body not received within 30000 ms (body_timeout_ms)",
                "/api_version",
            ),
            internal: false,
            unavailable: None,
        },
    );

    let rejection: Vec<&str> = CAPTURE_REJECTIONS.iter().map(|r| r.code()).collect();
    let mut caps: Vec<f32> = CAPTURE_REJECTIONS
        .iter()
        .map(|r| r.probability_cap())
        .collect();
    caps.push(1.0);
    caps.sort_by(f32::total_cmp);
    caps.dedup();
    let capture = object(
        json!({
            "capture_liveness": object(json!({
                "probability": {
                    "type": "number",
                    "enum": caps,
                    "description": "1.0 when every check passes, else the smallest cap of the reasons found (all below 0.5)."
                },
                "score": {"type": "number", "minimum": -1, "maximum": 1, "description": "2 × probability − 1."},
                "rejection": {
                    "type": "array",
                    "items": {"type": "string", "enum": rejection},
                    "description": "The reasons found, each once, in the reference's order (for analysis only: do not forward them to capture clients)."
                }
            }), &[]),
            "face_liveness": object(json!({
                "probability": unit("Passive face liveness probability (REGULAR calibration).")
            }), &[])
        }),
        &["face_liveness"],
    );
    let mut face_codes: Vec<&str> = REJECTIONS.iter().map(|r| r.code()).collect();
    face_codes.push(FaceError::IMAGE_TOO_SMALL.error_code);
    face_codes.push(crate::api::iad::UNKNOWN);
    let face_messages: Vec<String> = REJECTIONS
        .iter()
        .map(|r| {
            let e = FaceError::from_rejection(*r);
            format!("`{}` {}", e.error_code, e.message)
        })
        .collect();
    let check_capture_liveness = Op::new(
        "Capture liveness of a capture bundle",
        "Opens the bundle and runs the capture checks (SDK integrity, environment, nonce and \
         capture time, device, image provenance) and, when iad.face_liveness is on, passive face \
         liveness on its image through the batcher. 200 with `capture_liveness` (plus \
         `face_liveness` when face liveness ran): a tampered payload is 200 with \
         UNTRUSTED_CORRUPTED_PAYLOAD. The bundle's nonce is spent.",
    );
    let check_capture_liveness = bundle_body(check_capture_liveness)
        .json(
            200,
            "The capture verdict",
            capture,
            Some(json!({
                "face_liveness": {"probability": 0.9969119},
                "capture_liveness": {"probability": 1.0, "score": 1.0, "rejection": []}
            })),
        )
        .response_header(
            "x-queue-time",
            "When face liveness ran: time the image waited in the batcher, ms.",
        )
        .response_header(
            "x-inference-time",
            "When face liveness ran: its inference time, ms.",
        )
        .json(
            400,
            format!(
                "An image validation error with its code ({}; `IMAGE_TOO_SMALL` Image too small \
                 to be processed, below iad.capture.min_image_side), or, with UNKNOWN: {BUNDLE_400}; \
                 also a malformed request head, a body not received in time or over the size limit",
                face_messages.join(", ")
            ),
            iad_error(400, &face_codes),
            Some(iad_example(
                400,
                "Face not found",
                "FACE_NOT_FOUND",
                "/check_capture_liveness",
            )),
        );
    let check_capture_liveness = iad_errors_after_400(
        check_capture_liveness,
        true,
        Some("Capture verification is not configured, the models are loading, the nonce ledger or the BI record (bi.durable) is unavailable"),
    );

    let extract_image = iad_errors(
        bundle_body(Op::new(
            "The image of a capture bundle",
            "Opens the bundle and answers its JPEG. Runs no check and does not spend the nonce.",
        ))
        .content(
            200,
            "The bundle's JPEG",
            "image/jpeg",
            json!({"type": "string", "contentMediaType": "image/jpeg"}),
        ),
        IadErrors {
            bad_request: BUNDLE_400,
            example: ("Failed to parse file", "/extract_image"),
            internal: false,
            unavailable: Some(NO_VERIFIER),
        },
    );

    let mut extract_data = Op::new(
        "Data of a capture bundle",
        "Opens the bundle and answers the requested data: `photo` (its JPEG, base64) and/or \
         `external` (the integrator's data sent in the bundle, null when absent). Runs no check \
         and does not spend the nonce.",
    );
    extract_data.params.push(Param {
        name: "types",
        location: ParamIn::Query,
        schema: json!({"type": "array", "items": {"type": "string", "enum": ["photo", "external"]}, "minItems": 1}),
        description: "What to extract: `types=photo,external` (comma-separated, case-insensitive) or repeated `types=photo&types=external`; at least one, unknown types are a 400.",
        required: true,
    });
    let extract_data = iad_errors(
        bundle_body(extract_data).json(
            200,
            "The requested data",
            json!({
                "type": "object",
                "minProperties": 1,
                "additionalProperties": false,
                "properties": {
                    "photo": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/jpeg", "description": "The bundle's JPEG, base64."},
                    "external": {"type": ["object", "array", "string", "number", "boolean", "null"], "description": "The external data as sent in the bundle (any JSON), null when absent."}
                }
            }),
            Some(json!({"photo": "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/", "external": {"session": "abc-123", "step": 2}})),
        ),
        IadErrors {
            bad_request: "Missing or unknown `types`, or a bundle that cannot be opened: `Failed to parse file`, `Failed to read a meta data`, `Failed to decrypt message`",
            example: (
                "unknown extract_data type \"selfie\": use photo, external",
                "/extract_data",
            ),
            internal: false,
            unavailable: Some(NO_VERIFIER),
        },
    );

    let records = json!({
        "type": "array",
        "items": bi_record(
            "iad",
            json!({"type": "string", "enum": [crate::api::iad::BI_PIPELINE]}),
            json!({"type": "null"})
        )
    });
    let mut iad_record = bi_record_example(
        "iad",
        "/check_capture_liveness",
        crate::api::iad::BI_PIPELINE,
        "DESKTOP",
    );
    iad_record["probability"] = json!(1.0);
    let bi_records = iad_errors(
        paging(dates(Op::new(
            "BI records",
            "IAD's recorded capture decisions within the optional time frame, oldest first, in \
             pages (a full page carries `x-next-cursor`). Records queued before the call are \
             included.",
        )))
        .json(200, "The records", records, Some(json!([iad_record])))
        .response_header(
            "x-next-cursor",
            "On a full page: the `after` of the next page.",
        ),
        IadErrors {
            bad_request: "A malformed date (not `yyyy-MM-dd`), date_from after date_to, a limit out of range, a malformed cursor, an unknown query parameter",
            example: (
                "date_from: invalid date \"2024-02-30\": expected yyyy-MM-dd, e.g. 2024-03-31",
                "/iad/bi_records",
            ),
            internal: true,
            unavailable: Some("The BI store could not be read"),
        },
    );

    let nonce = iad_errors(
        Op::new(
            "A nonce for the next capture (facegate extension)",
            "Issues a single-use nonce valid for iad.capture.nonce_ttl_s, to put in the next \
             bundle's metadata (`meta.nonce`).",
        )
        .json(
            200,
            "A fresh nonce",
            object(
                json!({
                    "nonce": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "32 hex digits."},
                    "expires_at": {"type": "string", "format": "date-time", "description": "When it expires (UTC, ms)."}
                }),
                &[],
            ),
            Some(json!({"nonce": "9f86d081884c7d659a2feaa0c55ad015", "expires_at": "2025-03-31T12:05:00.123Z"})),
        ),
        IadErrors {
            bad_request: "The request could not be read",
            example: (
                "request body too large: the limit is 33554432 bytes (max_body_bytes)",
                "/iad/nonce",
            ),
            internal: true,
            unavailable: Some("Capture verification is not configured, or iad.capture.max_nonces unexpired nonces are outstanding (retry when older ones expire)"),
        },
    );

    let public_key = iad_errors(
        Op::new(
            "The public key bundles are sealed for (facegate extension)",
            "The server's RSA public key, SPKI PEM: capture clients seal their bundles for it.",
        )
        .content(
            200,
            "The public key",
            "application/x-pem-file",
            json!({"type": "string", "description": "-----BEGIN PUBLIC KEY----- ..."}),
        ),
        IadErrors {
            bad_request: "The request could not be read",
            example: (
                "request body not received within 30000 ms (body_timeout_ms)",
                "/iad/public_key",
            ),
            internal: false,
            unavailable: Some("Capture verification is not configured on this server"),
        },
    );

    DialectDoc::new("iad", "ID R&D IDLive Face IAD")
        .op("iad.api_version", api_version)
        .op("iad.check_capture_liveness", check_capture_liveness)
        .op("iad.extract_image", extract_image)
        .op("iad.extract_data", extract_data)
        .op("iad.bi_records", bi_records)
        .op("iad.nonce", nonce)
        .op("iad.public_key", public_key)
}

/// IAD's 401, 429 and, as asked, 500 and 503, for a route that documents its own 400.
fn iad_errors_after_400(op: Op, internal: bool, unavailable: Option<&'static str>) -> Op {
    let unknown = [crate::api::iad::UNKNOWN];
    let mut op = op
        .json(
            401,
            "The route's authentication refused the request",
            iad_error(401, &unknown),
            None,
        )
        .json(
            429,
            "Overloaded: the memory budget for request bodies is full (POST routes: also the batcher's queue)",
            iad_error(429, &unknown),
            None,
        )
        .response_header("Retry-After", "Seconds to wait before retrying.");
    if internal {
        op = op.json(500, "A server-side fault", iad_error(500, &unknown), None);
    }
    if let Some(d) = unavailable {
        op = op
            .json(503, d, iad_error(503, &unknown), None)
            .response_header("Retry-After", "`1`.");
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example validates against its schema.
    #[test]
    fn examples_match_their_schemas() {
        for doc in [idlive(), iad()] {
            for (name, op) in &doc.ops {
                for r in &op.responses {
                    for c in &r.content {
                        if let Some(x) = &c.example {
                            let v = jsonschema::draft202012::new(&c.schema).unwrap();
                            let errs: Vec<String> =
                                v.iter_errors(x).map(|e| e.to_string()).collect();
                            assert!(errs.is_empty(), "{name} {}: {errs:?}", r.status);
                        }
                    }
                }
            }
        }
    }
}
