// Batched preprocessing kernels: detector input packing, MiniFASNet crops, descriptor chips.
//
// Built to PTX by build.rs with `nvcc --ptx -fmad=false` (no fast-math, no FMA contraction):
// every kernel does the same arithmetic, in the same order and types, as its CPU twin in
// src/preprocess/batch.rs (double where the twin uses f64, float for f32, int for i32), so the
// GPU output equals the twin's bit for bit. The twins in turn equal the scalar CPU path
// (retinaface::input_from_images, crop::pack_bgr(crop_rgb), align::align_face).
//
// Layout shared with the twins:
// - `data`: the images of one batch concatenated, each packed RGB8 rows of 3*width bytes,
//   `data_len` bytes in all.
// - `table`: per-item descriptors as doubles (whole numbers are exact up to 2^53), a fixed
//   stride per item (DETECTOR_FIELDS = 3, CROP_FIELDS = 8, WARP_FIELDS = 9 in batch.rs):
//     detector_pack: offset, width, height
//     crop_pack:     offset, width, height, x0, y0, w, h, mirror (0/1)
//     chip_warp:     offset, width, height, a, b, tx, c, d, ty  (inverse affine, output -> image)
// - `out`: NCHW float, item i at out + i * 3 * plane.
//
// Launch geometry (all three kernels): block = (256, 1, 1), grid = (ceil(plane / 256), n_items, 1)
// where plane = out_h * out_w (detector) or size * size (crop, chip). Thread
// blockIdx.x * blockDim.x + threadIdx.x is one output pixel of item blockIdx.y and writes its 3
// channels. Any block size works; n_items must be at most 65535 (gridDim.y).
//
// Bad items: where the twin returns an error (image outside data_len, region outside the image,
// non-whole/negative/NaN integer fields, non-finite coefficients), the kernel writes zeros for
// every pixel of that item instead of reading outside `data`.

#define MAX_EXACT 9007199254740992.0  // 2^53

// A whole number in 0..=2^53 (NaN fails every comparison).
__device__ __forceinline__ bool whole(double v) {
    return v >= 0.0 && v <= MAX_EXACT && floor(v) == v;
}

// Reads fields 0..3 (offset, width, height) of an item and checks that the image lies inside
// data_len: offset + width * height * 3 <= data_len, without overflow.
__device__ __forceinline__ bool image_fields(const double* t, unsigned long long data_len,
                                             unsigned long long* off, unsigned long long* w,
                                             unsigned long long* h) {
    if (!whole(t[0]) || !whole(t[1]) || !whole(t[2])) return false;
    *off = (unsigned long long)t[0];
    *w = (unsigned long long)t[1];
    *h = (unsigned long long)t[2];
    if (*off > data_len) return false;
    unsigned long long room = data_len - *off;
    if (*w == 0ull || *h == 0ull) return true;
    // w * h * 3 <= room  <=>  h <= room / (3 w) (integers; 3 w <= 3 * 2^53 does not overflow)
    return *h <= room / (3ull * *w);
}

// detector_pack: the RetinaFace input. Planes B, G, R of `pixel - mean`, zero right of and
// below each image (the batch is out_h x out_w, the largest image).
//
// Arguments, in order:
//   const unsigned char* data, unsigned long long data_len,
//   const double* table (n_items * 3: offset, width, height), int n_items,
//   float* out (n_items * 3 * out_h * out_w), int out_h, int out_w,
//   float mean_b, float mean_g, float mean_r   (retinaface::MEAN_BGR = 104, 117, 127)
// Grid: (ceil(out_h * out_w / 256), n_items, 1), block (256, 1, 1).
extern "C" __global__ void detector_pack(const unsigned char* data, unsigned long long data_len,
                                         const double* table, int n_items, float* out,
                                         int out_h, int out_w, float mean_b, float mean_g,
                                         float mean_r) {
    int item = blockIdx.y;
    long long plane = (long long)out_h * (long long)out_w;
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= n_items || p >= plane) return;
    float* o = out + (long long)item * 3 * plane;
    const double* t = table + (long long)item * 3;
    unsigned long long off, iw, ih;
    bool ok = image_fields(t, data_len, &off, &iw, &ih) && iw <= (unsigned long long)out_w &&
              ih <= (unsigned long long)out_h;
    long long y = p / out_w, x = p % out_w;
    float b = 0.0f, g = 0.0f, r = 0.0f;
    if (ok && (unsigned long long)x < iw && (unsigned long long)y < ih) {
        const unsigned char* px = data + off + ((unsigned long long)y * iw + x) * 3ull;
        b = (float)px[2] - mean_b;
        g = (float)px[1] - mean_g;
        r = (float)px[0] - mean_r;
    }
    o[p] = b;
    o[plane + p] = g;
    o[2 * plane + p] = r;
}

// One output sample's taps along an axis (OpenCV INTER_LINEAR, as resize.rs linear_taps):
// source indices s0, s1 and 11-bit weights w0, w1.
__device__ __forceinline__ void linear_tap(long long src_len, int dst_len, int d, long long* s0,
                                           long long* s1, int* w0, int* w1) {
    double scale = (double)src_len / (double)dst_len;
    float f = (float)(((double)d + 0.5) * scale - 0.5);
    long long s = (long long)floorf(f);
    float frac = f - (float)s;
    if (s < 0) {
        s = 0;
        frac = 0.0f;
    }
    if (s >= src_len - 1) {
        s = src_len - 1;
        frac = 0.0f;
    }
    *s0 = s;
    *s1 = (s + 1 < src_len - 1) ? s + 1 : src_len - 1;
    *w0 = (int)roundf((1.0f - frac) * 2048.0f);
    *w1 = (int)roundf(frac * 2048.0f);
}

// crop_pack: MiniFASNet crops. The region (x0, y0, w, h) of the item's image resized to
// size x size like resize_bilinear_cv (cv::resize INTER_LINEAR on 8-bit), mirrored left-right
// when the flag is 1 (output column x reads resized column size-1-x), written as BGR planes
// (plane 0 = B) of floats 0..255.
//
// Arguments, in order:
//   const unsigned char* data, unsigned long long data_len,
//   const double* table (n_items * 8: offset, width, height, x0, y0, w, h, mirror), int n_items,
//   float* out (n_items * 3 * size * size), int size
// Grid: (ceil(size * size / 256), n_items, 1), block (256, 1, 1).
extern "C" __global__ void crop_pack(const unsigned char* data, unsigned long long data_len,
                                     const double* table, int n_items, float* out, int size) {
    int item = blockIdx.y;
    long long plane = (long long)size * (long long)size;
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= n_items || size <= 0 || p >= plane) return;
    float* o = out + (long long)item * 3 * plane;
    const double* t = table + (long long)item * 8;
    unsigned long long off, iw, ih;
    bool ok = image_fields(t, data_len, &off, &iw, &ih) && whole(t[3]) && whole(t[4]) &&
              whole(t[5]) && whole(t[6]) && whole(t[7]);
    unsigned long long x0 = 0, y0 = 0, w = 0, h = 0, mirror = 0;
    if (ok) {
        x0 = (unsigned long long)t[3];
        y0 = (unsigned long long)t[4];
        w = (unsigned long long)t[5];
        h = (unsigned long long)t[6];
        mirror = (unsigned long long)t[7];
        ok = w > 0 && h > 0 && x0 + w <= iw && y0 + h <= ih && mirror <= 1;
    }
    if (!ok) {
        o[p] = 0.0f;
        o[plane + p] = 0.0f;
        o[2 * plane + p] = 0.0f;
        return;
    }
    int dy = (int)(p / size), ox = (int)(p % size);
    int dx = mirror == 1 ? size - 1 - ox : ox;
    long long ys0, ys1, xs0, xs1;
    int a0, a1, b0, b1;
    linear_tap((long long)h, size, dy, &ys0, &ys1, &b0, &b1);
    linear_tap((long long)w, size, dx, &xs0, &xs1, &a0, &a1);
    unsigned long long stride = iw * 3ull;
    const unsigned char* r0 = data + off + (y0 + ys0) * stride + x0 * 3ull;
    const unsigned char* r1 = data + off + (y0 + ys1) * stride + x0 * 3ull;
    for (int c = 0; c < 3; ++c) {
        int v0 = (int)r0[xs0 * 3 + c] * a0 + (int)r0[xs1 * 3 + c] * a1;
        int v1 = (int)r1[xs0 * 3 + c] * a0 + (int)r1[xs1 * 3 + c] * a1;
        int v = (((b0 * (v0 >> 4)) >> 16) + ((b1 * (v1 >> 4)) >> 16) + 2) >> 2;
        v = v < 0 ? 0 : (v > 255 ? 255 : v);
        // RGB channel c goes to BGR plane 2 - c.
        o[(2 - c) * plane + p] = (float)v;
    }
}

// chip_warp: descriptor chips. Chip pixel (u, v) takes the item's image at
// (a u + b v + tx, c u + d v + ty), bilinear in double with pixel centres at integers and
// neighbours outside the image counting as 0 (warp_affine_rgb); RGB planes of floats 0..255.
//
// Arguments, in order:
//   const unsigned char* data, unsigned long long data_len,
//   const double* table (n_items * 9: offset, width, height, a, b, tx, c, d, ty), int n_items,
//   float* out (n_items * 3 * size * size), int size
// Grid: (ceil(size * size / 256), n_items, 1), block (256, 1, 1).
extern "C" __global__ void chip_warp(const unsigned char* data, unsigned long long data_len,
                                     const double* table, int n_items, float* out, int size) {
    int item = blockIdx.y;
    long long plane = (long long)size * (long long)size;
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= n_items || size <= 0 || p >= plane) return;
    float* o = out + (long long)item * 3 * plane;
    const double* t = table + (long long)item * 9;
    unsigned long long off, iw, ih;
    bool ok = image_fields(t, data_len, &off, &iw, &ih);
    for (int k = 3; k < 9; ++k) ok = ok && isfinite(t[k]);
    float res[3] = {0.0f, 0.0f, 0.0f};
    if (ok) {
        double uf = (double)(p % size), vf = (double)(p / size);
        double sx = t[3] * uf + t[4] * vf + t[5];
        double sy = t[6] * uf + t[7] * vf + t[8];
        // Far outside (or NaN): all four neighbours are black.
        if (sx > -1.0 && sy > -1.0 && sx < (double)iw && sy < (double)ih) {
            double xf = floor(sx), yf = floor(sy);
            double fx = sx - xf, fy = sy - yf;
            long long x0 = (long long)xf, y0 = (long long)yf;
            long long wi = (long long)iw, hi = (long long)ih;
            for (int c = 0; c < 3; ++c) {
                double q[4];
                for (int k = 0; k < 4; ++k) {
                    long long x = x0 + (k & 1), y = y0 + (k >> 1);
                    q[k] = (x < 0 || y < 0 || x >= wi || y >= hi)
                               ? 0.0
                               : (double)data[off + (unsigned long long)((y * wi + x) * 3 + c)];
                }
                double top = q[0] * (1.0 - fx) + q[1] * fx;
                double bot = q[2] * (1.0 - fx) + q[3] * fx;
                res[c] = (float)(top * (1.0 - fy) + bot * fy);
            }
        }
    }
    o[p] = res[0];
    o[plane + p] = res[1];
    o[2 * plane + p] = res[2];
}
