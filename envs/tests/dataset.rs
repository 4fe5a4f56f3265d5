//! JSONL datasets: the sample files, gold extraction, every error message, splits and epochs.

use std::path::{Path, PathBuf};

use envs::dataset::{extract_gold, last_boxed, load_jsonl};
use envs::{AnswerFormat, DatasetConfig, MathDataset, OnBadLine, ProblemSource};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// A JSONL file in a per-test temp dir.
fn write_tmp(test: &str, name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("envs-test-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn err(cfg: &DatasetConfig) -> String {
    MathDataset::load(cfg).unwrap_err().to_string()
}

#[test]
fn gsm8k_sample_loads_with_gold_after_hashes() {
    let mut cfg = DatasetConfig::new(data("gsm8k_sample.jsonl"), AnswerFormat::Gsm8k);
    cfg.test_fraction = 0.0;
    let ds = cfg.build().unwrap();
    assert_eq!(ds.train().len(), 15);
    let first = &ds.train()[0];
    assert_eq!(first.answer, "27");
    assert_eq!(first.id, "gsm8k_sample:1");
    assert!(first.question.starts_with("Maya buys 3 packs"));
    // "#### 14,400" loses its thousands separator.
    assert_eq!(ds.train()[14].answer, "14400");
    assert!(ds.test_set().is_empty());
}

#[test]
fn math_sample_loads_with_gold_in_last_box() {
    let mut cfg = DatasetConfig::new(data("math_sample.jsonl"), AnswerFormat::Math);
    cfg.test_fraction = 0.0;
    let ds = cfg.build().unwrap();
    assert_eq!(ds.train().len(), 16);
    let answers: Vec<&str> = ds.train().iter().map(|p| p.answer.as_str()).collect();
    assert_eq!(answers[0], "5");
    assert_eq!(answers[3], r"\frac{3}{4}");
    assert_eq!(answers[12], r"5\sqrt{2}");
    assert_eq!(answers[13], "(7, 3)");
    assert_eq!(answers[15], r"\frac{7}{12}");
    assert!(ds.train()[0].question.contains("$2^5 - 3^3$"));
}

#[test]
fn gold_extraction_rules() {
    use AnswerFormat::*;
    assert_eq!(extract_gold("a\n#### 42", Gsm8k).unwrap(), "42");
    assert_eq!(extract_gold("#### 1 #### -3.5 ", Gsm8k).unwrap(), "-3.5");
    assert_eq!(extract_gold("#### 1,234,567", Gsm8k).unwrap(), "1234567");
    assert_eq!(extract_gold("#### 3, 4", Gsm8k).unwrap(), "3, 4");
    assert!(extract_gold("no marker 42", Gsm8k)
        .unwrap_err()
        .contains("####"));
    assert!(extract_gold("#### ", Gsm8k).unwrap_err().contains("empty"));

    assert_eq!(
        extract_gold(r"so \boxed{1} then \boxed{\frac{1}{2}}.", Math).unwrap(),
        r"\frac{1}{2}"
    );
    assert_eq!(
        extract_gold(r"\boxed{\{1, 2\}}", Math).unwrap(),
        r"\{1, 2\}"
    );
    assert_eq!(extract_gold(r"\fbox{7}", Math).unwrap(), "7");
    assert_eq!(extract_gold(r"is $\boxed 5$.", Math).unwrap(), "5");
    assert_eq!(
        extract_gold(r"\boxed{\boxed{3}}", Math).unwrap(),
        r"\boxed{3}"
    );
    assert!(extract_gold(r"the answer is 5", Math)
        .unwrap_err()
        .contains(r"\boxed"));
    assert!(extract_gold(r"\boxed{5", Math)
        .unwrap_err()
        .contains("unbalanced"));
    assert_eq!(last_boxed(r"\boxedx").unwrap(), None);
    assert_eq!(extract_gold("  7 ", Plain).unwrap(), "7");
}

#[test]
fn malformed_line_names_file_and_line() {
    let p = write_tmp(
        "malformed",
        "train.jsonl",
        "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n\n{\"question\": \"2+2?\", \"answer\": \n",
    );
    let cfg = DatasetConfig::new(&p, AnswerFormat::Gsm8k);
    let e = err(&cfg);
    assert!(
        e.starts_with(&format!("{}:3: malformed JSON: ", p.display())),
        "{e}"
    );
    assert!(e.contains("column"), "{e}");
    assert!(!e.contains('\n'));

    let p = write_tmp("notobj", "train.jsonl", "[1, 2]\n");
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert_eq!(
        e,
        format!("{}:1: expected a JSON object, found an array", p.display())
    );

    let p = write_tmp("utf8", "train.jsonl", "");
    std::fs::write(&p, b"{\"question\": \"\xff\"}\n").unwrap();
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert!(
        e.starts_with(&format!("{}:1: malformed JSON: invalid UTF-8", p.display())),
        "{e}"
    );
}

#[test]
fn missing_or_mistyped_field_names_the_field() {
    let p = write_tmp(
        "missing",
        "train.jsonl",
        "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n{\"q\": \"2+2?\", \"answer\": \"#### 4\"}\n",
    );
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert_eq!(e, format!("{}:2: missing field \"question\"", p.display()));

    // MATH defaults to problem/solution, so a GSM8K-shaped file misses "problem".
    let e = err(&DatasetConfig::new(
        data("gsm8k_sample.jsonl"),
        AnswerFormat::Math,
    ));
    assert!(
        e.ends_with("gsm8k_sample.jsonl:1: missing field \"problem\""),
        "{e}"
    );

    // Custom field map.
    let p = write_tmp(
        "fieldmap",
        "train.jsonl",
        "{\"prompt\": \"1+1?\", \"target\": 2}\n{\"prompt\": \"2+2?\", \"target\": 4}\n",
    );
    let mut cfg = DatasetConfig::new(&p, AnswerFormat::Plain);
    cfg.question_field = Some("prompt".into());
    cfg.answer_field = Some("target".into());
    cfg.test_fraction = 0.0;
    let ds = cfg.build().unwrap();
    assert_eq!(ds.train()[1].answer, "4");
    cfg.answer_field = Some("gold".into());
    assert!(err(&cfg).ends_with(":1: missing field \"gold\""));

    let p = write_tmp(
        "type",
        "train.jsonl",
        "{\"question\": [\"x\"], \"answer\": \"#### 1\"}\n",
    );
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert_eq!(
        e,
        format!(
            "{}:1: field \"question\" should be a string, found an array",
            p.display()
        )
    );

    let p = write_tmp(
        "nogold",
        "train.jsonl",
        "{\"question\": \"x\", \"answer\": \"42\"}\n",
    );
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert_eq!(
        e,
        format!(
            "{}:1: field \"answer\" has no gold answer: no \"####\" answer marker",
            p.display()
        )
    );
}

#[test]
fn empty_dataset_and_missing_file_are_errors() {
    let p = write_tmp("empty", "train.jsonl", "\n  \n");
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert_eq!(e, format!("{}: no problems (empty dataset)", p.display()));

    let missing = std::env::temp_dir().join("envs-test-definitely-missing/x.jsonl");
    let e = err(&DatasetConfig::new(&missing, AnswerFormat::Gsm8k));
    assert!(
        e.starts_with(&format!("{}: cannot open: ", missing.display())),
        "{e}"
    );
    assert!(e.contains("No such file or directory"), "{e}");

    // A missing test file names the test file.
    let mut cfg = DatasetConfig::new(data("gsm8k_sample.jsonl"), AnswerFormat::Gsm8k);
    cfg.test = Some(missing.clone());
    assert!(err(&cfg).starts_with(&format!("{}: cannot open", missing.display())));
}

#[test]
fn skip_mode_counts_skipped_lines() {
    let content = "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n\
                   not json\n\
                   {\"question\": \"2+2?\"}\n\
                   \n\
                   {\"question\": \"3+3?\", \"answer\": \"#### 6\"}\n\
                   [3]\n";
    let p = write_tmp("skip", "train.jsonl", content);
    let fields = DatasetConfig::new(&p, AnswerFormat::Gsm8k).fields();
    let loaded = load_jsonl(&p, &fields, OnBadLine::Skip).unwrap();
    assert_eq!(loaded.problems.len(), 2);
    assert_eq!(loaded.skipped, 3);
    assert!(loaded.first_skipped.unwrap().contains(":2: malformed JSON"));
    // Ids keep the real line numbers.
    assert_eq!(loaded.problems[1].id, "train:5");

    let mut cfg = DatasetConfig::new(&p, AnswerFormat::Gsm8k);
    cfg.on_bad_line = OnBadLine::Skip;
    cfg.test_fraction = 0.0;
    let ds = cfg.build().unwrap();
    assert_eq!(ds.report().train_skipped, 3);
    // Error mode stops at the first bad line.
    cfg.on_bad_line = OnBadLine::Error;
    assert!(err(&cfg).contains(":2: malformed JSON"));

    // All lines bad: still an empty-dataset error, which says why.
    let p = write_tmp("allbad", "train.jsonl", "{\"q\": 1}\n{\"q\": 2}\n");
    let mut cfg = DatasetConfig::new(&p, AnswerFormat::Gsm8k);
    cfg.on_bad_line = OnBadLine::Skip;
    let e = err(&cfg);
    assert!(
        e.starts_with(&format!(
            "{}: no problems (empty dataset) (2 bad line(s) skipped; first: ",
            p.display()
        )),
        "{e}"
    );
    assert!(e.contains("missing field \"question\""), "{e}");
}

#[test]
fn seeded_split_is_deterministic_and_disjoint() {
    let mut cfg = DatasetConfig::new(data("gsm8k_sample.jsonl"), AnswerFormat::Gsm8k);
    cfg.test_fraction = 0.2;
    cfg.split_seed = 5;
    let a = cfg.build().unwrap();
    let b = cfg.build().unwrap();
    assert_eq!(a.test_set().len(), 3);
    assert_eq!(a.train().len(), 12);
    let ids =
        |ps: &[std::sync::Arc<envs::Problem>]| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(a.test_set()), ids(b.test_set()));
    for t in a.test_set() {
        assert!(a
            .train()
            .iter()
            .all(|p| p.id != t.id && p.question != t.question));
    }
    cfg.split_seed = 6;
    let c = cfg.build().unwrap();
    assert_ne!(ids(a.test_set()), ids(c.test_set()));

    // A separate test file: training drops problems that are also in the test file.
    let test = write_tmp(
        "split",
        "test.jsonl",
        &format!(
            "{}\n",
            std::fs::read_to_string(data("gsm8k_sample.jsonl"))
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
        ),
    );
    let mut cfg = DatasetConfig::new(data("gsm8k_sample.jsonl"), AnswerFormat::Gsm8k);
    cfg.test = Some(test);
    let ds = cfg.build().unwrap();
    assert_eq!(
        (
            ds.train().len(),
            ds.test_set().len(),
            ds.report().overlap_removed
        ),
        (14, 1, 1)
    );

    // A split that leaves nothing to train on.
    let p = write_tmp(
        "tiny",
        "train.jsonl",
        "{\"question\": \"1?\", \"answer\": \"#### 1\"}\n",
    );
    let e = err(&DatasetConfig::new(&p, AnswerFormat::Gsm8k));
    assert!(e.contains("leaves no training problems"), "{e}");
    let mut cfg = DatasetConfig::new(&p, AnswerFormat::Gsm8k);
    cfg.test_fraction = 1.5;
    assert_eq!(err(&cfg), "test_fraction: 1.5 is not in [0, 1)");
}

#[test]
fn epochs_shuffle_differently_but_deterministically() {
    let mut cfg = DatasetConfig::new(data("math_sample.jsonl"), AnswerFormat::Math);
    cfg.test_fraction = 0.0;
    cfg.seed = 11;
    let a = cfg.build().unwrap();
    let b = cfg.build().unwrap();
    let epoch = |d: &MathDataset, e: u64| -> Vec<String> {
        (0..)
            .map_while(|i| d.train_problem(e, i))
            .map(|p| p.id.clone())
            .collect()
    };
    let (e0, e1) = (epoch(&a, 0), epoch(&a, 1));
    assert_eq!(e0.len(), 16);
    assert_eq!(e0, epoch(&b, 0));
    assert_eq!(e1, epoch(&b, 1));
    assert_ne!(e0, e1);
    // Each epoch is a permutation of the training set.
    let mut s0 = e0.clone();
    let mut s1 = e1.clone();
    s0.sort();
    s1.sort();
    assert_eq!(s0, s1);
    // Going back to an earlier epoch gives the same order (the cache is only a cache).
    assert_eq!(epoch(&a, 0), e0);
    cfg.seed = 12;
    assert_ne!(epoch(&cfg.build().unwrap(), 0), e0);
    assert_eq!(a.epoch_len(), Some(16));
}
