//! The Dockerfile, checked without a Docker engine (none runs on these machines): it builds with
//! the README's command, runs the binary as a numeric non-root user, ships every shared library
//! the built binary links, and its build context keeps what cargo reads.

use std::collections::BTreeSet;
use std::process::Command;

use outrigger_ops_tests::{repo, sidecar, tools};

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("Dockerfile")).unwrap()
}

/// The lines of the final stage (after the last FROM), continuation lines joined.
fn final_stage(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().map(str::trim).collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    lines[from..].iter().map(|l| (*l).to_owned()).collect()
}

#[test]
fn the_image_builds_with_the_readmes_command_and_runs_the_binary_as_non_root() {
    let text = dockerfile();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let build = "cargo build --release -p outrigger";
    assert!(
        readme.contains(build),
        "the README's build command changed: update the Dockerfile"
    );
    assert!(
        text.contains(build),
        "the Dockerfile must build with `{build}`"
    );
    assert!(text.matches("\nFROM ").count() >= 2, "multi-stage");
    let stage = final_stage(&text);
    assert!(
        stage[0].contains("-slim"),
        "a small final image: {}",
        stage[0]
    );
    let user = stage
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert!(uid > 0, "non-root");
    assert!(stage.contains(&r#"ENTRYPOINT ["/usr/local/bin/outrigger"]"#.to_owned()));
    assert!(stage
        .iter()
        .any(|l| l.starts_with("COPY --from=build") && l.ends_with("/usr/local/bin/outrigger")));
    // The chart's runAsUser and the image's user agree.
    let values = std::fs::read_to_string(repo().join("charts/outrigger/values.yaml")).unwrap();
    assert!(values.contains(&format!("runAsUser: {uid}")));
}

/// Debian packages the slim base image has without installing anything.
const SLIM_BASE: &[&str] = &["libc6", "libgcc-s1"];

#[test]
fn the_final_image_has_every_library_the_binary_links() {
    let binary = sidecar::binary();
    let ldd = tools::success(Command::new("ldd").arg(&binary));
    let stage = final_stage(&dockerfile());
    let installed: BTreeSet<String> = stage
        .iter()
        .filter(|l| l.contains("apt-get install"))
        .flat_map(|l| {
            l.split("apt-get install")
                .nth(1)
                .unwrap()
                .split("&&")
                .next()
                .unwrap()
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    for line in ldd.lines() {
        let Some(path) = line
            .split("=>")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
        else {
            continue;
        };
        // The machine runs the image's Debian release: ask dpkg which package ships it, under
        // /lib or /usr/lib (with merged /usr, dpkg lists each file under one of them).
        let alternative = match path.strip_prefix("/usr") {
            Some(rest) => rest.to_owned(),
            None => format!("/usr{path}"),
        };
        let package = [path, alternative.as_str()]
            .iter()
            .find_map(|p| {
                let out = tools::output(Command::new("dpkg").args(["-S", p]));
                let owner = String::from_utf8_lossy(&out.stdout).into_owned();
                let package = owner.split(':').next()?.trim().to_owned();
                (out.status.success() && !package.is_empty()).then_some(package)
            })
            .unwrap_or_else(|| {
                panic!("dpkg does not know {path} (linked by {})", binary.display())
            });
        let package = package.as_str();
        assert!(
            SLIM_BASE.contains(&package) || installed.contains(package),
            "{} links {path} from {package}, which the final image does not install ({installed:?})",
            binary.display()
        );
    }
}

#[test]
fn the_build_context_keeps_what_cargo_reads() {
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let ignored = |path: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_end_matches('/');
            path == p || path.starts_with(&format!("{p}/"))
        })
    };
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let mut needed: Vec<String> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(needed.len() > 5, "members: {needed:?}");
    // Files the code embeds with include_str!.
    needed.extend(["examples/demo.toml".to_owned(), "Cargo.lock".to_owned()]);
    for path in needed {
        assert!(
            !ignored(&path),
            ".dockerignore leaves out {path}, which the build needs"
        );
    }
    assert!(
        ignored("target") && ignored(".git"),
        "the context must not ship target/ or .git/"
    );
}
