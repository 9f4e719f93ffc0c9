// Adaptive majority voting: per-prompt vote tables.
//
// Each prompt keeps up to CAPACITY distinct answers in first-seen order
// (answer id, votes); answers past the capacity are counted in `overflow`
// (they count as votes, never as a consensus). One invocation per prompt
// segment of the round applies its new votes in order, so tables, ties and
// overflow are deterministic. `CAPACITY` is prepended by the host.

struct PromptVotes {
    total: u32,       // votes so far
    distinct: u32,    // table slots in use
    overflow: u32,    // votes for answers that found no slot
    run_answer: u32,  // answer of the newest run of equal consecutive votes
    run_length: u32,
    tokens_lo: u32,   // tokens spent, 64-bit
    tokens_hi: u32,
    _pad: u32,
}

struct Segment {
    prompt: u32,  // prompt index in the state arrays
    start: u32,   // first vote of the segment in `answers`
    count: u32,   // votes in the segment
    _pad: u32,
}

struct CountParams {
    segments: u32,
    has_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> count_params: CountParams;
@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read> answers: array<u32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> prompt_votes: array<PromptVotes>;
// CAPACITY (answer, votes) pairs per prompt.
@group(0) @binding(5) var<storage, read_write> tables: array<vec2<u32>>;

@compute @workgroup_size(64)
fn count_votes(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let s = id.x + id.y * groups.x * 64u;
    if s >= count_params.segments {
        return;
    }
    let seg = segments[s];
    var state = prompt_votes[seg.prompt];
    let base = seg.prompt * CAPACITY;
    for (var v = 0u; v < seg.count; v++) {
        let answer = answers[seg.start + v];
        var slot = CAPACITY;
        for (var k = 0u; k < state.distinct; k++) {
            if tables[base + k].x == answer {
                slot = k;
                break;
            }
        }
        if slot == CAPACITY && state.distinct < CAPACITY {
            slot = state.distinct;
            tables[base + slot] = vec2<u32>(answer, 0u);
            state.distinct += 1u;
        }
        if slot < CAPACITY {
            tables[base + slot].y += 1u;
        } else {
            state.overflow += 1u;
        }
        if state.total != 0u && answer == state.run_answer {
            state.run_length += 1u;
        } else {
            state.run_answer = answer;
            state.run_length = 1u;
        }
        state.total += 1u;
        if count_params.has_tokens != 0u {
            let t = tokens[seg.start + v];
            let lo = state.tokens_lo + t;
            state.tokens_hi += select(0u, 1u, lo < t);
            state.tokens_lo = lo;
        }
    }
    prompt_votes[seg.prompt] = state;
}
