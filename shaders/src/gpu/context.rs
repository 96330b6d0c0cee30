//! The device: a Vulkan adapter, its features and limits, and the queue.

use std::sync::Arc;

use super::GpuError;
use super::pipeline::PipelineCache;

/// One wgpu device shared by every backend of a process.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    pub(crate) pipelines: PipelineCache,
    pub(crate) unused: std::sync::OnceLock<[wgpu::Buffer; 5]>,
    /// Bytes uploaded through staging buffers not yet freed (see `storage_init`).
    pub(crate) staged: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("info", &self.info())
            .finish()
    }
}

impl GpuContext {
    /// Opens the first Vulkan adapter (lavapipe on a machine without a GPU), asking for
    /// `SHADER_F16`, `SUBGROUP` and `SHADER_INT64` only where the adapter has them, and the adapter's own
    /// limits (so large storage bindings are allowed up to what it supports).
    pub fn new() -> Result<Arc<Self>, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_INT64;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cocoon"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Self {
            device,
            queue,
            info,
            limits,
            features,
            pipelines: PipelineCache::default(),
            unused: std::sync::OnceLock::new(),
            staged: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// "adapter name (device type, driver driver_info)".
    pub fn info(&self) -> String {
        format!(
            "{} ({:?}, {} {})",
            self.info.name, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    /// What the adapter reports about itself.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// Whether the adapter runs on the CPU (lavapipe/llvmpipe). Which kernels that
    /// selects is `ops::tuning`'s call.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// The adapter's (smallest, largest) subgroup size, when the device has subgroups.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        self.has_subgroups()
            .then_some((self.info.subgroup_min_size, self.info.subgroup_max_size))
    }

    /// Whether kernels may use 64-bit integers (`u64`). Whether they do is
    /// `ops::tuning`'s call (CPU adapters only).
    pub fn has_int64(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_INT64)
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The largest buffer one storage binding may cover.
    pub fn max_storage_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Readback {
                label: "device poll".into(),
                reason: e.to_string(),
            })
    }
}
