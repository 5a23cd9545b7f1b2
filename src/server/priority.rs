//! Network threads below the inference threads: under an overload storm, answering refusals
//! must not take the CPU the admitted work needs.
//!
//! The async runtime's threads (accepting, parsing heads, refusing, rendering) are lowered by
//! `server.network_nice` steps when they start; the engine worker, the inference pool and the
//! batcher's decoding threads keep the process's priority. The scheduler then shares a
//! saturated CPU about 5:1 in favour of each busy inference or decoding thread at the default
//! of 7 (Linux weights 1024 vs 215), while an idle CPU is still the network's at once. Lower
//! values answer refusals sooner, higher ones keep more goodput under a storm (measured in
//! docs/operations.md, "Overload and the network priority"). Raising a thread back needs
//! privileges, so threads that must keep the normal priority are created outside the runtime
//! (from the thread that builds it, or from threads made before).

/// Lowers the calling thread's scheduling priority by `steps` nice values (at most to 19).
/// On Linux the nice value is per thread. Errors name the nice values involved.
pub fn lower_current_thread(steps: i32) -> Result<(), String> {
    if steps <= 0 {
        return Ok(());
    }
    let now =
        rustix::process::getpriority_process(None).map_err(|e| format!("getpriority: {e}"))?;
    let to = now.saturating_add(steps).min(19);
    rustix::process::setpriority_process(None, to)
        .map_err(|e| format!("setpriority from nice {now} to {to}: {e}"))
}

/// The multi-threaded async runtime whose threads (workers and blocking pool) run `nice`
/// steps below the thread that builds it. A future given to its `block_on` runs on the calling
/// thread, so the batcher started there keeps that thread's priority for its own threads.
pub fn runtime(nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = lower_current_thread(nice) {
                tracing::warn!(error = %e, "network threads keep the inference threads' priority");
            }
        })
        .build()
}

/// The calling thread's nice value.
pub fn current_nice() -> Result<i32, String> {
    rustix::process::getpriority_process(None).map_err(|e| format!("getpriority: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_is_per_thread_and_bounded() {
        let before = current_nice().unwrap();
        let lowered = std::thread::spawn(move || {
            lower_current_thread(5).unwrap();
            let once = current_nice().unwrap();
            lower_current_thread(100).unwrap();
            (once, current_nice().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, ((before + 5).min(19), 19));
        // This thread kept its priority.
        assert_eq!(current_nice().unwrap(), before);
    }
}
