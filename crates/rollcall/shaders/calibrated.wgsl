// The calibrated rule on the GPU, over voting.wgsl's vote tables (the model
// and its f64 CPU twin: src/voting/calibrated/mod.rs; the pipelines:
// src/voting/calibrated/gpu.rs).
//
// - races: the race table, one entry an invocation, once per budget.
// - expect: every prompt's posterior over the components under the batch's
//   weights and its pairwise agreement; each workgroup sums them in lane
//   order.
// - maximise: one workgroup adds the workgroups' sums in a fixed order, adds
//   the pseudo-counts and renormalises the weights (one EM step with expect),
//   and writes the least risk at two votes from the batch's agreement.
// - calibrated_decide: a live prompt's risk that its leader is overtaken by
//   the budget, from the posterior and the race table; decision, keep flag.
//
// Prepended by the host: CAPACITY, COMPONENTS, CATEGORIES, BUDGET,
// MIN_VOTES, and the model buffer's offsets (WEIGHTS, LN_WEIGHTS,
// PSEUDO_COUNTS, LN_SHARE, LN_REST_SHARE, CONCENTRATION, TWO_VOTE_RISK,
// REST_ONE, CHOICE,
// CHOICE_EXP, CHOICE_MAX, RACES) and RACE_BLOCK (entries of one race block:
// Σ_{n < BUDGET} (n + 1)²).

#include "voting.wgsl"

struct CalibratedParams {
    prompts: u32,     // prompts in the tables (expect)
    groups: u32,      // expect's workgroups (maximise adds their sums)
    groups_x: u32,    // grid width of two-dimensional dispatches
    listed: u32,      // entries of the decide list
    delta: f32,       // the flip budget
    min_votes: u32,   // the config's least votes before a stop
    races: u32,       // race-table entries
    cache_split: u32, // prompts in `evidence_low`; the rest in `evidence_high`
}

@group(0) @binding(30) var<uniform> cal: CalibratedParams;
@group(0) @binding(31) var<storage, read> cal_list: array<u32>;
@group(0) @binding(32) var<storage, read> cal_votes: array<PromptVotes>;
@group(0) @binding(33) var<storage, read> cal_tables: array<vec2<u32>>;
// The model: weights, per-component logs and rising factorials, races.
@group(0) @binding(34) var<storage, read> model: array<f32>;
// The same buffer, written by races (the table) and maximise (the weights).
@group(0) @binding(35) var<storage, read_write> model_out: array<f32>;
@group(0) @binding(36) var<storage, read_write> group_sums: array<f32>;
@group(0) @binding(37) var<storage, read> group_sums_in: array<f32>;
@group(0) @binding(38) var<storage, read_write> cal_decisions: array<Decision>;
@group(0) @binding(39) var<storage, read_write> cal_keep: array<u32>;
@group(0) @binding(40) var<storage, read_write> cal_next: array<u32>;
// Each prompt's 52 log-evidences, the stamp they were computed at (its vote
// total + 1, as f32 bits; 0: none) and its pairwise agreement (negative below
// two votes), over two bindings past the binding size limit.
@group(0) @binding(41) var<storage, read_write> evidence_low: array<f32>;
@group(0) @binding(42) var<storage, read_write> evidence_high: array<f32>;

const SMALLEST_NORMAL: f32 = 1.1754944e-38;
const SIDE_LEADER: u32 = 0u;      // the leader is dominant
const SIDE_COMPETITOR: u32 = 1u;  // the competitor is dominant

// Entries of the race blocks before votes-so-far n: Σ_{k < n} (k + 1)².
fn races_before(n: u32) -> u32 {
    return n * (n + 1u) * (2u * n + 1u) / 6u;
}

fn race_index(g: u32, side: u32, tie: u32, n: u32, c_dom: u32, c_other: u32) -> u32 {
    return RACES + ((g * 2u + side) * 2u + tie) * RACE_BLOCK + races_before(n)
        + c_dom * (n + 1u) + c_other;
}

// ---- The race table ----------------------------------------------------------

// The dominant side gains X ~ Bin(remaining, w), the other side
// Y ~ BetaBin(remaining - X, a, mass - a): P(the other side ends ahead) with
// other_wins, else P(the dominant side ends ahead); a final tie goes to the
// competitor when `tie`. The twin's `race`, in f32.
fn race(ln_w: f32, ln_rest: f32, remaining: u32, c_dom: u32, c_other: u32, a: f32, mass: f32,
        other_wins: bool, tie: bool) -> f32 {
    let b = mass - a;
    var ln_choose = 0.0;
    var total = 0.0;
    for (var x = 0u; x <= remaining; x++) {
        if x > 0u {
            ln_choose += log(f32(remaining - x + 1u)) - log(f32(x));
        }
        let p_x = exp(ln_choose + f32(x) * ln_w + f32(remaining - x) * ln_rest);
        if p_x < 1e-16 {
            continue;
        }
        let rest = remaining - x;
        var ln_p0 = 0.0;
        for (var i = 0u; i < rest; i++) {
            ln_p0 += log((b + f32(i)) / (a + b + f32(i)));
        }
        var p_y = exp(ln_p0);
        var wins = 0.0;
        for (var y = 0u; y <= rest; y++) {
            let other = c_other + y;
            let dom = c_dom + x;
            var win: bool;
            if other_wins {
                win = other > dom || (other == dom && tie);
            } else {
                win = dom > other || (dom == other && tie);
            }
            if win {
                wins += p_y;
            }
            if y < rest {
                p_y *= f32(rest - y) / f32(y + 1u) * (a + f32(y)) / (b + f32(rest - y - 1u));
            }
        }
        total += p_x * wins;
    }
    return total;
}

@compute @workgroup_size(WG)
fn races(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.x + id.y * groups.x * WG;
    if i >= cal.races {
        return;
    }
    let block = i / RACE_BLOCK;
    let within = i % RACE_BLOCK;
    let g = block / 4u;
    let side = (block / 2u) % 2u;
    let tie = block % 2u;
    var n = 0u;
    while races_before(n + 1u) <= within {
        n++;
    }
    let at = within - races_before(n);
    let c_dom = at / (n + 1u);
    let c_other = at % (n + 1u);
    var p = 0.0;
    if c_dom + c_other <= n {
        let beta = model_out[CONCENTRATION + g];
        // The urn's mass: the rest's prior plus the non-dominant votes.
        let mass = f32(CATEGORIES - 1u) * beta + f32(n - c_dom);
        p = race(model_out[LN_SHARE + g], model_out[LN_REST_SHARE + g], BUDGET - n, c_dom,
                 c_other, f32(c_other) + beta, mass, side == SIDE_LEADER, tie == 1u);
    }
    model_out[RACES + i] = p;
}

// ---- A prompt's posterior ----------------------------------------------------
//
// Under component g with n votes, the dominant category at a seen answer of
// c votes contributes `base + choice(g, n, c)` to the log-likelihood (base:
// the rest's rising factorials of every seen answer, common to all choices),
// and the K - m unseen categories together `base + ln(K - m) + choice(g, n,
// 0)`. The host tabulates choice(g, n, c) = c ln w + (n - c) ln(1 - w)
// - ln β^(c) - ln ((K-1)β)^(n-c), its maximum over c, and exp(choice - max),
// so a component's evidence is m + 1 lookups and one log; only when every
// term of a prompt underflows in f32 does it take the exact path.

// One prompt's table: its counts in slot order, slots, votes in the table.
struct Counts {
    c: array<u32, CAPACITY>,
    m: u32,
    n: u32,
}

fn load_counts(prompt: u32) -> Counts {
    var counts: Counts;
    counts.m = min(cal_votes[prompt].distinct, CAPACITY);
    counts.n = 0u;
    for (var k = 0u; k < counts.m; k++) {
        counts.c[k] = cal_tables[prompt * CAPACITY + k].y;
        counts.n += counts.c[k];
    }
    return counts;
}

fn choice_at(g: u32, n: u32, c: u32) -> u32 {
    return (g * (BUDGET + 1u) + n) * (BUDGET + 1u) + c;
}

// ln Π_k β^(c_k): the rest's rising factorials of every seen answer.
fn rest_base(g: u32, counts: ptr<function, Counts>) -> f32 {
    var base = 0.0;
    for (var k = 0u; k < (*counts).m; k++) {
        base += model[REST_ONE + g * (BUDGET + 1u) + (*counts).c[k]];
    }
    return base;
}

// The unseen categories' count while any is unseen, else 0.
fn unseen(counts: ptr<function, Counts>) -> f32 {
    return f32(CATEGORIES - min((*counts).m, CATEGORIES));
}

// A component's evidence: x = ln Σ_d exp(log-likelihood of choice d), and
// y = Σ_d exp(choice - max) from the tables (0 after the exact path), so
// that choice d's posterior is its scaled term / y.
fn component_evidence(g: u32, counts: ptr<function, Counts>) -> vec2<f32> {
    let n = (*counts).n;
    let base = rest_base(g, counts);
    let others = unseen(counts);
    var sum = others * model[CHOICE_EXP + choice_at(g, n, 0u)];
    for (var d = 0u; d < (*counts).m; d++) {
        sum += model[CHOICE_EXP + choice_at(g, n, (*counts).c[d])];
    }
    if sum >= 1e-30 {
        return vec2<f32>(base + model[CHOICE_MAX + g * (BUDGET + 1u) + n] + log(sum), sum);
    }
    // Every term underflowed: the exact log-sum-exp.
    var top = -3.4028235e38;
    for (var d = 0u; d < (*counts).m; d++) {
        top = max(top, model[CHOICE + choice_at(g, n, (*counts).c[d])]);
    }
    if others > 0.0 {
        top = max(top, log(others) + model[CHOICE + choice_at(g, n, 0u)]);
    }
    var exact = 0.0;
    for (var d = 0u; d < (*counts).m; d++) {
        exact += exp(model[CHOICE + choice_at(g, n, (*counts).c[d])] - top);
    }
    if others > 0.0 {
        exact += exp(log(others) + model[CHOICE + choice_at(g, n, 0u)] - top);
    }
    return vec2<f32>(base + top + log(exact), 0.0);
}

// Posterior probability of choice d (a seen slot d < m, or the unseen ones
// together at d == m) under component g, given its evidence.
fn choice_probability(g: u32, counts: ptr<function, Counts>, d: u32, evidence: vec2<f32>) -> f32 {
    let n = (*counts).n;
    var c = 0u;
    var times = unseen(counts);
    if d < (*counts).m {
        c = (*counts).c[d];
        times = 1.0;
    }
    if evidence.y > 0.0 {
        return times * model[CHOICE_EXP + choice_at(g, n, c)] / evidence.y;
    }
    return times * exp(rest_base(g, counts) + model[CHOICE + choice_at(g, n, c)] - evidence.x);
}

// From unnormalised log-posteriors to the posterior, in place.
fn normalise(post: ptr<function, array<f32, COMPONENTS>>) {
    var top = -3.4028235e38;
    for (var g = 0u; g < COMPONENTS; g++) {
        top = max(top, (*post)[g]);
    }
    var sum = 0.0;
    for (var g = 0u; g < COMPONENTS; g++) {
        (*post)[g] = exp((*post)[g] - top);
        sum += (*post)[g];
    }
    for (var g = 0u; g < COMPONENTS; g++) {
        (*post)[g] /= sum;
    }
}

// The posterior over the components (into `post`) and each component's
// evidence (into `evidence`), for a prompt with votes.
fn posterior(counts: ptr<function, Counts>, post: ptr<function, array<f32, COMPONENTS>>,
             evidence: ptr<function, array<vec2<f32>, COMPONENTS>>) {
    for (var g = 0u; g < COMPONENTS; g++) {
        (*evidence)[g] = component_evidence(g, counts);
        (*post)[g] = model[LN_WEIGHTS + g] + (*evidence)[g].x;
    }
    normalise(post);
}

// ---- EM over the batch -------------------------------------------------------
//
// A prompt's evidence under each component depends on its table only: the
// first EM step after its votes change computes it and caches it with a
// stamp; later steps (and rounds, while the prompt is stopped) read it.

const CACHE_WORDS: u32 = COMPONENTS + 2u;
const STAMP: u32 = COMPONENTS;
const AGREEMENT: u32 = COMPONENTS + 1u;
// A workgroup's sums: the posteriors, then the agreements and their count.
const SUM_WORDS: u32 = COMPONENTS + 2u;

// Σ_k c_k (c_k - 1) / (n (n - 1)) over the table's counts and the prompt's
// `total` votes n: the share of its vote pairs that agree (the twin's
// `pair_agreement`); -1 below two votes.
fn pair_agreement(counts: ptr<function, Counts>, total: u32) -> f32 {
    if total < 2u {
        return -1.0;
    }
    var pairs = 0.0;
    for (var k = 0u; k < (*counts).m; k++) {
        let c = f32((*counts).c[k]);
        pairs += c * (c - 1.0);
    }
    return min(pairs / (f32(total) * f32(total - 1u)), 1.0);
}

fn cached(prompt: u32, i: u32) -> f32 {
    if prompt < cal.cache_split {
        return evidence_low[prompt * CACHE_WORDS + i];
    }
    return evidence_high[(prompt - cal.cache_split) * CACHE_WORDS + i];
}

fn cache(prompt: u32, i: u32, value: f32) {
    if prompt < cal.cache_split {
        evidence_low[prompt * CACHE_WORDS + i] = value;
    } else {
        evidence_high[(prompt - cal.cache_split) * CACHE_WORDS + i] = value;
    }
}

var<workgroup> lane_sums: array<array<f32, SUM_WORDS>, WG>;

@compute @workgroup_size(WG)
fn expect(@builtin(workgroup_id) wg: vec3<u32>,
          @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) lane: u32) {
    let group = wg.x + wg.y * groups.x;
    let prompt = group * WG + lane;
    var post: array<f32, COMPONENTS>;
    var agreement = -1.0;
    // A prompt has votes in its table once it has any (a first vote always
    // finds a slot).
    if prompt < cal.prompts && cal_votes[prompt].distinct > 0u {
        let stamp = cal_votes[prompt].total + 1u;
        if bitcast<u32>(cached(prompt, STAMP)) != stamp {
            var counts = load_counts(prompt);
            for (var g = 0u; g < COMPONENTS; g++) {
                cache(prompt, g, component_evidence(g, &counts).x);
            }
            cache(prompt, STAMP, bitcast<f32>(stamp));
            cache(prompt, AGREEMENT, pair_agreement(&counts, cal_votes[prompt].total));
        }
        for (var g = 0u; g < COMPONENTS; g++) {
            post[g] = model[LN_WEIGHTS + g] + cached(prompt, g);
        }
        normalise(&post);
        agreement = cached(prompt, AGREEMENT);
    }
    for (var g = 0u; g < COMPONENTS; g++) {
        lane_sums[lane][g] = post[g];
    }
    lane_sums[lane][COMPONENTS] = max(agreement, 0.0);
    lane_sums[lane][COMPONENTS + 1u] = select(0.0, 1.0, agreement >= 0.0);
    workgroupBarrier();
    if lane < SUM_WORDS && group < cal.groups {
        var sum = 0.0;
        for (var l = 0u; l < WG; l++) {
            sum += lane_sums[l][lane];
        }
        group_sums[group * SUM_WORDS + lane] = sum;
    }
}

var<workgroup> component_totals: array<f32, COMPONENTS>;
var<workgroup> agreement_totals: array<f32, 2>;

@compute @workgroup_size(WG)
fn maximise(@builtin(local_invocation_index) lane: u32) {
    // Lane l adds workgroups l, l + WG, ...; then lane g adds component g
    // over the lanes, in lane order.
    var sums: array<f32, SUM_WORDS>;
    for (var w = lane; w < cal.groups; w += WG) {
        for (var g = 0u; g < SUM_WORDS; g++) {
            sums[g] += group_sums_in[w * SUM_WORDS + g];
        }
    }
    lane_sums[lane] = sums;
    workgroupBarrier();
    if lane < SUM_WORDS {
        var sum = 0.0;
        for (var l = 0u; l < WG; l++) {
            sum += lane_sums[l][lane];
        }
        if lane < COMPONENTS {
            component_totals[lane] = sum + model_out[PSEUDO_COUNTS + lane];
        } else {
            agreement_totals[lane - COMPONENTS] = sum;
        }
    }
    workgroupBarrier();
    if lane == 0u {
        // The twin's `batch_two_vote_risk`: (1 - a) / 2a, a the mean
        // agreement of the prompts with two votes or more and one more that
        // disagrees.
        let a = agreement_totals[0] / (agreement_totals[1] + 1.0);
        var bound = 1.0;
        if a > 0.0 {
            bound = clamp((1.0 - a) / (2.0 * a), 0.0, 1.0);
        }
        model_out[TWO_VOTE_RISK] = bound;
    }
    if lane < COMPONENTS {
        var total = 0.0;
        for (var g = 0u; g < COMPONENTS; g++) {
            total += component_totals[g];
        }
        let weight = component_totals[lane] / total;
        model_out[WEIGHTS + lane] = weight;
        model_out[LN_WEIGHTS + lane] = log(max(weight, SMALLEST_NORMAL));
    }
}

// ---- Deciding ----------------------------------------------------------------

// P(the leader, slot `leader`, is not the majority at the budget) under the
// batch's weights: the twin's `CalibratedModel::risk`.
fn calibrated_risk(counts: ptr<function, Counts>, leader: u32) -> f32 {
    let n = (*counts).n;
    if n >= BUDGET {
        return 0.0;
    }
    let remaining = BUDGET - n;
    let m = (*counts).m;
    let c_l = (*counts).c[leader];
    var post: array<f32, COMPONENTS>;
    var evidence: array<vec2<f32>, COMPONENTS>;
    posterior(counts, &post, &evidence);
    let choices = select(m, m + 1u, m < CATEGORIES);
    var risk = 0.0;
    for (var g = 0u; g < COMPONENTS; g++) {
        if post[g] < 1e-12 {
            continue;
        }
        // The leader dominant: any competitor, seen or not, may pass it.
        var leader_dominant = 0.0;
        for (var j = 0u; j < m; j++) {
            if j != leader && (*counts).c[j] + remaining >= c_l {
                leader_dominant += model[race_index(g, SIDE_LEADER, select(0u, 1u, j < leader), n,
                                                    c_l, (*counts).c[j])];
            }
        }
        if m < CATEGORIES && remaining >= c_l {
            leader_dominant += f32(CATEGORIES - m)
                * model[race_index(g, SIDE_LEADER, 0u, n, c_l, 0u)];
        }
        var r = choice_probability(g, counts, leader, evidence[g]) * min(leader_dominant, 1.0);
        // Another category dominant: it races the leader.
        for (var d = 0u; d < choices; d++) {
            var c_d = 0u;
            if d < m {
                c_d = (*counts).c[d];
            }
            if d != leader && c_d + remaining >= c_l {
                r += choice_probability(g, counts, d, evidence[g])
                    * model[race_index(g, SIDE_COMPETITOR, select(0u, 1u, d < leader), n, c_d, c_l)];
            }
        }
        risk += post[g] * r;
    }
    return min(risk, 1.0);
}

@compute @workgroup_size(WG)
fn calibrated_decide(@builtin(global_invocation_id) id: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let position = id.x + id.y * groups.x * WG;
    if position >= cal.listed {
        return;
    }
    let prompt = cal_list[position];
    var counts = load_counts(prompt);
    let total = cal_votes[prompt].total;
    // Leader: most votes, ties to the lower slot.
    var leader = 0u;
    for (var k = 1u; k < counts.m; k++) {
        if counts.c[k] > counts.c[leader] {
            leader = k;
        }
    }
    var consensus = NO_CONSENSUS;
    if counts.m > 0u {
        consensus = cal_tables[prompt * CAPACITY + leader].x;
    }
    var stopped = total >= BUDGET;
    var confidence = 1.0;
    if !stopped {
        var risk = 1.0;
        if counts.m > 0u {
            risk = calibrated_risk(&counts, leader);
        }
        // A 2-0 start's risk is not identified by the batch: at least the
        // bound from its agreement.
        if total == 2u {
            risk = max(risk, model[TWO_VOTE_RISK]);
        }
        stopped = total >= MIN_VOTES && total >= cal.min_votes && risk <= cal.delta;
        confidence = 1.0 - risk;
    }
    cal_decisions[prompt] = Decision(select(0u, 1u, stopped), consensus, confidence, total);
    cal_keep[position] = select(1u, 0u, stopped);
    cal_next[position] = select(1u, 0u, stopped);
}
