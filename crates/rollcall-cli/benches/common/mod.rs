//! What every criterion bench here shares: settings small enough to run on a
//! CPU-only machine in minutes (10 samples, flat sampling so slow cases cost
//! 10 iterations, short warm-up and measurement).

use criterion::Criterion;
use std::time::Duration;

pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}
