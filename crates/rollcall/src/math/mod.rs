//! Math shared by kernels and their CPU twins. Each file mirrors the WGSL file
//! of the same name in `shaders/shared/`.

pub mod fold;
pub mod keys;
pub mod philox;
pub mod segment;
pub mod special;
