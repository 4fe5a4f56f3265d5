//! Reward configs as the top-level crate writes them in TOML.

use rewards::{build, Episode, RewardSpec};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    reward: Vec<RewardSpec>,
}

fn parse(text: &str) -> Result<Vec<RewardSpec>, toml::de::Error> {
    toml::from_str::<Config>(text).map(|c| c.reward)
}

#[test]
fn toml_snippet_deserialises_and_builds() {
    let example = format!("{}/examples/plugin_example.py", env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
[[reward]]
kind = "math"
weight = 1.0

[[reward]]
kind = "plugin"
command = ["python3", "{example}"]
timeout_ms = 2000
weight = 0.5

[[reward]]
kind = "format"
weight = 0.1

[[reward]]
kind = "length_penalty"
weight = 0.2
target_chars = 50
max_chars = 150
"#
    );
    let specs = parse(&text).expect("config parses");
    assert_eq!(specs.len(), 4);
    assert_eq!(specs[0], RewardSpec::Math { weight: 1.0, modes: None });
    let reward = build(&specs).expect("builds");
    let s = reward.score(&Episode { prompt: "6*7?", completion: "It is \\boxed{42}", reference: "42" });
    // math 1·1 + plugin 0.5·1 + format 0.1·1 + length 0.2·0
    assert!((s.reward - 1.6).abs() < 1e-12, "{s:?}");
    assert_eq!(s.metrics.get("math"), Some(&1.0));
    assert_eq!(s.metrics.get("plugin/plugin_error"), Some(&0.0));
    assert_eq!(s.metrics.get("format/format_ok"), Some(&1.0));
    assert_eq!(s.metrics.get("length_penalty/chars"), Some(&16.0));
    let wrong = reward.score(&Episode { prompt: "6*7?", completion: "It is 41", reference: "42" });
    assert!((wrong.reward - 0.0).abs() < 1e-12, "{wrong:?}");
}

#[test]
fn modes_are_configurable() {
    let specs = parse(
        r#"
[[reward]]
kind = "math"
modes = ["boxed", "gsm8k"]
"#,
    )
    .expect("parses");
    let reward = build(&specs).expect("builds");
    let ep = |completion| Episode { prompt: "", completion, reference: "7" };
    assert_eq!(reward.score(&ep("#### 7")).reward, 1.0);
    // Last-number fallback is off in this configuration.
    assert_eq!(reward.score(&ep("so it is 7")).reward, 0.0);
}

#[test]
fn unknown_fields_and_kinds_are_rejected() {
    assert!(parse("[[reward]]\nkind = \"math\"\nwieght = 1.0\n").is_err());
    assert!(parse("[[reward]]\nkind = \"magic\"\n").is_err());
    assert!(parse("[[reward]]\nkind = \"plugin\"\n").is_err(), "plugin needs a command");
    assert!(parse("[[reward]]\nkind = \"math\"\nmodes = [\"psychic\"]\n").is_err());
    let bad_length = parse("[[reward]]\nkind = \"length_penalty\"\ntarget_chars = 10\nmax_chars = 5\n").expect("parses");
    assert!(build(&bad_length).is_err());
    assert!(build(&[]).is_err());
}
