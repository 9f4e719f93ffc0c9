// Adaptive majority voting: per-prompt vote tables.
//
// Each prompt keeps up to CAPACITY distinct answers in first-seen order
// (answer id, votes); answers past the capacity are counted in `overflow`
// (they count as votes, never as a consensus). One invocation per prompt
// segment of the round applies its new votes in order, so tables, ties and
// overflow are deterministic (on GPUs, long segments take a workgroup each,
// with the same results). `CAPACITY` is prepended by the host.

#include "posterior.wgsl"
#include "shared/segment.wgsl"

// Invocations per workgroup of every kernel here (`voting::gpu::WORKGROUP`
// on the host, which dispatches one invocation per item).
const WG: u32 = 64u;
// The consensus of a prompt without votes (`rules::NO_CONSENSUS`).
const NO_CONSENSUS: u32 = 0xFFFFFFFFu;

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

@compute @workgroup_size(WG)
fn count_votes(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let s = id.x + id.y * groups.x * WG;
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

// ---- Counting with a workgroup per segment (GPUs) ---------------------------
// The same totals, tables, runs and overflow as `count_votes` (integers only,
// so the same bits): the segment's votes in chunks of WG, each lane one vote.
// A lane finds its answer in the table as it stood before the chunk; a new
// answer takes the slot after those of the new answers first seen earlier
// in the chunk (overflow once the table is full), as the serial loop would.

var<workgroup> chunk_answers: array<u32, WG>;
// 1 for a lane whose answer is new to the table and first seen in the chunk.
var<workgroup> chunk_firsts: array<u32, WG>;
var<workgroup> chunk_tokens: array<u32, WG>;
var<workgroup> slot_adds: array<atomic<u32>, CAPACITY>;
var<workgroup> chunk_overflow: atomic<u32>;
// One past the last lane whose answer differs from the chunk's last.
var<workgroup> run_break: atomic<u32>;
var<workgroup> segment_state: PromptVotes;
var<workgroup> segment_votes: u32;

@compute @workgroup_size(WG)
fn count_votes_wide(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) lane: u32) {
    let s = wg.x + wg.y * groups.x;
    if s >= count_params.segments {
        return;
    }
    let seg = segments[s];
    let base = seg.prompt * CAPACITY;
    if lane == 0u {
        segment_state = prompt_votes[seg.prompt];
        segment_votes = seg.count;
    }
    let count = workgroupUniformLoad(&segment_votes);
    for (var start = 0u; start < count; start += WG) {
        let m = min(WG, count - start);
        let state = segment_state;
        for (var k = lane; k < CAPACITY; k += WG) {
            atomicStore(&slot_adds[k], 0u);
        }
        if lane == 0u {
            atomicStore(&chunk_overflow, 0u);
            atomicStore(&run_break, 0u);
        }
        var answer = 0u;
        var slot = CAPACITY;
        if lane < m {
            answer = answers[seg.start + start + lane];
            for (var k = 0u; k < state.distinct; k++) {
                if tables[base + k].x == answer {
                    slot = k;
                    break;
                }
            }
            if count_params.has_tokens != 0u {
                chunk_tokens[lane] = tokens[seg.start + start + lane];
            }
        }
        chunk_answers[lane] = answer;
        workgroupBarrier();
        // A new answer's first lane in the chunk (itself when first).
        var first_lane = lane;
        if lane < m && slot == CAPACITY {
            for (var j = 0u; j < lane; j++) {
                if chunk_answers[j] == answer {
                    first_lane = j;
                    break;
                }
            }
        }
        chunk_firsts[lane] = select(0u, 1u, lane < m && slot == CAPACITY && first_lane == lane);
        workgroupBarrier();
        if lane < m {
            if slot == CAPACITY {
                var earlier = 0u;
                for (var j = 0u; j < first_lane; j++) {
                    earlier += chunk_firsts[j];
                }
                if state.distinct + earlier < CAPACITY {
                    slot = state.distinct + earlier;
                }
            }
            if slot < CAPACITY {
                atomicAdd(&slot_adds[slot], 1u);
            } else {
                atomicAdd(&chunk_overflow, 1u);
            }
            if answer != chunk_answers[m - 1u] {
                atomicMax(&run_break, lane + 1u);
            }
        }
        workgroupBarrier();
        // Each table entry the chunk touched is written by one lane: a new
        // one by its answer's first lane, an old one by the lane striding
        // over it.
        if lane < m && chunk_firsts[lane] == 1u && slot < CAPACITY {
            tables[base + slot] = vec2<u32>(answer, atomicLoad(&slot_adds[slot]));
        }
        for (var k = lane; k < state.distinct; k += WG) {
            let add = atomicLoad(&slot_adds[k]);
            if add != 0u {
                tables[base + k].y += add;
            }
        }
        if lane == 0u {
            var next = state;
            var firsts = 0u;
            for (var j = 0u; j < m; j++) {
                firsts += chunk_firsts[j];
            }
            next.distinct = min(state.distinct + firsts, CAPACITY);
            next.overflow += atomicLoad(&chunk_overflow);
            let last = chunk_answers[m - 1u];
            let broken = atomicLoad(&run_break);
            if broken == 0u && state.total != 0u && last == state.run_answer {
                next.run_length += m;
            } else {
                next.run_answer = last;
                next.run_length = m - broken;
            }
            next.total += m;
            if count_params.has_tokens != 0u {
                for (var j = 0u; j < m; j++) {
                    let t = chunk_tokens[j];
                    let lo = next.tokens_lo + t;
                    next.tokens_hi += select(0u, 1u, lo < t);
                    next.tokens_lo = lo;
                }
            }
            segment_state = next;
        }
        // The next chunk reads the table entries and the state just written.
        storageBarrier();
        workgroupBarrier();
    }
    if lane == 0u {
        prompt_votes[seg.prompt] = segment_state;
    }
}

// ---- Stopping rules -------------------------------------------------------
// The same rules and f32 operations as src/voting/rules.rs (the CPU twin).

struct Rule {
    kind: u32,       // RULE_* (prepended by the host from src/voting/rules.rs)
                     // 5 ESC window, 6 majority, 7 entropy, 8 ConSol mixture SPRT,
                     // 9 predictive
    min_votes: u32,
    max_votes: u32,
    count: u32,      // Dirichlet top, ESC window, OptPO hypotheses
    c: vec4<f32>,    // rule constants
}

struct DecideParams {
    rule: Rule,
    prompts: u32,    // entries of `decide_list`
    want_fewest: u32, // 1: write the fewest votes that could pass to `next_votes`
    _pad1: u32,
    _pad2: u32,
}

struct Decision {
    stopped: u32,
    consensus: u32,  // answer id, NO_CONSENSUS without votes
    confidence: f32,
    votes: u32,
}

@group(0) @binding(10) var<uniform> decide_params: DecideParams;
@group(0) @binding(11) var<storage, read> decide_list: array<u32>;
@group(0) @binding(12) var<storage, read> decide_votes: array<PromptVotes>;
@group(0) @binding(13) var<storage, read> decide_tables: array<vec2<u32>>;
@group(0) @binding(14) var<storage, read_write> decisions: array<Decision>;
@group(0) @binding(15) var<storage, read_write> keep_active: array<u32>;
@group(0) @binding(16) var<storage, read_write> next_votes: array<u32>;

const DIRICHLET_NODES: u32 = 192u;
const GAUSS4_INNER: f32 = 0.33998105;
const GAUSS4_OUTER: f32 = 0.8611363;
const GAUSS4_INNER_WEIGHT: f32 = 0.65214515;
const GAUSS4_OUTER_WEIGHT: f32 = 0.34785485;

// P(the leader is the mode) under Dirichlet(alphas[0..k]), leader at 0:
// x = lo + w t^m with m = ceil(2 sigma) / sigma (smooth in t at 0), 48
// panels of four Gauss-Legendre nodes in t.
fn dirichlet_mode_probability(alphas: ptr<function, array<f32, CAPACITY>>, k: u32) -> f32 {
    let a = (*alphas)[0];
    let lo = max(a - 12.0 * sqrt(a), 0.0);
    let w = a + 12.0 * sqrt(a) + 12.0 - lo;
    var sigma = 0.0;
    for (var j = 0u; j < k; j++) {
        sigma += (*alphas)[j];
    }
    let m = ceil(2.0 * sigma) / sigma;
    // The density's constant factor in logs; Stirling's lnGamma(a) for a >= 8.
    let stirling = a >= 8.0;
    var ln_norm: f32;
    if stirling {
        ln_norm = 0.5 * log(a) - HALF_LN_TWO_PI - stirling_tail(a);
    } else {
        ln_norm = -ln_gamma(a);
    }
    let ln_scale = ln_norm + log(m * w);
    let h = 1.0 / f32(DIRICHLET_NODES / 4u);
    var sum = 0.0;
    for (var panel = 0u; panel < DIRICHLET_NODES / 4u; panel++) {
        let centre = (f32(panel) + 0.5) * h;
        for (var q = 0u; q < 4u; q++) {
            var node = GAUSS4_OUTER;
            var weight = GAUSS4_OUTER_WEIGHT;
            if q == 1u || q == 2u {
                node = GAUSS4_INNER;
                weight = GAUSS4_INNER_WEIGHT;
            }
            if q < 2u {
                node = -node;
            }
            let t = centre + 0.5 * h * node;
            let ln_t = log(t);
            let x = lo + w * exp(m * ln_t);
            if x <= 0.0 {
                continue;
            }
            let ln_x = log(x);
            var ln_density: f32;
            if stirling {
                let u = (x - a) / a;
                ln_density = a * (ln_1p(u) - u) - ln_x;
            } else {
                ln_density = (a - 1.0) * ln_x - x;
            }
            var f = exp(ln_density + ln_scale + (m - 1.0) * ln_t);
            for (var j = 1u; j < k; j++) {
                f *= gamma_p((*alphas)[j], x);
            }
            sum += weight * f;
        }
    }
    return min(0.5 * h * sum, 1.0);
}

// The rule on a prompt's table, as if `bonus` more votes had gone to the
// leader (0 for the votes as they are): (met, confidence).
fn evaluate(rule: Rule, base: u32, distinct: u32, leader: u32, n0: u32, vl0: u32, vs: u32,
            run_length: u32, bonus: u32) -> vec2<f32> {
    let n = n0 + bonus;
    // The extra votes go to the leader; a prompt without votes has none (as
    // the twin's table, which has no slot to add them to).
    let vl = vl0 + select(0u, bonus, distinct > 0u);
    var share = 0.0;
    if n != 0u {
        share = f32(vl) / f32(n);
    }
    var met = false;
    var confidence = share;
    switch rule.kind {
        case RULE_BETA: {
            confidence = beta_leader_probability(vl, vs, rule.c.y);
            met = confidence >= rule.c.x;
        }
        case RULE_DIRICHLET: {
            if distinct < 3u {
                confidence = beta_leader_probability(vl, vs, rule.c.y);
            } else {
                // The `top` most voted answers, leader first (ties by slot):
                // repeated selection of the next largest.
                var keep = distinct;
                if rule.count != 0u {
                    keep = min(distinct, rule.count);
                }
                var alphas: array<f32, CAPACITY>;
                var taken: array<bool, CAPACITY>;
                for (var r = 0u; r < keep; r++) {
                    var best = CAPACITY;
                    var best_votes = 0u;
                    for (var k = 0u; k < distinct; k++) {
                        let votes_k = decide_tables[base + k].y + select(0u, bonus, k == leader);
                        if !taken[k] && (best == CAPACITY || votes_k > best_votes) {
                            best = k;
                            best_votes = votes_k;
                        }
                    }
                    taken[best] = true;
                    alphas[r] = f32(best_votes) + rule.c.y;
                }
                confidence = dirichlet_mode_probability(&alphas, keep);
            }
            met = confidence >= rule.c.x;
        }
        case RULE_OPTPO: {
            var m = f32(max(distinct, 2u));
            if rule.count != 0u {
                m = f32(max(rule.count, distinct));
            }
            let p0 = rule.c.x;
            let q = (1.0 - p0) / (m - 1.0);
            let beta = log(p0 / q);
            var denom = 0.0;
            for (var k = 0u; k < distinct; k++) {
                let votes_k = decide_tables[base + k].y + select(0u, bonus, k == leader);
                denom += exp(beta * (f32(votes_k) - f32(vl)));
            }
            denom += (m - f32(distinct)) * exp(-beta * f32(vl));
            confidence = 1.0 / denom;
            met = beta > 0.0 && (confidence >= 1.0 - rule.c.y || f32(vl - vs) * beta >= rule.c.z);
        }
        case RULE_CONSOL_SPRT: {
            let log_lr = f32(vl) * rule.c.x + f32(vs) * rule.c.y;
            met = log_lr >= rule.c.z || log_lr <= rule.c.w;
            confidence = 1.0 / (1.0 + exp(-log_lr));
        }
        case RULE_ESC: {
            // The newest complete window (ending at the last multiple of w)
            // and every vote after it agree.
            let w = rule.count;
            met = n >= w && run_length >= w + n % w;
        }
        case RULE_MAJORITY: {
            met = n >= 2u && share >= rule.c.x;
        }
        case RULE_PREDICTIVE: {
            var remaining = 0u;
            if n != 0u && n < rule.max_votes {
                remaining = u32(floor(f32(rule.max_votes - n) * f32(vl + vs) / f32(n) + 0.5));
            }
            let risk = overtake_risk(vl, vs, remaining, rule.c.y);
            met = n > 0u && risk <= rule.c.x;
            confidence = 1.0 - risk;
        }
        case RULE_CONSOL_MSPRT: {
            let log_lr = msprt_log_ratio(vl, vs, rule.c.x);
            met = log_lr >= rule.c.z || log_lr <= rule.c.w;
            confidence = 1.0 / (1.0 + exp(-log_lr));
        }
        case RULE_ENTROPY: {
            var total = 0.0;
            for (var k = 0u; k < distinct; k++) {
                total += f32(decide_tables[base + k].y + select(0u, bonus, k == leader));
            }
            var pseudo = 0.0;
            if distinct == 1u {
                pseudo = 1.0;
            }
            var h = 0.0;
            for (var k = 0u; k < distinct; k++) {
                let p = f32(decide_tables[base + k].y + select(0u, bonus, k == leader)) / (total + pseudo);
                h -= p * log2(p);
            }
            var norm = 1.0;
            if distinct <= 1u {
                let p = 1.0 / (total + 1.0);
                h -= p * log2(p);
            } else {
                norm = log2(f32(distinct));
            }
            var normalized = 1.0;
            if total != 0.0 {
                normalized = h / norm;
            }
            met = n >= 2u && normalized <= rule.c.x;
            confidence = 1.0 - normalized;
        }
        default: {}
    }
    return vec2<f32>(select(0.0, 1.0, met), clamp(confidence, 0.0, 1.0));
}

@compute @workgroup_size(WG)
fn decide(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let position = id.x + id.y * groups.x * WG;
    if position >= decide_params.prompts {
        return;
    }
    let rule = decide_params.rule;
    let prompt = decide_list[position];
    let votes = decide_votes[prompt];
    let base = prompt * CAPACITY;
    let distinct = votes.distinct;
    let n = votes.total;
    // Leader (ties to the lower slot) and runner-up.
    var leader = 0u;
    for (var k = 1u; k < distinct; k++) {
        if decide_tables[base + k].y > decide_tables[base + leader].y {
            leader = k;
        }
    }
    var vl = 0u;
    if distinct > 0u {
        vl = decide_tables[base + leader].y;
    }
    var vs = 0u;
    for (var k = 0u; k < distinct; k++) {
        if k != leader {
            vs = max(vs, decide_tables[base + k].y);
        }
    }
    let now = evaluate(rule, base, distinct, leader, n, vl, vs, votes.run_length, 0u);
    let stopped = n >= rule.max_votes || (n >= rule.min_votes && n > 0u && now.x != 0.0);
    var consensus = NO_CONSENSUS;
    if distinct > 0u {
        consensus = decide_tables[base + leader].x;
    }
    decisions[prompt] = Decision(select(0u, 1u, stopped), consensus, now.y, n);
    keep_active[position] = select(1u, 0u, stopped);
    // ConSol's allocation: the fewest more votes that would stop the prompt
    // if they all went to the leader (the rest of the budget if none would).
    if decide_params.want_fewest != 0u && !stopped {
        let room = rule.max_votes - n;
        var fewest = room;
        var leader_run = 0u;
        if distinct > 0u && votes.run_answer == consensus {
            leader_run = votes.run_length;
        }
        for (var t = 1u; t < room; t++) {
            if n + t >= rule.min_votes
                && evaluate(rule, base, distinct, leader, n, vl, vs, leader_run + t, t).x != 0.0 {
                fewest = t;
                break;
            }
        }
        next_votes[position] = max(fewest, 1u);
    }
}

// ---- Deciding with a workgroup per prompt (GPUs) ---------------------------
// The same decisions, keep flags and next votes as `decide`, bit for bit:
// the leader and runner-up are integer maxima and minima over the lanes
// (order-free), and each `evaluate` call is the serial kernel's, whole, on
// one lane. ConSol's fewest search runs in chunks of WG: lane j evaluates
// t = chunk base + j (lane 0 of the first chunk evaluates the votes as they
// are, t = 0), the fewest met t is an atomic minimum, and the search stops
// at the first chunk that has one, which holds the serial loop's answer.

var<workgroup> wide_leader_votes: atomic<u32>;
var<workgroup> wide_leader: atomic<u32>;
var<workgroup> wide_runner_up: atomic<u32>;
var<workgroup> wide_fewest: atomic<u32>;
// 1 while the fewest search goes on (written by lane 0).
var<workgroup> wide_searching: u32;
var<workgroup> wide_more: u32;

@compute @workgroup_size(WG)
fn decide_wide(@builtin(workgroup_id) wg: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>,
               @builtin(local_invocation_index) lane: u32) {
    let position = wg.x + wg.y * groups.x;
    if position >= decide_params.prompts {
        return;
    }
    let rule = decide_params.rule;
    let prompt = decide_list[position];
    let votes = decide_votes[prompt];
    let base = prompt * CAPACITY;
    let distinct = votes.distinct;
    let n = votes.total;
    if lane == 0u {
        atomicStore(&wide_leader_votes, 0u);
        atomicStore(&wide_leader, CAPACITY);
        atomicStore(&wide_runner_up, 0u);
        atomicStore(&wide_fewest, 0xFFFFFFFFu);
    }
    workgroupBarrier();
    // Leader: the most votes, ties to the lower slot; runner-up: the most
    // votes of the other slots (0 without one).
    for (var k = lane; k < distinct; k += WG) {
        atomicMax(&wide_leader_votes, decide_tables[base + k].y);
    }
    workgroupBarrier();
    let vl = atomicLoad(&wide_leader_votes);
    for (var k = lane; k < distinct; k += WG) {
        if decide_tables[base + k].y == vl {
            atomicMin(&wide_leader, k);
        }
    }
    workgroupBarrier();
    var leader = atomicLoad(&wide_leader);
    if leader == CAPACITY {
        leader = 0u;
    }
    for (var k = lane; k < distinct; k += WG) {
        if k != leader {
            atomicMax(&wide_runner_up, decide_tables[base + k].y);
        }
    }
    workgroupBarrier();
    let vs = atomicLoad(&wide_runner_up);
    var consensus = NO_CONSENSUS;
    if distinct > 0u {
        consensus = decide_tables[base + leader].x;
    }
    let want = decide_params.want_fewest != 0u;
    // The fewest search's range, t in [1, room) (none once at the budget,
    // where the prompt stops).
    var room = 0u;
    if n < rule.max_votes {
        room = rule.max_votes - n;
    }
    var leader_run = 0u;
    if distinct > 0u && votes.run_answer == consensus {
        leader_run = votes.run_length;
    }
    var chunk = 0u;
    loop {
        let t = chunk + lane;
        var evaluates = want && t >= 1u && t < room && n + t >= rule.min_votes;
        var run = leader_run + t;
        if t == 0u {
            evaluates = true;
            run = votes.run_length;
        }
        if evaluates {
            let result = evaluate(rule, base, distinct, leader, n, vl, vs, run, t);
            if t == 0u {
                let stopped = n >= rule.max_votes
                    || (n >= rule.min_votes && n > 0u && result.x != 0.0);
                decisions[prompt] = Decision(select(0u, 1u, stopped), consensus, result.y, n);
                keep_active[position] = select(1u, 0u, stopped);
                wide_searching = select(0u, 1u, want && !stopped);
            } else if result.x != 0.0 {
                atomicMin(&wide_fewest, t);
            }
        }
        workgroupBarrier();
        if lane == 0u {
            wide_more = select(0u, 1u, wide_searching != 0u
                && atomicLoad(&wide_fewest) == 0xFFFFFFFFu && chunk + WG < room);
        }
        if workgroupUniformLoad(&wide_more) == 0u {
            break;
        }
        chunk += WG;
    }
    // ConSol's allocation: the fewest more votes that would stop the prompt
    // if they all went to the leader (the rest of the budget if none would).
    if lane == 0u && wide_searching != 0u {
        var fewest = atomicLoad(&wide_fewest);
        if fewest == 0xFFFFFFFFu {
            fewest = room;
        }
        next_votes[position] = max(fewest, 1u);
    }
}

// ---- Rewards for the kept rollouts -----------------------------------------
// TTRL's majority reward (1 when a rollout's answer is its prompt's consensus)
// and GRPO's group-normalised advantages, (r − mean) / (std + eps) with the
// unbiased standard deviation of the prompt's group (0 when all its rewards
// are equal). The sums over a group take the segment shape
// (shared/segment.wgsl): `rewards_and_advantages` runs it serially, one
// invocation a prompt segment; `rewards_and_advantages_wide` (GPUs) a
// workgroup a segment, a lane a block; the same bits.

struct RewardParams {
    segments: u32,
    eps: f32,
    majority: u32,   // 1: rewards from answers and consensus; 0: given rewards
    _pad: u32,
}

@group(0) @binding(20) var<uniform> reward_params: RewardParams;
@group(0) @binding(21) var<storage, read> reward_segments: array<Segment>;
@group(0) @binding(22) var<storage, read> reward_answers: array<u32>;
@group(0) @binding(23) var<storage, read> reward_consensus: array<Decision>;
@group(0) @binding(24) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(25) var<storage, read_write> advantages: array<f32>;

@compute @workgroup_size(WG)
fn rewards_and_advantages(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let s = id.x + id.y * groups.x * WG;
    if s >= reward_params.segments {
        return;
    }
    let seg = reward_segments[s];
    if reward_params.majority != 0u {
        let consensus = reward_consensus[seg.prompt].consensus;
        for (var i = seg.start; i < seg.start + seg.count; i++) {
            rewards[i] = select(0.0, 1.0, reward_answers[i] == consensus);
        }
    }
    let block = segment_block(seg.count);
    var sums: array<f32, SEGMENT_LANES>;
    for (var q = 0u; q < seg.count; q++) {
        sums[q / block] += rewards[seg.start + q];
    }
    let n = f32(seg.count);
    let mean = segment_tree(sums) / max(n, 1.0);
    var squares: array<f32, SEGMENT_LANES>;
    for (var q = 0u; q < seg.count; q++) {
        squares[q / block] += reward_square(rewards[seg.start + q], mean);
    }
    let deviation = reward_deviation(segment_tree(squares), seg.count);
    // One reward value in the group: no signal, advantage 0.
    var lo = bitcast<f32>(0x7F800000u);
    var hi = bitcast<f32>(0xFF800000u);
    for (var i = seg.start; i < seg.start + seg.count; i++) {
        lo = min(lo, rewards[i]);
        hi = max(hi, rewards[i]);
    }
    for (var i = seg.start; i < seg.start + seg.count; i++) {
        advantages[i] = select((rewards[i] - mean) / (deviation + reward_params.eps), 0.0, lo == hi);
    }
}

// (r − mean)², a term of the squares' sum.
fn reward_square(r: f32, mean: f32) -> f32 {
    let d = r - mean;
    return d * d;
}

// The unbiased deviation from the squares' sum of `count` rewards.
fn reward_deviation(squares: f32, count: u32) -> f32 {
    if count > 1u {
        return sqrt(squares / (f32(count) - 1.0));
    }
    return 0.0;
}

// ---- Rewards with a workgroup per segment (GPUs) -----------------------------
// Lane j takes block j of the segment's rollouts (the segment shape): its
// majority rewards, its share of the sums (folded by every lane alike) and
// of the minimum and maximum (order-free), then its advantages.

var<workgroup> reward_lane_sums: array<f32, SEGMENT_LANES>;
var<workgroup> reward_lane_squares: array<f32, SEGMENT_LANES>;
var<workgroup> reward_lane_lo: array<f32, SEGMENT_LANES>;
var<workgroup> reward_lane_hi: array<f32, SEGMENT_LANES>;

@compute @workgroup_size(WG)
fn rewards_and_advantages_wide(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) groups: vec3<u32>,
                               @builtin(local_invocation_index) lane: u32) {
    let s = wg.x + wg.y * groups.x;
    if s >= reward_params.segments {
        return;
    }
    let seg = reward_segments[s];
    let first = seg.start + segment_lane_start(seg.count, lane);
    let end = seg.start + segment_lane_end(seg.count, lane);
    if reward_params.majority != 0u {
        let consensus = reward_consensus[seg.prompt].consensus;
        for (var i = first; i < end; i++) {
            rewards[i] = select(0.0, 1.0, reward_answers[i] == consensus);
        }
    }
    var sum = 0.0;
    var lo = bitcast<f32>(0x7F800000u);
    var hi = bitcast<f32>(0xFF800000u);
    for (var i = first; i < end; i++) {
        let r = rewards[i];
        sum += r;
        lo = min(lo, r);
        hi = max(hi, r);
    }
    reward_lane_sums[lane] = sum;
    reward_lane_lo[lane] = lo;
    reward_lane_hi[lane] = hi;
    workgroupBarrier();
    let mean = segment_tree(reward_lane_sums) / max(f32(seg.count), 1.0);
    var squares = 0.0;
    for (var i = first; i < end; i++) {
        squares += reward_square(rewards[i], mean);
    }
    reward_lane_squares[lane] = squares;
    for (var j = 0u; j < SEGMENT_LANES; j++) {
        lo = min(lo, reward_lane_lo[j]);
        hi = max(hi, reward_lane_hi[j]);
    }
    workgroupBarrier();
    let deviation = reward_deviation(segment_tree(reward_lane_squares), seg.count);
    for (var i = first; i < end; i++) {
        advantages[i] = select((rewards[i] - mean) / (deviation + reward_params.eps), 0.0, lo == hi);
    }
}
