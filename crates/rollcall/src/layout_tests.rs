//! Layout tests: every fact the host shares with a shader, read from naga's
//! reflection of the shader variants the crate builds (no device needed), so
//! that none is only copied.
//!
//! - Every Rust mirror of a WGSL struct the host writes or reads has the
//!   shader's size, member offsets, member sizes and scalar kinds (names
//!   mapped where they differ); uniforms built as bytes put each member at
//!   the shader's offset; every struct reachable from a uniform or storage
//!   binding is one of these (a new one fails until it is checked here).
//! - The workgroup memory of every kernel, as WebGPU counts it, against the
//!   host's budget for the sampling kernel and the default limits.
//! - Every constant and code the host (or a CPU twin) copies, and every
//!   workgroup width the host dispatches by, against the shader's value;
//!   prepended constants reach the shader.
//!
//! The sampling shader's "is this row filtered" rule is the one copy that
//! cannot be checked here: see `GpuRowParams::is_filtered`.

use crate::gpu::shader::ShaderVariant;
use crate::math::segment::SEGMENT_LANES;
use crate::shader_tests::{all_variants, validated_module, wgsl_u32};
use naga::{AddressSpace, Literal, Module, ScalarKind, TypeInner};
use std::mem::{offset_of, size_of};

// ---- Reflection helpers -----------------------------------------------------

/// A validated variant.
struct Reflected {
    label: String,
    entry_point: &'static str,
    module: Module,
    info: naga::valid::ModuleInfo,
}

fn reflect(variant: &ShaderVariant) -> Reflected {
    let (module, info) = validated_module(variant);
    Reflected {
        label: variant.label.clone(),
        entry_point: variant.entry_point,
        module,
        info,
    }
}

impl Reflected {
    fn entry_index(&self) -> usize {
        self.module
            .entry_points
            .iter()
            .position(|e| e.name == self.entry_point)
            .unwrap_or_else(|| panic!("{}: no entry point {}", self.label, self.entry_point))
    }

    /// The entry point's workgroup width (every kernel is one-dimensional).
    fn workgroup_width(&self) -> u32 {
        let [x, y, z] = self.module.entry_points[self.entry_index()].workgroup_size;
        assert_eq!((y, z), (1, 1), "{}: a 1-D workgroup", self.label);
        x
    }

    /// Workgroup memory the entry point uses as WebGPU counts it against
    /// `maxComputeWorkgroupStorageSize`: every `var<workgroup>` the entry
    /// point uses, each rounded up to 16 bytes.
    fn workgroup_bytes(&self) -> u32 {
        let used = self.info.get_entry_point(self.entry_index());
        self.module
            .global_variables
            .iter()
            .filter(|(h, g)| g.space == AddressSpace::WorkGroup && !used[*h].is_empty())
            .map(|(_, g)| {
                self.module.types[g.ty]
                    .inner
                    .size(self.module.to_ctx())
                    .div_ceil(16)
                    * 16
            })
            .sum()
    }

    fn u32(&self, name: &str) -> u32 {
        wgsl_u32(&self.module, name)
    }

    fn f32(&self, name: &str) -> f32 {
        match self.literal(name) {
            Literal::F32(v) => v,
            other => panic!("{}: {name} is not an f32: {other:?}", self.label),
        }
    }

    fn bool(&self, name: &str) -> bool {
        match self.literal(name) {
            Literal::Bool(v) => v,
            other => panic!("{}: {name} is not a bool: {other:?}", self.label),
        }
    }

    fn literal(&self, name: &str) -> Literal {
        let (_, constant) = self
            .module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no constant {name}", self.label));
        match self.module.global_expressions[constant.init] {
            naga::Expression::Literal(v) => v,
            ref other => panic!("{}: {name} is not a literal: {other:?}", self.label),
        }
    }

    /// The struct type `name`: its size and members.
    fn wgsl_struct(&self, name: &str) -> (u32, &[naga::StructMember]) {
        self.module
            .types
            .iter()
            .find_map(|(_, t)| match &t.inner {
                TypeInner::Struct { members, span } if t.name.as_deref() == Some(name) => {
                    Some((*span, members.as_slice()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: no struct {name}", self.label))
    }

    /// Member `member` of struct `name`.
    fn member(&self, name: &str, member: &str) -> &naga::StructMember {
        self.wgsl_struct(name)
            .1
            .iter()
            .find(|m| m.name.as_deref() == Some(member))
            .unwrap_or_else(|| panic!("{}: {name} has no member {member}", self.label))
    }

    /// The scalar kind of a scalar, vector, atomic or array type (`None` for
    /// a struct).
    fn scalar_kind(&self, ty: naga::Handle<naga::Type>) -> Option<ScalarKind> {
        match self.module.types[ty].inner {
            TypeInner::Scalar(s) | TypeInner::Atomic(s) | TypeInner::Vector { scalar: s, .. } => {
                Some(s.kind)
            }
            TypeInner::Array { base, .. } => self.scalar_kind(base),
            _ => None,
        }
    }

    fn size_of(&self, ty: naga::Handle<naga::Type>) -> u32 {
        self.module.types[ty].inner.size(self.module.to_ctx())
    }

    /// The value of 4-byte member `member` of struct `name` in `bytes` (a
    /// value of that struct as the host builds it), read as the member's
    /// scalar kind.
    fn read(&self, bytes: &[u8], name: &str, member: &str) -> Value {
        let m = self.member(name, member);
        assert_eq!(self.size_of(m.ty), 4, "{name}.{member}: a 4-byte member");
        let at = m.offset as usize;
        let word: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        match self.scalar_kind(m.ty) {
            Some(ScalarKind::Uint) => Value::U32(u32::from_le_bytes(word)),
            Some(ScalarKind::Float) => Value::F32(f32::from_le_bytes(word)),
            other => panic!("{name}.{member}: unexpected kind {other:?}"),
        }
    }
}

/// A 4-byte member as the shader reads it.
#[derive(Debug, PartialEq)]
enum Value {
    U32(u32),
    F32(f32),
}

/// Every variant of every kernel, validated.
fn every_variant() -> Vec<Reflected> {
    all_variants().iter().map(reflect).collect()
}

/// The variants of one kernel family (by label prefix).
fn family(variants: &[Reflected], prefix: &str) -> Vec<usize> {
    let found: Vec<usize> = (0..variants.len())
        .filter(|&i| variants[i].label.starts_with(prefix))
        .collect();
    assert!(!found.is_empty(), "no variants {prefix}");
    found
}

// ---- Struct mirrors ---------------------------------------------------------

/// The scalar kind of a Rust field type as a shader would read its bytes.
trait HostScalar {
    const KIND: ScalarKind;
}
impl HostScalar for u32 {
    const KIND: ScalarKind = ScalarKind::Uint;
}
impl HostScalar for f32 {
    const KIND: ScalarKind = ScalarKind::Float;
}
impl<T: HostScalar, const N: usize> HostScalar for [T; N] {
    const KIND: ScalarKind = T::KIND;
}

/// Where a Rust mirror keeps one WGSL member: byte offset, bytes, kind.
struct Field {
    wgsl: &'static str,
    offset: usize,
    size: usize,
    kind: ScalarKind,
}

fn field_size<T, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}
fn field_kind<T, F: HostScalar>(_: impl Fn(&T) -> &F) -> ScalarKind {
    F::KIND
}
fn element_size<T, E, const N: usize>(_: impl Fn(&T) -> &[E; N]) -> usize {
    size_of::<E>()
}

/// `field!("wgsl_member", RustType, rust_field)`, or `rust_field[i]` for
/// element `i` of a Rust array that the shader splits into members.
macro_rules! field {
    ($wgsl:literal, $t:ty, $f:ident) => {
        Field {
            wgsl: $wgsl,
            offset: offset_of!($t, $f),
            size: field_size(|v: &$t| &v.$f),
            kind: field_kind(|v: &$t| &v.$f),
        }
    };
    ($wgsl:literal, $t:ty, $f:ident[$i:literal]) => {
        Field {
            wgsl: $wgsl,
            offset: offset_of!($t, $f) + $i * element_size(|v: &$t| &v.$f),
            size: element_size(|v: &$t| &v.$f),
            kind: field_kind(|v: &$t| &v.$f),
        }
    };
}

/// The WGSL struct `name` and its Rust mirror of `size` bytes with `fields`
/// (in the shader's member order) agree: size, every member's offset, size
/// and scalar kind, and the fields cover the mirror without gaps.
fn check_mirror(r: &Reflected, name: &str, size: usize, fields: &[Field]) {
    let (span, members) = r.wgsl_struct(name);
    let at = format!("{}: {name}", r.label);
    assert_eq!(span as usize, size, "{at}: size");
    let wgsl: Vec<&str> = members.iter().map(|m| m.name.as_deref().unwrap()).collect();
    let rust: Vec<&str> = fields.iter().map(|f| f.wgsl).collect();
    assert_eq!(wgsl, rust, "{at}: members");
    let mut end = 0;
    for (m, f) in members.iter().zip(fields) {
        assert_eq!(m.offset as usize, f.offset, "{at}.{}: offset", f.wgsl);
        assert_eq!(r.size_of(m.ty) as usize, f.size, "{at}.{}: size", f.wgsl);
        assert_eq!(r.scalar_kind(m.ty), Some(f.kind), "{at}.{}: kind", f.wgsl);
        assert_eq!(
            f.offset, end,
            "{at}.{}: the mirror has a gap before it",
            f.wgsl
        );
        end = f.offset + f.size;
    }
    assert_eq!(end, size, "{at}: the mirror has bytes past the last member");
}

/// Checks the struct `name` against the host when the host shares it;
/// `false` for a struct the host does not know.
fn check_shared_struct(r: &Reflected, name: &str) -> bool {
    use crate::compact::CompactParams;
    use crate::gpu::logits::{ChunkInfo, RECORD_BYTES};
    use crate::math::philox::PhiloxInput;
    use crate::sampling::edits::{GpuEditParams, GpuEditRowState, GpuEntry};
    use crate::sampling::gpu::{GpuRowResult, PARTIAL_BYTES};
    use crate::sampling::GpuRowParams;
    use crate::tail::{EstimateParams, OrderParams};
    use crate::voting::rules::GpuRule;
    use crate::voting::{GpuDecision, GpuPromptVotes, GpuSegment};
    match name {
        "RowParams" => check_mirror(
            r,
            name,
            size_of::<GpuRowParams>(),
            &[
                field!("inv_temperature", GpuRowParams, inv_temperature),
                field!("top_k", GpuRowParams, top_k),
                field!("top_p", GpuRowParams, top_p),
                field!("log_min_p", GpuRowParams, log_min_p),
                field!("seed_lo", GpuRowParams, seed[0]),
                field!("seed_hi", GpuRowParams, seed[1]),
                field!("step_lo", GpuRowParams, step[0]),
                field!("step_hi", GpuRowParams, step[1]),
                field!("flags", GpuRowParams, flags),
                field!("mask_row", GpuRowParams, mask_row),
                field!("top_n_sigma", GpuRowParams, top_n_sigma),
                field!("top_logprobs", GpuRowParams, top_logprobs),
                field!("logits_row", GpuRowParams, logits_row),
                field!("probe", GpuRowParams, probe),
                field!("_pad1", GpuRowParams, pad[0]),
                field!("_pad2", GpuRowParams, pad[1]),
            ],
        ),
        "RowResult" => check_mirror(
            r,
            name,
            size_of::<GpuRowResult>(),
            &[
                field!("logprob", GpuRowResult, logprob),
                field!("status", GpuRowResult, status),
                field!("kept", GpuRowResult, kept),
                field!("probe_logprob", GpuRowResult, probe_logprob),
            ],
        ),
        // Never read by the host: only its size is shared.
        "StreamPartial" => {
            assert_eq!(
                u64::from(r.wgsl_struct(name).0),
                PARTIAL_BYTES,
                "{}",
                r.label
            );
        }
        "ChunkInfo" => {
            check_mirror(
                r,
                name,
                size_of::<ChunkInfo>(),
                &[
                    field!("rows", ChunkInfo, rows),
                    field!("vocab", ChunkInfo, vocab),
                    field!("elem_base", ChunkInfo, elem_base),
                    field!("row_base", ChunkInfo, row_base),
                    field!("tiles", ChunkInfo, tiles),
                    field!("gather", ChunkInfo, gather),
                    field!("logits_base", ChunkInfo, logits_base),
                    field!("loads", ChunkInfo, loads),
                ],
            );
            assert_eq!(u64::from(r.wgsl_struct(name).0), RECORD_BYTES);
        }
        "PromptVotes" => check_mirror(
            r,
            name,
            size_of::<GpuPromptVotes>(),
            &[
                field!("total", GpuPromptVotes, total),
                field!("distinct", GpuPromptVotes, distinct),
                field!("overflow", GpuPromptVotes, overflow),
                field!("run_answer", GpuPromptVotes, run_answer),
                field!("run_length", GpuPromptVotes, run_length),
                field!("tokens_lo", GpuPromptVotes, tokens_lo),
                field!("tokens_hi", GpuPromptVotes, tokens_hi),
                field!("_pad", GpuPromptVotes, pad),
            ],
        ),
        "Segment" => check_mirror(
            r,
            name,
            size_of::<GpuSegment>(),
            &[
                field!("prompt", GpuSegment, prompt),
                field!("start", GpuSegment, start),
                field!("count", GpuSegment, count),
                field!("_pad", GpuSegment, pad),
            ],
        ),
        "Decision" => check_mirror(
            r,
            name,
            size_of::<GpuDecision>(),
            &[
                field!("stopped", GpuDecision, stopped),
                field!("consensus", GpuDecision, consensus),
                field!("confidence", GpuDecision, confidence),
                field!("votes", GpuDecision, votes),
            ],
        ),
        "Rule" => check_mirror(
            r,
            name,
            size_of::<GpuRule>(),
            &[
                field!("kind", GpuRule, kind),
                field!("min_votes", GpuRule, min_votes),
                field!("max_votes", GpuRule, max_votes),
                field!("count", GpuRule, count),
                field!("c", GpuRule, c),
            ],
        ),
        "DecideParams" => check_decide_params(r),
        "CalibratedParams" => {
            use crate::voting::calibrated::gpu::CalibratedParams as P;
            check_mirror(
                r,
                name,
                size_of::<P>(),
                &[
                    field!("prompts", P, prompts),
                    field!("groups", P, groups),
                    field!("groups_x", P, groups_x),
                    field!("listed", P, listed),
                    field!("delta", P, delta),
                    field!("min_votes", P, min_votes),
                    field!("races", P, races),
                    field!("cache_split", P, cache_split),
                    field!("state_slots", P, state_slots),
                    field!("_pad0", P, _pad[0]),
                    field!("_pad1", P, _pad[1]),
                    field!("_pad2", P, _pad[2]),
                ],
            )
        }
        "CountParams" => check_count_params(r),
        "RewardParams" => check_reward_params(r),
        "CompactParams" => check_mirror(
            r,
            name,
            size_of::<CompactParams>(),
            &[
                field!("n", CompactParams, n),
                field!("blocks", CompactParams, blocks),
                field!("blocks_x", CompactParams, blocks_x),
                field!("with_values", CompactParams, with_values),
            ],
        ),
        "OrderParams" => check_mirror(
            r,
            name,
            size_of::<OrderParams>(),
            &[
                field!("segments", OrderParams, segments),
                field!("k", OrderParams, k),
                field!("groups_x", OrderParams, groups_x),
                field!("rollouts", OrderParams, rollouts),
                field!("element_groups_x", OrderParams, element_groups_x),
                field!("large_segments", OrderParams, large_segments),
                field!("pad0", OrderParams, pad[0]),
                field!("pad1", OrderParams, pad[1]),
            ],
        ),
        "EstimateParams" => check_mirror(
            r,
            name,
            size_of::<EstimateParams>(),
            &[
                field!("segments", EstimateParams, segments),
                field!("kind", EstimateParams, kind),
                field!("n", EstimateParams, n),
                field!("prefixes", EstimateParams, prefixes),
                field!("alpha", EstimateParams, alpha),
                field!("c_tilde", EstimateParams, c_tilde),
                field!("threshold", EstimateParams, threshold),
                field!("groups_x", EstimateParams, groups_x),
            ],
        ),
        "HistoryEntry" => check_mirror(
            r,
            name,
            size_of::<GpuEntry>(),
            &[
                field!("token", GpuEntry, token),
                field!("counts", GpuEntry, counts),
                field!("bias", GpuEntry, bias),
                field!("saved", GpuEntry, saved),
            ],
        ),
        "EditParams" => check_mirror(
            r,
            name,
            size_of::<GpuEditParams>(),
            &[
                field!("repetition", GpuEditParams, repetition),
                field!("inv_repetition", GpuEditParams, inv_repetition),
                field!("presence", GpuEditParams, presence),
                field!("frequency", GpuEditParams, frequency),
                field!("min_tokens", GpuEditParams, min_tokens),
                field!("flags", GpuEditParams, flags),
                field!("slot_shift", GpuEditParams, slot_shift),
                field!("_pad", GpuEditParams, pad),
            ],
        ),
        "HistoryInfo" => {
            use crate::sampling::edits::GpuHistoryInfo as H;
            check_mirror(
                r,
                name,
                size_of::<H>(),
                &[
                    field!("rows", H, rows),
                    field!("slot_shift", H, slot_shift),
                    field!("vocab", H, vocab),
                    field!("grid_width", H, grid_width),
                ],
            )
        }
        "PositionHistory" => {
            use crate::sampling::edits::GpuPositionHistory as P;
            check_mirror(
                r,
                name,
                size_of::<P>(),
                &[
                    field!("request", P, request),
                    field!("first_draft", P, first_draft),
                    field!("prefix", P, prefix),
                    field!("_pad", P, pad),
                ],
            )
        }
        "VerifyRow" => {
            use crate::speculative::GpuVerifyRow as V;
            check_mirror(
                r,
                name,
                size_of::<V>(),
                &[
                    field!("first_target", V, first_target),
                    field!("drafts", V, drafts),
                    field!("first_draft", V, first_draft),
                    field!("flags", V, flags),
                    field!("seed_lo", V, seed[0]),
                    field!("seed_hi", V, seed[1]),
                    field!("step_lo", V, step[0]),
                    field!("step_hi", V, step[1]),
                    field!("draft_elem", V, draft_elem),
                    field!("_pad0", V, pad[0]),
                    field!("_pad1", V, pad[1]),
                    field!("_pad2", V, pad[2]),
                ],
            )
        }
        "Verdict" => {
            use crate::speculative::GpuVerdict as V;
            check_mirror(
                r,
                name,
                size_of::<V>(),
                &[
                    field!("accepted", V, accepted),
                    field!("emitted", V, emitted),
                    field!("status", V, status),
                    field!("mode", V, mode),
                    field!("first_target", V, first_target),
                    field!("draft_row", V, draft_row),
                    field!("draft_elem", V, draft_elem),
                    field!("out_base", V, out_base),
                ],
            )
        }
        "VerifyInfo" => {
            use crate::speculative::VerifyInfo as V;
            check_mirror(
                r,
                name,
                size_of::<V>(),
                &[
                    field!("requests", V, requests),
                    field!("stride", V, stride),
                    field!("draft_rows", V, draft_rows),
                    field!("rows", V, rows),
                    field!("grid_width", V, grid_width),
                    field!("elem_base", V, elem_base),
                    field!("out_elem_base", V, out_elem_base),
                    field!("_pad2", V, pad),
                ],
            )
        }
        "StateRecord" => {
            use crate::sampling::GpuRowState as S;
            check_mirror(
                r,
                name,
                size_of::<S>(),
                &[
                    field!("row_max", S, row_max),
                    field!("log_mass", S, log_mass),
                    field!("kept_max", S, kept_max),
                    field!("log_kept_mass", S, log_kept_mass),
                    field!("threshold_key", S, threshold_key),
                    field!("flags", S, flags),
                    field!("log_min_p", S, log_min_p),
                    field!("sigma_n2", S, sigma_n2),
                    field!("sigma_rhs", S, sigma_rhs),
                    field!("inf_count", S, inf_count),
                    field!("inv_temperature", S, inv_temperature),
                    field!("mask_row", S, mask_row),
                    field!("seed_lo", S, seed[0]),
                    field!("seed_hi", S, seed[1]),
                    field!("step_lo", S, step[0]),
                    field!("step_hi", S, step[1]),
                ],
            )
        }
        // A row's top log-probability slots, whose start holds its state.
        "StateSlot" => {
            let (span, members) = r.wgsl_struct(name);
            let slot =
                crate::sampling::MAX_TOP_LOGPROBS as u64 * crate::sampling::TOP_LOGPROB_BYTES;
            assert_eq!(u64::from(span), slot, "{}", r.label);
            assert_eq!(members[0].name.as_deref(), Some("state"));
            assert_eq!(members[0].offset, 0);
        }
        "EditRowState" => check_mirror(
            r,
            name,
            size_of::<GpuEditRowState>(),
            &[
                field!("produced", GpuEditRowState, produced),
                field!("distinct", GpuEditRowState, distinct),
                field!("applied", GpuEditRowState, applied),
                field!("_pad", GpuEditRowState, pad),
            ],
        ),
        "PhiloxInput" => check_mirror(
            r,
            name,
            size_of::<PhiloxInput>(),
            &[
                field!("counter", PhiloxInput, counter),
                field!("key", PhiloxInput, key),
                field!("_pad", PhiloxInput, pad),
            ],
        ),
        _ => return false,
    }
    true
}

/// `GpuRule::decide_params` puts the rule and both words where the shader's
/// `DecideParams` has them, and zeroes the padding.
fn check_decide_params(r: &Reflected) {
    use crate::voting::rules::{DecideParams, GpuRule};
    let (span, members) = r.wgsl_struct("DecideParams");
    assert_eq!(size_of::<DecideParams>(), span as usize, "{}", r.label);
    let names: Vec<&str> = members.iter().map(|m| m.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["rule", "prompts", "want_fewest", "_pad1", "_pad2"]);
    let rule_member = r.member("DecideParams", "rule");
    assert_eq!(
        r.module.types[rule_member.ty].name.as_deref(),
        Some("Rule"),
        "{}: DecideParams.rule",
        r.label
    );
    let rule = GpuRule {
        kind: 7,
        min_votes: 11,
        max_votes: 13,
        count: 17,
        c: [1.5, 2.5, 3.5, 4.5],
    };
    for want_fewest in [true, false] {
        let bytes = rule.decide_params(19, want_fewest);
        // The rule, at its member's offset.
        let at = rule_member.offset as usize;
        let rule_bytes = &bytes[at..at + r.size_of(rule_member.ty) as usize];
        for (member, value) in [
            ("kind", Value::U32(7)),
            ("min_votes", Value::U32(11)),
            ("max_votes", Value::U32(13)),
            ("count", Value::U32(17)),
        ] {
            assert_eq!(r.read(rule_bytes, "Rule", member), value, "Rule.{member}");
        }
        let c = r.member("Rule", "c").offset as usize;
        let floats: &[f32] = bytemuck::cast_slice(&rule_bytes[c..c + 16]);
        assert_eq!(floats, rule.c);
        for (member, value) in [
            ("prompts", Value::U32(19)),
            ("want_fewest", Value::U32(u32::from(want_fewest))),
            ("_pad1", Value::U32(0)),
            ("_pad2", Value::U32(0)),
        ] {
            assert_eq!(r.read(&bytes, "DecideParams", member), value, "{member}");
        }
    }
}

/// `count_params` matches the shader's `CountParams`.
fn check_count_params(r: &Reflected) {
    use crate::voting::gpu::{count_params, CountParams};
    let (span, members) = r.wgsl_struct("CountParams");
    assert_eq!(size_of::<CountParams>(), span as usize, "{}", r.label);
    assert_eq!(members.len(), 4);
    for has_tokens in [true, false] {
        let params = count_params(23, has_tokens);
        let bytes: &[u8] = bytemuck::cast_slice(&params);
        for (member, value) in [
            ("segments", Value::U32(23)),
            ("has_tokens", Value::U32(u32::from(has_tokens))),
            ("_pad0", Value::U32(0)),
            ("_pad1", Value::U32(0)),
        ] {
            assert_eq!(r.read(bytes, "CountParams", member), value, "{member}");
        }
    }
}

/// `reward_params` matches the shader's `RewardParams`.
fn check_reward_params(r: &Reflected) {
    use crate::voting::gpu::{reward_params, RewardParams};
    let (span, members) = r.wgsl_struct("RewardParams");
    assert_eq!(size_of::<RewardParams>(), span as usize, "{}", r.label);
    assert_eq!(members.len(), 4);
    for majority in [true, false] {
        let bytes = reward_params(29, 0.25, majority);
        for (member, value) in [
            ("segments", Value::U32(29)),
            ("eps", Value::F32(0.25)),
            ("majority", Value::U32(u32::from(majority))),
            ("_pad", Value::U32(0)),
        ] {
            assert_eq!(r.read(&bytes, "RewardParams", member), value, "{member}");
        }
    }
}

/// The struct types reachable from `ty` (itself, members, array elements).
fn structs_in(module: &Module, ty: naga::Handle<naga::Type>, out: &mut Vec<String>) {
    match &module.types[ty].inner {
        TypeInner::Struct { members, .. } => {
            out.push(module.types[ty].name.clone().expect("named struct"));
            for m in members {
                structs_in(module, m.ty, out);
            }
        }
        TypeInner::Array { base, .. } => structs_in(module, *base, out),
        _ => {}
    }
}

#[test]
fn every_struct_the_host_shares_matches_its_mirror() {
    let variants = every_variant();
    let mut checked = std::collections::BTreeSet::new();
    for r in &variants {
        // Every struct reachable from a buffer binding: checked, or the
        // test fails until it is.
        let mut shared = Vec::new();
        for (_, g) in r.module.global_variables.iter() {
            if matches!(
                g.space,
                AddressSpace::Uniform | AddressSpace::Storage { .. }
            ) {
                structs_in(&r.module, g.ty, &mut shared);
                // A buffer of structs: the host's slice stride is the
                // struct's size.
                if let TypeInner::Array { base, stride, .. } = r.module.types[g.ty].inner {
                    if let TypeInner::Struct { span, .. } = r.module.types[base].inner {
                        assert_eq!(stride, span, "{}: {:?}", r.label, g.name);
                    }
                }
            }
        }
        shared.sort();
        shared.dedup();
        for name in shared {
            assert!(
                check_shared_struct(r, &name),
                "{}: struct {name} is shared with the host but not checked here",
                r.label
            );
            checked.insert(name);
        }
    }
    // No entry of the table went stale (its struct renamed or gone).
    let expected = [
        "CalibratedParams",
        "ChunkInfo",
        "CompactParams",
        "CountParams",
        "DecideParams",
        "Decision",
        "EditParams",
        "EditRowState",
        "EstimateParams",
        "HistoryEntry",
        "HistoryInfo",
        "OrderParams",
        "PhiloxInput",
        "PositionHistory",
        "PromptVotes",
        "RewardParams",
        "RowParams",
        "RowResult",
        "Rule",
        "Segment",
        "StateRecord",
        "StateSlot",
        "StreamPartial",
        "Verdict",
        "VerifyInfo",
        "VerifyRow",
    ];
    assert_eq!(
        checked.iter().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
}

// ---- Workgroup memory -------------------------------------------------------

/// The host's budget for the sampling kernel's workgroup memory at
/// `candidates`.
fn sampling_budget(candidates: u32) -> u32 {
    crate::sampling::FIXED_WORKGROUP_BYTES + candidates * crate::sampling::CANDIDATE_BYTES
}

/// The sampling kernel's workgroup memory at `candidates` (the same for
/// every feature set and route).
fn sampling_workgroup_bytes(candidates: u32) -> u32 {
    let variants: Vec<_> = crate::sampling::Features::ALL
        .iter()
        .flat_map(|&f| [(f, false, false), (f, true, false), (f, true, true)])
        .map(|(f, wide, subgroups)| {
            crate::sampling::shader(candidates, "sample_rows", f, wide, subgroups)
                .unwrap()
                .variant
        })
        .collect();
    let bytes: Vec<u32> = variants
        .iter()
        .map(|v| reflect(v).workgroup_bytes())
        .collect();
    assert!(bytes.iter().all(|&b| b == bytes[0]), "{bytes:?}");
    bytes[0]
}

/// The host sizes the sampling kernel's workgroup memory as fixed bytes
/// plus bytes per candidate. The per-candidate bytes are exact; the fixed
/// bytes are an upper bound (a budget for the scalars), less than one
/// 64-candidate step above the real use, so the capacity the host picks
/// always fits, and is at most one step below the most that would.
#[test]
fn sampling_workgroup_memory_is_within_the_host_budget() {
    use crate::sampling::{candidate_capacity, CANDIDATE_BYTES, CANDIDATE_RANGE};
    let (fewest, most) = CANDIDATE_RANGE;
    let mut real = std::collections::BTreeMap::new();
    for candidates in (fewest..=most).step_by(64) {
        real.insert(candidates, sampling_workgroup_bytes(candidates));
    }
    let slack = sampling_budget(fewest) - real[&fewest];
    // The top log-probabilities kernel gathers into the same arrays and
    // uses no more.
    for candidates in [fewest, most] {
        for features in crate::sampling::Features::ALL {
            let v = crate::sampling::shader(candidates, "top_logprobs", features, true, true)
                .unwrap()
                .variant;
            let bytes = reflect(&v).workgroup_bytes();
            assert!(bytes <= real[&candidates], "{}: {bytes} bytes", v.label);
        }
    }
    for (&candidates, &bytes) in &real {
        let budget = sampling_budget(candidates);
        assert!(
            bytes <= budget,
            "{candidates} candidates: {bytes} bytes, budget {budget}"
        );
        assert_eq!(
            budget - bytes,
            slack,
            "{candidates} candidates: {CANDIDATE_BYTES} bytes per candidate"
        );
    }
    assert!(
        slack < 64 * CANDIDATE_BYTES,
        "budget {slack} bytes too high"
    );

    // The capacity chosen for every limit from the smallest that fits the
    // capacity's floor up fits the limit.
    let floor = candidate_capacity(0);
    let smallest = sampling_budget(floor);
    for limit in (smallest..=64 << 10).step_by(4) {
        let candidates = candidate_capacity(limit);
        assert!(
            real[&candidates] <= limit,
            "limit {limit}: {candidates} candidates take {} bytes",
            real[&candidates]
        );
    }
    // WebGPU's default limit (and wgpu's downlevel one) is above that.
    for limit in [
        wgpu::Limits::default().max_compute_workgroup_storage_size,
        wgpu::Limits::downlevel_defaults().max_compute_workgroup_storage_size,
    ] {
        assert!(limit >= smallest, "{limit}");
        assert!(candidate_capacity(limit) >= floor);
    }
    // The largest capacity fits 32 KiB; the smallest, 16 KiB.
    assert!(real[&most] <= 32 << 10, "{}", real[&most]);
    assert_eq!(candidate_capacity(32 << 10), most);
    assert!(real[&fewest] <= 16 << 10, "{}", real[&fewest]);
}

/// Every other kernel fits the smallest default limit on its own (the
/// sampling kernel at the capacity the host picks for it, above).
#[test]
fn every_kernel_fits_the_default_workgroup_memory() {
    let limit = wgpu::Limits::downlevel_defaults()
        .max_compute_workgroup_storage_size
        .min(wgpu::Limits::default().max_compute_workgroup_storage_size);
    for r in every_variant() {
        // (The sampling kernels that gather candidates: checked against the
        // host's budget above.)
        if r.entry_point == "sample_rows" || r.entry_point == "top_logprobs" {
            continue;
        }
        let bytes = r.workgroup_bytes();
        assert!(
            bytes <= limit,
            "{}: {bytes} bytes of workgroup memory",
            r.label
        );
    }
}

// ---- Constants and codes ----------------------------------------------------

#[test]
fn sampling_constants_match_the_shader() {
    use crate::gpu::logits::LOADS_VEC4;
    use crate::sampling::{cpu, RowStatus, CANDIDATE_RANGE};
    use crate::LogitsDtype;
    let (fewest, most) = CANDIDATE_RANGE;
    for candidates in [fewest, most] {
        for (entry, wide) in [
            ("sample_rows", false),
            ("sample_rows", true),
            ("stream_partials", false),
            ("finish_rows", false),
        ] {
            let shader =
                crate::sampling::shader(candidates, entry, Default::default(), wide, wide).unwrap();
            assert!(shader.vector_loads);
            {
                let r = reflect(&shader.variant);
                let s = &r.label;
                // The record's `loads`: the dtype's index, and the vector bit
                // above every dtype's.
                assert_eq!(r.u32("LOADS_VEC4"), LOADS_VEC4, "{s}");
                assert!(LogitsDtype::ALL
                    .iter()
                    .all(|d| (d.index() as u32) < LOADS_VEC4));
                assert_eq!(r.bool("WIDE_ROUTES"), wide, "{s}");
                for (name, dtype) in [
                    ("DTYPE_F32", LogitsDtype::F32),
                    ("DTYPE_F16", LogitsDtype::F16),
                    ("DTYPE_BF16", LogitsDtype::Bf16),
                ] {
                    assert_eq!(r.u32(name), dtype.index() as u32, "{s}: {name}");
                }
                // Prepended by the host.
                assert_eq!(r.u32("CANDIDATES"), candidates, "{s}");
                assert_eq!(r.u32("TILE_GROUPS"), crate::sampling::TILE_GROUPS, "{s}");
                // Copied by the host.
                assert_eq!(r.u32("WG"), crate::sampling::STREAMS, "{s}");
                assert_eq!(r.u32("GROUP"), crate::sampling::GROUP, "{s}");
                assert_eq!(r.u32("TILE_TOKENS"), crate::sampling::TILE_TOKENS, "{s}");
                assert_eq!(r.u32("FLAG_GREEDY"), crate::sampling::FLAG_GREEDY, "{s}");
                assert_eq!(r.u32("FLAG_MIN_P"), crate::sampling::FLAG_MIN_P, "{s}");
                assert_eq!(
                    r.u32("FLAG_TOP_N_SIGMA"),
                    crate::sampling::FLAG_TOP_N_SIGMA,
                    "{s}"
                );
                assert_eq!(r.u32("NO_MASK"), crate::sampling::NO_MASK, "{s}");
                assert_eq!(
                    r.u32("FLAG_WRITE_STATE"),
                    crate::sampling::FLAG_WRITE_STATE,
                    "{s}"
                );
                check_state_flags(&r);
                assert_eq!(
                    r.u32("MAX_TOP_LOGPROBS"),
                    crate::sampling::MAX_TOP_LOGPROBS,
                    "{s}"
                );
                assert_eq!(r.u32("NO_INDEX"), crate::NO_TOKEN, "{s}");
                assert_eq!(r.u32("STATUS_OK"), RowStatus::Ok.code(), "{s}");
                assert_eq!(
                    r.u32("STATUS_NO_VALID_TOKEN"),
                    RowStatus::NoValidToken.code(),
                    "{s}"
                );
                // Copied by the CPU twin.
                assert_eq!(r.u32("PURPOSE_STREAM"), cpu::PURPOSE_STREAM, "{s}");
                assert_eq!(r.u32("PURPOSE_TOKEN"), cpu::PURPOSE_TOKEN, "{s}");
                // The reductions' register trees take 16 leaves: the lanes'
                // subtrees (FOLD leaves) and the top (WG / FOLD results).
                assert_eq!(r.u32("FOLD"), 16, "{s}");
                assert_eq!(crate::sampling::STREAMS / r.u32("FOLD"), 16, "{s}");
                assert_eq!(r.u32("F32_POS_INF_BITS"), cpu::POS_INF_BITS, "{s}");
                assert_eq!(
                    r.u32("F32_NEG_INF_BITS"),
                    crate::math::keys::NEG_INF_BITS,
                    "{s}"
                );
                check_philox_constants(&r);
                // One invocation per stream (the host sizes the partials by
                // STREAMS); `finish_rows` folds FOLD streams per lane.
                let width = if entry == "finish_rows" {
                    r.u32("FINISH_WG")
                } else {
                    crate::sampling::STREAMS
                };
                assert_eq!(r.workgroup_width(), width, "{s}");
                assert_eq!(r.u32("FINISH_WG"), r.u32("FOLD"), "{s}");
            }
        }
    }
    // How the host reads a status back.
    assert_eq!(RowStatus::Ok.code(), 0);
    assert_ne!(RowStatus::NoValidToken.code(), RowStatus::Ok.code());
}

/// The Philox constants of `shared/philox.wgsl` and the CPU twin.
fn check_philox_constants(r: &Reflected) {
    use crate::math::philox::{M0, M1, W0, W1};
    for (name, value) in [
        ("PHILOX_M0", M0),
        ("PHILOX_M1", M1),
        ("PHILOX_W0", W0),
        ("PHILOX_W1", W1),
    ] {
        assert_eq!(r.u32(name), value, "{}: {name}", r.label);
    }
}

/// The constants of `shared/special.wgsl` and its twin, bit for bit.
fn check_special_constants(r: &Reflected) {
    use crate::math::special::{HALF_LN_TWO_PI, LN_2, TINY, TWO_POW_64};
    for (name, value) in [
        ("HALF_LN_TWO_PI", HALF_LN_TWO_PI),
        ("LN_2", LN_2),
        ("TWO_POW_64", TWO_POW_64),
        ("TINY", TINY),
    ] {
        assert_eq!(
            r.f32(name).to_bits(),
            value.to_bits(),
            "{}: {name}",
            r.label
        );
    }
}

#[test]
fn other_kernels_constants_match_the_shaders() {
    let variants = every_variant();

    for i in family(&variants, "philox_words") {
        let r = &variants[i];
        check_philox_constants(r);
        assert_eq!(r.workgroup_width(), crate::math::philox::WORKGROUP);
    }

    for i in family(&variants, "read_") {
        let r = &variants[i];
        assert_eq!(
            r.u32("LOADS_VEC4"),
            crate::gpu::logits::LOADS_VEC4,
            "{}",
            r.label
        );
        assert_eq!(
            r.bool("EXP_PER_LOGIT"),
            r.label.ends_with("/exp"),
            "{}",
            r.label
        );
    }

    for i in family(&variants, "speculative/") {
        use crate::sampling::GpuRowParams;
        use crate::speculative as sp;
        let r = &variants[i];
        let s = &r.label;
        assert_eq!(r.u32("PURPOSE_ACCEPT"), sp::PURPOSE_ACCEPT, "{s}");
        assert_eq!(
            r.u32("PURPOSE_RESIDUAL_STREAM"),
            sp::PURPOSE_RESIDUAL_STREAM,
            "{s}"
        );
        assert_eq!(
            r.u32("PURPOSE_RESIDUAL_TOKEN"),
            sp::PURPOSE_RESIDUAL_TOKEN,
            "{s}"
        );
        assert_eq!(r.u32("VERIFY_COMPARE"), sp::VERIFY_COMPARE, "{s}");
        assert_eq!(r.u32("MODE_DONE"), sp::MODE_DONE, "{s}");
        assert_eq!(r.u32("MODE_FILL"), sp::MODE_FILL, "{s}");
        assert_eq!(r.u32("MODE_RESIDUAL"), sp::MODE_RESIDUAL, "{s}");
        assert_eq!(
            r.u32("STATUS_NO_VALID_TOKEN"),
            crate::RowStatus::NoValidToken.code(),
            "{s}"
        );
        assert_eq!(r.u32("WG"), crate::sampling::STREAMS, "{s}");
        assert_eq!(r.u32("GROUP"), crate::sampling::GROUP, "{s}");
        // The sampling kernels' parameters, as words.
        assert_eq!(
            r.u32("PARAMS_WORDS") as usize * 4,
            size_of::<GpuRowParams>(),
            "{s}"
        );
        assert_eq!(
            r.u32("PROBE_WORD") as usize * 4,
            offset_of!(GpuRowParams, probe),
            "{s}"
        );
        assert_eq!(r.u32("NO_MASK"), crate::sampling::NO_MASK, "{s}");
        check_state_flags(r);
        let width = if r.entry_point == "residual_rows" {
            256
        } else {
            64
        };
        assert_eq!(r.workgroup_width(), width, "{s}");
    }

    for i in family(&variants, "compact/") {
        let r = &variants[i];
        assert!(
            [crate::compact::BLOCK, crate::compact::GPU_BLOCK].contains(&r.u32("BLOCK")),
            "{}",
            r.label
        );
        assert_eq!(r.u32("WG") * r.u32("PER_THREAD"), r.u32("BLOCK"));
        assert_eq!(r.workgroup_width(), r.u32("WG"), "{}", r.label);
    }

    for i in family(&variants, "calibrated/") {
        use crate::voting::calibrated::{self as cal, gpu::ModelLayout};
        let r = &variants[i];
        let s = &r.label;
        let mut parts = s.rsplit('/');
        let budget: u32 = parts.next().unwrap().parse().unwrap();
        let capacity: u32 = parts.next().unwrap().parse().unwrap();
        let layout = ModelLayout::new(budget);
        for (name, value) in [
            ("CAPACITY", capacity),
            ("BUDGET", budget),
            ("COMPONENTS", cal::COMPONENTS as u32),
            ("CATEGORIES", cal::CATEGORIES),
            ("MIN_VOTES", cal::MIN_VOTES),
            ("WG", crate::voting::gpu::WORKGROUP),
            ("CACHE_WORDS", cal::gpu::CACHE_WORDS as u32),
            ("SUM_WORDS", cal::gpu::SUM_WORDS as u32),
            ("LANE_PROMPTS", cal::gpu::LANE_PROMPTS),
        ]
        .into_iter()
        .chain(layout.offsets())
        {
            assert_eq!(r.u32(name), value, "{s}: {name}");
        }
        assert_eq!(r.workgroup_width(), crate::voting::gpu::WORKGROUP, "{s}");
    }

    for i in family(&variants, "voting/") {
        use crate::voting::{gpu::WORKGROUP, posterior, rules};
        let r = &variants[i];
        let s = &r.label;
        let capacity: u32 = s.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(r.u32("CAPACITY"), capacity, "{s}");
        assert_eq!(r.u32("WG"), WORKGROUP, "{s}");
        assert_eq!(r.workgroup_width(), WORKGROUP, "{s}");
        assert_eq!(r.u32("NO_CONSENSUS"), rules::NO_CONSENSUS, "{s}");
        // The segment shape: one lane a workgroup invocation.
        assert_eq!(r.u32("SEGMENT_LANES") as usize, SEGMENT_LANES, "{s}");
        assert_eq!(r.u32("SEGMENT_LANES"), WORKGROUP, "{s}");
        assert_eq!(r.u32("DIRICHLET_NODES"), posterior::DIRICHLET_NODES, "{s}");
        for (name, value) in [
            ("GAUSS4_INNER", posterior::GAUSS4_INNER),
            ("GAUSS4_OUTER", posterior::GAUSS4_OUTER),
            ("GAUSS4_INNER_WEIGHT", posterior::GAUSS4_INNER_WEIGHT),
            ("GAUSS4_OUTER_WEIGHT", posterior::GAUSS4_OUTER_WEIGHT),
        ] {
            assert_eq!(r.f32(name).to_bits(), value.to_bits(), "{s}: {name}");
        }
        assert_eq!(
            r.f32("MSPRT_NORMAL_PRIOR").to_bits(),
            posterior::MSPRT_NORMAL_PRIOR.to_bits(),
            "{s}"
        );
        for (name, value) in rules::RULE_KINDS {
            assert_eq!(r.u32(name), value, "{s}: {name}");
        }
        check_special_constants(r);
    }

    for i in family(&variants, "tail/") {
        use crate::tail::{self, cpu};
        let r = &variants[i];
        let s = &r.label;
        // Prepended by the host.
        assert_eq!(r.u32("SMALL_SEGMENT"), tail::SMALL_SEGMENT, "{s}");
        assert_eq!(r.u32("SORT_CHUNK"), tail::SORT_CHUNK, "{s}");
        // Copied by the host.
        assert_eq!(r.u32("ORDER_THREADS"), tail::ORDER_THREADS, "{s}");
        assert_eq!(r.u32("ESTIMATE_THREADS"), tail::ESTIMATE_THREADS, "{s}");
        // The segment shape: one lane a workgroup invocation.
        assert_eq!(r.u32("SEGMENT_LANES") as usize, SEGMENT_LANES, "{s}");
        assert_eq!(r.u32("SEGMENT_LANES"), tail::ESTIMATE_THREADS, "{s}");
        let width = if r.entry_point.starts_with("estimate") {
            tail::ESTIMATE_THREADS
        } else {
            tail::ORDER_THREADS
        };
        assert_eq!(r.workgroup_width(), width, "{s}");
        assert_eq!(r.u32("FULL_SORT"), tail::FULL_SORT, "{s}");
        assert_eq!(r.u32("NO_INDEX"), tail::NO_INDEX, "{s}");
        assert_eq!(r.u32("MAX_PREFIXES"), tail::MAX_PREFIXES, "{s}");
        for (name, value) in [
            ("EST_EXPECTED_MAX", tail::EST_EXPECTED_MAX),
            ("EST_PASS_AT_K", tail::EST_PASS_AT_K),
            ("EST_TEA", tail::EST_TEA),
            ("EST_PREFIX_TEA", tail::EST_PREFIX_TEA),
            ("EST_GPD", tail::EST_GPD),
            ("EST_GRPO", tail::EST_GRPO),
        ] {
            assert_eq!(r.u32(name), value, "{s}: {name}");
        }
        // Copied by the CPU twin, bit for bit.
        for (name, value) in [
            ("FLAT_TAIL", cpu::FLAT_TAIL),
            ("EULER_GAMMA", cpu::EULER_GAMMA),
            ("GPD_XI_MAX", cpu::GPD_XI_MAX),
        ] {
            assert_eq!(r.f32(name).to_bits(), value.to_bits(), "{s}: {name}");
        }
        // The public f64 constant rounds to the shader's.
        assert_eq!(r.f32("EULER_GAMMA"), tail::EULER_GAMMA as f32, "{s}");
        check_special_constants(r);
    }
}

#[test]
fn edits_constants_match_the_shader() {
    use crate::sampling::edits::{self, shader_variants};
    use crate::sampling::RowStatus;
    use crate::LogitsDtype;
    let variants = shader_variants().unwrap();
    let mut entry_points = std::collections::BTreeSet::new();
    for variant in &variants {
        let r = reflect(variant);
        let s = &r.label;
        entry_points.insert(r.entry_point);
        for (name, dtype) in [
            ("DTYPE_F32", LogitsDtype::F32),
            ("DTYPE_F16", LogitsDtype::F16),
            ("DTYPE_BF16", LogitsDtype::Bf16),
        ] {
            assert_eq!(r.u32(name), dtype.index() as u32, "{s}: {name}");
        }
        // Copied by the host and the CPU twin.
        assert_eq!(r.u32("WG"), edits::WORKGROUP, "{s}");
        assert_eq!(r.workgroup_width(), edits::WORKGROUP, "{s}");
        for (name, value) in [
            ("NO_ENTRY", edits::NO_ENTRY),
            ("COUNT_MASK", edits::COUNT_MASK),
            ("IN_PROMPT", edits::IN_PROMPT),
            ("STOP_TOKEN", edits::STOP_TOKEN),
            ("HASH_MULTIPLIER", edits::HASH_MULTIPLIER),
            ("FLAG_PENALTIES", edits::FLAG_PENALTIES),
            ("FLAG_BIAS", edits::FLAG_BIAS),
            ("FLAG_STOP", edits::FLAG_STOP),
            ("CANONICAL_NAN_BITS", edits::CANONICAL_NAN_BITS),
            ("STATUS_OK", RowStatus::Ok.code()),
            ("F32_NEG_INF_BITS", crate::math::keys::NEG_INF_BITS),
            ("NO_ENTRY", edits::NO_REQUEST),
        ] {
            assert_eq!(r.u32(name), value, "{s}: {name}");
        }
        // Speculative verification's verdicts, read as words.
        use crate::speculative::GpuVerdict;
        assert_eq!(
            r.u32("VERDICT_WORDS") as usize * 4,
            size_of::<GpuVerdict>(),
            "{s}"
        );
        assert_eq!(
            r.u32("VERDICT_EMITTED") as usize * 4,
            offset_of!(GpuVerdict, emitted),
            "{s}"
        );
        assert_eq!(
            r.u32("VERDICT_OUT_BASE") as usize * 4,
            offset_of!(GpuVerdict, out_base),
            "{s}"
        );
    }
    assert_eq!(
        entry_points.into_iter().collect::<Vec<_>>(),
        [
            "append_emitted",
            "apply_edits",
            "expand_histories",
            "restore_and_append",
            "round_to_halves"
        ]
    );
    // The count and the two flags split a slot's `counts` word.
    assert_eq!(
        edits::COUNT_MASK & (edits::IN_PROMPT | edits::STOP_TOKEN),
        0
    );
    assert_eq!(
        edits::COUNT_MASK | edits::IN_PROMPT | edits::STOP_TOKEN,
        u32::MAX
    );
    assert!(f32::from_bits(edits::CANONICAL_NAN_BITS).is_nan());
}

/// The host decodes the tail's segment statuses as the shader writes them
/// (their values are checked in `shader_tests`).
#[test]
fn segment_status_codes_round_trip() {
    use crate::tail::SegmentStatus;
    for status in [
        SegmentStatus::Ok,
        SegmentStatus::Empty,
        SegmentStatus::TooFew,
        SegmentStatus::Flat,
        SegmentStatus::Fallback,
    ] {
        assert_eq!(SegmentStatus::from_code(status.code()), status);
    }
}

/// Each estimator sends its own kind (the values are checked against the
/// shader above).
#[test]
fn estimators_send_their_kind() {
    use crate::tail::{self, Estimator};
    for (estimator, kind) in [
        (Estimator::ExpectedMax { n: 4 }, tail::EST_EXPECTED_MAX),
        (
            Estimator::PassAtK {
                k: 2,
                threshold: 0.5,
            },
            tail::EST_PASS_AT_K,
        ),
        (Estimator::Tea { n: 8, alpha: 0.25 }, tail::EST_TEA),
        (
            Estimator::PrefixTea {
                n: 8,
                alpha: 0.25,
                prefixes: 2,
            },
            tail::EST_PREFIX_TEA,
        ),
        (Estimator::Gpd { n: 8, alpha: 0.25 }, tail::EST_GPD),
        (Estimator::Grpo { eps: 1e-6 }, tail::EST_GRPO),
    ] {
        assert_eq!(
            estimator.gpu_params(1, 1).unwrap().kind,
            kind,
            "{estimator:?}"
        );
    }
}

/// The state record's flag bits, shared by the sampling and speculative
/// shaders through `shared/row_state.wgsl`.
fn check_state_flags(r: &Reflected) {
    use crate::sampling::{STATE_HAS_INF, STATE_MIN_P, STATE_SIGMA};
    assert_eq!(r.u32("STATE_HAS_INF"), STATE_HAS_INF, "{}", r.label);
    assert_eq!(r.u32("STATE_MIN_P"), STATE_MIN_P, "{}", r.label);
    assert_eq!(r.u32("STATE_SIGMA"), STATE_SIGMA, "{}", r.label);
}
