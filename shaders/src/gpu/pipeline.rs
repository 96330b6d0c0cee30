//! Compute pipelines cached by (kernel, specialization constants), with one bind group
//! layout per kernel so that every specialization of a kernel accepts the same bind groups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{GpuContext, GpuError};

/// One binding of a kernel's group 0, in binding order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// What a kernel is: its name (the cache key), WGSL source and bindings.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub bindings: &'static [Binding],
}

/// A compiled specialization of a kernel.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: Arc<wgpu::BindGroupLayout>,
}

type ConstKey = Vec<(&'static str, u64)>;

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    layouts: Mutex<HashMap<&'static str, (Arc<wgpu::BindGroupLayout>, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<(&'static str, ConstKey), Arc<Kernel>>>,
}

impl GpuContext {
    /// The pipeline of `spec` specialised with `constants` (WGSL `override`s), compiled
    /// once per distinct set of constants.
    pub fn kernel(
        &self,
        spec: &KernelSpec,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Kernel>, GpuError> {
        let key: ConstKey = constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        let cache = &self.pipelines;
        if let Some(k) = lock(&cache.pipelines).get(&(spec.name, key.clone())) {
            return Ok(k.clone());
        }
        let module = self.module(spec)?;
        let layout = self.layout(spec);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(spec.name),
                layout: Some(&layout.1),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Kernel {
                kernel: spec.name.to_string(),
                reason: err.to_string(),
            });
        }
        let kernel = Arc::new(Kernel {
            name: spec.name,
            pipeline,
            layout: layout.0,
        });
        lock(&cache.pipelines).insert((spec.name, key), kernel.clone());
        Ok(kernel)
    }

    fn module(&self, spec: &KernelSpec) -> Result<Arc<wgpu::ShaderModule>, GpuError> {
        if let Some(m) = lock(&self.pipelines.modules).get(spec.name) {
            return Ok(m.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Without naga's bounds clamps and loop counters the drivers can unroll the
        // kernels' fixed-trip loops and keep their small arrays in registers: on llvmpipe
        // the checked form spills them to memory and runs several times slower.
        let checks = wgpu::ShaderRuntimeChecks {
            bounds_checks: false,
            force_loop_bounding: false,
            int_div_checks: false,
            ..wgpu::ShaderRuntimeChecks::checked()
        };
        // SAFETY: the kernels are this crate's own WGSL; every index they form is bounded
        // by sizes the host checks before binding (`ops::*` dispatch code, the backends'
        // shape checks), every loop has a finite trip count set by override constants or
        // the `Step` uniform, and no kernel divides by a runtime value that can be zero.
        let module = unsafe {
            self.device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(spec.name),
                    source: wgpu::ShaderSource::Wgsl(spec.source.into()),
                },
                checks,
            )
        };
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Kernel {
                kernel: spec.name.to_string(),
                reason: err.to_string(),
            });
        }
        let module = Arc::new(module);
        lock(&self.pipelines.modules).insert(spec.name, module.clone());
        Ok(module)
    }

    fn layout(&self, spec: &KernelSpec) -> (Arc<wgpu::BindGroupLayout>, wgpu::PipelineLayout) {
        let mut layouts = lock(&self.pipelines.layouts);
        let (bgl, pl) = layouts.entry(spec.name).or_insert_with(|| {
            let entries: Vec<_> = spec
                .bindings
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match b {
                            Binding::Uniform => wgpu::BufferBindingType::Uniform,
                            Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Binding::ReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let bgl = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(spec.name),
                    entries: &entries,
                });
            let pl = self
                .device
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(spec.name),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
            (Arc::new(bgl), pl)
        });
        (bgl.clone(), pl.clone())
    }

    /// A bind group for `kernel` binding `buffers` in order.
    pub fn bind_group(&self, kernel: &Kernel, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &kernel.layout,
            entries: &entries,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records one dispatch of `kernel` with `bind_group` into `pass`.
pub fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    kernel: &Kernel,
    bind_group: &wgpu::BindGroup,
    groups: (u32, u32, u32),
) {
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, groups.2);
}
