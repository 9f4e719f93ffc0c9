// Philox4x32-10 words for given (counter, key) pairs: exposes the generator the
// kernels share, so the GPU and the Rust twin can be checked word for word.

#include "shared/philox.wgsl"

struct PhiloxInput {
    counter: vec4<u32>,
    key: vec2<u32>,
    _pad: vec2<u32>,
}

@group(0) @binding(0) var<storage, read> inputs: array<PhiloxInput>;
@group(0) @binding(1) var<storage, read_write> outputs: array<vec4<u32>>;

@compute @workgroup_size(64)
fn philox_words(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= arrayLength(&inputs) {
        return;
    }
    outputs[i] = philox4x32_10(inputs[i].counter, inputs[i].key);
}
