//! Episodes end to end: single-turn math, the calculator env, groups, resume, configs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use envs::{
    ArithConfig, CalcEnvFactory, EnvConfig, EnvFactory, EnvKind, GroupSource, ListSource,
    MathEnvFactory, MathReward, Message, Observation, Problem, ProblemsConfig, Role, Step,
    Template,
};
use rewards::{Episode, Reward, Score};

/// Exact string match, so these tests do not depend on the verifier's leniency.
struct Exact;

impl Reward for Exact {
    fn name(&self) -> &str {
        "exact"
    }
    fn score(&self, e: &Episode<'_>) -> Score {
        let ok = e.completion.trim() == e.reference;
        let mut metrics = BTreeMap::new();
        metrics.insert("exact".into(), ok as u8 as f64);
        Score {
            reward: ok as u8 as f64,
            metrics,
        }
    }
}

fn problem(q: &str, a: &str) -> Arc<Problem> {
    Arc::new(Problem {
        id: q.into(),
        question: q.into(),
        answer: a.into(),
    })
}

fn done(step: Step) -> (f64, BTreeMap<String, f64>) {
    match step {
        Step::Done { reward, metrics } => (reward, metrics),
        other => panic!("expected Done, got {other:?}"),
    }
}

fn cont(step: Step) -> String {
    match step {
        Step::Continue { observation } => observation,
        other => panic!("expected Continue, got {other:?}"),
    }
}

#[test]
fn single_turn_correct_and_incorrect() {
    let f = MathEnvFactory::new(
        Template::question_only().compile().unwrap(),
        vec![],
        Arc::new(Exact),
    );
    let mut env = f.make(problem("12+35-8=", "39"));
    assert_eq!(
        env.initial_observation(),
        Observation::Text("12+35-8=".into())
    );
    assert!(env.stop_strings().is_empty());
    let (r, m) = done(env.step("39"));
    assert_eq!(r, 1.0);
    assert_eq!((m["exact"], m["turns"]), (1.0, 1.0));
    // Stepping a finished episode repeats the result.
    assert_eq!(done(env.step("40")).0, 1.0);

    let mut env = f.make(problem("12+35-8=", "39"));
    let (r, m) = done(env.step("38"));
    assert_eq!((r, m["exact"]), (0.0, 0.0));
}

#[test]
fn single_turn_with_the_math_verifier() {
    let prompter = Template::question_answer().compile().unwrap();
    let f = MathEnvFactory::new(
        prompter,
        vec!["\nQuestion:".into()],
        Arc::new(MathReward::default()),
    );
    let mut env = f.make(problem("What is 6 times 7?", "42"));
    assert_eq!(
        env.initial_observation(),
        Observation::Text("Question: What is 6 times 7?\nAnswer:".into())
    );
    assert_eq!(env.stop_strings(), ["\nQuestion:".to_string()]);
    let (r, m) = done(env.step(" 42"));
    assert_eq!((r, m["correct"]), (1.0, 1.0));
    let mut env = f.make(problem("What is 6 times 7?", "42"));
    let (r, m) = done(env.step(" 41"));
    assert_eq!((r, m["correct"]), (0.0, 0.0));
}

#[test]
fn calculator_call_then_answer() {
    let f = CalcEnvFactory::new(
        Template::question_only().compile().unwrap(),
        vec![],
        Arc::new(Exact),
        5,
    );
    let mut env = f.make(problem("What is 12 * 7 + 1?", "85"));
    assert_eq!(env.stop_strings(), ["</calc>".to_string()]);
    let obs = cont(env.step("First <calc>12*7</calc>"));
    assert_eq!(obs, " = 84");
    let obs = cont(env.step(" then <calc>84+1</calc>\n"));
    assert_eq!(obs, " = 85");
    let (r, m) = done(env.step("85"));
    assert_eq!(r, 1.0);
    assert_eq!(
        (
            m["turns"],
            m["calc_calls"],
            m["calc_errors"],
            m["truncated"],
            m["exact"]
        ),
        (3.0, 2.0, 0.0, 0.0, 1.0)
    );
}

#[test]
fn calculator_errors_are_observations() {
    let f = CalcEnvFactory::new(
        Template::question_only().compile().unwrap(),
        vec![],
        Arc::new(Exact),
        6,
    );
    let mut env = f.make(problem("q", "1"));
    assert!(cont(env.step("<calc>2 +* 2</calc>")).starts_with(" = error: "));
    assert!(cont(env.step("<calc></calc>")).starts_with(" = error: empty"));
    assert!(cont(env.step("oops</calc>")).starts_with(" = error: no <calc>"));
    let long = format!("<calc>{}1</calc>", "1+".repeat(200));
    assert!(cont(env.step(&long)).contains("longer than"));
    // Only the last turn is scored: the calculator's text is not the model's answer.
    let (r, m) = done(env.step("2"));
    assert_eq!(r, 0.0);
    assert_eq!(
        (m["calc_calls"], m["calc_errors"], m["turns"]),
        (4.0, 4.0, 5.0)
    );
}

#[test]
fn max_turns_caps_an_episode_that_never_answers() {
    let f = CalcEnvFactory::new(
        Template::question_only().compile().unwrap(),
        vec![],
        Arc::new(Exact),
        3,
    );
    let mut env = f.make(problem("q", "4"));
    cont(env.step("<calc>2*2</calc>"));
    cont(env.step("<calc>2*2</calc>"));
    let (r, m) = done(env.step("<calc>2*2</calc>"));
    assert_eq!(r, 0.0);
    assert_eq!(
        (m["truncated"], m["turns"], m["calc_calls"]),
        (1.0, 3.0, 3.0)
    );
    assert!(env.step("4").is_done());
}

#[test]
fn groups_resume_and_test_groups() {
    let train: Vec<Problem> = (0..5)
        .map(|i| Problem {
            id: format!("p{i}"),
            question: format!("{i}+{i}="),
            answer: format!("{}", 2 * i),
        })
        .collect();
    let test = vec![Problem {
        id: "t0".into(),
        question: "9+9=".into(),
        answer: "18".into(),
    }];
    let src = Arc::new(ListSource::new("list", train, test, 3));
    let f = Arc::new(MathEnvFactory::new(
        Template::question_only().compile().unwrap(),
        vec![],
        Arc::new(Exact),
    ));
    let mut gs = GroupSource::new(src.clone(), f.clone(), 4).unwrap();
    let groups = gs.next_groups(12);
    assert_eq!(groups.len(), 12);
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(g.id, i as u64);
        assert_eq!(g.envs.len(), 4);
        assert_eq!(g.epoch, (i / 5) as u64);
        for e in &g.envs {
            assert_eq!(e.problem(), &g.problem);
            assert_eq!(
                e.initial_observation(),
                Observation::Text(g.problem.question.clone())
            );
        }
    }
    // Every epoch covers every problem once.
    let mut e0: Vec<_> = groups[..5].iter().map(|g| g.problem.id.clone()).collect();
    e0.sort();
    assert_eq!(e0, ["p0", "p1", "p2", "p3", "p4"]);
    // Episodes of one group are independent.
    let mut g = gs.next_group().unwrap();
    let answer = g.problem.answer.clone();
    assert_eq!(done(g.envs[0].step(&answer)).0, 1.0);
    assert_eq!(done(g.envs[1].step("nope")).0, 0.0);

    // Resuming from a saved cursor gives the same stream.
    let mut a = GroupSource::new(src.clone(), f.clone(), 2).unwrap();
    a.next_groups(7);
    let saved = a.cursor();
    let json = serde_json::to_string(&saved).unwrap();
    let next_a: Vec<_> = a
        .next_groups(6)
        .iter()
        .map(|g| (g.id, g.problem.id.clone()))
        .collect();
    let mut b = GroupSource::new(src.clone(), f.clone(), 2).unwrap();
    b.set_cursor(serde_json::from_str(&json).unwrap());
    let next_b: Vec<_> = b
        .next_groups(6)
        .iter()
        .map(|g| (g.id, g.problem.id.clone()))
        .collect();
    assert_eq!(next_a, next_b);

    let tg = gs.test_groups(3);
    assert_eq!((tg.len(), tg[0].id, tg[0].envs.len()), (1, 0, 3));
    assert!(GroupSource::new(src, f, 0)
        .unwrap_err()
        .to_string()
        .contains("group_size"));
}

#[test]
fn arith_groups_from_the_default_config() {
    let cfg = EnvConfig::default();
    let mut gs = cfg.build(Some(Arc::new(Exact))).unwrap();
    assert_eq!(gs.group_size(), 8);
    let mut g = gs.next_group().unwrap();
    let Observation::Text(prompt) = g.envs[0].initial_observation() else {
        panic!()
    };
    assert!(prompt.ends_with('=') && prompt.contains('+') && prompt.contains('-'));
    let answer = g.problem.answer.clone();
    assert_eq!(done(g.envs[0].step(&answer)).0, 1.0);
    assert_eq!(gs.test_groups(1).len(), 500);
    // Same config, same stream.
    let mut gs2 = cfg.build(None).unwrap();
    let ids2: Vec<_> = gs2
        .next_groups(20)
        .iter()
        .map(|g| g.problem.id.clone())
        .collect();
    let mut gs3 = cfg.build(None).unwrap();
    let ids3: Vec<_> = gs3
        .next_groups(20)
        .iter()
        .map(|g| g.problem.id.clone())
        .collect();
    assert_eq!(ids2, ids3);
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Top {
    env: EnvConfig,
}

fn parse(toml_text: &str) -> Result<EnvConfig, String> {
    toml::from_str::<Top>(toml_text)
        .map(|t| t.env)
        .map_err(|e| e.to_string())
}

#[test]
fn example_configs_parse_and_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut gsm = parse(&std::fs::read_to_string(dir.join("gsm8k_sample.toml")).unwrap()).unwrap();
    gsm.resolve_paths(&dir);
    assert_eq!(gsm.kind, EnvKind::SingleTurn);
    let mut gs = gsm.build(None).unwrap();
    assert_eq!(gs.test_groups(1).len(), 3);
    let g = gs.next_group().unwrap();
    assert_eq!(g.envs.len(), 4);
    let Observation::Text(t) = g.envs[0].initial_observation() else {
        panic!()
    };
    assert!(t.starts_with("Question: ") && t.ends_with("\nAnswer:"));

    let mut math = parse(&std::fs::read_to_string(dir.join("math_sample.toml")).unwrap()).unwrap();
    math.resolve_paths(&dir);
    assert_eq!((math.kind, math.max_turns), (EnvKind::Calc, Some(4)));
    let mut gs = math.build(None).unwrap();
    assert_eq!(gs.test_groups(1).len(), 4);
    let mut g = gs.next_group().unwrap();
    let env = &mut g.envs[0];
    assert_eq!(env.stop_strings(), ["</calc>".to_string()]);
    let Observation::Chat {
        messages,
        add_generation_prompt,
    } = env.initial_observation()
    else {
        panic!()
    };
    assert!(add_generation_prompt);
    assert_eq!(messages[0].role, Role::System);
    assert!(messages[1]
        .content
        .ends_with("Put the final answer in \\boxed{}."));
    let gold = g.problem.answer.clone();
    assert_eq!(
        done(env.step(&format!("The answer is $\\boxed{{{gold}}}$."))).0,
        1.0
    );
}

#[test]
fn config_defaults_and_rejections() {
    let cfg = parse("[env]\n").unwrap();
    assert_eq!(cfg, EnvConfig::default());
    let cfg = parse("[env]\nkind = \"calc\"\n[env.problems]\nsource = \"arith\"\nlevel = \"add2\"\nformat = \"sentence\"\nseed = 3\n").unwrap();
    let ProblemsConfig::Arith(a) = &cfg.problems else {
        panic!()
    };
    assert_eq!((a.level.as_str(), a.seed), ("add2", 3));
    assert!(cfg.build(None).is_ok());

    for (bad, want) in [
        ("[env]\ngroup_sise = 4\n", "group_sise"),
        (
            "[env.problems]\nsource = \"arith\"\nlevle = \"add2\"\n",
            "levle",
        ),
        (
            "[env.problems]\nsource = \"jsonl\"\ntrain = \"x\"\nquestion = \"q\"\n",
            "question",
        ),
        ("[env.problems]\nsource = \"csv\"\n", "csv"),
        ("[env]\ntemplate = { chat = { sytem = \"x\" } }\n", "sytem"),
        ("[env]\nkind = \"tools\"\n", "tools"),
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
    }
    let e = parse("[env]\nmax_turns = 3\n")
        .unwrap()
        .build(None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "max_turns: only applies to kind = \"calc\"");
    let e = parse("[env]\ntemplate = { format = \"Q: {problem}\" }\n")
        .unwrap()
        .build(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown placeholder `{problem}`"), "{e}");
    let e = parse("[env.problems]\nsource = \"jsonl\"\ntrain = \"/nonexistent/train.jsonl\"\n")
        .unwrap()
        .build(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/train.jsonl: cannot open: "),
        "{e}"
    );
}

#[test]
fn chat_template_observation() {
    let mut arith = ArithConfig::level("add2");
    arith.format = Some(envs::ArithFormat::Sentence);
    let cfg = EnvConfig {
        problems: ProblemsConfig::Arith(arith),
        template: Some(Template::Chat {
            system: Some("Answer with a number.".into()),
            user: "{question}".into(),
        }),
        ..EnvConfig::default()
    };
    let mut gs = cfg.build(Some(Arc::new(Exact))).unwrap();
    let g = gs.next_group().unwrap();
    let obs = g.envs[0].initial_observation();
    let Observation::Chat {
        messages,
        add_generation_prompt: true,
    } = &obs
    else {
        panic!("{obs:?}")
    };
    assert_eq!(
        messages[0],
        Message::new(Role::System, "Answer with a number.")
    );
    assert_eq!(messages[1].role, Role::User);
    assert!(messages[1].content.starts_with("What is "));
    assert_eq!(
        obs.plain_text(),
        format!("Answer with a number.\n\n{}", g.problem.question)
    );
}

#[test]
fn math_verifier_scores_arith_answers() {
    // The default reward (the rewards crate's verifier) on the curriculum's integer answers.
    let mut gs = EnvConfig::default().build(None).unwrap();
    let mut seen_negative = false;
    for _ in 0..50 {
        let mut g = gs.next_group().unwrap();
        let gold = g.problem.answer.clone();
        seen_negative |= gold.starts_with('-');
        assert_eq!(done(g.envs[0].step(&gold)).0, 1.0, "{gold}");
        assert_eq!(done(g.envs[1].step(&format!("{gold}1"))).0, 0.0, "{gold}");
        assert_eq!(done(g.envs[2].step("")).0, 0.0);
    }
    assert!(seen_negative);
}

#[test]
fn configs_round_trip_and_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<GroupSource>();
    send::<envs::EnvGroup>();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for name in ["gsm8k_sample.toml", "math_sample.toml"] {
        let cfg = parse(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        #[derive(serde::Serialize)]
        struct TopRef<'a> {
            env: &'a EnvConfig,
        }
        let text = toml::to_string(&TopRef { env: &cfg }).unwrap();
        assert_eq!(parse(&text).unwrap(), cfg, "{text}");
    }
    let text = toml::to_string(&TopRefOwned {
        env: EnvConfig::default(),
    })
    .unwrap();
    assert_eq!(parse(&text).unwrap(), EnvConfig::default(), "{text}");
}

#[derive(serde::Serialize)]
struct TopRefOwned {
    env: EnvConfig,
}
