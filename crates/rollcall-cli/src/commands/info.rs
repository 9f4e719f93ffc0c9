//! `rollcall info`: the adapter, its features and key limits.

use super::{slow_adapter_note, CliResult};
use rollcall::GpuContext;
use std::process::ExitCode;

/// Prints the adapter line (and, on wgpu's CPU fallback behind OpenGL, the
/// note on lavapipe), the device features and the limits that matter here.
pub fn run() -> CliResult<ExitCode> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.describe());
    if let Some(note) = slow_adapter_note(ctx.adapter_info()) {
        println!("{note}");
    }
    let names: Vec<&str> = ctx.features().iter_names().map(|(name, _)| name).collect();
    println!(
        "device features: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    let l = ctx.limits();
    let rows: [(&str, String); 9] = [
        (
            "max buffer size",
            format!("{} MiB", l.max_buffer_size >> 20),
        ),
        (
            "max storage binding",
            format!("{} MiB", l.max_storage_buffer_binding_size >> 20),
        ),
        (
            "storage offset alignment",
            format!("{} B", l.min_storage_buffer_offset_alignment),
        ),
        (
            "uniform offset alignment",
            format!("{} B", l.min_uniform_buffer_offset_alignment),
        ),
        (
            "max workgroups per dimension",
            l.max_compute_workgroups_per_dimension.to_string(),
        ),
        (
            "max invocations per workgroup",
            l.max_compute_invocations_per_workgroup.to_string(),
        ),
        (
            "workgroup memory",
            format!("{} KiB", l.max_compute_workgroup_storage_size >> 10),
        ),
        (
            "storage buffers per stage",
            l.max_storage_buffers_per_shader_stage.to_string(),
        ),
        (
            "timestamp period",
            if ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
                format!("{} ns", ctx.queue.get_timestamp_period())
            } else {
                "no timestamps".to_string()
            },
        ),
    ];
    for (name, value) in rows {
        println!("  {name:<30} {value}");
    }
    Ok(ExitCode::SUCCESS)
}
