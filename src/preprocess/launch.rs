//! The batched preprocessing ops of [`super::batch`] on a device: on the CPU their twins, on
//! CUDA the kernels of `kernels/preprocess.cu`, one launch per batch. The engine calls these
//! when its networks run on a GPU, so that only the decoded pixels cross the bus (once per
//! stage) and the crops, the warp, the channel order, the normalisation and the NCHW packing
//! happen on the device.
//!
//! On CUDA the pixels go through a page-locked staging buffer kept per thread (each engine
//! worker has its own thread, device and stream), copied asynchronously on the device's
//! stream; the descriptor table follows as an ordinary copy, and the output stays on the device.

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::batch::{
    chip_warp, crop_pack, crop_table, detector_dims, detector_pack, detector_table, pack_images,
    warp_table, CropJob, WarpJob,
};
use crate::Result;

/// The `(N, 3, H, W)` detector input of `images` (B, G, R minus `mean_bgr`, padded with zeros
/// to the batch's largest size) on `device`.
pub fn detector_input(images: &[&RgbImage], mean_bgr: [f32; 3], device: &Device) -> Result<Tensor> {
    let (data, slots) = pack_images(images)?;
    let (h, w) = detector_dims(&slots);
    let table = detector_table(&slots);
    let shape = (slots.len(), 3, h, w);
    if !device.is_cuda() {
        let out = detector_pack(&data, &table, h, w, mean_bgr)?;
        return Ok(Tensor::from_vec(out, shape, device)?);
    }
    cuda::run(
        device,
        &data,
        &table,
        shape,
        cuda::Op::Detector { mean_bgr },
    )
}

/// The `(N, 3, size, size)` BGR 0..255 MiniFASNet crops `jobs` of `images` on `device`.
pub fn crop_input(
    images: &[&RgbImage],
    jobs: &[CropJob],
    size: usize,
    device: &Device,
) -> Result<Tensor> {
    let (data, slots) = pack_images(images)?;
    let table = crop_table(&slots, jobs)?;
    let shape = (jobs.len(), 3, size, size);
    if !device.is_cuda() {
        let out = crop_pack(&data, &table, size)?;
        return Ok(Tensor::from_vec(out, shape, device)?);
    }
    cuda::run(device, &data, &table, shape, cuda::Op::Crop)
}

/// The `(N, 3, size, size)` RGB 0..255 aligned chips `jobs` of `images` on `device`.
pub fn chip_input(
    images: &[&RgbImage],
    jobs: &[WarpJob],
    size: usize,
    device: &Device,
) -> Result<Tensor> {
    let (data, slots) = pack_images(images)?;
    let table = warp_table(&slots, jobs)?;
    let shape = (jobs.len(), 3, size, size);
    if !device.is_cuda() {
        let out = chip_warp(&data, &table, size)?;
        return Ok(Tensor::from_vec(out, shape, device)?);
    }
    cuda::run(device, &data, &table, shape, cuda::Op::Warp)
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    //! Without the `cuda` feature no device is CUDA: [`run`] is never reached.
    use candle_core::{Device, Tensor};

    use crate::{Error, Result};

    /// The kernel to launch.
    pub(super) enum Op {
        Detector { mean_bgr: [f32; 3] },
        Crop,
        Warp,
    }

    pub(super) fn run(
        _: &Device,
        _: &[u8],
        _: &[f64],
        _: (usize, usize, usize, usize),
        op: Op,
    ) -> Result<Tensor> {
        let _ = match op {
            Op::Detector { mean_bgr } => mean_bgr,
            Op::Crop | Op::Warp => [0.0; 3],
        };
        Err(Error::Internal(
            "a CUDA device in a build without CUDA".into(),
        ))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches.
    use std::cell::RefCell;

    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, LaunchConfig, PinnedHostSlice, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaStorage, Device, Storage, Tensor};

    use crate::nn::cuda::{BLOCK, PREPROCESS_PTX};
    use crate::{Error, Result};

    /// The kernel to launch.
    pub(super) enum Op {
        /// `detector_pack` with its mean.
        Detector { mean_bgr: [f32; 3] },
        /// `crop_pack`.
        Crop,
        /// `chip_warp`.
        Warp,
    }

    /// A page-locked host buffer and a device buffer of the same capacity, reused by every
    /// launch on this thread (for one device).
    struct Staging {
        host: PinnedHostSlice<u8>,
        device: CudaSlice<u8>,
        ordinal: usize,
    }

    thread_local! {
        static STAGING: RefCell<Option<Staging>> = const { RefCell::new(None) };
    }

    /// Capacity for `n` bytes: a quarter more, rounded up to 1 MiB, so that a growing batch
    /// reallocates rarely.
    fn capacity(n: usize) -> usize {
        (n + n / 4).div_ceil(1 << 20).max(1) << 20
    }

    pub(super) fn run(
        device: &Device,
        data: &[u8],
        table: &[f64],
        shape: (usize, usize, usize, usize),
        op: Op,
    ) -> Result<Tensor> {
        let Device::Cuda(dev) = device else {
            return Err(Error::Internal("CUDA launch on a non-CUDA device".into()));
        };
        let (n, c, h, w) = shape;
        let total = n * c * h * w;
        // gridDim.y holds the item index.
        let items = i32::try_from(n)
            .ok()
            .filter(|&i| (1..=65_535).contains(&i))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{n} items in one launch (1..=65535)"))
            })?;
        let (hi, wi) = (h as i32, w as i32);
        let stream = dev.cuda_stream();
        let ordinal = stream.context().ordinal();
        STAGING.with(|cell| -> Result<Tensor> {
            let mut cell = cell.borrow_mut();
            let fits = cell
                .as_ref()
                .is_some_and(|s| s.ordinal == ordinal && s.host.len() >= data.len());
            if !fits {
                let cap = capacity(data.len());
                // SAFETY: a fresh page-locked allocation of `cap` bytes, written below before
                // any copy reads it.
                let host = unsafe { stream.context().alloc_pinned::<u8>(cap) }.w()?;
                let device = stream.alloc_zeros::<u8>(cap).w()?;
                *cell = Some(Staging {
                    host,
                    device,
                    ordinal,
                });
            }
            let Some(st) = cell.as_mut() else {
                return Err(Error::Internal("staging buffer".into()));
            };
            // Waits for the previous copy out of the buffer, then fills it.
            st.host.as_mut_slice().w()?[..data.len()].copy_from_slice(data);
            stream.memcpy_htod(&st.host, &mut st.device).w()?;
            let table_d = stream.clone_htod(table).w()?;
            let data_len = data.len() as u64;
            // SAFETY: the kernel writes each of the `total` output values.
            let mut out = unsafe { dev.alloc::<f32>(total) }?;
            let name = match op {
                Op::Detector { .. } => "detector_pack",
                Op::Crop => "crop_pack",
                Op::Warp => "chip_warp",
            };
            let f = dev.get_or_load_custom_func(name, "facegate_preprocess", PREPROCESS_PTX)?;
            let mut args = f.builder();
            args.arg(&st.device)
                .arg(&data_len)
                .arg(&table_d)
                .arg(&items)
                .arg(&mut out);
            let mean;
            let side = hi;
            match op {
                Op::Detector { mean_bgr } => {
                    mean = mean_bgr;
                    args.arg(&hi)
                        .arg(&wi)
                        .arg(&mean[0])
                        .arg(&mean[1])
                        .arg(&mean[2]);
                }
                Op::Crop | Op::Warp => {
                    args.arg(&side);
                }
            }
            // One thread per output pixel (all three channels) of item `blockIdx.y`.
            let config = LaunchConfig {
                grid_dim: ((h * w).div_ceil(BLOCK as usize) as u32, n as u32, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments follow the kernels' signatures in kernels/preprocess.cu;
            // every read is checked there against `data_len`, and every thread inside the
            // plane writes its pixel's three values (zeros for an item that fails its checks).
            unsafe { args.launch(config) }.w()?;
            let storage = CudaStorage {
                slice: CudaStorageSlice::F32(out),
                device: dev.clone(),
            };
            Ok(Tensor::from_storage(
                Storage::Cuda(storage),
                shape,
                candle_core::op::BackpropOp::none(),
                false,
            ))
        })
    }
}
