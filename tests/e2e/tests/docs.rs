//! Every shell block of README.md and of the guide (docs/guide, in SUMMARY.md's order) runs
//! here, in page order, in one bash against the compose stack the first block starts, as a
//! reader would paste them from the repository's root. A block that cannot run here says why
//! in a `<!-- not run: ... -->` line above it; a `text` block under `<!-- output of: COMMAND -->`
//! is what the last block running COMMAND must print (its lines in order, `...` for any lines,
//! `…` for any text within a line).
//! A block that fails, or prints other than its page shows, fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fenced block of a page.
#[derive(Debug)]
struct Block {
    at: String,
    language: String,
    source: String,
    /// `<!-- not run: reason -->` above it.
    not_run: Option<String>,
    /// `<!-- output of: command -->` above it.
    output_of: Option<String>,
}

impl Block {
    fn is_shell(&self) -> bool {
        matches!(self.language.as_str(), "sh" | "bash" | "shell" | "console")
    }
}

/// The pages in reading order: the README, then the guide as its SUMMARY.md lists it.
fn pages(root: &Path) -> Vec<PathBuf> {
    let guide = root.join("docs/guide/src");
    let summary = std::fs::read_to_string(guide.join("SUMMARY.md")).unwrap();
    let mut pages = vec![root.join("README.md")];
    for link in summary.split("](").skip(1) {
        let target = link.split(')').next().unwrap();
        if target.ends_with(".md") {
            pages.push(guide.join(target));
        }
    }
    pages
}

fn blocks(root: &Path, page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap();
    let name = page.strip_prefix(root).unwrap().display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if let Some(info) = line.strip_prefix("```") {
            let start = i;
            let indent = lines[i].len() - lines[i].trim_start().len();
            i += 1;
            let mut source = String::new();
            while !lines[i].trim_start().starts_with("```") {
                source.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                source.push('\n');
                i += 1;
            }
            let marker = |prefix: &str| {
                comments.iter().find_map(|c| {
                    c.strip_prefix(prefix)
                        .and_then(|rest| rest.strip_suffix("-->"))
                        .map(|rest| rest.trim().to_owned())
                })
            };
            blocks.push(Block {
                at: format!("{name}:{}", start + 1),
                language: info.split([' ', ',']).next().unwrap_or("").to_owned(),
                source,
                not_run: marker("<!-- not run:"),
                output_of: marker("<!-- output of:"),
            });
            comments.clear();
        } else if line.starts_with("<!--") {
            comments.push(line);
        } else if !line.is_empty() {
            comments.clear();
        }
        i += 1;
    }
    blocks
}

const MARK: &str = "@@ctr-docs-block";

/// The script (standard error joins standard output, so a block's output is all it printed):
/// compose v1's `docker-compose` stands in for `docker compose` where the plugin is missing
/// (the pages say either works), with `exec -T` where there is no terminal, as compose v2
/// does by itself; every block is announced by a marker line.
fn script(runnable: &[&Block]) -> String {
    let mut script = String::from(
        "set -eu\nshopt -s expand_aliases\nexec 2>&1\n\
         docker() {\n  if [ \"${1-}\" = compose ] && ! command docker compose version >/dev/null 2>&1; then\n    \
         shift\n    if [ \"${1-}\" = exec ] && ! [ -t 0 ]; then shift; set -- exec -T \"$@\"; fi\n    \
         command docker-compose \"$@\"\n  else\n    command docker \"$@\"\n  fi\n}\n",
    );
    for (n, block) in runnable.iter().enumerate() {
        script.push_str(&format!("echo '{MARK} {n}'\n{}", block.source));
    }
    script.push_str(&format!("echo '{MARK} end'\n"));
    script
}

/// `expected`'s lines appear in `actual`, in order, each within one line (spacing aside); a
/// line `...` stands for any lines, and `…` within a line for any text (an id, a time).
fn shows(expected: &str, actual: &str) -> Result<(), String> {
    let spaced = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    let matches = |want: &str, got: &str| {
        let got = spaced(got);
        let mut rest = got.as_str();
        want.split('…').all(|part| match rest.find(part) {
            Some(at) => {
                rest = &rest[at + part.len()..];
                true
            }
            None => false,
        })
    };
    let mut lines = actual.lines();
    for want in expected.lines() {
        let want = spaced(want);
        if want.is_empty() || want == "..." {
            continue;
        }
        if !lines.by_ref().any(|got| matches(&want, got)) {
            return Err(want);
        }
    }
    Ok(())
}

#[test]
fn an_expected_output_matches_with_its_gaps_and_nothing_else() {
    let actual =
        "HTTP/2 201 \nlocation: /orders/op_0123\nnoise\n{\"id\": \"op_0123\", \"total\": 5}\n";
    assert!(
        shows(
            "HTTP/2 201\nlocation: /orders/op_…\n...\n{\"id\": \"op_…\", \"total\": 5}",
            actual
        )
        .is_ok()
    );
    assert!(
        shows("location: /orders/op_…\nHTTP/2 201", actual).is_err(),
        "out of order"
    );
    assert!(shows("HTTP/2 200", actual).is_err());
}

/// At the end, the stack and what the pages' commands left behind are gone.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = ctr_e2e_tests::compose()
            .args(["down", "-v", "--remove-orphans"])
            .output();
        let _ = std::fs::remove_dir_all(self.0.join(".ctr"));
        let _ = std::fs::remove_dir_all(self.0.join("backup"));
        let _ = std::fs::remove_file(self.0.join("shop.secret"));
    }
}

#[test]
fn every_shell_block_of_the_readme_and_the_guide_runs_against_the_compose_stack() {
    ctr_e2e_tests::ensure_images();
    let root = ctr_e2e_tests::repo_root();
    let all: Vec<Block> = pages(&root)
        .iter()
        .flat_map(|page| blocks(&root, page))
        .collect();
    let shell: Vec<&Block> = all.iter().filter(|b| b.is_shell()).collect();
    let runnable: Vec<&Block> = shell
        .iter()
        .copied()
        .filter(|b| b.not_run.is_none())
        .collect();
    println!(
        "{} shell blocks: {} run, {} marked as not runnable here:",
        shell.len(),
        runnable.len(),
        shell.len() - runnable.len()
    );
    for block in shell.iter().filter(|b| b.not_run.is_some()) {
        println!("  {}: {}", block.at, block.not_run.as_deref().unwrap());
    }
    for block in all.iter().filter(|b| b.output_of.is_some()) {
        assert!(
            block.language == "text",
            "{}: an output marker belongs above a text block",
            block.at
        );
    }

    let running = ctr_e2e_tests::compose()
        .args(["ps", "-q"])
        .output()
        .unwrap();
    assert!(
        running.stdout.iter().all(u8::is_ascii_whitespace),
        "a compose stack of this checkout is running, and the docs test would replace it (and its \
         volumes): `docker compose down` first"
    );
    let _down = Down(root.clone());
    let output = Command::new("timeout")
        .args(["1200", "bash", "-c"])
        .arg(script(&runnable))
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut outputs: Vec<String> = Vec::new();
    for part in stdout.split(&format!("{MARK} ")).skip(1) {
        outputs.push(
            part.split_once('\n')
                .map(|(_, o)| o)
                .unwrap_or("")
                .to_owned(),
        );
    }
    let finished = outputs.len() == runnable.len() + 1;
    if !output.status.success() || !finished {
        let failed = outputs.len().saturating_sub(1).min(runnable.len() - 1);
        panic!(
            "the block at {} failed ({}):\n{}\nit printed:\n{}",
            runnable[failed].at,
            output.status,
            runnable[failed].source,
            outputs.get(failed).map(String::as_str).unwrap_or("")
        );
    }
    for block in &runnable {
        println!("ran {}", block.at);
    }

    let mut checked = 0;
    for expected in all.iter().filter(|b| b.output_of.is_some()) {
        let command = expected.output_of.as_deref().unwrap();
        let (n, ran) = runnable
            .iter()
            .enumerate()
            .rfind(|(_, b)| b.source.contains(command))
            .unwrap_or_else(|| panic!("{}: no block runs `{command}`", expected.at));
        if let Err(missing) = shows(&expected.source, &outputs[n]) {
            panic!(
                "{} shows `{missing}` as the output of `{command}` ({}), which printed:\n{}",
                expected.at, ran.at, outputs[n]
            );
        }
        checked += 1;
    }
    println!("{checked} outputs checked against what the pages show");
}
