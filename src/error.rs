//! The engine's one error type: what can go wrong between image bytes and a verdict. It holds
//! no transport errors (body limits and timeouts are the API edge's, `api::error`) and no
//! dialect types; every dialect maps it to its own wire format in one table.

use std::path::PathBuf;

/// Everything that can go wrong between receiving bytes and returning a verdict.
///
/// Variants carry the bound or the reason in their message, so a client can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carried no image bytes.
    #[error("empty image: the request carried no image data")]
    EmptyImage,
    /// The encoded image is larger than the configured byte limit.
    #[error("image too large: {size} bytes, the limit is {limit} bytes")]
    ImageTooLarge {
        /// Size of the encoded image in bytes.
        size: usize,
        /// Configured maximum.
        limit: usize,
    },
    /// The decoded image would exceed the configured pixel budget.
    #[error("image has too many pixels: {width}x{height}, the limit is {limit} pixels")]
    TooManyPixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Configured maximum width*height.
        limit: u64,
    },
    /// The image is smaller than any face the detector could find.
    #[error("image too small: {width}x{height}, the minimum side is {min} pixels")]
    ImageTooSmall {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Minimum side.
        min: u32,
    },
    /// The bytes are not a JPEG or PNG image.
    #[error("unsupported image format: only JPEG and PNG are accepted")]
    UnsupportedFormat,
    /// The bytes look like an image but cannot be decoded.
    #[error("corrupt image: {0}")]
    CorruptImage(String),
    /// A request parameter is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A model file is missing or does not match the manifest.
    #[error("model {name} not usable at {}: {reason}", path.display())]
    Model {
        /// Manifest name of the model.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The work queue is full; the client should retry later.
    #[error("overloaded: the queue holds {depth} items, its bound")]
    Overloaded {
        /// Queue depth when the item was refused.
        depth: usize,
    },
    /// The engine worker is not running (still loading, or failed).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// A tensor operation failed inside a network.
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    /// An I/O failure outside a request (model files, datasets).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A bug caught at run time (a panic inside one image's work, a broken invariant); only
    /// that image fails.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Short stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::EmptyImage => "empty_image",
            Error::ImageTooLarge { .. } => "image_too_large",
            Error::TooManyPixels { .. } => "too_many_pixels",
            Error::ImageTooSmall { .. } => "image_too_small",
            Error::UnsupportedFormat => "unsupported_format",
            Error::CorruptImage(_) => "corrupt_image",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Model { .. } => "model",
            Error::Overloaded { .. } => "overloaded",
            Error::Unavailable(_) => "unavailable",
            Error::Inference(_) => "inference",
            Error::Io(_) => "io",
            Error::Internal(_) => "internal",
        }
    }

    /// A copy for one more rendering of the same failure (one image judged under several
    /// pipelines, one frame deciding a session). Variants that wrap a foreign error keep its
    /// message as [`Error::Internal`].
    pub fn copied(&self) -> Error {
        match self {
            Error::EmptyImage => Error::EmptyImage,
            Error::ImageTooLarge { size, limit } => Error::ImageTooLarge {
                size: *size,
                limit: *limit,
            },
            Error::TooManyPixels {
                width,
                height,
                limit,
            } => Error::TooManyPixels {
                width: *width,
                height: *height,
                limit: *limit,
            },
            Error::ImageTooSmall { width, height, min } => Error::ImageTooSmall {
                width: *width,
                height: *height,
                min: *min,
            },
            Error::UnsupportedFormat => Error::UnsupportedFormat,
            Error::CorruptImage(m) => Error::CorruptImage(m.clone()),
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::Model { name, path, reason } => Error::Model {
                name: name.clone(),
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Overloaded { depth } => Error::Overloaded { depth: *depth },
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::Internal(m) => Error::Internal(m.clone()),
            Error::Inference(_) | Error::Io(_) => Error::Internal(self.to_string()),
        }
    }

    /// The message for clients: as [`Display`](std::fmt::Display), without the server's file
    /// paths (a model error names the model and the reason, not where it was looked for; an
    /// i/o error its kind).
    pub fn public(&self) -> String {
        match self {
            Error::Model { name, reason, .. } => format!("model {name} not usable: {reason}"),
            Error::Io(e) => format!("i/o error: {}", e.kind()),
            e => e.to_string(),
        }
    }

    /// True when the client sent something unusable (as opposed to a server-side fault).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::EmptyImage
                | Error::ImageTooLarge { .. }
                | Error::TooManyPixels { .. }
                | Error::ImageTooSmall { .. }
                | Error::UnsupportedFormat
                | Error::CorruptImage(_)
                | Error::InvalidArgument(_)
        )
    }
}

/// Result alias over [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_kind_and_message() {
        let errors = [
            Error::EmptyImage,
            Error::ImageTooLarge { size: 9, limit: 8 },
            Error::TooManyPixels {
                width: 3,
                height: 4,
                limit: 5,
            },
            Error::ImageTooSmall {
                width: 1,
                height: 2,
                min: 32,
            },
            Error::UnsupportedFormat,
            Error::CorruptImage("x".into()),
            Error::InvalidArgument("y".into()),
            Error::Overloaded { depth: 7 },
            Error::Unavailable("z".into()),
            Error::Internal("w".into()),
        ];
        for e in &errors {
            let c = e.copied();
            assert_eq!((c.kind(), c.to_string()), (e.kind(), e.to_string()));
        }
        let io = Error::Io(std::io::Error::other("disk"));
        assert_eq!(io.copied().kind(), "internal");
        assert!(io.copied().to_string().contains("disk"));
    }
}
