// Depthwise 2-D convolution (one kxk kernel per channel), batched, NCHW, with the per-channel
// bias fused. The CUDA counterpart of src/nn/cpu/depthwise.rs, launched by
// src/nn/cuda/depthwise.rs; candle's grouped conv2d would run one convolution per channel.
//
// One thread per output element, flat index over (n, c, oy, ox), grid-stride loop:
//   depthwise_f32(x, w, bias, y, n, c, h, w_in, kh, kw, stride, pad, oh, ow)
//   depthwise_f16(...) the same with __half tensors, accumulating in f32.
// x: (n, c, h, w_in) contiguous; w: (c, 1, kh, kw) contiguous; bias: (c); y: (n, c, oh, ow).
// Taps outside the input are the zero padding. The sum runs ky-major, kx-minor with plain
// multiply-add (built with -fmad=false, like the CPU's order it is deterministic; it is not
// bitwise the CPU's SIMD order, so tests compare within a tolerance).
#include <cuda_fp16.h>

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__device__ void depthwise(const T* __restrict__ x, const T* __restrict__ w,
                          const T* __restrict__ bias, T* __restrict__ y, int n, int c, int h,
                          int w_in, int kh, int kw, int stride, int pad, int oh, int ow) {
    const long long total = (long long)n * c * oh * ow;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % ow);
        const int oy = (int)((i / ow) % oh);
        const int ch = (int)((i / ((long long)ow * oh)) % c);
        const long long img = i / ((long long)ow * oh * c);
        const T* plane = x + (img * c + ch) * (long long)h * w_in;
        const T* k = w + (long long)ch * kh * kw;
        float acc = 0.0f;
        const int iy0 = oy * stride - pad;
        const int ix0 = ox * stride - pad;
        for (int ky = 0; ky < kh; ++ky) {
            const int iy = iy0 + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int ix = ix0 + kx;
                if (ix < 0 || ix >= w_in) continue;
                acc += to_f32(plane[(long long)iy * w_in + ix]) * to_f32(k[ky * kw + kx]);
            }
        }
        y[i] = from_f32<T>(acc + to_f32(bias[ch]));
    }
}

extern "C" __global__ void depthwise_f32(const float* x, const float* w, const float* bias,
                                         float* y, int n, int c, int h, int w_in, int kh, int kw,
                                         int stride, int pad, int oh, int ow) {
    depthwise<float>(x, w, bias, y, n, c, h, w_in, kh, kw, stride, pad, oh, ow);
}

extern "C" __global__ void depthwise_f16(const __half* x, const __half* w, const __half* bias,
                                         __half* y, int n, int c, int h, int w_in, int kh,
                                         int kw, int stride, int pad, int oh, int ow) {
    depthwise<__half>(x, w, bias, y, n, c, h, w_in, kh, kw, stride, pad, oh, ow);
}
