//! The guide's pages against the walkthrough's transcript: which commands the pages show, and
//! whether each was run and printed what the page says.
//!
//! A page shows commands in three ways: lines of a ```sh block (a trailing `  # comment` is
//! not part of the command; a plain ``` block right after the sh block is the output of its
//! last command), `$ COMMAND` lines in a plain ``` block, each followed by its output, and
//! whole commands in a sentence (`spare pause office`: three words or more, no placeholder
//! such as NAME; `spare log` alone names the command, it is not one).
//! Commands and outputs are compared after normalising what differs from run to run: every
//! number becomes 0 (LSNs, times, ports, sizes), quotes are dropped, `localhost` is
//! `127.0.0.1`, runs of spaces are one. An output line `...` stands for any lines; a line
//! ending in `...` for any line that starts so.

use std::path::Path;

/// The pages whose commands the walkthrough runs. Not here: docs/production.md (three
/// machines: tests/production.rs lays them out as it says and runs its checks),
/// docs/upgrade.md (tests/upgrade.rs), and the pages without operator commands
/// (architecture, figures, guarantees).
pub const PAGES: &[&str] = &[
    "README.md",
    "docs/add-a-spare.md",
    "docs/backups.md",
    "docs/certificates.md",
    "docs/commands.md",
    "docs/configuration.md",
    "docs/http-api.md",
    "docs/lag-and-monitoring.md",
    "docs/mistakes.md",
    "docs/old-primary.md",
    "docs/promote.md",
    "docs/remote-spare.md",
    "docs/switchover.md",
];

/// Commands of the pages the walkthrough cannot run as written, and where they run instead:
/// (command as the page writes it, file, text that file must hold).
pub const RUN_ELSEWHERE: &[(&str, &str, &str)] = &[
    // The walkthrough runs the built binary's `up` (the build is the test suite's).
    ("cargo run --release -- up", "docs/walkthrough.sh", "\"${SPARE:-spare}\" up"),
    ("cargo test", ".ci/run", "\ncargo test\n"),
    ("alias spare=./target/release/spare", "docs/walkthrough.sh", "spare() {"),
    ("$EDITOR cluster-config/cluster.toml", "docs/walkthrough.sh", "add_spare lan-2"),
    (
        "spare run --node main --config /etc/spare/cluster.toml",
        "tests/production.rs",
        ".args([\"run\", \"--node\", node, \"--config\"])",
    ),
    // Named in a sentence as the option it is; run with its value by the walkthrough.
    ("spare promote --until", "docs/walkthrough.sh", "run spare promote office --until"),
    (
        "spare promote lan-2",
        "tests/membership.rs",
        "fn voters_added_by_a_reload_cannot_promote_behind_the_running_primary",
    ),
    (
        "spare promote lan-1 --accept-loss 3",
        "tests/promotion.rs",
        "fn a_candidate_behind_another_spare_needs_accept_loss",
    ),
    (
        "spare restore --from shop-backup.sqlite --node main --archive /archive/main --until-lsn 1233",
        "tests/backup.rs",
        "fn a_point_in_time_restore_lands_on_the_asked_lsn_or_time",
    ),
    (
        "spare restore --from shop-backup.sqlite --node main --archive /archive/main --until-time 2026-11-26T18:40:00Z",
        "tests/backup.rs",
        "fn a_point_in_time_restore_lands_on_the_asked_lsn_or_time",
    ),
];

/// A command and the output shown with it (on a page) or printed (in the transcript).
#[derive(Debug, Clone)]
pub struct Run {
    pub at: String,
    pub command: String,
    pub output: Vec<String>,
}

/// The guide's pages, read from the repository.
pub fn pages() -> Vec<(String, String)> {
    PAGES
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
                .unwrap_or_else(|e| panic!("read {p}: {e}"));
            (p.to_string(), text)
        })
        .collect()
}

/// The commands a page shows, with the output it shows for each (maybe none).
pub fn shown(page: &str, text: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    // Inside a block: its language ("" for a plain one). After an sh block: its last command.
    let mut block: Option<String> = None;
    let mut after_sh: Option<usize> = None;
    let mut current: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{page}:{}", n + 1);
        if let Some(lang) = line.strip_prefix("```") {
            match block.take() {
                Some(lang) => after_sh = (lang == "sh").then_some(runs.len()).filter(|&l| l > 0),
                None => {
                    block = Some(lang.trim().to_string());
                    // A plain block right after an sh block shows its last command's output.
                    current = after_sh
                        .take()
                        .filter(|_| lang.trim().is_empty())
                        .map(|l| l - 1);
                }
            }
            continue;
        }
        match block.as_deref() {
            Some("sh") | Some("bash") => {
                let command = line.split("  #").next().unwrap_or("").trim();
                if !command.is_empty() && !command.starts_with('#') {
                    runs.push(Run {
                        at,
                        command: command.to_string(),
                        output: Vec::new(),
                    });
                }
            }
            Some("") => {
                if let Some(command) = line.strip_prefix("$ ") {
                    runs.push(Run {
                        at,
                        command: command.to_string(),
                        output: Vec::new(),
                    });
                    current = Some(runs.len() - 1);
                } else if let Some(i) = current {
                    runs[i].output.push(line.to_string());
                }
            }
            Some(_) => {}
            None if !line.trim().is_empty() => after_sh = None,
            None => {}
        }
    }
    runs.extend(in_prose(page, text));
    runs
}

/// The whole commands the prose names in `code` spans (a span may run across a line break).
fn in_prose(page: &str, text: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut in_block = false;
    let mut span: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        for c in line.chars().chain(std::iter::once(' ')) {
            match (c, span.as_mut()) {
                ('`', None) => span = Some((n + 1, String::new())),
                ('`', Some(_)) => {
                    let (at, code) = span.take().expect("an open span");
                    if is_whole_command(&code) {
                        let at = format!("{page}:{at}");
                        runs.push(Run {
                            at,
                            command: code,
                            output: Vec::new(),
                        });
                    }
                }
                (c, Some((_, code))) => code.push(c),
                (_, None) => {}
            }
        }
    }
    runs
}

/// `spare pause office` is a command; `spare log` names one, `spare pause NAME` shows its
/// form (a placeholder), `spare promote [--dry-run]` its options.
fn is_whole_command(span: &str) -> bool {
    let words: Vec<&str> = span.split_whitespace().collect();
    let placeholder = |w: &&str| {
        w.len() > 1
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || "_-]".contains(c))
    };
    span.starts_with("spare ")
        && words.len() >= 3
        && !words.iter().any(placeholder)
        && !span.contains(['[', '|'])
        && !span.contains("...")
}

/// The commands of the walkthrough's transcript (`$ COMMAND` lines) with what each printed.
pub fn runs(transcript: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (n, line) in transcript.lines().enumerate() {
        if let Some(command) = line.strip_prefix("$ ") {
            let at = format!("transcript:{}", n + 1);
            runs.push(Run {
                at,
                command: command.to_string(),
                output: Vec::new(),
            });
        } else if let Some(last) = runs.last_mut() {
            last.output.push(line.to_string());
        }
    }
    runs
}

/// Numbers to 0, `localhost` to 127.0.0.1, spaces collapsed (and, in commands, no quotes).
fn normal(line: &str, command: bool) -> String {
    let line = line.replace("localhost", "127.0.0.1");
    let mut out = String::with_capacity(line.len());
    let mut digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('0');
            }
            digits = true;
            continue;
        }
        digits = false;
        if !(command && (c == '"' || c == '\'')) {
            out.push(c);
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    // A command started in the background is the same command.
    match out.strip_suffix(" &") {
        Some(c) if command => c.to_string(),
        _ => out,
    }
}

/// Whether the page's output lines appear, in order, among the printed ones.
fn shows(page: &[String], printed: &[String]) -> Result<(), String> {
    let mut printed = printed.iter().map(|l| normal(l, false));
    for line in page.iter().map(|l| normal(l, false)) {
        if line == "..." || line.is_empty() {
            continue;
        }
        let found = match line.strip_suffix("...") {
            Some(start) => printed.any(|p| p.starts_with(start.trim_end())),
            None => printed.any(|p| p == line),
        };
        if !found {
            return Err(line);
        }
    }
    Ok(())
}

/// What differs between the pages and the transcript: commands not run, outputs not printed.
pub fn check(pages: &[(String, String)], transcript: &[Run]) -> Vec<String> {
    let mut problems = Vec::new();
    for (page, text) in pages {
        for run in shown(page, text) {
            if let Some(&(_, file, holds)) = RUN_ELSEWHERE.iter().find(|e| e.0 == run.command) {
                problems.extend(runs_elsewhere(&run, file, holds));
                continue;
            }
            let command = normal(&run.command, true);
            let same: Vec<&Run> = transcript
                .iter()
                .filter(|r| normal(&r.command, true) == command)
                .collect();
            if same.is_empty() {
                problems.push(format!(
                    "{}: `{}` is not run by the walkthrough",
                    run.at, run.command
                ));
                continue;
            }
            let outcomes: Vec<Result<(), String>> =
                same.iter().map(|r| shows(&run.output, &r.output)).collect();
            if let Some(Err(line)) = outcomes
                .iter()
                .find(|o| o.is_err())
                .filter(|_| outcomes.iter().all(Result::is_err))
            {
                problems.push(format!(
                    "{}: `{}` printed no line like `{line}`; it printed ({}):\n{}",
                    run.at,
                    run.command,
                    same[0].at,
                    same[0].output.join("\n")
                ));
            }
        }
    }
    problems
}

/// A command run elsewhere: the file that runs it must hold what the table says.
fn runs_elsewhere(run: &Run, file: &str, holds: &str) -> Option<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_default();
    (!text.contains(holds)).then(|| {
        format!(
            "{}: `{}` is said to run in {file}, which does not hold `{holds}`",
            run.at, run.command
        )
    })
}

#[test]
fn the_guide_check_finds_a_command_not_run_and_an_output_not_printed() {
    let page = "Run `spare resume\noffice`, not `spare pause NAME` nor `spare log`.\n\n```sh\nspare sql \"SELECT 1\"   # a comment\nspare status\n```\n\n```\nNODE ROLE\nmain primary ...\n```\n\n```\n$ spare log --show 12\nLSN 12, epoch 1\n...\n$ spare verify\nverdict: identical\n```\n";
    let pages = vec![("p.md".to_string(), page.to_string())];
    let shown = shown("p.md", page);
    let commands: Vec<&str> = shown.iter().map(|r| r.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "spare sql \"SELECT 1\"",
            "spare status",
            "spare log --show 12",
            "spare verify",
            "spare resume office"
        ]
    );
    assert_eq!(shown[1].output, ["NODE ROLE", "main primary ..."]);
    // Everything run and printed as shown (other numbers, other spacing, more lines).
    let good = "$ spare resume office &\n$ spare sql SELECT 1\n1\n$ spare status\nNODE   ROLE\nmain   primary  serving\n$ spare log --show 40\nLSN 40, epoch 2\nmore\n$ spare verify\nverdict: identical\n";
    assert_eq!(check(&pages, &runs(good)), Vec::<String>::new());
    // A command missing, and an output that is not what was printed.
    let bad = "$ spare sql SELECT 1\n$ spare status\nNODE ROLE\nmain spare\n$ spare log --show 40\nLSN 40, epoch 2\n";
    let problems = check(&pages, &runs(bad));
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[2].contains("p.md:1: `spare resume office` is not run"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("p.md:6: `spare status` printed no line like `main primary ...`"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("p.md:18: `spare verify` is not run"),
        "{problems:?}"
    );
}
