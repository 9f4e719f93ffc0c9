//! The GPU context: a device and queue that rollcall either opens itself or
//! adopts from an inference engine.

use crate::gpu::cache::{PipelineCache, PipelineKey};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// The optional features rollcall asks for when the adapter has them:
/// subgroups (the sampler's reductions on GPUs; every kernel works without
/// them); GPU timestamps for the benchmarks (feature `internals`; wall time
/// is used without them).
#[cfg(feature = "internals")]
const OPTIONAL_FEATURES: wgpu::Features =
    wgpu::Features::SUBGROUP.union(wgpu::Features::TIMESTAMP_QUERY);
#[cfg(not(feature = "internals"))]
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP;

/// A device, its queue and what they can do. Cheap to clone (wgpu handles).
///
/// ```no_run
/// let ctx = rollcall::GpuContext::new()?;
/// println!("{}", ctx.describe());
/// # Ok::<(), rollcall::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GpuContext {
    /// The device kernels run on.
    pub device: wgpu::Device,
    /// The queue work is submitted to.
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// What the adapter offers (for reports; the device may use less).
    adapter_features: wgpu::Features,
    cache: PipelineCache,
    syncs: Arc<SyncCounters>,
    /// The first device error nobody caught (an owned device's uncaptured
    /// errors, or its loss), returned by the next call that waits.
    fault: Arc<Mutex<Option<Error>>>,
}

/// Submits and blocking readbacks made through a context (and its clones).
#[derive(Debug, Default)]
struct SyncCounters {
    submits: std::sync::atomic::AtomicU64,
    readbacks: std::sync::atomic::AtomicU64,
}

/// How many times rollcall submitted work and waited for a readback on a
/// context: what "one submit and one small readback per round" is checked
/// against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Queue submissions.
    pub submits: u64,
    /// Blocking waits: mapped results and [`GpuContext::wait`] (each a CPU–GPU
    /// round trip).
    pub readbacks: u64,
}

impl std::ops::Sub for SyncCounts {
    type Output = SyncCounts;
    fn sub(self, earlier: SyncCounts) -> SyncCounts {
        SyncCounts {
            submits: self.submits.saturating_sub(earlier.submits),
            readbacks: self.readbacks.saturating_sub(earlier.readbacks),
        }
    }
}

impl GpuContext {
    /// Opens a device on the adapter chosen by `WGPU_BACKEND` (e.g. `vulkan`,
    /// `metal`, `dx12`) and `WGPU_ADAPTER_NAME` (a case-insensitive substring),
    /// or the default adapter, with the adapter's own limits and the optional
    /// features rollcall uses (subgroups for the sampler; timestamps for the
    /// benchmarks, feature `internals`).
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// Async form of [`GpuContext::new`].
    pub async fn new_async() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(wanted) if !wanted.is_empty() => {
                let wanted_lower = wanted.to_lowercase();
                let adapters = instance.enumerate_adapters(backends).await;
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lower))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "WGPU_ADAPTER_NAME={wanted:?} matches none of {names:?}"
                        ))
                    })?
            }
            _ => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::from_env()
                        .unwrap_or(wgpu::PowerPreference::HighPerformance),
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter(format!("backends {backends:?}: {e}")))?,
        };
        let features = adapter.features() & OPTIONAL_FEATURES;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("rollcall"),
                required_features: features,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let ctx = Self::with_parts(device, queue, adapter.get_info(), adapter.features());
        // An owned device's stray errors and its loss come back as `Err`
        // from the next call that waits, instead of wgpu's default panic.
        // (An adopted device keeps the engine's handler and callback: wgpu
        // holds one of each.)
        let fault = ctx.fault.clone();
        ctx.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                record(&fault, device_error(e))
            }));
        let lost = ctx.fault.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            record(&lost, Error::DeviceLost(format!("{reason:?}: {message}")));
        });
        Ok(ctx)
    }

    fn with_parts(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        adapter_features: wgpu::Features,
    ) -> Self {
        let fault: Arc<Mutex<Option<Error>>> = Arc::default();
        Self {
            device,
            queue,
            info,
            adapter_features,
            cache: PipelineCache::default(),
            syncs: Arc::default(),
            fault,
        }
    }

    /// Adopts a device and queue that an engine already owns; rollcall uses
    /// only the features and limits that device was created with, and leaves
    /// its uncaptured-error handler to the engine (rollcall's own host calls
    /// catch their errors in error scopes).
    ///
    /// ```no_run
    /// # fn engine() -> (wgpu::Device, wgpu::Queue) { unimplemented!() }
    /// let (device, queue) = engine();
    /// let ctx = rollcall::GpuContext::from_device(device, queue);
    /// ```
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let features = device.features();
        Self::with_parts(device, queue, info, features)
    }

    /// Submits `commands` to the queue (counted in [`GpuContext::sync_counts`]).
    #[allow(clippy::disallowed_methods)] // the one counted submit
    pub fn submit(&self, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.syncs
            .submits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.submit([commands])
    }

    /// Blocks until the device has finished all submitted work (counted as a
    /// readback: it is a CPU–GPU round trip).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let encoder = ctx.device.create_command_encoder(&Default::default());
    /// ctx.submit(encoder.finish());
    /// ctx.wait()?;
    /// assert_eq!(ctx.sync_counts().readbacks, 1);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.syncs
            .readbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        // A recorded fault (a lost device) explains a failed poll best.
        self.take_fault()?;
        polled
            .map(|_| ())
            .map_err(|e| Error::Readback(e.to_string()))
    }

    /// The device error recorded since the last check, if any.
    fn take_fault(&self) -> Result<()> {
        let mut fault = self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fault.take() {
            Some(Error::DeviceLost(m)) => {
                // A lost device stays lost: keep reporting it.
                *fault = Some(Error::DeviceLost(m.clone()));
                Err(Error::DeviceLost(m))
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f` inside error scopes for out-of-memory, validation and internal
    /// errors, and returns the first error they caught as a typed error. Every
    /// host-path call records and submits its work inside one, so a device
    /// error comes back as `Err`, never as a panic.
    pub(crate) fn scoped<T>(&self, what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let scopes = [
            self.device.push_error_scope(wgpu::ErrorFilter::Internal),
            self.device.push_error_scope(wgpu::ErrorFilter::Validation),
            self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
        ];
        let result = f();
        // Pop in reverse order of pushing; keep the first error seen.
        let mut caught = None;
        for scope in scopes.into_iter().rev() {
            if let Some(e) = pollster::block_on(scope.pop()) {
                caught.get_or_insert(e);
            }
        }
        match caught {
            Some(wgpu::Error::OutOfMemory { .. }) => Err(Error::OutOfMemory { what }),
            Some(e) => Err(device_error(e)),
            None => result,
        }
    }

    /// The largest buffer of `usage` that can be bound whole: the device's
    /// buffer limit and, for storage or uniform usage, that binding limit.
    pub(crate) fn whole_binding_limit(&self, usage: wgpu::BufferUsages) -> u64 {
        let limits = self.device.limits();
        let mut limit = limits.max_buffer_size;
        if usage.contains(wgpu::BufferUsages::STORAGE) {
            limit = limit.min(limits.max_storage_buffer_binding_size);
        }
        if usage.contains(wgpu::BufferUsages::UNIFORM) {
            limit = limit.min(limits.max_uniform_buffer_binding_size);
        }
        limit
    }

    /// Like [`GpuContext::create_buffer`], for a buffer that is bound whole:
    /// also refused past the binding limit of its usage.
    pub(crate) fn create_bound_buffer(
        &self,
        label: &'static str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let limit = self.whole_binding_limit(usage);
        if size > limit {
            return Err(Error::TooLarge {
                what: label,
                bytes: size,
                limit,
            });
        }
        self.create_buffer(label, size, usage)
    }

    /// A buffer of `size` bytes, refused with a typed error when it is larger
    /// than the device allows or the device is out of memory.
    pub(crate) fn create_buffer(
        &self,
        label: &'static str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let max = self.device.limits().max_buffer_size;
        if size > max {
            return Err(Error::TooLarge {
                what: label,
                bytes: size,
                limit: max,
            });
        }
        self.scoped(label, || {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            }))
        })
    }

    /// Submits and blocking readbacks rollcall has made on this context so
    /// far (all clones share the counts).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let before = ctx.sync_counts();
    /// // ... record work into an encoder with an engine path: no change ...
    /// assert_eq!((ctx.sync_counts() - before).submits, 0);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn sync_counts(&self) -> SyncCounts {
        use std::sync::atomic::Ordering::Relaxed;
        SyncCounts {
            submits: self.syncs.submits.load(Relaxed),
            readbacks: self.syncs.readbacks.load(Relaxed),
        }
    }

    /// The adapter's name, backend and type.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.device.features()
    }

    /// Limits the device was opened with.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Features of the adapter behind the device (what a future kernel could
    /// ask for; the device itself is opened with only what rollcall uses).
    pub fn adapter_features(&self) -> wgpu::Features {
        self.adapter_features
    }

    /// One line naming the adapter, its backend and type, and the optional
    /// features the adapter has.
    pub fn describe(&self) -> String {
        let f = self.adapter_features;
        let has = |flag: wgpu::Features| if f.contains(flag) { "yes" } else { "no" };
        let subgroups = if f.contains(wgpu::Features::SUBGROUP) {
            format!(
                "yes ({}-{} lanes)",
                self.info.subgroup_min_size, self.info.subgroup_max_size
            )
        } else {
            "no".to_string()
        };
        let l = self.limits();
        format!(
            "{} ({:?}, {:?}, driver {} {}); subgroups: {}, f16: {}, timestamps: {}, immediates: {}; \
             max storage binding {} MiB, workgroup memory {} KiB",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info,
            subgroups,
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::IMMEDIATES),
            l.max_storage_buffer_binding_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
        )
    }

    /// Maps `buffer` (usage `MAP_READ`) and copies out its first `size` bytes,
    /// waiting for the GPU: the one synchronisation of a host-path call.
    /// `size` 0 only waits; a buffer without `MAP_READ`, a `size` that is not
    /// a multiple of 4 or past the buffer's end is refused before mapping,
    /// and the map runs inside error scopes.
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            self.wait()?;
            return Ok(Vec::new());
        }
        if !buffer.usage().contains(wgpu::BufferUsages::MAP_READ) {
            return Err(Error::InvalidArgument(format!(
                "read_buffer needs a MAP_READ buffer, got usage {:?}",
                buffer.usage()
            )));
        }
        if !size.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT) {
            return Err(Error::InvalidArgument(format!(
                "read_buffer size {size} is not a multiple of 4 bytes"
            )));
        }
        if size > buffer.size() {
            return Err(Error::BufferTooSmall {
                what: "readback",
                needed: size,
                got: buffer.size(),
            });
        }
        self.scoped("readback", || self.map_and_copy(buffer, size))
    }

    fn map_and_copy(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        self.syncs
            .readbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slice = buffer.slice(..size);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        if let Err(e) = polled {
            self.take_fault()?;
            return Err(Error::Readback(e.to_string()));
        }
        let mapped = receiver
            .recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()));
        if let Err(fault) = self.take_fault() {
            // Leave the buffer unmapped: its owner copies into it again.
            if mapped.is_ok() {
                buffer.unmap();
            }
            return Err(fault);
        }
        mapped?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        buffer.unmap();
        Ok(data)
    }

    /// How many kernels have pipelines built on this context (each is built
    /// once, however many kernel objects use it).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let _a = rollcall::Sampler::new(&ctx)?;
    /// let _b = rollcall::Sampler::new(&ctx)?;
    /// assert_eq!(ctx.built_kernels(), 1);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn built_kernels(&self) -> usize {
        self.cache.len()
    }

    /// The pipelines built under `key` on this context, building them on
    /// first use: kernels compile once per context. A build the device
    /// rejects (a limit or feature the kernel needs) is an `Err`, and nothing
    /// is cached.
    pub(crate) fn pipelines<K: PipelineKey>(
        &self,
        key: &K,
        build: impl FnOnce() -> Result<K::Built>,
    ) -> Result<Arc<K::Built>> {
        self.cache
            .get_or_build(key, || self.scoped("building pipelines", build))
    }
}

fn record(fault: &Mutex<Option<Error>>, error: Error) {
    let mut fault = fault
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    fault.get_or_insert(error);
}

/// A wgpu error as rollcall's error.
fn device_error(e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory { what: "device" },
        other => Error::Device(other.to_string()),
    }
}

#[cfg(test)]
impl GpuContext {
    /// The unit tests' context: a test fails, never skips, when no adapter is
    /// found, unless the user opted out with `ROLLCALL_ALLOW_NO_GPU=1`.
    pub(crate) fn for_tests() -> Option<Self> {
        match Self::new() {
            Ok(ctx) => Some(ctx),
            Err(e) if std::env::var("ROLLCALL_ALLOW_NO_GPU").as_deref() == Ok("1") => {
                eprintln!("skipping GPU test: {e}");
                None
            }
            Err(e) => panic!("GPU test needs an adapter: {e}"),
        }
    }
}
