//! Network ops with a CUDA kernel of their own (`kernels/*.cu`), for what candle's CUDA backend
//! does badly, plus the PTX that build.rs compiles from `kernels/` with the `cuda` feature.
//!
//! Every op here is a candle custom op with a plain CPU implementation (its twin, what CI
//! tests) and, with the `cuda` feature, a CUDA one; `facegate gpucheck` compares the two on a
//! GPU.

pub mod depthwise;

/// PTX of `kernels/depthwise.cu`.
#[cfg(feature = "cuda")]
pub const DEPTHWISE_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/depthwise.ptx"));

/// PTX of `kernels/preprocess.cu`.
#[cfg(feature = "cuda")]
pub const PREPROCESS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/preprocess.ptx"));

/// Threads per block of the element-wise kernels here.
#[cfg(feature = "cuda")]
pub(crate) const BLOCK: u32 = 256;

/// Launch geometry for `total` elements with a grid-stride loop: at most 65 535 blocks.
#[cfg(feature = "cuda")]
pub(crate) fn launch_for(total: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    let blocks = total.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32;
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}
