//! OpenAPI description of the Aware Knomi dialect (`crate::api::knomi`).
//!
//! Knomi takes its JSON requests as `text/plain` (`application/json` too) and answers JSON
//! labelled `text/plain`, as the reference shows; the schemas under `text/plain` describe that
//! JSON text. Every error is `{"error":{"code","description"}}`: 400 with codes -1..-8 for the
//! request's faults (a late or oversized body included), 401 code -1 for a refused credential,
//! 500 with the library codes 118-122, 141, 153 and 312 for the workflow options the reference
//! puts there, or -1 for overload, models loading, disabled or busy packages and server faults
//! (`Retry-After` when transient). The dialect's table renders the edge's refusals (late body,
//! body over the limit, overload) as 400 and 500: Knomi never answers 408, 413, 429 or 503.

use serde_json::{json, Value};

use super::{Content, DialectDoc, Op, Resp};
use crate::api::knomi::package::MAX_KEY_BYTES;
use crate::api::knomi::request::{MAX_META_BYTES, MAX_TAGS, MAX_TAG_BYTES, WORKFLOWS};
use crate::api::knomi::{Code, ACTIVE_REQUESTS};
use crate::engine::autocapture::Feedback;
use crate::engine::workflow::CaptureDecision;

/// The media type of every Knomi body.
const TEXT: &str = "text/plain";

/// The request codes, all answered with 400.
const REQUEST_CODES: [Code; 8] = [
    Code::Unknown,
    Code::InvalidJson,
    Code::MissingField,
    Code::WrongType,
    Code::InvalidBase64,
    Code::InvalidValue,
    Code::InvalidImageData,
    Code::InvalidImageSize,
];

/// The library codes of the reference's 500 table that a workflow's options produce.
const LIBRARY_CODES: [Code; 8] = [
    Code::MinSize,
    Code::MaxSize,
    Code::MinOverMax,
    Code::Sensitivity,
    Code::Granularity,
    Code::Timestamp,
    Code::FrameSizes,
    Code::Rotation,
];

/// Every decision of a `liveness_result`.
const DECISIONS: [CaptureDecision; 8] = [
    CaptureDecision::Live,
    CaptureDecision::Spoof,
    CaptureDecision::TooBlurry,
    CaptureDecision::FaceTooLowResolution,
    CaptureDecision::TooLowFacialDynamicRange,
    CaptureDecision::UnableToCalculateLiveness,
    CaptureDecision::TimestampTooOld,
    CaptureDecision::TimestampInFuture,
];

/// Every feedback code the engine gives.
const FEEDBACK: [Feedback; 15] = [
    Feedback::ImageResolutionTooLow,
    Feedback::NoFaceDetected,
    Feedback::MultipleFacesDetected,
    Feedback::InvalidPose,
    Feedback::FaceTooFar,
    Feedback::FaceTooClose,
    Feedback::FaceOnLeft,
    Feedback::FaceOnRight,
    Feedback::FaceTooHigh,
    Feedback::FaceTooLow,
    Feedback::InsufficientLighting,
    Feedback::LightTooBright,
    Feedback::TooMuchBlur,
    Feedback::LeftEyeClosed,
    Feedback::RightEyeClosed,
];

/// The version line of the examples.
const VERSION: &str = concat!(
    "facegate FaceLiveness Library (Aware Knomi API), version ",
    env!("CARGO_PKG_VERSION")
);

/// What a liveness route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/analyze`: liveness and autocapture.
    Analyze,
    /// `/checkLiveness`: liveness.
    Check,
    /// `/checkActiveLiveness`: passive and active liveness.
    Active,
}

/// The workflow names, passive ones only when `passive_only`.
fn workflows(passive_only: bool) -> Vec<&'static str> {
    WORKFLOWS
        .split(',')
        .map(str::trim)
        .filter(|w| !(passive_only && w.starts_with("active_")))
        .collect()
}

/// The numbers of `codes`.
fn numbers(codes: &[Code]) -> Vec<i32> {
    codes.iter().map(|c| c.number()).collect()
}

/// Knomi's error body, its `code` one of `codes`.
fn error_schema(codes: &[i32], what: &str) -> Value {
    json!({
        "type": "object",
        "description": "A Knomi error (JSON text labelled text/plain).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "description"],
                "properties": {
                    "code": {"type": "integer", "enum": codes, "description": what},
                    "description": {"type": "string", "description": "What went wrong."}
                },
                "additionalProperties": false
            }
        },
        "additionalProperties": false
    })
}

/// An error example.
fn error_example(code: i32, description: &str) -> Value {
    json!({"error": {"code": code, "description": description}})
}

/// Adds a `text/plain` response.
fn text(
    mut op: Op,
    status: u16,
    description: impl Into<String>,
    schema: Value,
    example: Option<Value>,
) -> Op {
    op.responses.push(Resp {
        status,
        description: description.into(),
        content: vec![Content {
            media: TEXT,
            schema,
            example,
        }],
        headers: Vec::new(),
    });
    op
}

/// Adds a JSON request body sent as `text/plain` (or `application/json`).
fn json_body(op: Op, schema: Value, example: Value) -> Op {
    op.body(TEXT, schema.clone(), Some(example))
        .body("application/json", schema, None)
}

/// Adds the 401 every route can answer when authentication is configured.
fn unauthorized(op: Op) -> Op {
    text(
        op,
        401,
        "The route's authentication (auth.api_keys) refused the request: code -1",
        error_schema(&[-1], "-1."),
        Some(error_example(
            -1,
            "The request does not carry a valid API key.",
        )),
    )
}

/// Adds a 500 with codes `codes`, `Retry-After` on the transient ones.
fn server_error(op: Op, description: &str, codes: &[i32], example: Value) -> Op {
    text(
        op,
        500,
        description,
        error_schema(
            codes,
            "-1: unknown error (overload, models loading, packages disabled or busy, server \
             fault); 118-122, 141, 153, 312: the reference's library codes.",
        ),
        Some(example),
    )
    .response_header(
        "Retry-After",
        "Seconds to wait before retrying, when the server is overloaded or loading (code -1).",
    )
}

// ---------------------------------------------------------------------------------------------
// Requests

/// One frame of a `workflow_data`.
fn frame_schema() -> Value {
    json!({
        "type": "object",
        "description": "One frame.",
        "required": ["data", "timestamp"],
        "properties": {
            "data": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "The image (JPEG, quality 90 recommended; PNG too) in base64 (standard or URL-safe alphabet, or a `data:...;base64,` URL). Within decode.max_bytes once decoded (-8), not empty (-7); all frames of a request of one width and height (153); 480x640 recommended, the face's eyes about 90 px apart (60 with a back camera)."
            },
            "tags": {
                "type": "array",
                "maxItems": MAX_TAGS,
                "items": {"type": "string", "maxLength": MAX_TAG_BYTES},
                "description": format!(
                    "(Optional) Tags of the frame, at most {MAX_TAGS}, each at most \
                     {MAX_TAG_BYTES} bytes. A frame of an active workflow tagged ACTIVE_HEAD_* \
                     must carry its workflow's tag (ACTIVE_HEAD_UP for active_up, ...)."
                )
            },
            "timestamp": {
                "type": "number",
                "minimum": 0,
                "description": "Capture time, Unix milliseconds: at least 0 and after the previous frame's (141 otherwise); outside knomi.allowed_timestamp_seconds (before now) or knomi.allowed_future_timestamp_seconds (after now) the decision is TIMESTAMP_TOO_OLD or TIMESTAMP_IN_FUTURE."
            }
        }
    })
}

/// A `faceLivenessRequest` whose workflow is one of `workflows`.
fn request_schema(workflows: &[&str]) -> Value {
    let fraction = |what: &str, code: i32| {
        json!({
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": format!("(Optional) {what}, in [0, 1] (code {code} otherwise).")
        })
    };
    let meta = |what: &str| json!({"type": "string", "maxLength": MAX_META_BYTES, "description": format!("(Optional) {what}.")});
    json!({
        "type": "object",
        "description": "A faceLivenessRequest: a workflow and its frames. Unknown fields are ignored; a null field is an absent one.",
        "required": ["video"],
        "properties": {
            "video": {
                "type": "object",
                "required": ["workflow_data"],
                "properties": {
                    "meta_data": {
                        "type": "object",
                        "description": format!("(Optional) Metadata of the transaction: strings of at most {MAX_META_BYTES} bytes (not used for the decision)."),
                        "properties": {
                            "username": meta("Username associated with the transaction"),
                            "client_device_brand": meta("Client's device brand"),
                            "client_device_model": meta("Client's device model"),
                            "client_os_version": meta("Client's OS version"),
                            "client_version": meta("Client's application version"),
                            "localization": meta("Client's localization"),
                            "programming_language_version": meta("Client's programming language version")
                        },
                        "additionalProperties": {"type": ["string", "null"], "maxLength": MAX_META_BYTES}
                    },
                    "workflow_data": {
                        "type": "object",
                        "required": ["workflow", "frames"],
                        "properties": {
                            "workflow": {
                                "type": "string",
                                "enum": workflows,
                                "description": "The workflow: charlie* (front camera, the mean over a sequence of at least workflows.sequence_min_frames frames, 3 by default), foxtrot* (front camera, the best frame), hotel* (back camera, the best frame); 2 usability, 4 balanced, 6 security. active_* are the head-movement challenges of /checkActiveLiveness. Another name is -6."
                            },
                            "frames": {
                                "type": "array",
                                "minItems": 1,
                                "items": frame_schema(),
                                "description": "The frames, in capture order: at least one, at most knomi.max_frames (16 by default); at most knomi.max_total_pixels (40 000 000 by default) pixels over all frames of the call (-8)."
                            },
                            "security_level": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 100,
                                "description": "(Optional, passive workflows only) The threshold as the percentage of live faces it may reject (the estimated false-rejection rate), instead of the workflow's own; -6 outside 0..100 or on an active workflow."
                            },
                            "timestamp": {
                                "type": "number",
                                "minimum": 0,
                                "description": "(Optional) When the package was created, Unix milliseconds (141 when negative); checked against the clock like the frames'."
                            },
                            "rotation": {
                                "type": "number",
                                "enum": [0, 90, 180, 270],
                                "description": "(Optional) Clockwise rotation, degrees, applied to every frame before analysis (312 otherwise)."
                            },
                            "face_detection_min_size": fraction("Smallest face width, as a fraction of the image width, for autocapture feedback", Code::MinSize.number()),
                            "face_detection_max_size": fraction("Largest face width, as a fraction of the image width, for autocapture feedback (at least the minimum: 120 otherwise)", Code::MaxSize.number()),
                            "face_detection_sensitivity": fraction("Face detection sensitivity (checked, not used)", Code::Sensitivity.number()),
                            "face_detection_granularity": fraction("Face detection granularity (checked, not used)", Code::Granularity.number()),
                            "perform_construction": {
                                "type": "boolean",
                                "description": "(Optional) Ask for a constructed captured frame; facegate never constructs one (captured_frame_is_constructed is always false)."
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The body of `/checkActiveLiveness`.
fn active_schema() -> Value {
    json!({
        "type": "array",
        "description": format!(
            "Exactly {ACTIVE_REQUESTS} faceLivenessRequests: one with a passive workflow (its \
             best frame is the reference), two with an active workflow (active_up, active_down, \
             active_left, active_right: the head movement asked); -4 when not an array, -6 \
             otherwise."
        ),
        "minItems": ACTIVE_REQUESTS,
        "maxItems": ACTIVE_REQUESTS,
        "items": request_schema(&workflows(false))
    })
}

/// An encrypted package.
fn package_schema() -> Value {
    let field =
        |what: &str| json!({"type": "string", "contentEncoding": "base64", "description": what});
    json!({
        "type": "object",
        "description": "A faceLivenessRequestEncrypted (docs/knomi-packages.md): three standard base64 strings (padding optional, whitespace ignored). Other fields are ignored.",
        "required": ["key", "iv", "p"],
        "properties": {
            "key": field(&format!(
                "RSA-OAEP (empty label; SHA-256 with MGF1 SHA-256, SHA-256 with MGF1 SHA-1, or \
                 SHA-1 with MGF1 SHA-1) of a fresh 32-byte AES-256 key, with the server's public \
                 key: 1 to {MAX_KEY_BYTES} bytes. Single use: a package whose key was seen before \
                 is refused (-6)."
            )),
            "iv": field("The IV: 16 bytes for AES-256-CBC, 12 bytes for AES-256-GCM (its length selects the mode)."),
            "p": field("The UTF-8 JSON request encrypted with the AES key (CBC: PKCS#7-padded; GCM: the 16-byte tag appended, no AAD); at most knomi.max_body_bytes once decoded.")
        }
    })
}

/// A frame of the examples (its image shortened).
fn example_frame(ts: i64, tags: &[&str]) -> Value {
    json!({"data": "/9j/4AAQSkZJRgABAgAAAQABAAD/wAARCAKAAeADAREAAhEBAxEB/9sAQwADAgIDAgIDAwMDBAMDBAUIBQUEBAUKBwcGCAwKDAwLCgsLDQ4SEA0OEQ4LCxAWEBETFBUVFQwPFxgWFBgSFBUU/...", "tags": tags, "timestamp": ts})
}

/// A request of the examples.
fn example_request(workflow: &str, frames: Vec<Value>) -> Value {
    json!({"video": {
        "meta_data": {
            "client_device_brand": "Apple",
            "client_device_model": "iPhone 8",
            "client_version": "KnomiSLive_v:2.4.1_b:0.0.0_sdk_v:2.4.1_b:0.0.0",
            "username": "test"
        },
        "workflow_data": {"workflow": workflow, "frames": frames}
    }})
}

/// An encrypted package of the examples.
fn example_package() -> Value {
    json!({
        "key": "Vq3LxJ0m8eY2vW9a6h1s0Qm5K2bN7pR4tU8xZ3cF6gJ9kL2nP5rS8uV1yB4dE7hK0mO3qT6wX9zC2fI5lN8pR1uX4aD7gJ0mP3sV6yB9eH2kN5qT8wZ1cF4iL7oR0uX3aD6gJ9mP2sV5yB8eH1kN4qT7wZ0cF3iL6oR9uX2aD5gJ8mP1sV4yB7eH0kN3qT6wZ9cF2iL5oR8uX1aD4gJ7mP0sV3yB6eH9kN2qT5wZ8cF1iL4oR7uX0aD3gJ6mP9sV2yB5eH8kN1qT4wZ7cF0iL3oR6uX9aD2gJ5mP8sV1yB4eH7kN0qT3wZ6cF9iL2oR5uX8aD1gJ4mP7sV0yB3eH6kN9qT2wZ5cF8iL1oR4uX7aD0gJ3mQ==",
        "iv": "kHn2F4zQbXv9o1Lr3pWc5A==",
        "p": "Xb3mQ9vL2kR7tW1yC4fH8jN0pS6uZ5aE3gK7mP1sV9yB2eH6kN0qT4wZ8cF2iL6oR0uX4aD8gJ2mP6sV0yB4eH8kN2qT6wZ0cF4iL8oR2uX6aD0gJ4mP8sV2yB6eH0kN4qT8wZ2cF6iL0oR4uX8aD2gJ6mP0sV4yB8eH2kN6qT0wZ4cF8iL2oR6uX0aD4gJ8mP2sV6yB0eH4kN8qT2wZ6cF0iL4oR8uX2aD6gJ0mP4sV8yB2eH6kN0qT4wZ8="
    })
}

// ---------------------------------------------------------------------------------------------
// Answers

/// A `liveness_result` object (with `details` for active liveness).
fn liveness_schema(with_details: bool) -> Value {
    let decisions: Vec<&str> = DECISIONS.iter().map(|d| d.name()).collect();
    let mut s = json!({
        "type": "object",
        "required": ["decision", "feedback", "score", "score_frr"],
        "properties": {
            "decision": {
                "type": "string",
                "enum": decisions,
                "description": "LIVE (score 100), SPOOF (score 0), or why liveness was not decided (score -1): TOO_BLURRY, FACE_TOO_LOW_RESOLUTION (eyes too few pixels apart), TOO_LOW_FACIAL_DYNAMIC_RANGE, UNABLE_TO_CALCULATE_LIVENESS (no usable face), TIMESTAMP_TOO_OLD, TIMESTAMP_IN_FUTURE."
            },
            "feedback": {
                "type": "array",
                "items": feedback_code(),
                "description": "The autocapture feedback of the frame that decided a decision other than LIVE or SPOOF; empty otherwise."
            },
            "score": {
                "type": "number",
                "enum": [100.0, 0.0, -1.0],
                "description": "100 live, 0 spoof, -1 not decided."
            },
            "score_frr": {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "description": "The estimated false-rejection rate at the judged score (0..1: the share of live faces scoring lower), -1 when no frame was judged."
            }
        },
        "additionalProperties": false
    });
    if with_details {
        let part = liveness_schema(false);
        s["required"] = json!(["decision", "feedback", "score", "score_frr", "details"]);
        s["properties"]["details"] = json!({
            "type": "object",
            "description": "The passive workflow's result and the challenges' (motion, the asked movement, the same person as the passive frame); the overall result combines them.",
            "required": ["active_liveness", "passive_liveness"],
            "properties": {"active_liveness": part, "passive_liveness": part},
            "additionalProperties": false
        });
    }
    s
}

/// One autocapture feedback code.
fn feedback_code() -> Value {
    let codes: Vec<&str> = FEEDBACK.iter().map(|f| f.code()).collect();
    json!({"type": "string", "enum": codes})
}

/// The 200 body of a liveness route.
fn answer_schema(kind: Kind) -> Value {
    let mut video = json!({
        "type": "object",
        "required": ["liveness_result", "version"],
        "properties": {
            "liveness_result": liveness_schema(kind == Kind::Active),
            "version": {"type": "string", "description": "The library version (knomi.version)."}
        },
        "additionalProperties": false
    });
    if kind == Kind::Analyze {
        video["required"] = json!(["autocapture_result", "liveness_result", "version"]);
        video["properties"]["autocapture_result"] = json!({
            "type": "object",
            "required": ["captured_frame", "captured_frame_is_constructed", "feedback"],
            "properties": {
                "captured_frame": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "contentMediaType": "image/jpeg",
                    "description": "The best frame, rotated as analysed, as a JPEG (quality 90) in base64."
                },
                "captured_frame_is_constructed": {
                    "type": "boolean",
                    "enum": [false],
                    "description": "Always false: facegate does not construct faces."
                },
                "feedback": {
                    "type": "array",
                    "items": feedback_code(),
                    "description": "The captured frame's autocapture feedback (empty: compliant)."
                }
            },
            "additionalProperties": false
        });
    }
    json!({
        "type": "object",
        "description": "The answer (JSON text labelled text/plain).",
        "required": ["video"],
        "properties": {"video": video},
        "additionalProperties": false
    })
}

/// A 200 example of `kind`.
fn answer_example(kind: Kind) -> Value {
    let live = json!({"decision": "LIVE", "feedback": [], "score": 100.0, "score_frr": 0.9731640395522118});
    let mut video = json!({"liveness_result": live, "version": VERSION});
    match kind {
        Kind::Analyze => {
            video["autocapture_result"] = json!({
                "captured_frame": "/9j/4AAQSkZJRgABAgAAAQABAAD/wAARCAKAAeADAREAAhEBAxEB/9sAQwADAgIDAgIDAwMDBAMDBAUIBQUEBAUKBwcGCAwKDAwLCgsLDQ4SEA0OEQ4LCxAWEBETFBUVFQwPFxgWFBgSFBUU/...",
                "captured_frame_is_constructed": false,
                "feedback": []
            });
        }
        Kind::Check => {}
        Kind::Active => {
            video["liveness_result"]["details"] = json!({
                "active_liveness": {"decision": "LIVE", "feedback": [], "score": 100.0, "score_frr": 0.9731640395522118},
                "passive_liveness": live
            });
        }
    }
    json!({"video": video})
}

// ---------------------------------------------------------------------------------------------
// Operations

/// What the description of a liveness route says about its limits and answers.
macro_rules! common_text {
    () => {
        " The body is JSON sent as text/plain (application/json and no Content-Type are taken \
         too; another type is -2), at most knomi.max_body_bytes (48 MiB by default: -6 over it), \
         within knomi.body_timeout_ms (-1 when late); the answer is JSON labelled text/plain. \
         Frames are decoded within decode.max_bytes and the pixel bounds (-7 not an image, -8 \
         too large or too small), rotated as asked, and analysed by the batcher; its overload, \
         the memory budget of request bodies or the models still loading are 500 code -1 with \
         Retry-After. Needs the landmark model (load_landmarks; 500 -1 without)."
    };
}

/// What the description of an encrypted twin says about packages.
macro_rules! package_text {
    () => {
        " The request travels sealed in a package {key, iv, p} (docs/knomi-packages.md), \
         opened with knomi.private_key (500 -1 when none is configured). Each package is single \
         use: one whose key was seen before is 400 -6 `The package was already used.`; every \
         failure to decrypt is the one 400 -6 `The package could not be decrypted.`; over \
         knomi.max_decryptions_per_s, or with the replay registry full, 500 -1 with Retry-After."
    };
}

/// The operation of a liveness route.
fn liveness_op(kind: Kind, encrypted: bool) -> Op {
    let (summary, description) = match (kind, encrypted) {
        (Kind::Analyze, false) => (
            "Liveness and autocapture of a passive workflow's frames",
            concat!(
                "Runs the request's passive workflow (charlie*, foxtrot*, hotel*) over its frames \
                 and answers the liveness decision and the autocapture result: the best frame as a \
                 JPEG with its feedback. A timestamp outside the accepted window gives \
                 TIMESTAMP_TOO_OLD or TIMESTAMP_IN_FUTURE, with the autocapture result still \
                 computed.",
                common_text!()
            ),
        ),
        (Kind::Analyze, true) => (
            "Encrypted version of /analyze",
            concat!(
                "The same as /analyze: liveness and the autocapture result of a passive \
                 workflow's frames.",
                package_text!(),
                " Once opened, the request is handled as by the plain route, with the same errors.",
                common_text!()
            ),
        ),
        (Kind::Check, false) => (
            "Liveness of a passive workflow's frames",
            concat!(
                "Runs the request's passive workflow (charlie*, foxtrot*, hotel*) over its frames \
                 and answers the liveness decision. A timestamp outside the accepted window is \
                 answered TIMESTAMP_TOO_OLD or TIMESTAMP_IN_FUTURE before any model runs (no \
                 timing headers then). An active workflow is -6 (it belongs in \
                 /checkActiveLiveness).",
                common_text!()
            ),
        ),
        (Kind::Check, true) => (
            "Encrypted version of /checkLiveness",
            concat!(
                "The same as /checkLiveness: the liveness decision of a passive workflow's frames.",
                package_text!(),
                " Once opened, the request is handled as by the plain route, with the same errors.",
                common_text!()
            ),
        ),
        (Kind::Active, false) => (
            "Passive liveness and two head-movement challenges",
            concat!(
                "Takes three requests: one passive workflow and two active ones (active_up, \
                 active_down, active_left, active_right). The passive one is decided as by \
                 /checkLiveness; each challenge must show a live face moving as asked, the same \
                 person as the passive best frame. The overall decision combines both, and \
                 `details` gives each. Needs the descriptor model too (load_descriptor; 500 -1 \
                 without). A timestamp outside the accepted window is answered before any model \
                 runs.",
                common_text!()
            ),
        ),
        (Kind::Active, true) => (
            "Encrypted version of /checkActiveLiveness",
            concat!(
                "The same as /checkActiveLiveness: a passive workflow and two head-movement \
                 challenges, sealed as one package of the three-request array.",
                package_text!(),
                " Once opened, the request is handled as by the plain route, with the same errors.",
                common_text!()
            ),
        ),
    };
    let op = Op::new(summary, description);
    let op = if encrypted {
        json_body(op, package_schema(), example_package())
    } else {
        match kind {
            Kind::Active => {
                let t = 1_594_826_616_671_i64;
                json_body(
                    op,
                    active_schema(),
                    json!([
                        example_request("foxtrot4", vec![example_frame(t, &[])]),
                        example_request(
                            "active_up",
                            vec![example_frame(t + 21, &["ACTIVE_HEAD_UP"])]
                        ),
                        example_request(
                            "active_down",
                            vec![example_frame(t + 212, &["ACTIVE_HEAD_DOWN"])]
                        ),
                    ]),
                )
            }
            _ => {
                let t = 1_581_714_134_137_i64;
                json_body(
                    op,
                    request_schema(&workflows(true)),
                    example_request(
                        "charlie4",
                        vec![
                            example_frame(t, &[]),
                            example_frame(t + 21, &[]),
                            example_frame(t + 52, &[]),
                        ],
                    ),
                )
            }
        }
    };
    let op = text(
        op,
        200,
        "The decision (JSON labelled text/plain)",
        answer_schema(kind),
        Some(answer_example(kind)),
    )
    .response_header(
        "x-queue-time",
        "Largest time a frame waited in the batcher, ms (absent when no model ran).",
    )
    .response_header(
        "x-inference-time",
        "Largest inference time of a frame, ms (absent when no model ran).",
    );
    let bad = if encrypted {
        "The request is not valid: -1 body not received in time or unreadable; -2 not JSON (the \
         package or the request in it) or another Content-Type; -3 a mandatory field missing; \
         -4 a field of the wrong type; -5 invalid base64; -6 an invalid value (unknown \
         workflow, too few or too many frames, a body over the limit, a bad package field \
         length, a package replayed or not decryptable); -7 a frame not an image; -8 a frame \
         too large or too small"
    } else {
        "The request is not valid: -1 body not received in time or unreadable; -2 not JSON or \
         another Content-Type; -3 a mandatory field missing; -4 a field of the wrong type; -5 \
         invalid base64; -6 an invalid value (unknown workflow, too few or too many frames, a \
         body over the limit); -7 a frame not an image; -8 a frame too large or too small"
    };
    let op = text(
        op,
        400,
        bad,
        error_schema(
            &numbers(&REQUEST_CODES),
            "-1 unknown error, -2 invalid input JSON, -3 missing mandatory field, -4 field has \
             wrong type, -5 invalid base64 string, -6 invalid value, -7 invalid image data, -8 \
             invalid image size.",
        ),
        Some(if encrypted {
            error_example(Code::InvalidValue.number(), "The package was already used.")
        } else {
            error_example(
                Code::InvalidJson.number(),
                "Request was not valid JSON: EOF while parsing a value at line 1 column 10.",
            )
        }),
    );
    let op = unauthorized(op);
    let mut five = vec![-1];
    five.extend(numbers(&LIBRARY_CODES));
    server_error(
        op,
        "Internal error: 118/119 face_detection_min_size/max_size out of [0 1], 120 minimum over \
         maximum, 121 sensitivity out of [0 1], 122 granularity out of [0 1], 141 a timestamp \
         negative or not after the previous one, 153 frames of different sizes, 312 rotation \
         not 0, 90, 180 or 270; -1 overload, models loading or missing, packages disabled or \
         busy, or a server fault",
        &five,
        error_example(
            Code::FrameSizes.number(),
            "The submitted images did not all have the same width and height: frame 1 of request 0 is 320x240, the first was 480x640.",
        ),
    )
}

/// `POST /decrypt`.
fn decrypt_op() -> Op {
    let op = Op::new(
        "Decrypt a package",
        concat!(
            "Opens an encrypted package and answers the request it holds, as it was sealed (any \
             JSON value; for the liveness routes a faceLivenessRequest or the array of \
             /checkActiveLiveness). The package is spent as by the encrypted routes.",
            package_text!(),
            " The body is JSON sent as text/plain (application/json too), at most \
             knomi.max_body_bytes."
        ),
    );
    let op = json_body(op, package_schema(), example_package());
    let op = text(
        op,
        200,
        "The package's plaintext: the JSON request, byte for byte (labelled text/plain)",
        json!({
            "type": ["object", "array", "string", "number", "boolean", "null"],
            "description": "The original unencrypted package: any JSON value."
        }),
        Some(json!({"video": {"workflow_data": {"workflow": "foxtrot4", "frames": []}}})),
    );
    let op = text(
        op,
        400,
        "The package is not valid: -1 body not received in time or unreadable; -2 not a JSON \
         object or another Content-Type; -3 key, iv or p missing; -4 one not a string; -5 one \
         not base64; -6 a bad length, a body over the limit, a package replayed or not \
         decryptable",
        error_schema(
            &numbers(&REQUEST_CODES[..6]),
            "-1 unknown error, -2 invalid input JSON, -3 missing mandatory field, -4 field has \
             wrong type, -5 invalid base64 string, -6 invalid value.",
        ),
        Some(error_example(
            Code::InvalidValue.number(),
            "The package could not be decrypted.",
        )),
    );
    let op = unauthorized(op);
    server_error(
        op,
        "-1: packages are not enabled (no knomi.private_key), the server cannot decrypt more \
         packages now (rate or registry bound, Retry-After), or overload (Retry-After)",
        &[-1],
        error_example(-1, "Encrypted requests are not enabled on this server."),
    )
}

/// `GET /version`.
fn version_op() -> Op {
    let op = Op::new(
        "Version of the server",
        "The library version line (knomi.version), as plain text.",
    );
    let op = text(
        op,
        200,
        "The version line",
        json!({"type": "string"}),
        Some(json!(VERSION)),
    );
    let op = text(
        op,
        400,
        "A request body over the server's limit (-6), late or unreadable (-1)",
        error_schema(&[-1, -6], "-1 unknown error, -6 invalid value."),
        Some(error_example(
            -6,
            "request body too large: the limit is 33554432 bytes (max_body_bytes).",
        )),
    );
    let op = unauthorized(op);
    server_error(
        op,
        "-1: a request body that does not fit the memory budget of request bodies (Retry-After)",
        &[-1],
        error_example(
            -1,
            "overloaded: memory budget for request bodies of 2147483648 bytes (server.max_body_bytes_held): 2147483000 held, this request needs 1000.",
        ),
    )
}

/// The dialect's operations.
pub fn doc() -> DialectDoc {
    DialectDoc::new(
        "knomi",
        "Aware Knomi FaceLiveness: passive workflows (charlie, foxtrot, hotel), autocapture, \
         active head-movement challenges, RSA-encrypted packages. Requests and answers are JSON \
         labelled text/plain; errors are {\"error\":{\"code\",\"description\"}}.",
    )
    .op("knomi.analyze", liveness_op(Kind::Analyze, false))
    .op("knomi.analyze_encrypted", liveness_op(Kind::Analyze, true))
    .op("knomi.check_liveness", liveness_op(Kind::Check, false))
    .op(
        "knomi.check_liveness_encrypted",
        liveness_op(Kind::Check, true),
    )
    .op(
        "knomi.check_active_liveness",
        liveness_op(Kind::Active, false),
    )
    .op(
        "knomi.check_active_liveness_encrypted",
        liveness_op(Kind::Active, true),
    )
    .op("knomi.decrypt", decrypt_op())
    .op("knomi.version", version_op())
}
