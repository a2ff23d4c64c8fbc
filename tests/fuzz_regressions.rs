//! The fuzz targets' kept inputs, replayed without the fuzzer: every seed, every crash found
//! and fixed (`fuzz/regressions/<target>/`), and the example policies through the config
//! target. The targets are the fuzz crate's own functions (`fuzz/src/`), compiled here too,
//! so a property that broke once stays checked by `cargo nextest run --workspace`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files in `dir`, in name order; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input in `inputs` through target `name`, naming each one that fails; a
/// target without inputs fails too.
fn replay(name: &str, run: fuzz::Target, inputs: Vec<PathBuf>) {
    assert!(!inputs.is_empty(), "no inputs for {name}");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("a readable input");
            panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name} fails on {failed:#?}");
}

/// The seeds and the regressions of target `name`.
fn kept(name: &str) -> Vec<PathBuf> {
    let fuzz = root().join("fuzz");
    let mut inputs = files(&fuzz.join("seeds").join(name));
    inputs.extend(files(&fuzz.join("regressions").join(name)));
    inputs
}

#[test]
fn every_target_replays_its_seeds_and_regressions() {
    for (name, run) in fuzz::TARGETS {
        replay(name, run, kept(name));
    }
}

#[test]
fn the_example_policies_load_through_the_config_target() {
    let examples = files(&root().join("examples"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    replay("config", fuzz::config::run, examples);
}
