//! The Dockerfile: its stages, and the healthcheck tool in the runtime image.

use crate::compose_model::{Healthcheck, compose, compose_service};
use crate::fixtures::{APP_SERVICES, read};

/// One Dockerfile instruction: its keyword (upper case) and its arguments, continuation
/// lines joined and comments dropped.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// The Dockerfile's stages, each a list of instructions starting with its `FROM`.
fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical_lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue; // comments (and parser directives) say nothing about the image
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical_lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical_lines {
        let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            arguments: arguments.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

fn instructions<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|instruction| instruction.keyword == keyword)
        .map(|instruction| instruction.arguments.as_str())
        .collect()
}

/// The packages a stage's `RUN ... apt-get install ...` commands install.
fn installed_packages(stage: &[Instruction]) -> Vec<String> {
    let mut packages = Vec::new();
    for run in instructions(stage, "RUN") {
        for command in run.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            if let Some(install) = words
                .windows(2)
                .position(|pair| pair == ["apt-get", "install"])
            {
                packages.extend(
                    words[install + 2..]
                        .iter()
                        .filter(|word| !word.starts_with('-'))
                        .map(|word| (*word).to_owned()),
                );
            }
        }
    }
    packages
}

/// The app healthchecks run inside the runtime image: it must have the tool they call.
#[test]
fn compose_healthcheck_tool_is_in_the_runtime_image() {
    let compose = compose();
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    assert!(stages.len() >= 2, "deploy/Dockerfile has no second stage");
    let (builder, runtime) = (&stages[0], &stages[stages.len() - 1]);
    let runtime_packages = installed_packages(runtime);
    for (name, _) in APP_SERVICES {
        let check = compose_service(&compose, name)
            .healthcheck
            .as_ref()
            .and_then(Healthcheck::command)
            .unwrap_or_default();
        for tool in ["curl", "wget"] {
            if check.split_whitespace().any(|word| word == tool) {
                assert!(
                    runtime_packages.iter().any(|package| package == tool),
                    "{name}: the healthcheck uses {tool}, which the runtime stage does not \
                     install (it installs {runtime_packages:?})"
                );
            }
        }
    }
    // The builder builds the package named by SERVICE, reproducibly.
    assert!(
        instructions(builder, "ARG").contains(&"SERVICE"),
        "{builder:?}"
    );
    assert!(
        instructions(builder, "RUN").iter().any(|run| {
            run.split("&&")
                .any(|command| command.contains("cargo build --release --locked -p \"${SERVICE}\""))
        }),
        "the builder does not run `cargo build --release --locked -p \"${{SERVICE}}\"`: {builder:?}"
    );
    assert!(
        instructions(builder, "RUN")
            .iter()
            .any(|run| run.starts_with("--mount=type=cache")),
        "the builder's cargo build uses no cache mount"
    );
    // The runtime image runs the service binary, exposes its port and checks its readiness.
    assert_eq!(
        instructions(runtime, "ENTRYPOINT"),
        ["[\"/usr/local/bin/service\"]"]
    );
    assert_eq!(instructions(runtime, "EXPOSE"), ["${PORT}"]);
    let healthcheck = instructions(runtime, "HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1, "{runtime:?}");
    let (_, check) = healthcheck[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK runs a CMD");
    assert!(check.contains("/readyz"), "HEALTHCHECK {check}");
    for tool in ["curl", "wget"] {
        if check.split_whitespace().any(|word| word == tool) {
            assert!(
                runtime_packages.iter().any(|package| package == tool),
                "the image's HEALTHCHECK uses {tool}, which the runtime stage does not install"
            );
        }
    }
    let user = instructions(runtime, "USER")
        .last()
        .copied()
        .ok_or("the runtime stage sets no USER")
        .unwrap();
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runtime USER is root: {user}"
    );
}

#[test]
fn the_dockerfile_parser_ignores_comments_and_joins_continuations() {
    let stages = dockerfile_stages(
        "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n  && y\n\
         FROM c\n# curl for the checks\nRUN apt-get install -y --no-install-recommends \\\n    \
         ca-certificates wget\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(instructions(&stages[0], "RUN"), ["x && y"]);
    assert_eq!(installed_packages(&stages[1]), ["ca-certificates", "wget"]);
}
