//! Synthetic frames for active liveness, built from one photo (no video fixtures exist): a
//! *plane move* is a perspective warp of the whole photo (a printed photo or a screen moved in
//! front of the camera: every point moves by one homography); a *head turn* (or nod) is a
//! smooth non-planar warp that moves the nose more than the eyes and the outline hardly at all.

use facegate::engine::Analysis;
use image::RgbImage;

/// Inverse-mapped bilinear warp: output pixel (x, y) takes the source at `src(x, y)`.
pub fn warp(img: &RgbImage, src: impl Fn(f32, f32) -> (f32, f32)) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = src(x as f32, y as f32);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let px = |xx: f32, yy: f32, c: usize| -> f32 {
            let (xi, yi) = (xx as i64, yy as i64);
            if xi < 0 || yi < 0 || xi >= i64::from(w) || yi >= i64::from(h) {
                0.0
            } else {
                f32::from(img.get_pixel(xi as u32, yi as u32)[c])
            }
        };
        let mut out = [0u8; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1.0, y0, c) * fx;
            let bottom = px(x0, y0 + 1.0, c) * (1.0 - fx) + px(x0 + 1.0, y0 + 1.0, c) * fx;
            *o = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
        image::Rgb(out)
    })
}

/// A perspective view of the photo as a plane turned about a vertical axis through `cx`
/// (plus a small shift): one homography for every pixel.
pub fn plane_move(img: &RgbImage, cx: f32) -> RgbImage {
    // Inverse map of x' = (x - cx) / (1 + k (x - cx)) + cx + 6, y' = y / (1 + k (x - cx)).
    let k = 0.0006;
    warp(img, |x, y| {
        let u = x - cx - 6.0;
        let d = 1.0 - k * u;
        (u / d + cx, y / d)
    })
}

/// Where the selected face is: its box centre and half-sizes, its nose tip and its
/// inter-ocular distance.
pub struct FaceGeometry {
    /// Centre of the face box.
    pub centre: [f32; 2],
    /// Half-sizes of the (slightly enlarged) face box.
    pub half: [f32; 2],
    /// Nose tip (landmark 30).
    pub nose: [f32; 2],
    /// Inter-ocular distance, pixels.
    pub iod: f32,
}

/// The geometry of `a`'s selected face (needs its landmarks).
pub fn geometry(a: &Analysis) -> FaceGeometry {
    let s = a.shape.as_ref().expect("landmarks");
    let f = &a.faces[a.selected_face.expect("a face")];
    let iod = ((s.eye_centers[1][0] - s.eye_centers[0][0]).powi(2)
        + (s.eye_centers[1][1] - s.eye_centers[0][1]).powi(2))
    .sqrt();
    FaceGeometry {
        centre: [(f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0],
        half: [
            (f.bbox[2] - f.bbox[0]) * 0.55,
            (f.bbox[3] - f.bbox[1]) * 0.6,
        ],
        nose: s.points[30],
        iod,
    }
}

/// A head rotated by `yaw` and `pitch` degrees (orthographic view of a depth map: the face as
/// half an ellipsoid as deep as it is half wide, plus a nose half an inter-ocular distance
/// high): each pixel moves by its depth times the sine of the angle, so the nose moves more
/// than the eyes, the eyes more than the cheeks, and the outline hardly at all. Positive yaw
/// moves the nose to the image's right (the person turning to their left), positive pitch
/// moves it down.
pub fn head_move(img: &RgbImage, g: &FaceGeometry, yaw: f32, pitch: f32) -> RgbImage {
    let depth = |x: f32, y: f32| -> f32 {
        let u = (x - g.centre[0]) / g.half[0];
        let v = (y - g.centre[1]) / g.half[1];
        let shell = (1.0 - u * u - v * v).max(0.0).sqrt() * g.half[0];
        let s = 0.25 * g.iod;
        let n = (-((x - g.nose[0]).powi(2) + (y - g.nose[1]).powi(2)) / (2.0 * s * s)).exp();
        shell + 0.5 * g.iod * n
    };
    let (sy, sp) = (yaw.to_radians().sin(), pitch.to_radians().sin());
    warp(img, |x, y| {
        // Fixed-point inverse of p -> p + depth(p) (sin yaw, sin pitch).
        let (mut px, mut py) = (x, y);
        for _ in 0..10 {
            let z = depth(px, py);
            px = x - z * sy;
            py = y - z * sp;
        }
        (px, py)
    })
}

/// `img` as a JPEG of quality 95 (how the synthetic frames travel).
pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(img)
        .unwrap();
    out
}

/// Fixture `name` upright as the engine sees it, and its analysis with liveness, template and
/// landmarks (what [`geometry`] and active sessions need).
pub fn upright(e: &facegate::engine::Engine, name: &str) -> (RgbImage, Analysis) {
    let img = e.prepare(&super::http::fixture_bytes(name)).unwrap().image;
    let a = e
        .analyze_prepared(
            vec![Ok(e.prepare_image(img.clone()))],
            &facegate::engine::workflow::active_options(),
        )
        .pop()
        .unwrap()
        .unwrap();
    (img, a)
}
