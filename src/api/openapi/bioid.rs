//! OpenAPI description of the BioID BWS dialect (`crate::api::bioid`).

use serde_json::{json, Value};

use super::{DialectDoc, Op, EDGE_ERRORS};
use crate::api::bioid::{LIVENESS_ROUTE, MAX_IMAGES, MAX_TAGS};

/// BWS's gRPC-status error body.
fn status_error() -> Value {
    json!({
        "type": "object",
        "description": "A gRPC status: 3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, 1 CANCELLED (late body), 14 UNAVAILABLE, 13 INTERNAL.",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "integer", "enum": [1, 3, 13, 14, 16]},
            "message": {"type": "string"}
        },
        "additionalProperties": false
    })
}

/// The LivenessDetection request.
fn request() -> Value {
    json!({
        "type": "object",
        "description": "Keys are matched case-insensitively; any other key is refused.",
        "required": ["liveImages"],
        "properties": {
            "liveImages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_IMAGES,
                "description": "One image (passive liveness) or two (also 3-D motion between them, the same person, and the head-movement challenge of the second image's tags).",
                "items": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "The image (JPEG or PNG), base64, optionally as a data URL; bounded by decode.max_bytes."},
                        "tags": {
                            "type": "array",
                            "maxItems": MAX_TAGS,
                            "items": {"type": "string"},
                            "description": "On the second image: the requested head movement, `up`, `down`, `left` or `right`."
                        }
                    }
                }
            }
        }
    })
}

/// The LivenessDetection answer.
fn answer() -> Value {
    let point = json!({"type": "object", "required": ["x", "y"], "properties": {"x": {"type": "number"}, "y": {"type": "number"}}});
    json!({
        "type": "object",
        "required": ["status", "errors", "imageProperties", "live", "livenessScore"],
        "properties": {
            "status": {"type": "string", "enum": ["SUCCEEDED"]},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["errorCode", "message"],
                    "properties": {
                        "errorCode": {"type": "string", "enum": [
                            "FaceNotFound", "MultipleFacesFound", "ThumbnailExtractionFailed",
                            "RejectedByPassiveLiveDetection", "RejectedByActiveLiveDetection",
                            "RejectedByChallengeResponse"
                        ]},
                        "message": {"type": "string"}
                    }
                }
            },
            "imageProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["rotated", "faces", "qualityScore", "qualityAssessments", "frameNumber"],
                    "properties": {
                        "rotated": {"type": "integer"},
                        "faces": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["leftEye", "rightEye", "textureLivenessScore", "motionLivenessScore", "movementDirection"],
                                "properties": {
                                    "leftEye": point,
                                    "rightEye": point,
                                    "textureLivenessScore": {"type": "number"},
                                    "motionLivenessScore": {"type": "number"},
                                    "movementDirection": {"type": "number", "description": "Degrees of the head's movement to the second image (360: none measured)."}
                                }
                            }
                        },
                        "qualityScore": {"type": "number"},
                        "qualityAssessments": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["check", "score", "message"],
                                "properties": {
                                    "check": {"type": "string", "enum": ["ImageSize", "FullyVisibleFace", "SuitableFace"]},
                                    "score": {"type": "number"},
                                    "message": {"type": "string"}
                                }
                            }
                        },
                        "frameNumber": {"type": "integer"}
                    }
                }
            },
            "live": {"type": "boolean"},
            "livenessScore": {"type": "number"}
        }
    })
}

/// The BWS headers of every liveness answer.
const BWS_HEADERS: &[(&str, &str)] = &[
    ("jobid", "A new UUID per request."),
    ("bws-version", "The server's version."),
    (
        "reference-number",
        "The request's reference-number, echoed.",
    ),
];

/// The dialect's operations.
pub fn doc() -> DialectDoc {
    let example = json!({
        "status": "SUCCEEDED",
        "errors": [],
        "imageProperties": [{
            "rotated": 0,
            "faces": [{
                "leftEye": {"x": 412.3, "y": 301.8},
                "rightEye": {"x": 318.9, "y": 303.1},
                "textureLivenessScore": 0.97,
                "motionLivenessScore": 0.0,
                "movementDirection": 0.0
            }],
            "qualityScore": 0.91,
            "qualityAssessments": [
                {"check": "ImageSize", "score": 1.0, "message": "The face is large enough"},
                {"check": "FullyVisibleFace", "score": 1.0, "message": "The face is fully visible"},
                {"check": "SuitableFace", "score": 1.0, "message": "A suitable face was found"}
            ],
            "frameNumber": 0
        }],
        "live": true,
        "livenessScore": 0.97
    });
    let err = status_error();
    let mut liveness = Op::new(
        "Liveness detection on one image, or active liveness on two",
        "BWS LivenessDetection. Always 200 with `status: SUCCEEDED` once the images were analysed (a spoof or a rejected image is `live: false` with `errors`); request errors are gRPC-status bodies.",
    )
    .header(
        "reference-number",
        "Echoed in the answer (printable ASCII, at most 128 bytes).",
        false,
    )
    .body("application/json", request(), None)
    .json(200, "The images were analysed", answer(), Some(example));
    for (name, d) in BWS_HEADERS {
        liveness = liveness.response_header(name, d);
    }
    let liveness = liveness
        .json(
            400,
            "INVALID_ARGUMENT: malformed JSON, an unknown key, a bad image or tag, a bound passed",
            err.clone(),
            Some(json!({"code": 3, "message": "liveImages has 3 images: send 1 to 2"})),
        )
        .json(
            401,
            "UNAUTHENTICATED: no valid BWS bearer token",
            err.clone(),
            None,
        )
        .errors(&err, EDGE_ERRORS)
        .json(500, "INTERNAL: a server-side fault", err, None);
    let text = json!({"type": "string", "enum": ["Healthy", "Unhealthy"]});
    DialectDoc::new("bioid", "BioID BWS LivenessDetection (BWS 3)")
        .op(LIVENESS_ROUTE, liveness)
        .op(
            "bioid.livez",
            Op::new("Liveness probe", "200 `Healthy` while the process serves.").content(
                200,
                "The process serves",
                "text/plain",
                text.clone(),
            ),
        )
        .op(
            "bioid.readyz",
            Op::new(
                "Readiness probe",
                "200 `Healthy` once the models serve, 503 `Unhealthy` before or after a failure.",
            )
            .content(200, "The models serve", "text/plain", text.clone())
            .content(503, "The models are not serving", "text/plain", text),
        )
}
