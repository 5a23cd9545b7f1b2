//! OpenAPI description of the server's own routes: `/health`, `/metrics`, `/openapi.json`,
//! Swagger UI and the capture console.

use serde_json::{json, Value};

use super::{Content, DialectDoc, Op, Resp};

/// What Swagger UI's files are served as.
const SWAGGER_MEDIA: &[&str] = &[
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "image/png",
];

/// The server's error body `{"error":{"kind","message"}}` (edge errors of its own routes).
fn error_schema() -> Value {
    super::native::error_schema()
}

/// The `/health` answer.
fn health() -> Value {
    json!({
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "loading", "failed", "stopping"]},
            "models": {"type": "array", "items": {"type": "string"}},
            "device": {"type": "string"},
            "device_note": {"type": "string"},
            "kernels": {"type": "string"},
            "threads": {"type": "integer"},
            "max_batch": {"type": "integer"},
            "queue_bound": {"type": "integer"},
            "queue_depth": {"type": "integer"},
            "error": {"type": "string"}
        }
    })
}

/// A static file answer, in one of the media types `media`.
fn file(summary: &'static str, description: &'static str, media: &[&'static str]) -> Op {
    let mut op = Op::new(summary, description);
    op.responses.push(Resp {
        status: 200,
        description: "The file".into(),
        content: media
            .iter()
            .map(|m| Content {
                media: m,
                schema: json!({"type": "string"}),
                example: None,
            })
            .collect(),
        headers: Vec::new(),
    });
    op.content(404, "No such file", "text/plain", json!({"type": "string"}))
}

/// A redirect.
fn redirect(to: &'static str) -> Op {
    Op::new("Redirect", to).empty(301, to)
}

/// The server's operations.
pub fn doc() -> DialectDoc {
    let err = error_schema();
    DialectDoc::new(
        "server",
        "The server itself: health, metrics, this document, Swagger UI and the capture console",
    )
    .op(
        "health",
        Op::new(
            "Health",
            "200 with the models, device and batching settings once the models serve; 503 while loading, after a failure or while stopping.",
        )
        .json(
            200,
            "Serving",
            health(),
            Some(json!({"status": "ok", "models": ["retinaface", "minifasnet_v2", "minifasnet_v1se"], "device": "cpu",
                        "kernels": "avx2", "threads": 2, "max_batch": 4, "queue_bound": 256, "queue_depth": 0})),
        )
        .json(503, "Not serving", health(), Some(json!({"status": "loading"})))
        .json(400, "A malformed request", err.clone(), None),
    )
    .op(
        "metrics",
        Op::new("Prometheus metrics", "The text exposition format, version 0.0.4.")
            .content(200, "The metrics", "text/plain", json!({"type": "string"}))
            .json(400, "A malformed request", err.clone(), None),
    )
    .op(
        "openapi",
        Op::new("This document", "OpenAPI 3.1 of every mounted route.")
            .json(200, "The document", json!({"type": "object"}), None)
            .content(
                503,
                "Being generated (only before the server takes requests)",
                "text/plain",
                json!({"type": "string"}),
            ),
    )
    .op(
        "swagger_ui.redirect",
        redirect("/swagger-ui/index.html"),
    )
    .op(
        "swagger_ui.redirect_slash",
        redirect("/swagger-ui/index.html"),
    )
    .op(
        "swagger_ui.file",
        file(
            "Swagger UI",
            "Swagger UI's files, compiled into the binary (no CDN), reading `/openapi.json`.",
            SWAGGER_MEDIA,
        ),
    )
    .op("console.redirect", redirect("/console/"))
    .op(
        "console.index",
        file(
            "The capture console",
            "Webcam capture, a passive check, a head-turn challenge and the BI report; static files compiled into the binary (`server.console`).",
            &["text/html"],
        ),
    )
    .op(
        "console.file",
        file(
            "The capture console's files",
            "Scripts and styles.",
            &["text/javascript", "text/css", "text/html"],
        ),
    )
}
