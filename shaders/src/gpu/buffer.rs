//! Buffer helpers: storage buffers checked against the binding limit, uniforms, and a
//! persistent staging buffer for reading results back.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::{GpuContext, GpuError};

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// Staged upload bytes after which uploads wait for their staging copies to be freed.
const STAGING_FLUSH_BYTES: usize = 4 << 20;

impl GpuContext {
    fn check_binding(&self, label: &str, size: u64) -> Result<(), GpuError> {
        let limit = self.max_storage_binding();
        if size > limit {
            return Err(GpuError::BindingTooLarge {
                label: label.to_string(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// A zeroed storage buffer of `size` bytes (at least 4).
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer, GpuError> {
        let size = size.max(4).next_multiple_of(4);
        self.check_binding(label, size)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (padded to a multiple of 4 bytes, at least 4).
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let padded_len = data.len().max(4).next_multiple_of(4);
        self.check_binding(label, padded_len as u64)?;
        let contents: std::borrow::Cow<'_, [u8]> = if padded_len == data.len() {
            data.into()
        } else {
            let mut v = data.to_vec();
            v.resize(padded_len, 0);
            v.into()
        };
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: STORAGE,
            });
        // The contents go through a staging buffer, copied at the next submission and
        // freed once it completes: without a flush, loading a model holds a staging copy
        // of every weight until the first forward (on lavapipe, where both live in
        // process memory, the peak RSS of loading Gemma 3 270M was 2.4x its weights).
        // So once this many bytes are staged, submit and wait.
        use std::sync::atomic::Ordering;
        let staged = self.staged.fetch_add(padded_len, Ordering::Relaxed) + padded_len;
        if staged >= STAGING_FLUSH_BYTES {
            self.staged.store(0, Ordering::Relaxed);
            self.queue.submit([]);
            self.wait()?;
        }
        Ok(buffer)
    }

    /// A uniform buffer of `size` bytes, written with `queue.write_buffer`.
    pub fn uniform(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Small buffers bound where a kernel's specialization ignores a binding: one for
    /// read-only bindings and four distinct ones for read-write bindings.
    pub fn unused_buffers(&self) -> &[wgpu::Buffer; 5] {
        self.unused.get_or_init(|| {
            let make = |label| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage: STORAGE,
                    mapped_at_creation: false,
                })
            };
            [
                make("unused read"),
                make("unused write 0"),
                make("unused write 1"),
                make("unused write 2"),
                make("unused write 3"),
            ]
        })
    }

    /// Copies `bytes` bytes of `src` back to the host (a one-off: for hot paths keep a
    /// [`Readback`]).
    pub fn read_back(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
        let rb = Readback::new(self, "read_back", bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        rb.copy_from(&mut enc, src, bytes);
        self.queue.submit([enc.finish()]);
        rb.read(self, bytes)
    }

    /// Reads `len` f32 values back from `src`.
    pub fn read_f32(&self, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read_back(src, (len * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// A persistent `MAP_READ` staging buffer.
#[derive(Debug)]
pub struct Readback {
    label: String,
    buffer: wgpu::Buffer,
}

impl Readback {
    pub fn new(ctx: &GpuContext, label: &str, size: u64) -> Self {
        Self {
            label: label.to_string(),
            buffer: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    pub fn size(&self) -> u64 {
        self.buffer.size()
    }

    /// Records a copy of the first `bytes` bytes of `src` into this staging buffer.
    pub fn copy_from(&self, enc: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, bytes: u64) {
        enc.copy_buffer_to_buffer(src, 0, &self.buffer, 0, bytes.next_multiple_of(4));
    }

    /// Waits for the submitted copy and returns its first `bytes` bytes.
    pub fn read(&self, ctx: &GpuContext, bytes: u64) -> Result<Vec<u8>, GpuError> {
        let err = |reason: String| GpuError::Readback {
            label: self.label.clone(),
            reason,
        };
        let len = bytes.next_multiple_of(4);
        let (tx, rx) = mpsc::channel();
        self.buffer
            .map_async(wgpu::MapMode::Read, 0..len, move |r| {
                // The receiver outlives the poll below; a failed send only means it is gone.
                let _ = tx.send(r);
            });
        ctx.wait()?;
        rx.recv()
            .map_err(|e| err(e.to_string()))?
            .map_err(|e| err(e.to_string()))?;
        let out = {
            let view = self
                .buffer
                .get_mapped_range(0..len)
                .map_err(|e| err(e.to_string()))?;
            view[..bytes as usize].to_vec()
        };
        self.buffer.unmap();
        Ok(out)
    }

    /// Reads back `len` f32 values.
    pub fn read_f32(&self, ctx: &GpuContext, len: usize) -> Result<Vec<f32>, GpuError> {
        Ok(bytemuck::pod_collect_to_vec(
            &self.read(ctx, (len * 4) as u64)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer past the storage binding limit (128 MiB on lavapipe) is refused with an
    /// error naming it, before anything is allocated; one within it round-trips.
    #[test]
    fn binding_limit_is_checked_and_data_round_trips() {
        let ctx = crate::gpu::shared().expect("a Vulkan adapter");
        let limit = ctx.max_storage_binding();
        match ctx.storage("too big", limit + 4) {
            Err(GpuError::BindingTooLarge { label, size, .. }) => {
                assert_eq!(label, "too big");
                assert_eq!(size, limit + 4);
            }
            other => panic!("expected BindingTooLarge, got {other:?}"),
        }
        let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let b = ctx
            .storage_init("round trip", bytemuck::cast_slice(&data))
            .expect("small buffer");
        assert_eq!(ctx.read_f32(&b, data.len()).expect("readback"), data);
        assert!(
            ctx.info().contains("llvmpipe") || !ctx.is_cpu(),
            "{}",
            ctx.info()
        );
    }
}
