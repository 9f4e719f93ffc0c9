//! Every shader variant parses and validates with naga; no device needed.

use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_variant_validates_with_naga() {
    let variants = rollcall::shader::all_variants().expect("shaders compose");
    assert!(!variants.is_empty());
    for variant in variants {
        let module = naga::front::wgsl::parse_str(&variant.source)
            .unwrap_or_else(|e| panic!("{}: {}", variant.label, e.emit_to_string(&variant.source)));
        // The variants need no optional feature: validate with no capabilities.
        assert!(
            variant.features.is_empty(),
            "{} needs {:?}",
            variant.label,
            variant.features
        );
        Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", variant.label, e.emit_to_string(&variant.source)));
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
fn every_shader_file_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(
                rollcall::shader::source(&name).is_some(),
                "{name} is not in shader::SOURCES"
            );
        }
    }
}

#[test]
fn missing_include_is_an_error() {
    assert!(rollcall::shader::compose("no_such.wgsl", "").is_err());
}
