//! Parsing Knomi requests: the `faceLivenessRequest` JSON (`video.meta_data`,
//! `video.workflow_data`), its workflows, frames and options, every failure as the Knomi code
//! the reference gives it (400 `-2`..`-8`, 500 `118`-`122`, `141`, `312`).
//!
//! Unknown fields are ignored (newer clients send more); known fields are type-checked.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{knomi_error, Code};
use crate::api::error::ApiError;
use crate::api::input::base64_image;
use crate::engine::active::Direction;
use crate::engine::autocapture::SizeWindow;
use crate::engine::calibration::Calibration;
use crate::engine::workflow::{Camera, Fusion, PassiveWorkflow, Threshold};
use crate::Error;

/// Most tags of one frame.
pub const MAX_TAGS: usize = 8;
/// Longest tag, bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Longest `meta_data` string, bytes.
pub const MAX_META_BYTES: usize = 256;

/// A workflow a request names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workflow {
    /// `charlie*`, `foxtrot*` or `hotel*`.
    Passive(PassiveWorkflow),
    /// `active_up`, `active_down`, `active_left`, `active_right`.
    Active(Direction),
}

/// The passive workflow families: (name, fusion, camera).
const FAMILIES: [(&str, Fusion, Camera); 3] = [
    ("charlie", Fusion::Sequence, Camera::Front),
    ("foxtrot", Fusion::BestFrame, Camera::Front),
    ("hotel", Fusion::BestFrame, Camera::Back),
];

/// The strictness suffixes: 2 usability, 4 balanced, 6 security.
const LEVELS: [(&str, Calibration); 3] = [
    ("2", Calibration::Soft),
    ("4", Calibration::Regular),
    ("6", Calibration::Hardened),
];

/// Every workflow name, for error messages.
pub const WORKFLOWS: &str = "charlie2, charlie4, charlie6, foxtrot2, foxtrot4, foxtrot6, \
                             hotel2, hotel4, hotel6, active_down, active_left, active_right, \
                             active_up";

impl Workflow {
    /// Parses a workflow name (exact, lower case as the reference lists them).
    pub fn parse(name: &str) -> Option<Workflow> {
        if let Some(dir) = name.strip_prefix("active_") {
            return match dir {
                "up" | "down" | "left" | "right" => Direction::parse(dir).map(Workflow::Active),
                _ => None,
            };
        }
        FAMILIES.iter().find_map(|(family, fusion, camera)| {
            let level = name.strip_prefix(family)?;
            let (_, cal) = LEVELS.iter().find(|(l, _)| *l == level)?;
            Some(Workflow::Passive(PassiveWorkflow {
                fusion: *fusion,
                camera: *camera,
                threshold: Threshold::Calibration(*cal),
            }))
        })
    }
}

/// The frame tag a direction's frames carry.
pub fn active_tag(d: Direction) -> &'static str {
    match d {
        Direction::Up => "ACTIVE_HEAD_UP",
        Direction::Down => "ACTIVE_HEAD_DOWN",
        Direction::Left => "ACTIVE_HEAD_LEFT",
        Direction::Right => "ACTIVE_HEAD_RIGHT",
    }
}

/// One frame as sent.
#[derive(Debug, Clone)]
pub struct FrameIn {
    /// The decoded base64 (an encoded image).
    pub bytes: Bytes,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its timestamp, ms.
    pub timestamp: i64,
}

/// One parsed `faceLivenessRequest`.
#[derive(Debug, Clone)]
pub struct LivenessRequest {
    /// The workflow (a `security_level` already folded into a passive workflow's threshold).
    pub workflow: Workflow,
    /// The frames, in order.
    pub frames: Vec<FrameIn>,
    /// The package's own timestamp, ms, when given.
    pub timestamp: Option<i64>,
    /// Clockwise rotation to apply before analysis, degrees (0, 90, 180, 270).
    pub rotation: u16,
    /// The client's face size window.
    pub window: SizeWindow,
    /// The client asked for a constructed captured frame (never done: see the docs).
    pub perform_construction: bool,
}

impl LivenessRequest {
    /// Every timestamp of the request (the package's, then the frames'), ms.
    pub fn timestamps(&self) -> impl Iterator<Item = i64> + '_ {
        self.timestamp
            .into_iter()
            .chain(self.frames.iter().map(|f| f.timestamp))
    }
}

/// Limits a parse applies.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Most frames of one request.
    pub max_frames: usize,
    /// Largest decoded frame, bytes.
    pub max_frame_bytes: usize,
}

fn missing(path: &str) -> ApiError {
    knomi_error(
        Code::MissingField,
        format!("Missing mandatory field {path}."),
    )
}

fn wrong_type(path: &str, want: &str) -> ApiError {
    knomi_error(
        Code::WrongType,
        format!("Field {path} has the wrong type: expected {want}."),
    )
}

fn invalid(message: String) -> ApiError {
    knomi_error(Code::InvalidValue, message)
}

/// Parses request text into JSON (`-2` when it is not JSON).
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(knomi_error(
            Code::InvalidJson,
            "Request was not valid JSON: the body is empty.".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        knomi_error(
            Code::InvalidJson,
            format!("Request was not valid JSON: {e}."),
        )
    })
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| wrong_type(path, "an object"))
}

fn required<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Value, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(missing(&format!("{path}.{key}"))),
        Some(v) => Ok(v),
    }
}

fn optional<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// A finite number, as f64.
fn number(v: &Value, path: &str) -> Result<f64, ApiError> {
    v.as_f64()
        .filter(|f| f.is_finite())
        .ok_or_else(|| wrong_type(path, "a number"))
}

/// A timestamp in ms: a number at least 0 (code 141 otherwise), fractions dropped.
fn stamp(v: &Value, path: &str) -> Result<i64, ApiError> {
    let t = number(v, path)?;
    if !(0.0..=9.0e15).contains(&t) {
        return Err(knomi_error(
            Code::Timestamp,
            format!(
                "The value for the timestamp provided was invalid: {path} must be milliseconds \
                 at or after 0."
            ),
        ));
    }
    Ok(t as i64)
}

/// A fraction in [0, 1], or the given Knomi code.
fn fraction(v: &Value, path: &str, code: Code) -> Result<f32, ApiError> {
    let f = number(v, path)?;
    if !(0.0..=1.0).contains(&f) {
        return Err(knomi_error(
            code,
            format!("The specified {path} is out of the range [0 1]."),
        ));
    }
    Ok(f as f32)
}

/// Parses one `faceLivenessRequest` value (`path` names it in errors).
pub fn parse_request(
    doc: &Value,
    path: &str,
    limits: ParseLimits,
) -> Result<LivenessRequest, ApiError> {
    let top = object(doc, path)?;
    let video_path = if path.is_empty() {
        "video".to_string()
    } else {
        format!("{path}.video")
    };
    let video = object(required(top, "video", path_or(path))?, &video_path)?;
    if let Some(meta) = optional(video, "meta_data") {
        let meta_path = format!("{video_path}.meta_data");
        for (k, v) in object(meta, &meta_path)? {
            match v {
                Value::Null => {}
                Value::String(s) if s.len() <= MAX_META_BYTES => {}
                Value::String(_) => {
                    return Err(invalid(format!(
                        "{meta_path}.{k} is longer than {MAX_META_BYTES} bytes."
                    )))
                }
                _ => return Err(wrong_type(&format!("{meta_path}.{k}"), "a string")),
            }
        }
    }
    let wd_path = format!("{video_path}.workflow_data");
    let wd = object(required(video, "workflow_data", &video_path)?, &wd_path)?;
    let name = required(wd, "workflow", &wd_path)?
        .as_str()
        .ok_or_else(|| wrong_type(&format!("{wd_path}.workflow"), "a string"))?;
    let mut workflow = Workflow::parse(name).ok_or_else(|| {
        let shown: String = name.chars().take(32).collect();
        invalid(format!(
            "Invalid value for {wd_path}.workflow: {shown:?} is not a workflow ({WORKFLOWS})."
        ))
    })?;
    if let Some(v) = optional(wd, "security_level") {
        let p = format!("{wd_path}.security_level");
        let level = v.as_i64().ok_or_else(|| wrong_type(&p, "an integer"))?;
        if !(0..=100).contains(&level) {
            return Err(invalid(format!(
                "Invalid value for {p}: {level} is not in 0..=100 (the percentage of live \
                 faces the threshold may reject)."
            )));
        }
        match &mut workflow {
            Workflow::Passive(w) => w.threshold = Threshold::Frr(level as f64 / 100.0),
            Workflow::Active(_) => {
                return Err(invalid(format!(
                    "Invalid value for {p}: an active workflow takes its threshold from the \
                     passive workflow of its call."
                )))
            }
        }
    }
    let timestamp = optional(wd, "timestamp")
        .map(|v| stamp(v, &format!("{wd_path}.timestamp")))
        .transpose()?;
    let rotation = match optional(wd, "rotation") {
        None => 0,
        Some(v) => {
            let p = format!("{wd_path}.rotation");
            let r = number(v, &p)?;
            match r {
                _ if r == 0.0 => 0,
                _ if r == 90.0 => 90,
                _ if r == 180.0 => 180,
                _ if r == 270.0 => 270,
                _ => {
                    return Err(knomi_error(
                        Code::Rotation,
                        format!("The rotation angle must be 0 90 180 or 270 ({p} is {r})."),
                    ))
                }
            }
        }
    };
    let field = |k: &str| optional(wd, k).map(|v| (v, format!("{wd_path}.{k}")));
    let min = field("face_detection_min_size")
        .map(|(v, p)| fraction(v, &p, Code::MinSize))
        .transpose()?;
    let max = field("face_detection_max_size")
        .map(|(v, p)| fraction(v, &p, Code::MaxSize))
        .transpose()?;
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(knomi_error(
                Code::MinOverMax,
                format!(
                    "The specified minimum size is greater than the specified maximum size \
                     ({lo} > {hi})."
                ),
            ));
        }
    }
    if let Some((v, p)) = field("face_detection_sensitivity") {
        fraction(v, &p, Code::Sensitivity)?;
    }
    if let Some((v, p)) = field("face_detection_granularity") {
        fraction(v, &p, Code::Granularity)?;
    }
    let perform_construction = match optional(wd, "perform_construction") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(wrong_type(
                &format!("{wd_path}.perform_construction"),
                "a boolean",
            ))
        }
    };
    let frames_path = format!("{wd_path}.frames");
    let list = required(wd, "frames", &wd_path)?
        .as_array()
        .ok_or_else(|| wrong_type(&frames_path, "an array of frames"))?;
    if list.is_empty() {
        return Err(invalid(format!(
            "{frames_path} is empty: send at least one frame."
        )));
    }
    if list.len() > limits.max_frames {
        return Err(invalid(format!(
            "{frames_path} has {} frames: at most {} per request.",
            list.len(),
            limits.max_frames
        )));
    }
    let mut frames: Vec<FrameIn> = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let fp = format!("{frames_path}[{i}]");
        let fo = object(f, &fp)?;
        let data_path = format!("{fp}.data");
        let data = required(fo, "data", &fp)?
            .as_str()
            .ok_or_else(|| wrong_type(&data_path, "a base64 string"))?;
        let bytes = frame_bytes(data, limits.max_frame_bytes, &data_path)?;
        let tags = match optional(fo, "tags") {
            None => Vec::new(),
            Some(Value::Array(t)) => {
                if t.len() > MAX_TAGS {
                    return Err(invalid(format!(
                        "{fp}.tags has {} tags: at most {MAX_TAGS}.",
                        t.len()
                    )));
                }
                let mut out = Vec::with_capacity(t.len());
                for tag in t {
                    let s = tag
                        .as_str()
                        .ok_or_else(|| wrong_type(&format!("{fp}.tags"), "an array of strings"))?;
                    if s.len() > MAX_TAG_BYTES {
                        return Err(invalid(format!(
                            "{fp}.tags holds a tag longer than {MAX_TAG_BYTES} bytes."
                        )));
                    }
                    out.push(s.to_string());
                }
                out
            }
            Some(_) => return Err(wrong_type(&format!("{fp}.tags"), "an array of strings")),
        };
        let ts = stamp(required(fo, "timestamp", &fp)?, &format!("{fp}.timestamp"))?;
        if let Some(prev) = frames.last() {
            if ts <= prev.timestamp {
                return Err(knomi_error(
                    Code::Timestamp,
                    format!(
                        "The value for the timestamp provided was invalid. Timestamps must be \
                         greater than the previous timestamp ({fp}.timestamp {ts} follows {}).",
                        prev.timestamp
                    ),
                ));
            }
        }
        if let Workflow::Active(d) = workflow {
            let want = active_tag(d);
            if let Some(bad) = tags
                .iter()
                .find(|t| t.starts_with("ACTIVE_HEAD_") && t.as_str() != want)
            {
                return Err(invalid(format!(
                    "Invalid value for {fp}.tags: {bad} does not belong to workflow {name} \
                     (its frames are tagged {want})."
                )));
            }
        }
        frames.push(FrameIn {
            bytes,
            tags,
            timestamp: ts,
        });
    }
    Ok(LivenessRequest {
        workflow,
        frames,
        timestamp,
        rotation,
        window: SizeWindow { min, max },
        perform_construction,
    })
}

fn path_or(path: &str) -> &str {
    if path.is_empty() {
        "the request"
    } else {
        path
    }
}

/// A frame's base64 decoded within `max_bytes` (`-5` for bad base64, `-8` over the bound,
/// `-7` for an empty frame).
fn frame_bytes(text: &str, max_bytes: usize, path: &str) -> Result<Bytes, ApiError> {
    base64_image(text, max_bytes, path).map_err(|e| match e {
        ApiError::Engine(Error::InvalidArgument(m)) => {
            knomi_error(Code::InvalidBase64, format!("Invalid base64 string: {m}."))
        }
        ApiError::Engine(Error::EmptyImage) => {
            knomi_error(Code::InvalidImageData, format!("{path} is empty."))
        }
        ApiError::Engine(Error::ImageTooLarge { size, limit }) => knomi_error(
            Code::InvalidImageSize,
            format!("{path} is {size} bytes: at most {limit} bytes per frame."),
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: ParseLimits = ParseLimits {
        max_frames: 4,
        max_frame_bytes: 1000,
    };

    fn req(wd: Value) -> Value {
        json!({"video": {"meta_data": {"username": "x"}, "workflow_data": wd}})
    }

    fn frame(ts: i64) -> Value {
        json!({"data": "/9j/4AAQ", "tags": [], "timestamp": ts})
    }

    fn code(doc: Value) -> String {
        match parse_request(&doc, "", LIMITS) {
            Err(ApiError::Dialect(d)) => d.kind.to_string(),
            Err(e) => format!("other: {e}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn workflows_parse_into_profiles() {
        let Some(Workflow::Passive(w)) = Workflow::parse("charlie6") else {
            panic!()
        };
        assert_eq!(
            (w.fusion, w.camera, w.threshold),
            (
                Fusion::Sequence,
                Camera::Front,
                Threshold::Calibration(Calibration::Hardened)
            )
        );
        let Some(Workflow::Passive(w)) = Workflow::parse("hotel2") else {
            panic!()
        };
        assert_eq!((w.fusion, w.camera), (Fusion::BestFrame, Camera::Back));
        assert_eq!(
            Workflow::parse("active_left"),
            Some(Workflow::Active(Direction::Left))
        );
        for bad in ["charlie5", "Charlie4", "active_sideways", "foxtrot", ""] {
            assert_eq!(Workflow::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_failure_has_its_code() {
        let ok = req(json!({"workflow": "foxtrot4", "frames": [frame(1), frame(2)]}));
        assert_eq!(code(ok), "ok");
        assert_eq!(code(json!({})), "knomi_missing_field");
        assert_eq!(code(json!({"video": 3})), "knomi_wrong_type");
        assert_eq!(
            code(req(json!({"workflow": "delta4", "frames": [frame(1)]}))),
            "knomi_invalid_value"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "frames": [{"data": "*", "timestamp": 1}]})
            )),
            "knomi_invalid_base64"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "frames": [frame(2), frame(2)]})
            )),
            "knomi_timestamp"
        );
        assert_eq!(
            code(req(json!({"workflow": "foxtrot4", "frames": [frame(-1)]}))),
            "knomi_timestamp"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "rotation": 45, "frames": [frame(1)]})
            )),
            "knomi_rotation"
        );
        for (k, v, want) in [
            ("face_detection_min_size", 1.5, "knomi_min_size"),
            ("face_detection_max_size", -0.1, "knomi_max_size"),
            ("face_detection_sensitivity", 2.0, "knomi_sensitivity"),
            ("face_detection_granularity", 7.0, "knomi_granularity"),
        ] {
            let mut wd = json!({"workflow": "foxtrot4", "frames": [frame(1)]});
            wd[k] = json!(v);
            assert_eq!(code(req(wd)), want, "{k}");
        }
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "face_detection_min_size": 0.6,
                "face_detection_max_size": 0.5, "frames": [frame(1)]})
            )),
            "knomi_min_over_max"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "frames": (1..=5).map(frame).collect::<Vec<_>>()})
            )),
            "knomi_invalid_value"
        );
        assert_eq!(
            code(req(json!({"workflow": "active_up", "frames": [
                {"data": "/9j/4AAQ", "tags": ["ACTIVE_HEAD_DOWN"], "timestamp": 1}]}))),
            "knomi_invalid_value"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "active_up", "security_level": 10, "frames": [frame(1)]})
            )),
            "knomi_invalid_value"
        );
        assert_eq!(
            code(req(
                json!({"workflow": "foxtrot4", "security_level": "high", "frames": [frame(1)]})
            )),
            "knomi_wrong_type"
        );
    }

    #[test]
    fn options_are_read() {
        let r = parse_request(
            &req(
                json!({"workflow": "charlie4", "security_level": 30, "rotation": 270,
                "timestamp": 5, "face_detection_min_size": 0.3, "perform_construction": true,
                "frames": [frame(1), frame(2), frame(3)]}),
            ),
            "",
            LIMITS,
        )
        .unwrap();
        let Workflow::Passive(w) = r.workflow else {
            panic!()
        };
        assert_eq!(w.threshold, Threshold::Frr(0.3));
        assert_eq!((r.rotation, r.timestamp), (270, Some(5)));
        assert_eq!(r.window.min, Some(0.3));
        assert!(r.perform_construction);
        assert_eq!(r.timestamps().collect::<Vec<_>>(), [5, 1, 2, 3]);
        assert_eq!(
            parse_json(b"{nope").err().map(|e| e.kind()),
            Some("knomi_invalid_json")
        );
    }
}
