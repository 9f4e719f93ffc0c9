//! The harness behind the `rollcall` command: benchmarks against a read-once
//! yardstick, the adapter check, seeded synthetic logits, replay of recorded
//! votes, and the best-of-N estimator study. Not a stable API: the library is `rollcall`.

pub mod bench;
pub mod check;
pub mod replay;
pub mod study;
pub mod synthetic;
