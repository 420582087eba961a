//! Property tests: generated configuration validates, round-trips through YAML and JSON,
//! and no input makes the parser panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use mesh_model::strategy::{self, mesh_set};
use mesh_model::{Config, Duration, StringMatch, parse_str, validate};
use proptest::prelude::*;

fn errors(c: &Config) -> Vec<String> {
    validate(c)
        .into_iter()
        .filter(|f| f.is_error())
        .map(|f| f.to_string())
        .collect()
}

fn to_yaml(c: &Config) -> String {
    serde_saphyr::to_string(c).expect("serialize")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_resources_validate(config in strategy::any_config()) {
        let e = errors(&config);
        prop_assert!(e.is_empty(), "{e:#?}\n{}", to_yaml(&config));
    }

    #[test]
    fn yaml_round_trip(config in strategy::any_config()) {
        let yaml = to_yaml(&config);
        let parsed = parse_str(&yaml, "gen.yaml");
        prop_assert!(parsed.findings.is_empty(), "{:?}\n{yaml}", parsed.findings);
        prop_assert_eq!(parsed.resources.len(), 1);
        prop_assert!(parsed.resources[0].findings.is_empty(), "{:?}", parsed.resources[0].findings);
        prop_assert_eq!(&parsed.resources[0].config, &config, "{}", yaml);
    }

    #[test]
    fn json_round_trip(config in strategy::any_config()) {
        let json = serde_json::to_string_pretty(&config).unwrap();
        let parsed = parse_str(&json, "gen.json");
        prop_assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        prop_assert_eq!(&parsed.resources[0].config, &config);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let _ = parse_str(&text, "fuzz.yaml");
        let _ = parse_str(&text, "fuzz.json");
        let _ = mesh_model::parse_mesh_config(&text);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = mesh_model::parse_reader(&bytes[..], "fuzz.yaml");
    }

    /// Mutations of valid manifests: truncations and random byte flips hit the deeper parser
    /// and validator paths that random text rarely reaches.
    #[test]
    fn mutated_manifests_never_panic(config in strategy::any_config(), cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
        let yaml = to_yaml(&config);
        let mut bytes = yaml.into_bytes();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let out = mesh_model::parse_reader(&bytes[..], "m.yaml").unwrap();
        for r in &out.resources {
            let _ = r.check(&Default::default());
        }
    }

    #[test]
    fn duration_display_parses_back(ms in 0u64..10_000_000_000, ns in 0u32..1_000_000) {
        let d = Duration::from_std(std::time::Duration::from_millis(ms) + std::time::Duration::from_nanos(u64::from(ns)));
        prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
    }

    #[test]
    fn duration_parse_never_panics(s in "[0-9.hmsun-µ]{0,16}") {
        let _ = s.parse::<Duration>();
    }

    #[test]
    fn string_match_round_trips(kind in 0..3u8, value in ".{0,20}") {
        let m = match kind { 0 => StringMatch::Exact(value), 1 => StringMatch::Prefix(value), _ => StringMatch::Regex(value) };
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<StringMatch>(&json).unwrap(), m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_mesh_sets_are_valid_and_consistent(set in mesh_set()) {
        let configs = set.configs();
        for c in &configs {
            let e = errors(c);
            prop_assert!(e.is_empty(), "{e:#?}\n{}", to_yaml(c));
        }
        // Consistency: every route destination is a declared service host, and every subset
        // it names is declared by that host's DestinationRule.
        for vs in &set.virtual_services {
            for route in &vs.spec.http {
                for d in &route.route {
                    let dr = set.destination_rules.iter().find(|dr| dr.spec.host == d.destination.host);
                    prop_assert!(dr.is_some(), "no DestinationRule for {}", d.destination.host);
                    prop_assert!(set.service_entries.iter().any(|se| se.spec.hosts.contains(&d.destination.host)));
                    if let Some(subset) = &d.destination.subset {
                        prop_assert!(dr.unwrap().spec.subsets.iter().any(|s| &s.name == subset), "undeclared subset {subset}");
                    }
                }
            }
        }
        // Every subset selects at least one endpoint of its service.
        for dr in &set.destination_rules {
            let se = set.service_entries.iter().find(|se| se.spec.hosts[0] == dr.spec.host).unwrap();
            for s in &dr.spec.subsets {
                prop_assert!(se.spec.endpoints.iter().any(|e| s.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v))) || se.spec.endpoints.is_empty());
            }
        }
        // The whole set round-trips through one multi-document YAML file.
        let text: String = configs.iter().map(|c| format!("---\n{}", to_yaml(c))).collect();
        let parsed = parse_str(&text, "set.yaml");
        prop_assert!(parsed.findings.is_empty());
        let back: Vec<Config> = parsed.resources.into_iter().map(|r| r.config).collect();
        prop_assert_eq!(back, configs);
    }
}
