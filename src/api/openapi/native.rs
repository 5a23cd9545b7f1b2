//! OpenAPI description of facegate's native API (`crate::api::native`).

use serde_json::{json, Value};

use super::{DialectDoc, Op};
use crate::api::native::{ACTIVE_ROUTE, ANALYZE_ROUTE, DIALECT, MAX_PARTS};

/// Every rejection code of the quality gate (`engine::Rejection`).
const REJECTIONS: &[&str] = &[
    "FACE_NOT_FOUND",
    "TOO_MANY_FACES",
    "FACE_TOO_SMALL",
    "FACE_CROPPED",
    "FACE_CLOSE_TO_BORDER",
    "FACE_TOO_CLOSE",
    "FACE_ANGLE_TOO_LARGE",
    "FACE_TOO_BLURRY",
    "FACE_BAD_EXPOSURE",
];

/// The native error body `{"error":{"kind","message"}}`.
pub fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": error_object()},
        "additionalProperties": false
    })
}

/// `{"kind","message"}`.
fn error_object() -> Value {
    json!({
        "type": "object",
        "required": ["kind", "message"],
        "properties": {
            "kind": {"type": "string", "description": "The engine's error kind (invalid_argument, image_too_large, corrupt_image, overloaded, ...)."},
            "message": {"type": "string"}
        }
    })
}

/// One image's analysis (`engine::Analysis`) plus `verdict`.
pub fn analysis_schema() -> Value {
    let num = json!({"type": "number"});
    let nullable = |v: Value| json!({"anyOf": [v, {"type": "null"}]});
    let network = json!({
        "type": "object",
        "required": ["name", "crop_scale", "logits", "softmax"],
        "properties": {
            "name": {"type": "string"},
            "crop_scale": num,
            "logits": {"type": "array", "items": num, "minItems": 3, "maxItems": 3},
            "softmax": {"type": "array", "items": num, "minItems": 3, "maxItems": 3}
        }
    });
    json!({
        "type": "object",
        "required": ["width", "height", "faces", "selected_face", "quality", "rejection", "liveness", "template", "timings", "verdict"],
        "properties": {
            "width": {"type": "integer", "minimum": 0},
            "height": {"type": "integer", "minimum": 0},
            "faces": {
                "type": "array",
                "description": "Every detected face, largest first, in upright pixels.",
                "items": {
                    "type": "object",
                    "required": ["bbox", "score", "landmarks"],
                    "properties": {
                        "bbox": {"type": "array", "items": num, "minItems": 4, "maxItems": 4, "description": "x1, y1, x2, y2"},
                        "score": num,
                        "landmarks": {"type": "array", "minItems": 5, "maxItems": 5, "items": {"type": "array", "items": num, "minItems": 2, "maxItems": 2}}
                    }
                }
            },
            "selected_face": nullable(json!({"type": "integer", "minimum": 0})),
            "quality": nullable(json!({
                "type": "object",
                "description": "Measurements of the selected face (size, IOD, pose, sharpness, exposure, framing).",
                "required": ["score", "face_count", "iod_px", "pose"],
                "properties": {"score": num, "face_count": {"type": "integer"}, "iod_px": num, "pose": {"type": "object"}}
            })),
            "rejection": nullable(json!({
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string", "enum": REJECTIONS}, "message": {"type": "string"}}
            })),
            "liveness": nullable(json!({
                "type": "object",
                "required": ["probability", "score", "is_live", "calibration", "fused_live", "networks"],
                "properties": {
                    "probability": num,
                    "score": num,
                    "is_live": {"type": "boolean"},
                    "calibration": {"type": "string", "enum": ["SOFT", "REGULAR", "HARDENED"]},
                    "fused_live": num,
                    "networks": {"type": "array", "items": network}
                }
            })),
            "template": nullable(json!({
                "type": "object",
                "required": ["version", "descriptor"],
                "properties": {"version": {"type": "string"}, "descriptor": {"type": "array", "items": num}}
            })),
            "shape": {"type": "object", "description": "68 landmarks and their measurements (when asked for)."},
            "timings": {
                "type": "object",
                "required": ["decode_ms", "detect_ms", "quality_ms", "liveness_ms", "template_ms", "total_ms"],
                "properties": {
                    "decode_ms": num, "detect_ms": num, "quality_ms": num, "liveness_ms": num,
                    "template_ms": num, "landmarks_ms": num, "total_ms": num
                }
            },
            "verdict": {"type": "string", "description": "LIVE, SPOOF, NO_VERDICT or the rejection code."}
        }
    })
}

/// The native API's operations.
pub fn doc() -> DialectDoc {
    let multipart_answer = json!({
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "maxItems": MAX_PARTS,
                "items": {
                    "description": "The part's analysis, or its error; `name` is the part's field name.",
                    "anyOf": [
                        analysis_schema(),
                        {"type": "object", "required": ["error"], "properties": {"error": error_object()}}
                    ]
                }
            }
        }
    });
    let example = json!({
        "width": 640, "height": 480,
        "faces": [{"bbox": [220.4, 96.1, 421.7, 352.9], "score": 0.998,
                   "landmarks": [[279.0, 203.2], [364.8, 201.5], [322.6, 252.0], [287.4, 296.3], [358.1, 294.8]]}],
        "selected_face": 0,
        "quality": {"score": 0.93, "face_count": 1, "iod_px": 85.8, "pose": {"yaw_deg": 2.1, "pitch_deg": -3.0, "roll_deg": 1.2}},
        "rejection": null,
        "liveness": {"probability": 0.98, "score": 3.9, "is_live": true, "calibration": "REGULAR", "fused_live": 0.98,
                     "networks": [{"name": "MiniFASNetV2", "crop_scale": 2.7, "logits": [-2.1, 3.4, -1.9], "softmax": [0.004, 0.99, 0.006]}]},
        "template": null,
        "timings": {"decode_ms": 1.9, "detect_ms": 9.2, "quality_ms": 0.3, "liveness_ms": 2.4, "template_ms": 0.0, "landmarks_ms": 0.0, "total_ms": 13.8},
        "verdict": "LIVE"
    });
    let err = error_schema();
    let op = Op::new(
        "Analyse images: faces, quality, passive liveness, template",
        "A raw image body (`image/jpeg`, `image/png`, `application/octet-stream`) answers its analysis (what `facegate check` prints). A `multipart/form-data` body (one image per part, at most 64 parts) answers `{\"results\": [...]}` in part order, with status 200 even when some parts failed.",
    )
    .query(
        "calibration",
        json!({"type": "string", "enum": ["SOFT", "REGULAR", "HARDENED"]}),
        "Operating point of the liveness verdict (default REGULAR).",
    )
    .query(
        "template",
        json!({"type": "string", "enum": ["true", "false"]}),
        "Also compute the face template.",
    )
    .image_body()
    .multipart(json!({
        "type": "object",
        "additionalProperties": {"type": "string", "contentMediaType": "application/octet-stream"},
        "description": "One image per part (any field names)."
    }))
    .json(
        200,
        "The analysis (raw body) or the results (multipart)",
        json!({"anyOf": [analysis_schema(), multipart_answer]}),
        Some(example),
    )
    .json(
        400,
        "Malformed request: a bad query parameter, an empty body or form, a bad multipart body",
        err.clone(),
        Some(json!({"error": {"kind": "invalid_argument", "message": "unknown calibration X: use SOFT, REGULAR or HARDENED"}})),
    )
    .json(401, "Authentication required (when API keys or JWT are configured)", err.clone(), None)
    .json(413, "The body or an image is over its bound (the message names it)", err.clone(), None)
    .json(408, "The body did not arrive in time", err.clone(), None)
    .json(415, "Not an image type or multipart/form-data", err.clone(), None)
    .json(422, "Not a decodable image, or too small", err.clone(), None)
    .json(429, "The batcher is at its queue bound; retry", err.clone(), None)
    .response_header("retry-after", "Seconds to wait before retrying.")
    .json(503, "Overloaded at the edge, or the models are loading", err.clone(), None)
    .json(500, "A server-side fault", err, None);
    DialectDoc::new(DIALECT, "facegate's native API")
        .op(ANALYZE_ROUTE, op)
        .op(ACTIVE_ROUTE, active())
}

/// `POST /facegate/v1/active`.
fn active() -> Op {
    let num = json!({"type": "number"});
    let nullable = |v: Value| json!({"anyOf": [v, {"type": "null"}]});
    let answer = json!({
        "type": "object",
        "required": ["live", "score", "frames", "motion", "challenge", "same_person"],
        "properties": {
            "live": {"type": "boolean", "description": "Every check ran and passed."},
            "score": num,
            "frames": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "check", "analysis"],
                    "properties": {
                        "name": {"type": "string"},
                        "check": {
                            "type": "object",
                            "required": ["check"],
                            "properties": {
                                "check": {"type": "string", "enum": ["judged", "rejected", "incomplete"]},
                                "live": {"type": "boolean"},
                                "probability": num,
                                "score": num,
                                "rejection": {"type": "string", "enum": REJECTIONS}
                            }
                        },
                        "analysis": analysis_schema()
                    }
                }
            },
            "motion": {
                "type": "array",
                "description": "The 3-D motion check of each consecutive pair whose frames were both judged.",
                "items": {
                    "type": "object",
                    "required": ["frame", "motion", "parallax", "score", "live"],
                    "properties": {"frame": {"type": "integer"}, "motion": num, "parallax": num, "score": num, "live": {"type": "boolean"}}
                }
            },
            "challenge": nullable(json!({
                "type": "object",
                "required": ["asked", "d_yaw", "d_pitch", "movement_deg", "passed"],
                "properties": {
                    "asked": {"type": "array", "items": {"type": "string", "enum": ["up", "down", "left", "right"]}},
                    "d_yaw": num, "d_pitch": num, "movement_deg": num, "passed": {"type": "boolean"}
                }
            })),
            "same_person": nullable(json!({
                "type": "object",
                "required": ["max_distance", "same"],
                "properties": {"max_distance": num, "same": {"type": "boolean"}}
            }))
        }
    });
    let err = error_schema();
    Op::new(
        "Active liveness over 2 to 8 frames",
        "One active session over the frames of a capture, in order: each frame's passive check (PAD scores per network, quality, rejection), the 3-D motion between consecutive frames, the same person throughout and, with `challenge`, the head movement asked for between the first and the last frame. Templates are computed but not returned.",
    )
    .query(
        "challenge",
        json!({"type": "string", "pattern": "^(up|down|left|right)(,(up|down|left|right))*$"}),
        "The head movement(s) asked for between the first and the last frame.",
    )
    .query(
        "calibration",
        json!({"type": "string", "enum": ["SOFT", "REGULAR", "HARDENED"]}),
        "Operating point of the passive verdicts (default REGULAR).",
    )
    .multipart(json!({
        "type": "object",
        "additionalProperties": {"type": "string", "contentMediaType": "application/octet-stream"},
        "description": "2 to 8 image parts, in capture order."
    }))
    .json(200, "The session's outcome", answer, None)
    .json(
        400,
        "Malformed request: fewer than 2 or more than 8 frames, a bad direction or calibration",
        err.clone(),
        Some(json!({"error": {"kind": "invalid_argument", "message": "1 image part: send 2 to 8 frames in capture order"}})),
    )
    .json(401, "Authentication required (when API keys or JWT are configured)", err.clone(), None)
    .json(408, "The body did not arrive in time", err.clone(), None)
    .json(413, "The body or an image is over its bound", err.clone(), None)
    .json(415, "Not multipart/form-data", err.clone(), None)
    .json(422, "A frame is not a decodable image, or too small", err.clone(), None)
    .json(429, "The batcher is at its queue bound; retry", err.clone(), None)
    .response_header("retry-after", "Seconds to wait before retrying.")
    .json(503, "Overloaded at the edge, the models are loading, or the descriptor and landmark models are off", err.clone(), None)
    .json(500, "A server-side fault", err, None)
}
