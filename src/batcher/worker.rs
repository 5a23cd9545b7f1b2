//! The worker thread: owns the engine's networks and the three stage queues.
//!
//! Scheduling, each time the worker is free:
//! 1. move every submitted job into the detect queue;
//! 2. run the latest non-empty stage first (landmarks, describe, liveness, then detect), so
//!    images already in flight finish before new ones are admitted to the detector;
//! 3. a stage runs up to `max_batch` of its queue at once, oldest first. Only the detect queue
//!    receives new work from outside, so only it waits: when it holds fewer than `max_batch`
//!    images, the worker waits until `max_queue_delay_ms` after the oldest one was queued
//!    (Triton's rule) or until the batch is full. Images of any size share a batch: on CPU each
//!    runs on its own (nothing is padded), so results match single-image analysis;
//! 4. jobs whose client has gone (reply receiver dropped) are dropped before they run;
//! 5. every stage answers each image on its own: an image that fails in a stage gets its own
//!    error and its batch partners go on;
//! 6. on a GPU, a batch in which every image failed is followed by a probe (the warm-up run):
//!    when that fails too, the device is taken out ([`device_failed`]). The worker loads the
//!    networks on the CPU and reruns the batch there. If it was the last worker taking new
//!    work it goes on serving on the CPU (`/health` and `facegate_device_fallback` say so);
//!    otherwise (several GPUs) it finishes what it holds and stops, and the others take the
//!    new work.

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use image::RgbImage;

use super::{
    delay, ms, BatcherConfig, EngineInfo, Job, Loader, Processed, Shared, Stage, Status, STAGES,
};
use crate::engine::{AnalyzeOptions, Engine, Face, PadNetwork};
use crate::telemetry as tm;
use crate::{Error, Result};

/// Longest the detect queue waits for a partner before looking at the decoding count again.
const RECHECK: Duration = Duration::from_millis(1);

/// Tells the batcher when the worker's thread ends, however it ends: cleanly (`clean` set
/// after serving), with a load failure (`why`), or by a panic.
struct DeathGuard {
    shared: Arc<Shared>,
    clean: bool,
    retired: bool,
    why: String,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if !self.retired {
            self.shared.serving.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared.worker_gone(self.clean, &self.why);
    }
}

/// Thread body: load, warm up, serve until every sender is gone and the queues are empty.
pub(super) fn run(cfg: BatcherConfig, loader: Loader, rx: Receiver<Job>, shared: Arc<Shared>) {
    let mut guard = DeathGuard {
        shared: shared.clone(),
        clean: false,
        retired: false,
        why: "the engine worker thread has died".into(),
    };
    let t = Instant::now();
    let engine = match catch_unwind(AssertUnwindSafe(loader)) {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            // The whole error (with file paths) goes to the log; clients see it without them.
            tracing::error!(error = %e, "model loading failed");
            guard.why = format!("model loading failed: {}", e.public());
            return;
        }
        Err(_) => {
            guard.why = "model loading panicked".into();
            return;
        }
    };
    if let Err(e) = engine.warm_up() {
        tracing::error!(error = %e, "warm-up failed");
        guard.why = format!("warm-up failed: {}", e.public());
        return;
    }
    let info = engine_info(&engine);
    for m in &info.models {
        metrics::gauge!(tm::MODEL_INFO, "model" => *m, "device" => info.device, "kernels" => info.kernels)
            .set(1.0);
    }
    metrics::gauge!(tm::INFERENCE_THREADS).set(info.threads as f64);
    metrics::gauge!(tm::DEVICE_FALLBACK).set(if info.device_note.is_some() { 1.0 } else { 0.0 });
    tracing::info!(
        ms = ms(t),
        device = info.device,
        kernels = info.kernels,
        threads = info.threads,
        "models loaded and warmed up"
    );
    let _ = shared.info.set(info);
    let _ = shared.engine.set(engine.clone());
    shared.set_status(Status::Ready);
    let retired = Worker {
        cfg,
        engine,
        rx,
        shared: shared.clone(),
        queues: std::array::from_fn(|_| VecDeque::new()),
        open: true,
        retired: false,
    }
    .serve();
    guard.retired = retired;
    guard.clean = true;
}

/// Names of the loaded networks and the device label.
fn engine_info(engine: &Engine) -> EngineInfo {
    let mut models = vec!["retinaface"];
    models.extend(
        PadNetwork::ALL
            .into_iter()
            .filter(|n| !n.is_optional() || engine.config().load_celeba)
            .map(PadNetwork::manifest_name),
    );
    if engine.config().load_descriptor {
        models.push("face-descriptor");
    }
    if engine.config().load_landmarks {
        models.push("landmark68");
    }
    let device = match engine.device() {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    };
    let kernels = if engine.device().is_cpu() {
        crate::nn::cpu::Isa::detect().name()
    } else {
        "none"
    };
    EngineInfo {
        models,
        device,
        kernels,
        threads: engine.threads(),
        device_note: engine.device_note().map(str::to_string),
    }
}

/// The worker's state: nobody else touches the queues.
struct Worker {
    /// Batching settings.
    cfg: BatcherConfig,
    /// The networks.
    engine: Arc<Engine>,
    /// Submitted jobs.
    rx: Receiver<Job>,
    /// Status and statistics.
    shared: Arc<Shared>,
    /// Queues by [`Stage`] index.
    queues: [VecDeque<Job>; STAGES],
    /// False once every sender is gone, or once the worker retires.
    open: bool,
    /// Whether it retired after its device failed (and no longer counts as serving).
    retired: bool,
}

impl Worker {
    /// Serves until the channel closes (or the worker retires) and its queues are empty;
    /// returns whether it retired.
    fn serve(mut self) -> bool {
        loop {
            self.drain();
            let later = Stage::ALL[1..]
                .iter()
                .rev()
                .copied()
                .find(|s| !self.queues[s.index()].is_empty());
            let stage = if let Some(s) = later {
                s
            } else if !self.queues[0].is_empty() {
                self.wait_for_batch();
                Stage::Detect
            } else if self.open {
                match self.rx.recv() {
                    Ok(job) => {
                        self.push(Stage::Detect, job);
                        continue;
                    }
                    Err(_) => return self.retired,
                }
            } else {
                return self.retired;
            };
            let batch = self.take(stage);
            self.gauges();
            if batch.is_empty() {
                continue;
            }
            self.record(stage, &batch);
            // A panic outside the network calls (which answer with an error themselves) drops
            // this batch's jobs, whose clients then get 503; the worker keeps serving.
            let run = catch_unwind(AssertUnwindSafe(|| match stage {
                Stage::Detect => self.detect(batch),
                Stage::Liveness => self.liveness(batch),
                Stage::Describe => self.describe(batch),
                Stage::Landmarks => self.landmarks(batch),
            }));
            if run.is_err() {
                tracing::error!(
                    stage = stage.name(),
                    "batch post-processing panicked; its images were dropped"
                );
            }
            self.gauges();
        }
    }

    /// Moves every submitted job into the detect queue.
    fn drain(&mut self) {
        while self.open {
            match self.rx.try_recv() {
                Ok(job) => self.push(Stage::Detect, job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    /// Waits (Triton-style) for the detect queue to fill up to `max_batch`, but only while
    /// other admitted images are still decoding: with none, no partner can arrive in time and
    /// waiting would only add latency (a lone client).
    fn wait_for_batch(&mut self) {
        let Some(oldest) = self.queues[0].front().map(|j| j.enqueued) else {
            return;
        };
        if !self.open {
            return; // nothing more will come (a closed channel, or a retiring worker)
        }
        let wanted = self.cfg.max_batch.saturating_sub(self.queues[0].len());
        let decoding = self.cfg.adaptive_delay.then_some(&self.shared.decoding);
        let mut arrived = Vec::new();
        let open = wait_for_partners(
            &self.rx,
            oldest + delay(&self.cfg),
            decoding,
            wanted,
            |job| arrived.push(job),
        );
        for job in arrived {
            self.push(Stage::Detect, job);
        }
        self.open &= open;
    }

    fn push(&mut self, stage: Stage, mut job: Job) {
        job.enqueued = Instant::now();
        self.queues[stage.index()].push_back(job);
        metrics::gauge!(tm::QUEUE_DEPTH, "stage" => stage.name())
            .set(self.queues[stage.index()].len() as f64);
    }

    /// Takes up to `max_batch` live jobs from a stage queue, oldest first.
    fn take(&mut self, stage: Stage) -> Vec<Job> {
        let q = &mut self.queues[stage.index()];
        let before = q.len();
        q.retain(|j| !j.reply.is_closed());
        let cancelled = before - q.len();
        if cancelled > 0 {
            self.shared.cancelled[stage.index()].fetch_add(cancelled as u64, Ordering::Relaxed);
            metrics::counter!(tm::CANCELLED, "stage" => stage.name()).increment(cancelled as u64);
        }
        let n = q.len().min(self.cfg.max_batch);
        let mut batch: Vec<Job> = q.drain(..n).collect();
        let now = Instant::now();
        for j in &mut batch {
            let waited = now.duration_since(j.enqueued).as_secs_f64();
            j.queue_ms += waited * 1e3;
            metrics::histogram!(tm::QUEUE_WAIT_SECONDS, "stage" => stage.name()).record(waited);
        }
        batch
    }

    fn gauges(&self) {
        for s in Stage::ALL {
            metrics::gauge!(tm::QUEUE_DEPTH, "stage" => s.name())
                .set(self.queues[s.index()].len() as f64);
        }
    }

    /// Batch size and composition statistics.
    fn record(&self, stage: Stage, batch: &[Job]) {
        let i = stage.index();
        self.shared.batches[i].fetch_add(1, Ordering::Relaxed);
        self.shared.largest[i].fetch_max(batch.len(), Ordering::Relaxed);
        metrics::histogram!(tm::BATCH_SIZE, "stage" => stage.name()).record(batch.len() as f64);
        if batch.iter().any(|j| j.origin != batch[0].origin) {
            self.shared.mixed[i].fetch_add(1, Ordering::Relaxed);
            metrics::counter!(tm::BATCH_MIXED, "stage" => stage.name()).increment(1);
        }
    }

    /// Runs a stage's network call, turning a panic into an error; returns it with its time.
    fn timed<T>(&self, stage: Stage, f: impl FnOnce(&Engine) -> Result<T>) -> (Result<T>, f64) {
        let t = Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| f(&self.engine))).unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "internal error in the {} stage",
                stage.name()
            )))
        });
        let dt = ms(t);
        metrics::histogram!(tm::INFERENCE_SECONDS, "stage" => stage.name()).record(dt / 1e3);
        (out, dt)
    }

    /// Runs a stage on a batch; each job gets its own result (a panic outside the engine's
    /// per-image tasks, or a result count that does not match, fails the batch's jobs with
    /// [`Error::Internal`]).
    fn run_stage<T>(
        &mut self,
        stage: Stage,
        batch: &[Job],
        f: impl Fn(&Engine, &[Job]) -> Vec<Result<T>>,
    ) -> (Vec<Result<T>>, f64) {
        let once = |w: &Self| {
            let (out, dt) = w.timed(stage, |e| Ok(f(e, batch)));
            let out = match out {
                Ok(v) if v.len() == batch.len() => v,
                Ok(_) => internal_all(batch.len(), stage, "result count"),
                Err(_) => internal_all(batch.len(), stage, "panic"),
            };
            (out, dt)
        };
        let (out, dt) = once(self);
        let on_device = !self.engine.device().is_cpu();
        if on_device && device_failed(&out, || self.probe()) && self.fall_back_to_cpu(stage, &out) {
            return once(self);
        }
        (out, dt)
    }

    /// The warm-up run on the worker's engine, as a probe of its device.
    fn probe(&self) -> Result<()> {
        catch_unwind(AssertUnwindSafe(|| self.engine.warm_up()))
            .unwrap_or_else(|_| Err(Error::Internal("the probe panicked".into())))
    }

    /// Takes the failed device out: loads the networks on the CPU and swaps them in. Returns
    /// whether the worker now serves on the CPU. While another worker still takes new work
    /// (several GPUs), this one only finishes on the CPU what it holds and then stops, so that
    /// the CPU never takes a share of a GPU fleet's load.
    fn fall_back_to_cpu<T>(&mut self, stage: Stage, out: &[Result<T>]) -> bool {
        let retire = self
            .shared
            .serving
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok();
        if retire {
            self.open = false;
            self.retired = true;
        }
        let cause = out.iter().find_map(|r| r.as_ref().err()).map_or_else(
            || "unknown".to_string(),
            |e| crate::nn::device::first_line(&e.public()),
        );
        let from = crate::nn::device::label(self.engine.device());
        let note = format!(
            "{from}: failed at run time in the {} stage ({cause}); serving on CPU",
            stage.name()
        );
        tracing::error!(reason = %note, "device taken out");
        let t = Instant::now();
        let cpu = Engine::load(self.engine.config().clone(), Device::Cpu)
            .and_then(|e| e.warm_up().map(|()| e));
        match cpu {
            Ok(e) => {
                self.engine = Arc::new(e);
                if retire {
                    tracing::warn!(reason = %note, "the other workers take the new work");
                } else if let Ok(mut f) = self.shared.fallback.lock() {
                    *f = Some(note);
                }
                metrics::gauge!(tm::DEVICE_FALLBACK).set(1.0);
                metrics::counter!(tm::DEVICE_FAILURES).increment(1);
                tracing::warn!(ms = ms(t), "networks reloaded on the CPU; serving on CPU");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the networks did not load on the CPU either");
                false
            }
        }
    }

    fn detect(&mut self, batch: Vec<Job>) {
        let (out, dt) = self.run_stage(Stage::Detect, &batch, |e, b| {
            let refs: Vec<_> = b.iter().map(|j| &j.prepared).collect();
            e.detect(&refs)
        });
        for (mut job, faces) in batch.into_iter().zip(out) {
            job.inference_ms += dt;
            let faces = match faces {
                Ok(f) => f,
                Err(e) => {
                    fail(job, e);
                    continue;
                }
            };
            let tq = Instant::now();
            let mut a = self.engine.assess(&mut job.prepared, faces, &job.opts);
            a.timings.quality_ms = ms(tq);
            a.timings.detect_ms = dt;
            let eligible = a.network_face(&job.opts).is_some();
            job.analysis = Some(a);
            if eligible {
                self.forward(Stage::Detect, job);
            } else {
                finish(job);
            }
        }
    }

    fn liveness(&mut self, batch: Vec<Job>) {
        let (out, dt) = self.run_stage(Stage::Liveness, &batch, |e, b| {
            with_faces(b, |faces| e.liveness(faces))
        });
        for (mut job, outputs) in batch.into_iter().zip(out) {
            job.inference_ms += dt;
            match outputs.and_then(|o| self.engine.judge(&o, job.opts.calibration)) {
                Ok(l) => {
                    if let Some(a) = job.analysis.as_mut() {
                        a.liveness = Some(l);
                        a.timings.liveness_ms = dt;
                    }
                }
                Err(e) => {
                    fail(job, e);
                    continue;
                }
            }
            self.forward(Stage::Liveness, job);
        }
    }

    fn describe(&mut self, batch: Vec<Job>) {
        let (out, dt) = self.run_stage(Stage::Describe, &batch, |e, b| {
            with_faces(b, |faces| e.describe(faces))
        });
        for (mut job, t) in batch.into_iter().zip(out) {
            job.inference_ms += dt;
            match t {
                Ok(t) => {
                    if let Some(a) = job.analysis.as_mut() {
                        a.template = Some(t);
                        a.timings.template_ms = dt;
                    }
                    self.forward(Stage::Describe, job);
                }
                Err(e) => fail(job, e),
            }
        }
    }

    fn landmarks(&mut self, batch: Vec<Job>) {
        let (out, dt) = self.run_stage(Stage::Landmarks, &batch, |e, b| {
            with_faces(b, |faces| e.shapes(faces))
        });
        for (mut job, shape) in batch.into_iter().zip(out) {
            job.inference_ms += dt;
            match shape {
                Ok(shape) => {
                    if let Some(a) = job.analysis.as_mut() {
                        // Back from the pixels it was found in to full resolution.
                        let shape = match a.network_face(&job.opts) {
                            Some(face) => job.prepared.view(face).shape_to_full(shape),
                            None => shape,
                        };
                        a.shape = Some(shape);
                        a.timings.landmarks_ms = dt;
                    }
                    self.forward(Stage::Landmarks, job);
                }
                Err(e) => fail(job, e),
            }
        }
    }

    /// Queues a job for the next stage its options ask for after `done`, or answers it.
    fn forward(&mut self, done: Stage, job: Job) {
        match next_stage(done, &job.opts) {
            Some(s) => self.push(s, job),
            None => finish(job),
        }
    }
}

/// The first stage after `done` that `opts` asks for.
fn next_stage(done: Stage, opts: &AnalyzeOptions) -> Option<Stage> {
    Stage::ALL[done.index() + 1..]
        .iter()
        .copied()
        .find(|s| match s {
            Stage::Detect => false,
            Stage::Liveness => opts.liveness,
            Stage::Describe => opts.template,
            Stage::Landmarks => opts.landmarks,
        })
}

/// Receives up to `wanted` messages into `push`, until `deadline`, and (when `decoding` is
/// given) only while that count of images still being decoded is above zero. Returns false if
/// every sender is gone.
///
/// It waits in slices of [`RECHECK`] and looks at the count again after each: no message
/// arrives when the count falls to zero (a partner's decoding failed, or the job just received
/// had not yet released its count), and the batch must not then sit until the deadline.
fn wait_for_partners<T>(
    rx: &Receiver<T>,
    deadline: Instant,
    decoding: Option<&AtomicUsize>,
    mut wanted: usize,
    mut push: impl FnMut(T),
) -> bool {
    while wanted > 0 && decoding.is_none_or(|d| d.load(Ordering::SeqCst) > 0) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout((deadline - now).min(RECHECK)) {
            Ok(m) => {
                push(m);
                wanted -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    true
}

/// Whether a stage's results show a failed device: every image of a non-empty batch failed
/// and the probe (a run of every network on a dummy image) fails too. One bad image, or a
/// batch of them, fails alone and leaves the device in service.
pub(super) fn device_failed<T>(out: &[Result<T>], probe: impl FnOnce() -> Result<()>) -> bool {
    !out.is_empty() && out.iter().all(Result::is_err) && probe().is_err()
}

/// Runs `f` on the (image, face) pairs the networks judge; jobs without a selected face (a
/// broken invariant) get an error of their own and are left out of the call.
fn with_faces<T>(
    batch: &[Job],
    f: impl FnOnce(&[(&RgbImage, &Face)]) -> Vec<Result<T>>,
) -> Vec<Result<T>> {
    // Each face in the pixels its networks read.
    let faces: Vec<Option<(&RgbImage, Face)>> = batch
        .iter()
        .map(|j| {
            let face = j.analysis.as_ref()?.network_face(&j.opts)?;
            let view = j.prepared.view(face);
            Some((view.image, view.face(face)))
        })
        .collect();
    let present: Vec<(&RgbImage, &Face)> = faces.iter().flatten().map(|(i, f)| (*i, f)).collect();
    let mut results = f(&present).into_iter();
    faces
        .iter()
        .map(|f| match f {
            Some(_) => results
                .next()
                .unwrap_or_else(|| Err(Error::Internal("stage result count".into()))),
            None => Err(Error::Internal("job without a selected face".into())),
        })
        .collect()
}

/// Answers a finished job (its admission slot is released first).
fn finish(job: Job) {
    let Job {
        reply,
        _permit,
        admitted,
        queue_ms,
        inference_ms,
        analysis,
        ..
    } = job;
    drop(_permit);
    let out = match analysis {
        Some(mut analysis) => {
            analysis.timings.total_ms = ms(admitted);
            Ok(Processed {
                analysis,
                queue_ms,
                inference_ms,
            })
        }
        None => Err(Error::Unavailable(
            "internal: job finished without analysis".into(),
        )),
    };
    let _ = reply.send(out);
}

/// Answers a job that failed in a stage with its own error.
fn fail(job: Job, e: Error) {
    if !e.is_client_error() {
        tracing::error!(error = %e, "image failed in a stage");
    }
    let Job { reply, _permit, .. } = job;
    drop(_permit);
    let _ = reply.send(Err(e));
}

/// `n` internal errors naming the stage and what broke.
fn internal_all<T>(n: usize, stage: Stage, what: &str) -> Vec<Result<T>> {
    (0..n)
        .map(|_| Err(Error::Internal(format!("{} stage: {what}", stage.name()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use crossbeam_channel::unbounded as channel;
    use std::thread;

    use super::*;

    /// Far enough away that reaching it means the wait ignored its other conditions: the
    /// tests then fail (they check they returned before it) after this long, not hang.
    const FAR: Duration = Duration::from_secs(20);

    #[test]
    fn stops_waiting_when_decoding_ends_without_a_message() {
        // The race of a job received before its count is released: nothing more will come.
        let (tx, rx) = channel::<u32>();
        let decoding = AtomicUsize::new(1);
        let got = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(20));
                decoding.store(0, Ordering::SeqCst);
            });
            let mut got = Vec::new();
            let deadline = Instant::now() + FAR;
            let open = wait_for_partners(&rx, deadline, Some(&decoding), 4, |m| got.push(m));
            assert!(open);
            assert!(
                Instant::now() < deadline,
                "waited until the deadline although decoding had ended"
            );
            got
        });
        assert!(got.is_empty());
        drop(tx);
    }

    #[test]
    fn only_a_whole_failed_batch_with_a_failed_probe_takes_the_device_out() {
        let bad = || Err::<u8, _>(Error::Internal("cuda".into()));
        let probe_fails = || Err(Error::Internal("still broken".into()));
        assert!(device_failed(&[bad(), bad()], probe_fails));
        // The probe passes: the images were bad, not the device.
        assert!(!device_failed(&[bad(), bad()], || Ok(())));
        // One image went through: the device works.
        assert!(!device_failed(&[bad(), Ok(1)], || panic!(
            "no probe needed"
        )));
        assert!(!device_failed::<u8>(&[], || panic!("no probe needed")));
    }

    #[test]
    fn jobs_visit_only_the_stages_they_ask_for() {
        let opts = |liveness, template, landmarks| AnalyzeOptions {
            liveness,
            template,
            landmarks,
            ..AnalyzeOptions::default()
        };
        let o = opts(true, false, true);
        assert_eq!(next_stage(Stage::Detect, &o), Some(Stage::Liveness));
        assert_eq!(next_stage(Stage::Liveness, &o), Some(Stage::Landmarks));
        assert_eq!(next_stage(Stage::Landmarks, &o), None);
        let o = opts(false, true, false);
        assert_eq!(next_stage(Stage::Detect, &o), Some(Stage::Describe));
        assert_eq!(next_stage(Stage::Describe, &o), None);
        assert_eq!(next_stage(Stage::Detect, &opts(false, false, false)), None);
    }

    #[test]
    fn takes_partners_until_the_batch_is_full() {
        let (tx, rx) = channel();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let decoding = AtomicUsize::new(3);
        let mut got = Vec::new();
        let deadline = Instant::now() + FAR;
        assert!(wait_for_partners(&rx, deadline, Some(&decoding), 3, |m| {
            got.push(m)
        }));
        assert_eq!(got, [0, 1, 2]);
        assert!(
            Instant::now() < deadline,
            "waited until the deadline with a full batch"
        );
    }

    #[test]
    fn without_adaptive_waiting_the_deadline_ends_the_wait() {
        let (tx, rx) = channel::<u32>();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        assert!(wait_for_partners(&rx, deadline, None, 4, |_| {}));
        assert!(Instant::now() >= deadline);
        drop(tx);
        assert!(!wait_for_partners(
            &rx,
            Instant::now() + FAR,
            None,
            4,
            |_| {}
        ));
    }
}
