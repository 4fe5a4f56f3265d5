//! `noregret sweep` and `noregret report` on a tiny grid.

mod common;

use std::path::{Path, PathBuf};

use common::noregret;


fn setup(dir: &Path) -> PathBuf {
    let model = common::tiny_model(dir);
    let base = format!(
        "[model]\npath = \"{}\"\n[env.problems]\nsource = \"arith\"\nlevel = \"add2\"\ntest_size = 20\n\
         [[reward]]\nkind = \"length_penalty\"\ntarget_chars = 1\nmax_chars = 6\n[[reward]]\nkind = \"math\"\n\
         [rollout]\ngroup_size = 4\ngroups_per_step = 2\nmax_new_tokens = 6\n[rl]\nsteps = 4\n\
         [eval]\nevery = 2\n[run]\ncheckpoint_every = 2\n",
        model.display()
    );
    std::fs::write(dir.join("base.toml"), base).unwrap();
    dir.join("base.toml")
}

fn sweep_file(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        "[sweep]\nbase = \"base.toml\"\nout = \"{}\"\nseeds = [0]\n\n[[sweep.grid]]\n\"adapter.rank\" = [1, 2]\n\"rl.lr\" = [1e-3]\n\n[[sweep.grid]]\n\"adapter.rank\" = [\"full\"]\n\"rl.lr\" = [1e-4]\n",
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn adapters(sweep: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(sweep)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let d = e.path();
            let file = if d.join("adapter").exists() { d.join("adapter/adapter_model.safetensors") } else { d.join("model/model.safetensors") };
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(file).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_stopped_sweep_resumes_to_the_same_results_and_the_report_rebuilds_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let whole = sweep_file(tmp.path(), "whole");
    let out = noregret(&["sweep", whole.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Every run crashes after step 3; the sweep says so and stops. Run it again: it resumes.
    let broken = sweep_file(tmp.path(), "broken");
    let out = noregret(&["sweep", broken.to_str().unwrap()], &[("NOREGRET_FAULT", "after_step:3")]);
    assert!(!out.status.success(), "the crashes went unnoticed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 of 3 runs failed"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = noregret(&["sweep", broken.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (adapters(&tmp.path().join("whole")), adapters(&tmp.path().join("broken")));
    assert_eq!(a.len(), 3);
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name}: the resumed sweep's result differs");
    }
    // A third pass has nothing left to do.
    let out = noregret(&["sweep", broken.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 to do"), "{}", String::from_utf8_lossy(&out.stderr));

    // The report, twice: the same text from the same directories.
    let dir = tmp.path().join("whole");
    let out = noregret(&["report", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for png in ["curves.png", "train.png", "final_vs_lr.png", "best_lr.png"] {
        assert!(dir.join(png).exists(), "{png}");
        std::fs::remove_file(dir.join(png)).unwrap();
    }
    std::fs::remove_file(dir.join("report.md")).unwrap();
    assert!(noregret(&["report", dir.to_str().unwrap()], &[]).status.success());
    assert_eq!(first, std::fs::read_to_string(dir.join("report.md")).unwrap());
    assert!(first.contains("| rank=1 |") && first.contains("| rank=full |"), "{first}");
}
