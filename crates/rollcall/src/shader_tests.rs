//! Every shader variant the crate builds parses and validates with naga (no
//! device needed), every WGSL file is embedded, and includes resolve.

use crate::gpu::shader::{all_sources, compose, source, ShaderVariant};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// Every variant of every kernel family, each family listing its own.
pub(crate) fn all_variants() -> Vec<ShaderVariant> {
    let (fewest, most) = crate::sampling::CANDIDATE_RANGE;
    let mut all = Vec::new();
    for candidates in [fewest, most] {
        for entry in [
            "sample_rows",
            "stream_partials",
            "finish_rows",
            "top_logprobs",
        ] {
            for features in crate::sampling::Features::ALL {
                for wide in [false, true] {
                    for subgroups in [false, true] {
                        all.push(
                            crate::sampling::shader(candidates, entry, features, wide, subgroups)
                                .unwrap()
                                .variant,
                        );
                    }
                }
            }
        }
    }
    all.extend(crate::math::philox::shader_variants().unwrap());
    for subgroups in [false, true] {
        all.extend(crate::math::fold::shader_variants(subgroups).unwrap());
    }
    for (exp_per_logit, vector_loads) in [(false, false), (false, true), (true, false)] {
        all.push(
            crate::read_once::shader(exp_per_logit, vector_loads)
                .unwrap()
                .variant,
        );
    }
    for per_thread in [4, 32] {
        all.extend(crate::compact::shader_variants(per_thread).unwrap());
    }
    for capacity in [1, crate::voting::DEFAULT_CAPACITY, 256] {
        all.extend(crate::voting::gpu::shader_variants(capacity).unwrap());
    }
    for (capacity, budget) in [(1, 1), (crate::voting::DEFAULT_CAPACITY, 40), (256, 64)] {
        all.extend(crate::voting::calibrated::shader_variants(capacity, budget).unwrap());
    }
    all.extend(crate::tail::shader_variants().unwrap());
    all.extend(crate::sampling::edits::shader_variants().unwrap());
    all.extend(crate::speculative::gpu::shader_variants().unwrap());
    all
}

/// Parses and validates a variant with no optional capability but
/// subgroup operations in compute shaders for the variants that fold by
/// subgroups (labelled so).
pub(crate) fn validated_module(variant: &ShaderVariant) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(&variant.source)
        .unwrap_or_else(|e| panic!("{}: {}", variant.label, e.emit_to_string(&variant.source)));
    let mut validator = if variant.label.contains("/subgroups") {
        let mut v = Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP);
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        v
    } else {
        Validator::new(ValidationFlags::all(), Capabilities::empty())
    };
    let info = validator
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", variant.label, e.emit_to_string(&variant.source)));
    (module, info)
}

#[test]
fn every_variant_validates_with_naga() {
    let variants = all_variants();
    assert!(variants.len() > 20, "{} variants", variants.len());
    for variant in &variants {
        let (module, _) = validated_module(variant);
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == variant.entry_point),
            "{} lacks entry point {}",
            variant.label,
            variant.entry_point
        );
    }
}

#[test]
fn every_shader_file_is_embedded_and_nothing_else() {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "wgsl") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    for name in &files {
        assert!(source(name).is_some(), "{name} is not embedded");
    }
    assert_eq!(
        files.len(),
        all_sources().len(),
        "embedded files without a file"
    );
}

#[test]
fn missing_include_is_an_error() {
    assert!(compose("no_such.wgsl", "").is_err());
}

/// The value of a `u32` module-scope constant of `module`.
pub(crate) fn wgsl_u32(module: &naga::Module, name: &str) -> u32 {
    let (_, constant) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no constant {name}"));
    match module.global_expressions[constant.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref other => panic!("{name} is not a u32 literal: {other:?}"),
    }
}

#[test]
fn segment_status_codes_match_the_tail_shader() {
    use crate::tail::SegmentStatus;
    let variant = &crate::tail::shader_variants().unwrap()[0];
    let (module, _) = validated_module(variant);
    for (status, name) in [
        (SegmentStatus::Ok, "STATUS_OK"),
        (SegmentStatus::Empty, "STATUS_EMPTY"),
        (SegmentStatus::TooFew, "STATUS_TOO_FEW"),
        (SegmentStatus::Flat, "STATUS_FLAT"),
        (SegmentStatus::Fallback, "STATUS_FALLBACK"),
    ] {
        assert_eq!(status.code(), wgsl_u32(&module, name), "{name}");
    }
}

#[test]
fn rule_kinds_reach_the_voting_shader_from_one_definition() {
    let variant = &crate::voting::gpu::shader_variants(4).unwrap()[1];
    let (module, _) = validated_module(variant);
    for (name, value) in crate::voting::rules::RULE_KINDS {
        assert_eq!(wgsl_u32(&module, name), value, "{name}");
    }
}
