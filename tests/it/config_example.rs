//! `config/tthc-sync.example.toml` documents every configuration key: the keys are derived from the
//! settings structs themselves (traced through their `Deserialize` with serde-reflection), so a key added
//! to a struct and not to the example fails here.

use std::collections::BTreeSet;

use serde_reflection::{ContainerFormat, Format, Registry, Tracer, TracerConfig};
use tthc_sync::config::Settings;

const EXAMPLE: &str = include_str!("../../config/tthc-sync.example.toml");

/// Every key path of `Settings` (`source.http.ca_file`), walking nested settings and optional sections.
fn settings_keys() -> BTreeSet<String> {
    let mut tracer = Tracer::new(TracerConfig::default());
    tracer
        .trace_simple_type::<Settings>()
        .expect("the settings can be traced");
    let registry = tracer.registry().expect("the trace is complete");
    let mut keys = BTreeSet::new();
    walk(&registry, "Settings", "", &mut keys);
    keys
}

fn walk(registry: &Registry, container: &str, prefix: &str, keys: &mut BTreeSet<String>) {
    let Some(ContainerFormat::Struct(fields)) = registry.get(container) else {
        panic!("{container} is not a struct in the trace");
    };
    for field in fields {
        let path = if prefix.is_empty() {
            field.name.clone()
        } else {
            format!("{prefix}.{}", field.name)
        };
        let mut format = &field.value;
        if let Format::Option(inner) = format {
            format = inner;
        }
        match format {
            Format::TypeName(name) => walk(registry, name, &path, keys),
            _ => {
                keys.insert(path);
            }
        }
    }
}

/// The keys the example mentions, set or commented out (`# key = …`), under their `[section]` (also when
/// the section header itself is commented out).
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches(['#', ' ']).trim_end();
        if let Some(header) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = header.to_owned();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn the_example_configuration_documents_every_key() {
    let keys = settings_keys();
    assert!(
        keys.contains("source.base_url") && keys.contains("reconcile.log_dir"),
        "the trace walks the settings: {keys:?}"
    );
    let documented = example_keys();
    let missing: Vec<&String> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "config/tthc-sync.example.toml lacks {} key(s): {missing:?}",
        missing.len()
    );
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        unknown.is_empty(),
        "config/tthc-sync.example.toml names key(s) the settings do not have: {unknown:?}"
    );
}

#[test]
fn the_example_configuration_is_valid_as_written() {
    // Without its secrets (they do not belong in the file), the example still parses and validates.
    Settings::from_toml(EXAMPLE).expect("the example is a valid configuration");
}
