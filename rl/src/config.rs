//! Reading TOML experiment files: strict (an unknown key or a wrong type is an error that names
//! the file, the line and the key), with `--set section.key=value` overrides on top.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parse `path` into `T`, then apply `overrides` (`a.b=value`; the value is read as TOML, and as
/// a plain string when it is not valid TOML, so `model.path=models/x` works unquoted).
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse(&text, &path.display().to_string(), overrides)
}

/// [`load`] on text already read; `source` names it in errors.
pub fn parse<T: DeserializeOwned>(text: &str, source: &str, overrides: &[String]) -> Result<T> {
    // The file alone first, so that an error points at its line.
    let parsed: T = toml::from_str(text).map_err(|e| located(text, source, &e))?;
    if overrides.is_empty() {
        return Ok(parsed);
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| located(text, source, &e))?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    // The file was valid alone, so an error now comes from an override.
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow!("--set {}: {}", overrides.join(" --set "), e.message().trim()))
}

/// One line: `file:line:column: message (in [section], key `k`)`.
fn located(text: &str, source: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return anyhow!("{source}: {message}") };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split(']').next().unwrap_or(l).trim_start_matches('[').trim().to_string());
    let key = text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim().to_string());
    let mut context = Vec::new();
    if let Some(s) = section {
        context.push(format!("in [{s}]"));
    }
    if let Some(k) = key {
        context.push(format!("key `{k}`"));
    }
    let context = if context.is_empty() { String::new() } else { format!(" ({})", context.join(", ")) };
    anyhow!("{source}:{line}:{column}: {message}{context}")
}

/// Set `a.b.c = value` in `table`, creating tables on the way.
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| anyhow!("--set {spec:?}: expected KEY=VALUE, e.g. rl.lr=2e-4"))?;
    let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    if path.iter().any(|p| p.is_empty()) {
        bail!("--set {spec:?}: empty key segment");
    }
    let value = parse_value(raw.trim());
    let (last, parents) = path.split_last().expect("at least one segment");
    let mut node = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = node.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {spec:?}: `{}` is not a table", path[..=i].join(".")),
        };
    }
    node.insert(last.to_string(), value);
    Ok(())
}

/// A value as TOML (`2e-4`, `true`, `[1, 2]`, `"x"`), else the raw text as a string.
pub fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// The resolved config as TOML text (defaults filled in), for a run directory.
pub fn to_toml<T: Serialize>(value: &T) -> Result<String> {
    toml::to_string(value).context("cannot write the resolved config as TOML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        rl: Rl,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rl {
        lr: f64,
        #[serde(default)]
        name: String,
    }

    #[test]
    fn unknown_key_names_line_section_and_key() {
        let text = "# demo\n[rl]\nlr = 1e-4\nlrr = 2\n";
        let err = parse::<Cfg>(text, "x.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("x.toml:4:1: unknown field `lrr`"), "{err}");
        assert!(err.contains("in [rl]") && err.contains("key `lrr`"), "{err}");
    }

    #[test]
    fn wrong_type_names_its_line() {
        let err = parse::<Cfg>("[rl]\nlr = \"fast\"\n", "x.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("x.toml:2:"), "{err}");
        assert!(err.contains("key `lr`"), "{err}");
    }

    #[test]
    fn overrides_set_values_and_bad_ones_are_named() {
        let cfg: Cfg = parse("[rl]\nlr = 1e-4\n", "x.toml", &["rl.lr=3e-4".into(), "rl.name=fast run".into()]).unwrap();
        assert_eq!(cfg, Cfg { rl: Rl { lr: 3e-4, name: "fast run".into() } });
        let err = parse::<Cfg>("[rl]\nlr = 1e-4\n", "x.toml", &["rl.lr=abc".into()]).unwrap_err().to_string();
        assert!(err.starts_with("--set rl.lr=abc:"), "{err}");
        let err = parse::<Cfg>("[rl]\nlr = 1e-4\n", "x.toml", &["rl.lr.x=1".into()]).unwrap_err().to_string();
        assert!(err.contains("`rl.lr` is not a table"), "{err}");
        assert!(parse::<Cfg>("[rl]\nlr = 1\n", "x.toml", &["novalue".into()]).is_err());
    }
}
