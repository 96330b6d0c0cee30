//! The wgpu runtime: device selection, buffers, pipeline cache.
