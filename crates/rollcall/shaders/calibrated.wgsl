// The calibrated rule on the GPU, over voting.wgsl's vote tables (the model
// and its f64 CPU twin: src/voting/calibrated/mod.rs; the pipelines:
// src/voting/calibrated/gpu.rs).
//
// - races: the race table, one entry an invocation, once per budget.
// - evidence_states: each prompt whose votes changed puts its counts (as a
//   multiset) in a small table; the first prompt of a multiset computes its
//   likelihoods under the components (one that finds no slot computes its
//   own and caches them).
// - expect: every prompt's posterior over the components under the batch's
//   weights and its pairwise agreement; each lane sums LANE_PROMPTS prompts'
//   in order, each workgroup its lanes' sums in lane order.
// - maximise: one workgroup adds the workgroups' sums in a fixed order, adds
//   the pseudo-counts and renormalises the weights (one EM step with expect),
//   and writes the least risk at two votes from the batch's agreement.
// - calibrated_states: each live prompt's count state in a small table; the
//   first prompt of a state computes its risk that its leader is overtaken
//   by the budget, from the weights and the race table (one that finds no
//   slot computes its own, stored past the table at its position).
// - calibrated_decide: a live prompt's risk read from where
//   calibrated_states put it; decision, keep flag.
//
// Prepended by the host: CAPACITY, COMPONENTS, CATEGORIES, BUDGET,
// MIN_VOTES, and the model buffer's offsets (WEIGHTS, PSEUDO_COUNTS,
// LN_SHARE, LN_REST_SHARE, CONCENTRATION, TWO_VOTE_RISK, REST_ONE, CHOICE,
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
    state_slots: u32, // slots of the state table (a power of two)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
// Also the next rollouts of a live prompt (1 or 0): the host copies it.
@group(0) @binding(39) var<storage, read_write> cal_keep: array<u32>;
// Each prompt's 52 scaled likelihoods, the stamp they were computed at (its vote
// total + 1, as f32 bits; 0: none) and its pairwise agreement (negative below
// two votes), over two bindings past the binding size limit.
@group(0) @binding(41) var<storage, read_write> evidence_low: array<f32>;
@group(0) @binding(42) var<storage, read_write> evidence_high: array<f32>;
// The state tables (risks in slots [0, state_slots), likelihoods in the next
// state_slots): a slot's first prompt + 1 (0: free); a risk state's risk
// (past the table: the risks of live prompts whose state found no slot, by
// position) and each live prompt's index into it (NO_STATE: no votes); a
// multiset's scaled likelihoods and each prompt's slot (read when its
// votes changed).
@group(0) @binding(43) var<storage, read_write> state_owner: array<atomic<u32>>;
@group(0) @binding(44) var<storage, read_write> state_risk: array<f32>;
@group(0) @binding(45) var<storage, read_write> state_of: array<u32>;
@group(0) @binding(46) var<storage, read_write> state_likelihoods: array<f32>;
@group(0) @binding(47) var<storage, read_write> likelihood_state_of: array<u32>;

const SIDE_LEADER: u32 = 0u;      // the leader is dominant
const SIDE_COMPETITOR: u32 = 1u;  // the competitor is dominant
const NO_RACE: u32 = 0xffffffffu;

// Entries of the race blocks before votes-so-far n: Σ_{k < n} (k + 1)².
fn races_before(n: u32) -> u32 {
    return n * (n + 1u) * (2u * n + 1u) / 6u;
}

// A race entry, the same for every component: the table holds the
// components' values of one entry side by side (a prompt reads all of them).
fn race_entry(side: u32, tie: u32, n: u32, c_dom: u32, c_other: u32) -> u32 {
    return (side * 2u + tie) * RACE_BLOCK + races_before(n) + c_dom * (n + 1u) + c_other;
}

fn race_index(g: u32, entry: u32) -> u32 {
    return RACES + entry * COMPONENTS + g;
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
    let g = i % COMPONENTS;
    let entry = i / COMPONENTS;
    let block = entry / RACE_BLOCK;
    let within = entry % RACE_BLOCK;
    let side = block / 2u;
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

// Under component g, the choices' terms exp(choice - max) (seen slots, then
// the unseen ones together at slot m) and how to normalise them: x = their
// sum, y = 0; or, when every term underflows in f32, x = 0 and y = the exact
// ln Σ_d exp(choice d), read from the log table by `choice_probability`.
struct ChoiceTerms {
    term: array<f32, CAPACITY_AND_UNSEEN>,
    norm: vec2<f32>,
}

const CAPACITY_AND_UNSEEN: u32 = CAPACITY + 1u;

fn choice_terms(g: u32, counts: ptr<function, Counts>) -> ChoiceTerms {
    let n = (*counts).n;
    let m = (*counts).m;
    let others = unseen(counts);
    var t: ChoiceTerms;
    var sum = 0.0;
    for (var d = 0u; d < m; d++) {
        t.term[d] = model[CHOICE_EXP + choice_at(g, n, (*counts).c[d])];
        sum += t.term[d];
    }
    t.term[m] = others * model[CHOICE_EXP + choice_at(g, n, 0u)];
    sum += t.term[m];
    if sum >= 1e-30 {
        t.norm = vec2<f32>(sum, 0.0);
        return t;
    }
    var top = -3.4028235e38;
    for (var d = 0u; d < m; d++) {
        top = max(top, model[CHOICE + choice_at(g, n, (*counts).c[d])]);
    }
    if others > 0.0 {
        top = max(top, log(others) + model[CHOICE + choice_at(g, n, 0u)]);
    }
    var exact = 0.0;
    for (var d = 0u; d < m; d++) {
        exact += exp(model[CHOICE + choice_at(g, n, (*counts).c[d])] - top);
    }
    if others > 0.0 {
        exact += exp(log(others) + model[CHOICE + choice_at(g, n, 0u)] - top);
    }
    t.norm = vec2<f32>(0.0, top + log(exact));
    return t;
}

// Posterior probability of choice d (a seen slot d < m, or the unseen ones
// together at d == m) under component g.
fn choice_probability(g: u32, counts: ptr<function, Counts>, d: u32,
                      t: ptr<function, ChoiceTerms>) -> f32 {
    if (*t).norm.x > 0.0 {
        return (*t).term[d] / (*t).norm.x;
    }
    var c = 0u;
    var times = unseen(counts);
    if d < (*counts).m {
        c = (*counts).c[d];
        times = 1.0;
    }
    return times * exp(model[CHOICE + choice_at(g, (*counts).n, c)] - (*t).norm.y);
}

// A component's log-evidence: ln Σ_d exp(log-likelihood of choice d).
fn component_evidence(g: u32, counts: ptr<function, Counts>) -> f32 {
    var terms = choice_terms(g, counts);
    var log_sum = terms.norm.y;
    if terms.norm.x > 0.0 {
        log_sum = model[CHOICE_MAX + g * (BUDGET + 1u) + (*counts).n] + log(terms.norm.x);
    }
    return rest_base(g, counts) + log_sum;
}

// ---- EM over the batch -------------------------------------------------------
//
// A prompt's evidence under each component depends on its table only: it is
// cached after its votes change, as likelihoods scaled by the largest
// (exp(x_g - max x): one that underflows is over e^87 times less likely than
// the best, more than the weights' pseudo-count floor can make up), with a
// stamp (its vote total + 1); the first EM step copies them from its
// multiset's slot, filled by evidence_states (which caches them itself for
// a prompt whose multiset found no slot); later steps, and rounds while the
// prompt is stopped, read it.

const CACHE_WORDS: u32 = COMPONENTS + 2u;
const STAMP: u32 = COMPONENTS;
const AGREEMENT: u32 = COMPONENTS + 1u;
// A workgroup's sums: the posteriors, then the agreements and their count.
const SUM_WORDS: u32 = COMPONENTS + 2u;
// Prompts an expect lane adds before its workgroup adds the lanes: fewer
// workgroup sums to write and add.
const LANE_PROMPTS: u32 = 16u;

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

// Each component's weight times the prompt's cached likelihood, into
// `post`; returns their sum (the posterior is post / sum; the best
// component's likelihood is 1 and every weight is positive, so it is > 0).
fn weighted_likelihoods(prompt: u32, post: ptr<function, array<f32, COMPONENTS>>) -> f32 {
    var total = 0.0;
    for (var g = 0u; g < COMPONENTS; g++) {
        (*post)[g] = model[WEIGHTS + g] * cached(prompt, g);
        total += (*post)[g];
    }
    return total;
}

var<workgroup> lane_sums: array<array<f32, SUM_WORDS>, WG>;

@compute @workgroup_size(WG)
fn expect(@builtin(workgroup_id) wg: vec3<u32>,
          @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) lane: u32) {
    let group = wg.x + wg.y * groups.x;
    var sums: array<f32, SUM_WORDS>;
    for (var k = 0u; k < LANE_PROMPTS; k++) {
        // Neighbouring lanes take neighbouring prompts.
        let prompt = (group * LANE_PROMPTS + k) * WG + lane;
        // A prompt has votes in its table once it has any (a first vote
        // always finds a slot).
        if prompt >= cal.prompts || cal_votes[prompt].distinct == 0u {
            continue;
        }
        let stamp = cal_votes[prompt].total + 1u;
        if bitcast<u32>(cached(prompt, STAMP)) != stamp {
            // evidence_states ran since the votes changed and found the
            // prompt's multiset (one it found no slot for, it cached, with
            // the stamp: the guard only keeps a lost stamp in bounds).
            let state = likelihood_state_of[prompt];
            if state != NO_STATE {
                for (var g = 0u; g < COMPONENTS; g++) {
                    cache(prompt, g, state_likelihoods[state * COMPONENTS + g]);
                }
                cache(prompt, STAMP, bitcast<f32>(stamp));
            }
        }
        var post: array<f32, COMPONENTS>;
        let total = weighted_likelihoods(prompt, &post);
        for (var g = 0u; g < COMPONENTS; g++) {
            sums[g] += post[g] / total;
        }
        let agreement = cached(prompt, AGREEMENT);
        if agreement >= 0.0 {
            sums[COMPONENTS] += agreement;
            sums[COMPONENTS + 1u] += 1.0;
        }
    }
    lane_sums[lane] = sums;
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
    }
}

// ---- Count states ------------------------------------------------------------
//
// A live prompt's risk depends on its table only through its count state:
// the counts before its leader (in slot order) as a multiset, the leader's,
// and those after it as a multiset (a final tie goes to an earlier slot);
// its likelihoods only through the multiset of its counts. A batch holds
// few of either (a few hundred states at 30 votes on real data), so
// `evidence_states` and `calibrated_states` put them in open-addressed
// tables: the prompt that claims a free slot computes the value, the others
// of the state record the slot, and one whose state finds no slot within
// STATE_PROBES computes its own, at the same place in the same kernel as a
// claimer. Values are computed from the canonical order (sorted
// descending; by_leader, on each side of the leader), so they are the same
// bits whichever prompt computes them.

const NO_STATE: u32 = 0xffffffffu;
const STATE_PROBES: u32 = 32u;

// Sorts counts [start, end) descending (at most CAPACITY: insertion sort).
fn sort_descending(counts: ptr<function, Counts>, start: u32, end: u32) {
    for (var i = start + 1u; i < end; i++) {
        let v = (*counts).c[i];
        var j = i;
        while j > start && (*counts).c[j - 1u] < v {
            (*counts).c[j] = (*counts).c[j - 1u];
            j--;
        }
        (*counts).c[j] = v;
    }
}

// The leader's slot: most votes, ties to the lower slot.
fn leader_slot(counts: ptr<function, Counts>) -> u32 {
    var leader = 0u;
    for (var k = 1u; k < (*counts).m; k++) {
        if (*counts).c[k] > (*counts).c[leader] {
            leader = k;
        }
    }
    return leader;
}

// Puts the counts in canonical order, by_leader: those before the leader
// sorted descending, the leader, those after sorted descending; else all
// sorted descending (a multiset, for the likelihoods). Returns the leader's
// slot (by_leader: unchanged, as those before it have fewer votes).
fn canonical(counts: ptr<function, Counts>, by_leader: bool) -> u32 {
    if !by_leader {
        sort_descending(counts, 0u, (*counts).m);
        return 0u;
    }
    let leader = leader_slot(counts);
    sort_descending(counts, 0u, leader);
    sort_descending(counts, leader + 1u, (*counts).m);
    return leader;
}

fn state_hash(counts: ptr<function, Counts>) -> u32 {
    var h = (2166136261u ^ (*counts).m) * 16777619u;
    for (var k = 0u; k < (*counts).m; k++) {
        h = (h ^ (*counts).c[k]) * 16777619u;
    }
    h ^= h >> 15u;
    h *= 0x2c1b3c6du;
    return h ^ (h >> 12u);
}

// Whether `prompt`'s table is in the canonical state `counts`.
fn in_state(prompt: u32, counts: ptr<function, Counts>, by_leader: bool) -> bool {
    if min(cal_votes[prompt].distinct, CAPACITY) != (*counts).m {
        return false;
    }
    var other = load_counts(prompt);
    if other.n != (*counts).n {
        return false;
    }
    canonical(&other, by_leader);
    for (var k = 0u; k < (*counts).m; k++) {
        if other.c[k] != (*counts).c[k] {
            return false;
        }
    }
    return true;
}

// The slot of `prompt`'s canonical state in the table at `base`, claimed
// (`owned`: the prompt computes the state's value) or found with another
// prompt of the state; NO_STATE when neither within STATE_PROBES.
struct StateSlot {
    slot: u32,
    owned: bool,
}

fn find_state(prompt: u32, counts: ptr<function, Counts>, by_leader: bool, base: u32) -> StateSlot {
    let mask = cal.state_slots - 1u;
    var slot = state_hash(counts) & mask;
    // A spurious compare-exchange failure retries its slot, counted.
    for (var probe = 0u; probe < min(STATE_PROBES, cal.state_slots); probe++) {
        var owner = atomicLoad(&state_owner[base + slot]);
        if owner == 0u {
            let claim = atomicCompareExchangeWeak(&state_owner[base + slot], 0u, prompt + 1u);
            if claim.exchanged {
                return StateSlot(slot, true);
            }
            owner = claim.old_value;
            if owner == 0u {
                continue;
            }
        }
        if in_state(owner - 1u, counts, by_leader) {
            return StateSlot(slot, false);
        }
        slot = (slot + 1u) & mask;
    }
    return StateSlot(NO_STATE, false);
}

// Under each component, the likelihood of `counts` scaled by the largest:
// exp(x_g - max x) for log-evidences x.
fn scaled_likelihoods(counts: ptr<function, Counts>, out: ptr<function, array<f32, COMPONENTS>>) {
    var top = -3.4028235e38;
    for (var g = 0u; g < COMPONENTS; g++) {
        (*out)[g] = component_evidence(g, counts);
        top = max(top, (*out)[g]);
    }
    for (var g = 0u; g < COMPONENTS; g++) {
        (*out)[g] = exp((*out)[g] - top);
    }
}

// Before a round's first `expect`: each prompt whose votes changed caches its
// pairwise agreement and finds (or claims and fills) its multiset's
// likelihoods; one that finds no slot caches its own.
@compute @workgroup_size(WG)
fn evidence_states(@builtin(global_invocation_id) id: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let prompt = id.x + id.y * groups.x * WG;
    if prompt >= cal.prompts || cal_votes[prompt].distinct == 0u {
        return;
    }
    let total = cal_votes[prompt].total;
    if bitcast<u32>(cached(prompt, STAMP)) == total + 1u {
        return;
    }
    var counts = load_counts(prompt);
    cache(prompt, AGREEMENT, pair_agreement(&counts, total));
    canonical(&counts, false);
    let found = find_state(prompt, &counts, false, cal.state_slots);
    likelihood_state_of[prompt] = found.slot;
    // Computed at one place in one kernel, whoever stores them.
    if found.owned || found.slot == NO_STATE {
        var scaled: array<f32, COMPONENTS>;
        scaled_likelihoods(&counts, &scaled);
        if found.owned {
            for (var g = 0u; g < COMPONENTS; g++) {
                state_likelihoods[found.slot * COMPONENTS + g] = scaled[g];
            }
        } else {
            // No slot: the prompt caches its own (expect then reads them).
            for (var g = 0u; g < COMPONENTS; g++) {
                cache(prompt, g, scaled[g]);
            }
            cache(prompt, STAMP, bitcast<f32>(total + 1u));
        }
    }
}

@compute @workgroup_size(WG)
fn calibrated_states(@builtin(global_invocation_id) id: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let position = id.x + id.y * groups.x * WG;
    if position >= cal.listed {
        return;
    }
    let prompt = cal_list[position];
    var found = NO_STATE;
    // Prompts at the budget or without votes need no risk.
    if cal_votes[prompt].total < BUDGET && cal_votes[prompt].distinct > 0u {
        var counts = load_counts(prompt);
        let leader = canonical(&counts, true);
        let state = find_state(prompt, &counts, true, 0u);
        // A prompt whose state has no slot keeps its risk past the table,
        // at its position.
        found = select(state.slot, cal.state_slots + position, state.slot == NO_STATE);
        // Computed at one place in one kernel, whoever stores it.
        if state.owned || state.slot == NO_STATE {
            state_risk[found] = calibrated_risk(&counts, leader);
        }
    }
    state_of[position] = found;
}

// ---- Deciding ----------------------------------------------------------------

// P(the leader, slot `leader`, is not the majority at the budget) under the
// batch's weights: the twin's `CalibratedModel::risk`. The prompt's
// posterior over the components is computed from `counts`: given them in
// canonical order, the result is the same whichever prompt of the state
// computes it.
fn calibrated_risk(counts: ptr<function, Counts>, leader: u32) -> f32 {
    let n = (*counts).n;
    if n >= BUDGET {
        return 0.0;
    }
    let remaining = BUDGET - n;
    let m = (*counts).m;
    let c_l = (*counts).c[leader];
    var post: array<f32, COMPONENTS>;
    scaled_likelihoods(counts, &post);
    var total = 0.0;
    for (var g = 0u; g < COMPONENTS; g++) {
        post[g] *= model[WEIGHTS + g];
        total += post[g];
    }
    let choices = select(m, m + 1u, m < CATEGORIES);
    // The races this prompt reads (NO_RACE: one that cannot be lost), by
    // choice: the leader dominant against choice d, and choice d dominant.
    var leader_races: array<u32, CAPACITY_AND_UNSEEN>;
    var competitor_races: array<u32, CAPACITY_AND_UNSEEN>;
    for (var d = 0u; d < choices; d++) {
        var c_d = 0u;
        if d < m {
            c_d = (*counts).c[d];
        }
        let tie = select(0u, 1u, d < leader);
        leader_races[d] = NO_RACE;
        competitor_races[d] = NO_RACE;
        if d != leader && c_d + remaining >= c_l {
            leader_races[d] = race_entry(SIDE_LEADER, tie, n, c_l, c_d);
            competitor_races[d] = race_entry(SIDE_COMPETITOR, tie, n, c_d, c_l);
        }
    }
    // Each unseen category may pass the leader.
    let unseen_times = select(1.0, unseen(counts), m < CATEGORIES);
    var risk = 0.0;
    for (var g = 0u; g < COMPONENTS; g++) {
        let p = post[g] / total;
        if p < 1e-12 {
            continue;
        }
        var terms = choice_terms(g, counts);
        // The leader dominant: any competitor, seen or not, may pass it.
        var leader_dominant = 0.0;
        for (var d = 0u; d < choices; d++) {
            if leader_races[d] != NO_RACE {
                leader_dominant += select(1.0, unseen_times, d == m)
                    * model[race_index(g, leader_races[d])];
            }
        }
        var r = choice_probability(g, counts, leader, &terms) * min(leader_dominant, 1.0);
        // Another category dominant: it races the leader.
        for (var d = 0u; d < choices; d++) {
            if competitor_races[d] != NO_RACE {
                r += choice_probability(g, counts, d, &terms)
                    * model[race_index(g, competitor_races[d])];
            }
        }
        risk += p * r;
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
    let leader = leader_slot(&counts);
    var consensus = NO_CONSENSUS;
    if counts.m > 0u {
        consensus = cal_tables[prompt * CAPACITY + leader].x;
    }
    var stopped = total >= BUDGET;
    var confidence = 1.0;
    if !stopped {
        var risk = 1.0;
        // NO_STATE: a prompt without votes.
        let state = state_of[position];
        if state != NO_STATE {
            risk = state_risk[state];
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
}
