//! The arithmetic curriculum: determinism, level shapes, held-out disjointness, bad knobs.

use std::collections::HashSet;

use envs::{ArithConfig, ArithFormat, ProblemSource, LEVELS};

/// Independent evaluator for plain-format questions (`12+35*2=`), usual precedence.
fn eval_plain(q: &str) -> i64 {
    let body = q.strip_suffix('=').expect("plain question ends with =");
    let mut nums = Vec::new();
    let mut ops = Vec::new();
    let mut cur = String::new();
    for c in body.chars() {
        if c.is_ascii_digit() {
            cur.push(c);
        } else {
            nums.push(cur.parse::<i64>().unwrap());
            cur.clear();
            ops.push(c);
        }
    }
    nums.push(cur.parse::<i64>().unwrap());
    // Collapse * and / first.
    let mut terms = vec![nums[0]];
    let mut signs = vec!['+'];
    for (op, n) in ops.iter().zip(&nums[1..]) {
        match op {
            '*' => *terms.last_mut().unwrap() *= n,
            '/' => {
                let t = terms.last_mut().unwrap();
                assert_eq!(*t % n, 0, "inexact division in {q}");
                *t /= n;
            }
            _ => {
                terms.push(*n);
                signs.push(*op);
            }
        }
    }
    terms
        .iter()
        .zip(&signs)
        .map(|(t, s)| if *s == '-' { -t } else { *t })
        .sum()
}

fn first_n(src: &dyn ProblemSource, n: u64) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let p = src.train_problem(0, i).expect("endless stream");
            (p.question.clone(), p.answer.clone())
        })
        .collect()
}

#[test]
fn same_seed_same_problems_other_seed_other_problems() {
    let mut cfg = ArithConfig::level("addsub2");
    cfg.seed = 42;
    let a = cfg.build().unwrap();
    let b = cfg.build().unwrap();
    assert_eq!(first_n(&a, 200), first_n(&b, 200));
    // Random access equals sequential access, in any order.
    let p = a.train_problem(0, 137).unwrap();
    assert_eq!(p.question, first_n(&b, 200)[137].0);
    cfg.seed = 43;
    let c = cfg.build().unwrap();
    let (fa, fc) = (first_n(&a, 200), first_n(&c, 200));
    let same = fa.iter().zip(&fc).filter(|(x, y)| x == y).count();
    assert!(same < 5, "{same} identical problems across seeds");
    // The test set depends on test_seed only.
    let ta: Vec<_> = a.test_set().iter().map(|p| p.id.clone()).collect();
    let tc: Vec<_> = c.test_set().iter().map(|p| p.id.clone()).collect();
    assert_eq!(ta, tc);
}

#[test]
fn addsub2_matches_the_calibration_task() {
    let src = ArithConfig::level("addsub2").build().unwrap();
    assert_eq!(src.test_set().len(), 500);
    let mut saw_negative = false;
    let mut max_operand = 0;
    for i in 0..5000 {
        let p = src.train_problem(0, i).unwrap();
        let body = p.question.strip_suffix('=').unwrap();
        let (ab, c) = body.split_once('-').unwrap();
        let (a, b) = ab.split_once('+').unwrap();
        let (a, b, c): (i64, i64, i64) =
            (a.parse().unwrap(), b.parse().unwrap(), c.parse().unwrap());
        for x in [a, b, c] {
            assert!((0..=99).contains(&x));
            max_operand = max_operand.max(x);
        }
        assert_eq!(p.answer, (a + b - c).to_string());
        assert_eq!(p.id, body);
        assert!(!p.question.contains(' '));
        saw_negative |= a + b - c < 0;
    }
    assert!(saw_negative && max_operand == 99);
}

#[test]
fn every_level_builds_and_answers_are_right() {
    for level in LEVELS {
        let src = ArithConfig::level(level)
            .build()
            .unwrap_or_else(|e| panic!("{level}: {e}"));
        assert!(!src.test_set().is_empty(), "{level}");
        for i in 0..2000 {
            let p = src.train_problem(0, i).unwrap();
            assert_eq!(
                p.answer,
                eval_plain(&p.question).to_string(),
                "{level}: {}",
                p.question
            );
        }
        for p in src.test_set() {
            assert_eq!(
                p.answer,
                eval_plain(&p.question).to_string(),
                "{level}: {}",
                p.question
            );
        }
    }
}

#[test]
fn held_out_test_set_never_appears_in_training() {
    // 100k training problems of the demo level, plus a small level where collisions are likely.
    for (level, n) in [("addsub2", 100_000u64), ("add2", 50_000), ("add1", 5_000)] {
        let src = ArithConfig::level(level).build().unwrap();
        let test: HashSet<&str> = src.test_set().iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            test.len(),
            src.test_set().len(),
            "{level}: test set has duplicates"
        );
        let test_questions: HashSet<&str> =
            src.test_set().iter().map(|p| p.question.as_str()).collect();
        for i in 0..n {
            let p = src.train_problem(0, i).unwrap();
            assert!(
                !test.contains(p.id.as_str()),
                "{level}: training problem {i} {} is held out",
                p.id
            );
            assert!(!test_questions.contains(p.question.as_str()));
        }
    }
}

#[test]
fn test_set_is_fixed_and_distinct() {
    let a = ArithConfig::level("addsub2").build().unwrap();
    let mut cfg = ArithConfig::level("addsub2");
    cfg.seed = 999;
    cfg.format = Some(ArithFormat::Sentence);
    let b = cfg.build().unwrap();
    // Same expressions whatever the training seed and the output format.
    let ids = |s: &envs::ArithSource| {
        s.test_set()
            .iter()
            .map(|p| p.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    // A pinned value, so an accidental change of the generator shows up in review.
    let first = &a.test_set()[0];
    assert_eq!(first.question, format!("{}=", first.id));
    let pinned: Vec<(&str, &str)> = a.test_set()[..3]
        .iter()
        .map(|p| (p.id.as_str(), p.answer.as_str()))
        .collect();
    assert_eq!(
        pinned,
        vec![("76+80-39", "117"), ("47+45-85", "7"), ("37+70-35", "72")]
    );
    let mut other = ArithConfig::level("addsub2");
    other.test_seed = 1;
    assert_ne!(ids(&a), ids(&other.build().unwrap()));
}

#[test]
fn knobs_override_the_level() {
    let mut cfg = ArithConfig::level("add2");
    cfg.digits = Some(1);
    cfg.operators = Some("*".into());
    cfg.steps = Some(2);
    cfg.format = Some(ArithFormat::Sentence);
    let src = cfg.build().unwrap();
    for i in 0..500 {
        let p = src.train_problem(0, i).unwrap();
        let body = p
            .question
            .strip_prefix("What is ")
            .unwrap()
            .strip_suffix('?')
            .unwrap();
        let parts: Vec<&str> = body.split(' ').collect();
        assert_eq!(parts.len(), 5, "{}", p.question);
        assert_eq!((parts[1], parts[3]), ("*", "*"));
        let v: i64 = parts[0].parse::<i64>().unwrap()
            * parts[2].parse::<i64>().unwrap()
            * parts[4].parse::<i64>().unwrap();
        assert_eq!(p.answer, v.to_string());
        assert_eq!(p.id, body.replace(' ', ""));
    }

    let mut cfg = ArithConfig::level("sub2");
    cfg.allow_negative = Some(false);
    let src = cfg.build().unwrap();
    for i in 0..2000 {
        assert!(!src.train_problem(0, i).unwrap().answer.starts_with('-'));
    }

    let mut cfg = ArithConfig::level("muldiv");
    cfg.pattern = Some("//".into());
    let src = cfg.build().unwrap();
    for i in 0..2000 {
        let p = src.train_problem(0, i).unwrap();
        assert_eq!(p.question.matches('/').count(), 2);
        assert_eq!(p.answer, eval_plain(&p.question).to_string());
    }
}

#[test]
fn bad_knobs_are_errors_that_name_the_knob() {
    let cases: Vec<(ArithConfig, &str)> = vec![
        (ArithConfig::level("add9"), "unknown level \"add9\""),
        (
            {
                let mut c = ArithConfig::level("add2");
                c.digits = Some(0);
                c
            },
            "digits = 0",
        ),
        (
            {
                let mut c = ArithConfig::level("add2");
                c.operators = Some("+%".into());
                c
            },
            "unknown operator '%'",
        ),
        (
            {
                let mut c = ArithConfig::level("add2");
                c.pattern = Some("+-".into());
                c.steps = Some(3);
                c
            },
            "steps = 3",
        ),
        (
            {
                let mut c = ArithConfig::level("add2");
                c.steps = Some(0);
                c
            },
            "steps = 0",
        ),
        (
            {
                let mut c = ArithConfig::level("add2");
                c.min_operand = Some(50);
                c.max_operand = Some(10);
                c
            },
            "operand range",
        ),
        (
            {
                let mut c = ArithConfig::level("add1");
                c.test_size = Some(60);
                c
            },
            "test_size = 60",
        ),
    ];
    for (cfg, want) in cases {
        let e = cfg.build().unwrap_err().to_string();
        assert!(
            e.starts_with("arith: ") && e.contains(want),
            "want {want:?} in {e:?}"
        );
    }
    // A tiny space with the default test size still works (test set shrinks to fit).
    let src = ArithConfig::level("add1").build().unwrap();
    assert_eq!(src.test_set().len(), 10);
}

#[test]
fn hand_built_specs_are_checked_too() {
    let mut spec = envs::ArithSpec::level("add2").unwrap();
    spec.ops = envs::OpChoice::Random { ops: vec![], steps: 2 };
    let e = envs::ArithSource::new(spec, 0, None, 1).unwrap_err().to_string();
    assert_eq!(e, "arith: no operators given");
}
