//! The one grow-and-reuse buffer: reallocated only when a use needs more room
//! than any before it (to the next power of two, within the device's limits),
//! so steady-state calls allocate nothing.

use crate::gpu::GpuContext;
use crate::{Error, Result};

/// A buffer of fixed usage that grows on demand, never past its limit.
pub(crate) struct GrowBuffer {
    label: &'static str,
    usage: wgpu::BufferUsages,
    /// The most bytes it may hold: the device's buffer limit and, unless it
    /// is bound in ranges, the binding limit of its usage.
    limit: u64,
    buffer: wgpu::Buffer,
}

impl GrowBuffer {
    /// A small buffer (256 bytes) of `usage`, bound whole: it grows no
    /// further than the binding limit of its usage.
    pub(crate) fn new(
        ctx: &GpuContext,
        label: &'static str,
        usage: wgpu::BufferUsages,
    ) -> Result<Self> {
        Self::with_size(ctx, label, usage, 256)
    }

    /// A buffer of at least `size` bytes of `usage`, bound whole.
    pub(crate) fn with_size(
        ctx: &GpuContext,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
    ) -> Result<Self> {
        Self::build(ctx, label, usage, size, ctx.whole_binding_limit(usage))
    }

    /// A buffer of at least `size` bytes of `usage` that is bound in ranges
    /// (each within the binding limit): it may grow to the device's buffer
    /// limit.
    pub(crate) fn bound_in_ranges(
        ctx: &GpuContext,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
    ) -> Result<Self> {
        Self::build(ctx, label, usage, size, ctx.limits().max_buffer_size)
    }

    fn build(
        ctx: &GpuContext,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
        limit: u64,
    ) -> Result<Self> {
        // Whole words: a storage binding's size is a multiple of 4.
        let limit = limit / 4 * 4;
        let size = size.max(4);
        check(label, size, limit)?;
        Ok(Self {
            label,
            usage,
            limit,
            buffer: ctx.create_buffer(label, size, usage)?,
        })
    }

    /// Makes room for `size` bytes (at least 4), growing to the next power of
    /// two (capped at the limit); returns whether the buffer was replaced
    /// (bind groups holding the old one must be rebuilt). More than the limit
    /// is [`Error::TooLarge`], before the device is asked.
    pub(crate) fn reserve(&mut self, ctx: &GpuContext, size: u64) -> Result<bool> {
        let needed = size.max(4);
        if needed <= self.buffer.size() {
            return Ok(false);
        }
        check(self.label, needed, self.limit)?;
        let grown = needed
            .checked_next_power_of_two()
            .unwrap_or(needed)
            .min(self.limit);
        self.replace(ctx, grown)
    }

    /// Like [`GrowBuffer::reserve`], growing to `size.max(2 × current)`
    /// (capped at the limit) instead of the next power of two.
    pub(crate) fn reserve_doubling(&mut self, ctx: &GpuContext, size: u64) -> Result<bool> {
        if size <= self.buffer.size() {
            return Ok(false);
        }
        check(self.label, size, self.limit)?;
        let grown = size
            .max(self.buffer.size().saturating_mul(2))
            .min(self.limit);
        self.replace(ctx, grown)
    }

    fn replace(&mut self, ctx: &GpuContext, size: u64) -> Result<bool> {
        self.buffer = ctx.create_buffer(self.label, size, self.usage)?;
        Ok(true)
    }

    /// Writes `bytes` at offset 0 (through `Queue::write_buffer`: visible to
    /// the next submit), growing first if needed. The tail of a length that
    /// is not a multiple of 4 goes in a zero-padded word.
    pub(crate) fn write(&mut self, ctx: &GpuContext, bytes: &[u8]) -> Result<&wgpu::Buffer> {
        self.reserve(ctx, (bytes.len() as u64).div_ceil(4) * 4)?;
        write_padded(&ctx.queue, &self.buffer, bytes);
        Ok(&self.buffer)
    }

    /// The current buffer.
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// `bytes` of `what` within `limit`, or [`Error::TooLarge`].
fn check(what: &'static str, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        Err(Error::TooLarge { what, bytes, limit })
    } else {
        Ok(())
    }
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
