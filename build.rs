//! With the `cuda` feature: compiles every `kernels/*.cu` to PTX with nvcc (the CUDA toolkit
//! that scripts/build-cuda.sh installs), for `CUDA_COMPUTE_CAP` (default 90), into `OUT_DIR`,
//! where `src/nn/cuda` includes them. Without the feature it does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    kernels.sort();
    for src in kernels {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_stem().expect("a .cu file has a stem");
        let ptx = out.join(stem).with_extension("ptx");
        // -fmad=false: no contraction of a*b+c into one rounding, so the kernels do the
        // arithmetic of their CPU twins (src/preprocess/batch.rs) step by step.
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-fmad=false", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!("could not run {nvcc} (the `cuda` feature needs the CUDA toolkit: use scripts/build-cuda.sh): {e}")
            });
        assert!(status.success(), "nvcc failed on {}", src.display());
    }
}
