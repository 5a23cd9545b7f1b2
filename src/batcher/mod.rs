//! Dynamic micro-batching in front of the engine. Every endpoint of every dialect submits its
//! images here.
//!
//! - Admission: at most `queue_bound` images are inside the batcher at once (decoding, queued
//!   or running); one more fails at once with [`Error::Overloaded`] (HTTP 429).
//! - Decoding and downscaling ([`Engine::prepare`]) run on the batcher's own decoding threads
//!   (`prepare_threads` of them), never on the async reactor.
//! - One worker thread per device (one per GPU with `device = "auto"`, else one) owns its
//!   stage queues (detect, liveness, describe, landmarks) and its engine's networks; every
//!   worker pulls submitted images from the same multi-consumer channel (crossbeam), and
//!   callers get their answer on a oneshot channel. See [`worker`] for the scheduling rules and
//!   what happens when a device fails while serving.
//!
//! - Work comes as an [`Input`]: encoded bytes (decoded here, within the engine's decode
//!   bounds) or an already decoded RGB frame (a video frame, a decrypted frame; checked against
//!   the same pixel bounds).
//!
//! Results are those of [`Engine::analyze`]: the stages are the same engine calls, each image
//! gets its own result in every stage (one failing image never fails its partners), and each
//! liveness verdict is made under the request's own calibration by the engine's decider.

mod worker;

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::{Analysis, AnalyzeOptions, Calibrations, Decider, Engine, Prepared};
use crate::telemetry as tm;
use crate::{Error, Result};

/// Batching settings (TOML section `[server]`, see docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatcherConfig {
    /// Most images per network batch (1 disables batching).
    pub max_batch: usize,
    /// Longest a detector batch shorter than `max_batch` waits for more images, ms.
    pub max_queue_delay_ms: u64,
    /// Wait only while other admitted images are still decoding (none: run at once, since no
    /// partner can arrive in time). Off: always wait up to `max_queue_delay_ms`.
    pub adaptive_delay: bool,
    /// Most images inside the batcher at once (decoding, queued or running).
    pub queue_bound: usize,
    /// Most images decoded at the same time.
    pub prepare_threads: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 4,
            max_queue_delay_ms: 3,
            adaptive_delay: true,
            queue_bound: 256,
            prepare_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// One image handed to the batcher.
#[derive(Debug, Clone)]
pub enum Input {
    /// An encoded JPEG or PNG, decoded on the decode pool within `decode.max_bytes` and
    /// `decode.max_pixels`.
    Encoded(Bytes),
    /// An upright RGB frame already decoded elsewhere, within `decode.max_pixels` and
    /// `decode.min_side`.
    Frame(RgbImage),
}

impl From<Bytes> for Input {
    fn from(b: Bytes) -> Self {
        Input::Encoded(b)
    }
}

impl From<Vec<u8>> for Input {
    fn from(b: Vec<u8>) -> Self {
        Input::Encoded(Bytes::from(b))
    }
}

impl From<RgbImage> for Input {
    fn from(f: RgbImage) -> Self {
        Input::Frame(f)
    }
}

/// A network stage with its own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Face detector.
    Detect,
    /// The two liveness networks.
    Liveness,
    /// Face descriptor (templates).
    Describe,
    /// 68-point landmarks (pose, active liveness).
    Landmarks,
}

/// Number of stages (and of stage queues).
pub const STAGES: usize = 4;

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; STAGES] = [
        Stage::Detect,
        Stage::Liveness,
        Stage::Describe,
        Stage::Landmarks,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Detect => "detect",
            Stage::Liveness => "liveness",
            Stage::Describe => "describe",
            Stage::Landmarks => "landmarks",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Life cycle of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Models are loading or warming up.
    Loading,
    /// Serving.
    Ready,
    /// Loading failed or the worker thread died; see [`Batcher::failure`].
    Failed,
    /// Shut down on request.
    Stopped,
}

/// One analysed image and where its time went.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The engine's answer.
    pub analysis: Analysis,
    /// Time spent waiting in stage queues, ms.
    pub queue_ms: f64,
    /// Time of the network batches this image was part of, ms.
    pub inference_ms: f64,
}

/// Counters about batch composition, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches run, per stage (detect, liveness, describe, landmarks).
    pub batches: [u64; STAGES],
    /// Largest batch seen, per stage.
    pub largest: [usize; STAGES],
    /// Batches holding images from more than one route, per stage.
    pub mixed_routes: [u64; STAGES],
    /// Images dropped before running because their client had gone, per stage.
    pub cancelled: [u64; STAGES],
}

/// State shared between the handle and the worker thread (status and statistics only; the
/// queues belong to the worker).
struct Shared {
    /// A [`Status`] as u8.
    status: AtomicU8,
    /// Why the worker failed.
    failure: Mutex<Option<String>>,
    /// The engine, once loaded (used by the decode pool).
    engine: OnceLock<Arc<Engine>>,
    /// Model names and device, once loaded.
    info: OnceLock<EngineInfo>,
    /// Batches per stage.
    batches: [AtomicU64; STAGES],
    /// Largest batch per stage.
    largest: [AtomicUsize; STAGES],
    /// Mixed-route batches per stage.
    mixed: [AtomicU64; STAGES],
    /// Cancelled images per stage.
    cancelled: [AtomicU64; STAGES],
    /// Admitted images still waiting for or going through decoding: the detect stage waits
    /// for more work (`max_queue_delay_ms`) only while some may still arrive.
    decoding: AtomicUsize,
    /// Set when the worker's device failed at run time and it went on on the CPU: why.
    fallback: Mutex<Option<String>>,
    /// Worker threads still running.
    alive: AtomicUsize,
    /// Worker threads still taking new work (running, not retired after a device failure).
    serving: AtomicUsize,
}

impl Shared {
    fn set_status(&self, s: Status) {
        self.status.store(s as u8, Ordering::SeqCst);
    }

    fn fail(&self, why: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(why);
        }
        self.set_status(Status::Failed);
    }

    /// A worker thread ends: `clean` when its channel closed and its queues are empty, else
    /// with `why` (a load failure, a panic). The batcher fails only when its last worker goes
    /// without a clean stop; while others run, they take the work.
    fn worker_gone(&self, clean: bool, why: &str) {
        let left = self.alive.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        if !clean {
            tracing::error!(
                reason = why,
                workers_left = left,
                "an engine worker has stopped"
            );
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert(why.to_string());
            }
        }
        if left == 0 {
            if clean {
                self.set_status(Status::Stopped);
            } else {
                self.fail(why.to_string());
            }
        }
    }
}

/// What is loaded, for `/health` and the info metric.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// Manifest names of the loaded networks.
    pub models: Vec<&'static str>,
    /// Device the networks run on.
    pub device: &'static str,
    /// Instruction set of the CPU kernels (`avx512`, `avx2`, `portable`; `none` off CPU).
    pub kernels: &'static str,
    /// Threads the networks run on.
    pub threads: usize,
    /// Why the networks run on CPU instead of the configured device, when they do.
    pub device_note: Option<String>,
}

/// A queued image: everything the worker needs, plus the reply channel.
struct Job {
    /// Decoded image.
    prepared: Prepared,
    /// What the caller asked for.
    opts: AnalyzeOptions,
    /// Route that submitted it (batch composition metrics).
    origin: &'static str,
    /// Where the answer goes; closed when the client has gone.
    reply: oneshot::Sender<Result<Processed>>,
    /// Admission slot, released when the job is answered or dropped.
    _permit: OwnedSemaphorePermit,
    /// When the job was admitted (for `total_ms`).
    admitted: Instant,
    /// When the job entered its current stage queue.
    enqueued: Instant,
    /// Accumulated queue wait, ms.
    queue_ms: f64,
    /// Accumulated batch time, ms.
    inference_ms: f64,
    /// Partial analysis after detection.
    analysis: Option<Analysis>,
}

/// Engine loader run on the worker thread.
pub type Loader = Box<dyn FnOnce() -> Result<Arc<Engine>> + Send>;

/// Handle to the batcher; cheap to clone, shared by every route.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// Settings in force.
    cfg: BatcherConfig,
    /// Commands to the worker; `None` after shutdown.
    tx: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    /// Status and statistics.
    shared: Arc<Shared>,
    /// Admission slots (`queue_bound`).
    admission: Arc<Semaphore>,
    /// The decoding threads (`prepare_threads`).
    decoders: Decoders,
    /// The worker threads, joined by [`Batcher::shutdown`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the worker thread, which runs `loader`, warms every network up with a dummy
    /// batch and then serves. Until then [`Batcher::status`] is [`Status::Loading`] and
    /// submissions fail with [`Error::Unavailable`].
    pub fn start(cfg: BatcherConfig, loader: Loader) -> Result<Batcher> {
        Self::start_workers(cfg, vec![loader])
    }

    /// [`Batcher::start`] with one worker per loader (one per GPU): each loads its own
    /// engine, and all of them pull images from the same channel. The batcher is ready when
    /// the first is, and fails only when every worker has failed.
    pub fn start_workers(cfg: BatcherConfig, loaders: Vec<Loader>) -> Result<Batcher> {
        if loaders.is_empty() {
            return Err(Error::InvalidArgument(
                "a batcher needs at least one worker".into(),
            ));
        }
        let cfg = BatcherConfig {
            max_batch: cfg.max_batch.max(1),
            queue_bound: cfg.queue_bound.max(1),
            prepare_threads: cfg.prepare_threads.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            status: AtomicU8::new(Status::Loading as u8),
            failure: Mutex::new(None),
            engine: OnceLock::new(),
            info: OnceLock::new(),
            batches: Default::default(),
            largest: Default::default(),
            mixed: Default::default(),
            cancelled: Default::default(),
            decoding: AtomicUsize::new(0),
            fallback: Mutex::new(None),
            alive: AtomicUsize::new(loaders.len()),
            serving: AtomicUsize::new(loaders.len()),
        });
        let decoders = Decoders::start(cfg.prepare_threads)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::with_capacity(loaders.len());
        for (i, loader) in loaders.into_iter().enumerate() {
            let (rx, worker_shared) = (rx.clone(), shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("facegate-engine-{i}"))
                    .spawn(move || worker::run(cfg, loader, rx, worker_shared))?,
            );
        }
        Ok(Batcher {
            inner: Arc::new(Inner {
                cfg,
                tx: Mutex::new(Some(tx)),
                shared,
                admission: Arc::new(Semaphore::new(cfg.queue_bound)),
                decoders,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Settings in force.
    pub fn config(&self) -> &BatcherConfig {
        &self.inner.cfg
    }

    /// Where the worker stands.
    pub fn status(&self) -> Status {
        match self.inner.shared.status.load(Ordering::SeqCst) {
            0 => Status::Loading,
            1 => Status::Ready,
            2 => Status::Failed,
            _ => Status::Stopped,
        }
    }

    /// Why the worker failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner
            .shared
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
    }

    /// Loaded models and device, once ready.
    pub fn info(&self) -> Option<&EngineInfo> {
        self.inner.shared.info.get()
    }

    /// The device the networks run on now: the loaded engine's, or `cpu` once the worker's
    /// device has failed at run time (`unknown` while loading).
    pub fn device(&self) -> &'static str {
        if self.runtime_fallback().is_some() {
            return "cpu";
        }
        self.info().map_or("unknown", |i| i.device)
    }

    /// Why the networks run on the CPU instead of the configured device: the device failed at
    /// run time, or it did not open or load at start (`None` when they run where configured).
    pub fn device_note(&self) -> Option<String> {
        self.runtime_fallback()
            .or_else(|| self.info().and_then(|i| i.device_note.clone()))
    }

    /// Why the worker left its device for the CPU at run time, if it did.
    fn runtime_fallback(&self) -> Option<String> {
        self.inner
            .shared
            .fallback
            .lock()
            .ok()
            .and_then(|f| f.clone())
    }

    /// The engine, once loaded (for dialects that need its configuration).
    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.inner.shared.engine.get()
    }

    /// The engine's decider (the default calibrations while the engine is not loaded, when
    /// every submission fails anyway).
    pub fn decider(&self) -> Decider {
        self.engine()
            .map(|e| *e.decider())
            .unwrap_or_else(|| Decider::new(Calibrations::default()))
    }

    /// Images inside the batcher now (decoding, queued or running).
    pub fn depth(&self) -> usize {
        self.inner.cfg.queue_bound - self.inner.admission.available_permits()
    }

    /// Batch composition counters.
    pub fn stats(&self) -> BatchStats {
        let s = &self.inner.shared;
        BatchStats {
            batches: std::array::from_fn(|i| s.batches[i].load(Ordering::Relaxed)),
            largest: std::array::from_fn(|i| s.largest[i].load(Ordering::Relaxed)),
            mixed_routes: std::array::from_fn(|i| s.mixed[i].load(Ordering::Relaxed)),
            cancelled: std::array::from_fn(|i| s.cancelled[i].load(Ordering::Relaxed)),
        }
    }

    /// Analyses one image (origin `"batcher"`).
    pub async fn analyze(&self, input: impl Into<Input>, opts: AnalyzeOptions) -> Result<Analysis> {
        self.submit(input, opts, "batcher")
            .await
            .map(|p| p.analysis)
    }

    /// Analyses one image submitted by route `origin`, with its queue and inference times.
    pub async fn submit(
        &self,
        input: impl Into<Input>,
        opts: AnalyzeOptions,
        origin: &'static str,
    ) -> Result<Processed> {
        let admitted = self.admit()?;
        self.run(admitted, input.into(), opts, origin).await
    }

    /// Analyses several images of one request; each gets its own result, in order. Admission
    /// is decided for all of them before any work starts.
    pub async fn submit_many(
        &self,
        images: Vec<Input>,
        opts: AnalyzeOptions,
        origin: &'static str,
    ) -> Vec<Result<Processed>> {
        let runs = images.into_iter().map(|input| {
            let admitted = self.admit();
            async move {
                match admitted {
                    Ok(a) => self.run(a, input, opts, origin).await,
                    Err(e) => Err(e),
                }
            }
        });
        // Admission happens eagerly above (the iterator is collected before any await).
        let runs: Vec<_> = runs.collect();
        futures_util::future::join_all(runs).await
    }

    /// Stops accepting work, lets the workers finish what they hold and joins them.
    pub async fn shutdown(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        let threads = self
            .inner
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Takes an admission slot or fails at once.
    fn admit(&self) -> Result<Admitted> {
        match self.status() {
            Status::Ready => {}
            Status::Loading => return Err(Error::Unavailable("models are loading".into())),
            Status::Failed => {
                return Err(Error::Unavailable(
                    self.failure()
                        .unwrap_or_else(|| "the engine worker has stopped".into()),
                ))
            }
            Status::Stopped => return Err(Error::Unavailable("shutting down".into())),
        }
        let engine = self
            .inner
            .shared
            .engine
            .get()
            .cloned()
            .ok_or_else(|| Error::Unavailable("models are loading".into()))?;
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                depth: self.inner.cfg.queue_bound,
            })?;
        metrics::gauge!(tm::ADMITTED).set(self.depth() as f64);
        Ok(Admitted {
            engine,
            permit,
            at: Instant::now(),
        })
    }

    /// Decodes on the decoding threads, queues for the worker and awaits the answer.
    async fn run(
        &self,
        a: Admitted,
        input: Input,
        opts: AnalyzeOptions,
        origin: &'static str,
    ) -> Result<Processed> {
        if opts.template && !a.engine.config().load_descriptor {
            return Err(Error::InvalidArgument(
                "templates need the face descriptor, which this server does not load".into(),
            ));
        }
        if opts.landmarks && !a.engine.config().load_landmarks {
            return Err(Error::InvalidArgument(
                "landmarks need the landmark network, which this server does not load".into(),
            ));
        }
        // The decoding thread takes the image from here to the worker's channel itself: no
        // turn of the async runtime between decoding and queueing, so a runtime busy with
        // refusals (a storm) cannot starve the networks of decoded images.
        let tx = self.inner.tx.lock().ok().and_then(|t| t.clone());
        let tx = tx.ok_or_else(|| Error::Unavailable("shutting down".into()))?;
        let (reply, rx) = oneshot::channel();
        // A client that leaves while its image waits for or goes through decoding is counted
        // as cancelled at the detect stage (the worker counts those who leave later).
        let mut departed = Departure::new(self.inner.shared.clone());
        let engine = a.engine.clone();
        self.inner.decoders.spawn(move || {
            if reply.is_closed() {
                return; // gone before its turn: not decoded, counted by `departed`
            }
            let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match input {
                Input::Encoded(bytes) => engine.prepare_shared(bytes),
                Input::Frame(image) => engine.prepare_frame(image),
            }))
            .unwrap_or_else(|_| Err(Error::Internal("the decoder panicked".into())));
            departed.armed = false;
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            metrics::histogram!(tm::PREPARE_SECONDS).record(prepared.prepare_ms / 1e3);
            let job = Job {
                prepared,
                opts,
                origin,
                reply,
                _permit: a.permit,
                admitted: a.at,
                enqueued: Instant::now(),
                queue_ms: 0.0,
                inference_ms: 0.0,
                analysis: None,
            };
            // No longer decoding, before the worker can see the job: a worker woken by it
            // must not wait for a partner that is this very image.
            drop(departed);
            if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
                let _ = job.reply.send(Err(Error::Unavailable(
                    "the engine worker has stopped".into(),
                )));
            }
        });
        let out = rx
            .await
            .map_err(|_| Error::Unavailable("the engine worker dropped the request".into()));
        metrics::gauge!(tm::ADMITTED).set(self.depth() as f64);
        out?
    }
}

/// A decoding task: runs on one of the [`Decoders`].
type DecodeTask = Box<dyn FnOnce() + Send>;

/// The batcher's decoding threads: threads of their own, not the async runtime's blocking
/// pool, so that they keep the inference threads' priority when the network threads run
/// below it (`server.network_nice`). Idle threads block on the queue (no spinning, which on a
/// small machine would take the CPU from the engine). The queue holds at most `queue_bound`
/// tasks, as every task is an admitted image. The threads end when the batcher is dropped.
struct Decoders {
    /// The queue the threads take tasks from, in order.
    tx: crossbeam_channel::Sender<DecodeTask>,
}

impl Decoders {
    fn start(threads: usize) -> Result<Decoders> {
        let (tx, rx) = crossbeam_channel::unbounded::<DecodeTask>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("facegate-decode-{i}"))
                .spawn(move || {
                    while let Ok(task) = rx.recv() {
                        task();
                    }
                })?;
        }
        Ok(Decoders { tx })
    }

    /// Queues `task` (dropped unrun once the threads are gone).
    fn spawn(&self, task: impl FnOnce() + Send + 'static) {
        let _ = self.tx.send(Box::new(task));
    }
}

/// Marks an image as decoding until dropped, and counts it as cancelled if its departed
/// client drops it before decoding finished.
struct Departure {
    /// Statistics to count in.
    shared: Arc<Shared>,
    /// Still counting cancellation (disarmed once decoding has finished either way).
    armed: bool,
}

impl Departure {
    fn new(shared: Arc<Shared>) -> Self {
        shared.decoding.fetch_add(1, Ordering::SeqCst);
        Self {
            shared,
            armed: true,
        }
    }
}

impl Drop for Departure {
    fn drop(&mut self) {
        self.shared.decoding.fetch_sub(1, Ordering::SeqCst);
        if self.armed {
            let stage = Stage::Detect;
            self.shared.cancelled[stage.index()].fetch_add(1, Ordering::Relaxed);
            metrics::counter!(tm::CANCELLED, "stage" => stage.name()).increment(1);
        }
    }
}

/// An admitted image: its slot and the engine that will decode it.
struct Admitted {
    /// The loaded engine.
    engine: Arc<Engine>,
    /// Admission slot.
    permit: OwnedSemaphorePermit,
    /// Admission time.
    at: Instant,
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `max_queue_delay_ms` as a duration.
fn delay(cfg: &BatcherConfig) -> Duration {
    Duration::from_millis(cfg.max_queue_delay_ms)
}
