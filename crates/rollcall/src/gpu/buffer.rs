//! The one grow-and-reuse buffer: reallocated only when a use needs more room
//! than any before it (to the next power of two), so steady-state calls
//! allocate nothing.

use crate::gpu::GpuContext;

/// A buffer of fixed usage that grows on demand.
pub(crate) struct GrowBuffer {
    label: &'static str,
    usage: wgpu::BufferUsages,
    buffer: wgpu::Buffer,
}

impl GrowBuffer {
    /// A small buffer (256 bytes) of `usage`.
    pub(crate) fn new(
        device: &wgpu::Device,
        label: &'static str,
        usage: wgpu::BufferUsages,
    ) -> Self {
        Self::with_size(device, label, usage, 256)
    }

    /// A buffer of at least `size` bytes of `usage`.
    pub(crate) fn with_size(
        device: &wgpu::Device,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
    ) -> Self {
        Self {
            label,
            usage,
            buffer: allocate(device, label, usage, size),
        }
    }

    /// Makes room for `size` bytes (at least 4); returns whether the buffer
    /// was replaced (bind groups holding the old one must be rebuilt).
    pub(crate) fn reserve(&mut self, device: &wgpu::Device, size: u64) -> bool {
        let needed = size.max(4);
        if needed <= self.buffer.size() {
            return false;
        }
        self.buffer = allocate(device, self.label, self.usage, needed.next_power_of_two());
        true
    }

    /// Like [`GrowBuffer::reserve`], capped at `limit` bytes (a binding
    /// limit): grows to `size.max(2 × current)` but never past `limit`.
    pub(crate) fn reserve_within(&mut self, device: &wgpu::Device, size: u64, limit: u64) -> bool {
        if size <= self.buffer.size() {
            return false;
        }
        let grown = size.max(self.buffer.size() * 2).min(limit).max(size);
        self.buffer = allocate(device, self.label, self.usage, grown);
        true
    }

    /// Writes `bytes` at offset 0 (through `Queue::write_buffer`: visible to
    /// the next submit), growing first if needed. The tail of a length that
    /// is not a multiple of 4 goes in a zero-padded word.
    pub(crate) fn write(&mut self, ctx: &GpuContext, bytes: &[u8]) -> &wgpu::Buffer {
        self.reserve(&ctx.device, (bytes.len() as u64).div_ceil(4) * 4);
        write_padded(&ctx.queue, &self.buffer, bytes);
        &self.buffer
    }

    /// The current buffer.
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

fn allocate(
    device: &wgpu::Device,
    label: &str,
    usage: wgpu::BufferUsages,
    size: u64,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: size.max(4),
        usage,
        mapped_at_creation: false,
    })
}

/// `write_buffer` needs a multiple of 4 bytes: the tail goes in a padded word.
pub(crate) fn write_padded(queue: &wgpu::Queue, buffer: &wgpu::Buffer, bytes: &[u8]) {
    let whole = bytes.len() / 4 * 4;
    if whole > 0 {
        queue.write_buffer(buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(buffer, whole as u64, &tail);
    }
}
