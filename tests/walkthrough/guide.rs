//! The guide's pages against the walkthrough's transcript: which commands the pages show, and
//! whether each was run and printed what the page says.
//!
//! A page shows commands in three ways: lines of a ```sh block (a trailing `  # comment` is
//! not part of the command; a plain ``` block right after the sh block is the output of its
//! last command), `$ COMMAND` lines in a plain ``` block, each followed by its output, and
//! whole commands in a sentence (`spare pause office`: three words or more, no placeholder
//! such as NAME; `spare log` alone names the command, it is not one).
//! Commands are compared word by word as the shell splits them; commands and outputs after
//! normalising what differs from run to run: a number becomes 0 (LSNs, times, sizes,
//! counts), except in a name (`lan-2`), a port (`127.0.0.1:7302`; `localhost` is 127.0.0.1)
//! and an HTTP status (`HTTP 421`); runs of spaces are one. An output line `...` stands for
//! any lines, a line ending in `...` for any line that starts so; the page's lines must be
//! printed in that order, other lines may come between. The commands of one `$` block must
//! have run in that order (each output is the one of that run, not of another run of the
//! same command). The transcript's ports are the test's free ones, mapped back to the
//! example's first (`tests/walkthrough.rs`).
//!
//! What it does not see: a `$` block of one command matches any run of that command (the
//! pages are not in the walkthrough's order), and numbers inside commands are not compared
//! (`--show 15`: LSNs differ from run to run).

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
    ("cargo run --release -- up", "docs/walkthrough.sh", "\"$SPARE_BIN\" up"),
    // Under `spare up` a new node starts by itself; part B starts each node so.
    ("spare run --node lan-2 &", "docs/walkthrough.sh", "\"$SPARE_BIN\" run --node \"$node\""),
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
    /// The `$` block it is in (its first line), for the order of the block's commands.
    pub block: Option<usize>,
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

/// The commands a page shows, with the output it shows for each (maybe none). A page that
/// ends inside a block (a fence not closed) is an error: what follows would not be read.
pub fn shown(page: &str, text: &str) -> Result<Vec<Run>, String> {
    let mut runs: Vec<Run> = Vec::new();
    // Inside a block: its language ("" for a plain one) and first line. After an sh block:
    // its last command.
    let mut block: Option<(String, usize)> = None;
    let mut after_sh: Option<usize> = None;
    let mut current: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{page}:{}", n + 1);
        if let Some(lang) = line.strip_prefix("```") {
            match block.take() {
                Some((lang, _)) => {
                    after_sh = (lang == "sh").then_some(runs.len()).filter(|&l| l > 0)
                }
                None => {
                    block = Some((lang.trim().to_string(), n + 1));
                    // A plain block right after an sh block shows its last command's output.
                    current = after_sh
                        .take()
                        .filter(|_| lang.trim().is_empty())
                        .map(|l| l - 1);
                }
            }
            continue;
        }
        match block.as_ref().map(|(lang, start)| (lang.as_str(), *start)) {
            Some(("sh" | "bash", _)) => {
                let command = line.split("  #").next().unwrap_or("").trim();
                if !command.is_empty() && !command.starts_with('#') {
                    runs.push(Run::new(at, command, None));
                }
            }
            Some(("", start)) => {
                if let Some(command) = line.strip_prefix("$ ") {
                    runs.push(Run::new(at, command, Some(start)));
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
    if let Some((_, start)) = block {
        return Err(format!(
            "{page}:{start}: a code block is never closed: the rest of the page is not read"
        ));
    }
    runs.extend(in_prose(page, text));
    Ok(runs)
}

impl Run {
    fn new(at: String, command: &str, block: Option<usize>) -> Self {
        Run {
            at,
            command: command.to_string(),
            output: Vec::new(),
            block,
        }
    }
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
                        runs.push(Run::new(format!("{page}:{at}"), &code, None));
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

/// The commands of the walkthrough's transcript (`$ COMMAND` lines, the words quoted as
/// bash's `printf %q` quotes them) with what each printed.
pub fn runs(transcript: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (n, line) in transcript.lines().enumerate() {
        if let Some(command) = line.strip_prefix("$ ") {
            runs.push(Run::new(format!("transcript:{}", n + 1), command, None));
        } else if let Some(last) = runs.last_mut() {
            last.output.push(line.to_string());
        }
    }
    runs
}

/// What differs from run to run becomes 0 (see the module's doc); spaces collapsed.
fn normal(line: &str) -> String {
    let line = line
        .replace("localhost:", "host:")
        .replace("127.0.0.1:", "host:");
    let mut out = String::with_capacity(line.len());
    let (mut keep, mut prev, mut before) = (false, ' ', ' ');
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !prev.is_ascii_digit() {
                // `lan-2`, `v1`; not the time of `2026-12-01T10:07` (a letter after a digit).
                let in_name = (prev.is_ascii_alphabetic() && !before.is_ascii_digit())
                    || prev == '_'
                    || (prev == '-' && before.is_ascii_alphabetic());
                keep = in_name || out.ends_with("host:") || out.ends_with("HTTP ");
                if !keep {
                    out.push('0');
                }
            }
            if keep {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        (before, prev) = (prev, c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command's words as the shell splits them, each normalised; a command started in the
/// background (`&`) is the same command.
fn words(command: &str) -> Vec<String> {
    let mut words: Vec<String> = shlex::split(command)
        .unwrap_or_else(|| vec![command.to_string()])
        .iter()
        .map(|w| normal(w))
        .collect();
    if words.last().is_some_and(|w| w == "&") {
        words.pop();
    }
    words
}

/// Whether the page's output lines appear, in order, among the printed ones; if not, the
/// first line missing and how many were found before it.
fn shows(page: &[String], printed: &[String]) -> Result<(), (String, usize)> {
    let mut printed = printed.iter().map(|l| normal(l));
    for (found_before, line) in page.iter().map(|l| normal(l)).enumerate() {
        if line == "..." || line.is_empty() {
            continue;
        }
        let found = match line.strip_suffix("...") {
            Some(start) => printed.any(|p| p.starts_with(start.trim_end())),
            None => printed.any(|p| p == line),
        };
        if !found {
            return Err((line, found_before));
        }
    }
    Ok(())
}

/// What differs between the pages and the transcript: commands not run, outputs not printed.
pub fn check(pages: &[(String, String)], transcript: &[Run]) -> Vec<String> {
    let mut problems = Vec::new();
    for (page, text) in pages {
        let shown = match shown(page, text) {
            Ok(shown) => shown,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        // Where the previous command of the same `$` block was found in the transcript.
        let mut block_at: Option<(usize, usize)> = None;
        for run in shown {
            if let Some(&(_, file, holds)) = RUN_ELSEWHERE.iter().find(|e| e.0 == run.command) {
                problems.extend(runs_elsewhere(&run, file, holds));
                continue;
            }
            let after = match (run.block, block_at) {
                (Some(b), Some((prev, at))) if b == prev => Some(at),
                _ => None,
            };
            match find(&run, transcript, after) {
                Ok(at) => block_at = run.block.map(|b| (b, at)),
                Err(problem) => problems.push(problem),
            }
        }
    }
    problems
}

/// The transcript's run of `run` (after index `after`, for a command of a `$` block) that
/// printed what the page shows: its index, or what is wrong.
fn find(run: &Run, transcript: &[Run], after: Option<usize>) -> Result<usize, String> {
    let command = words(&run.command);
    let same: Vec<(usize, &Run)> = transcript
        .iter()
        .enumerate()
        .filter(|(i, r)| after.is_none_or(|a| *i > a) && words(&r.command) == command)
        .collect();
    if same.is_empty() {
        let order = if after.is_some() {
            " after the block's previous command"
        } else {
            ""
        };
        return Err(format!(
            "{}: `{}` is not run by the walkthrough{order}",
            run.at, run.command
        ));
    }
    // Else the run that came closest, to show what differs.
    let mut closest: Option<(String, usize, &Run)> = None;
    for &(i, r) in &same {
        match shows(&run.output, &r.output) {
            Ok(()) => return Ok(i),
            Err((line, found)) if closest.as_ref().is_none_or(|c| found > c.1) => {
                closest = Some((line, found, r))
            }
            Err(_) => {}
        }
    }
    let (line, _, r) = closest.expect("a run that did not match");
    Err(format!(
        "{}: `{}` printed no line like `{line}`; the closest run printed ({}):\n{}",
        run.at,
        run.command,
        r.at,
        r.output.join("\n")
    ))
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
    let shown = shown("p.md", page).unwrap();
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
    // Everything run and printed as shown (other numbers, other spacing, more lines; words
    // quoted otherwise; in the background).
    let good = "$ spare resume office &\n$ spare sql SELECT\\ 1\n1\n$ spare status\nNODE   ROLE\nmain   primary  serving\n$ spare log --show 40\nLSN 40, epoch 2\nmore\n$ spare verify\nverdict: identical\n";
    assert_eq!(check(&pages, &runs(good)), Vec::<String>::new());
    // A command missing, and an output that is not what was printed.
    let bad = "$ spare sql 'SELECT 1'\n$ spare status\nNODE ROLE\nmain spare\n$ spare log --show 40\nLSN 40, epoch 2\n";
    let problems = check(&pages, &runs(bad));
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("p.md:6: `spare status` printed no line like `main primary ...`"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("p.md:18: `spare verify` is not run by the walkthrough after"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("p.md:1: `spare resume office` is not run"),
        "{problems:?}"
    );
}

#[test]
fn the_guide_check_compares_names_ports_statuses_and_words_but_not_numbers() {
    for (a, b) in [
        (
            "LSN 15 at 2026-12-01T10:07:22Z, took 4526 ms",
            "LSN 9 at 2026-11-26T19:28:29Z, took 12 ms",
        ),
        ("office 0.3s", "office 12.0s"),
    ] {
        assert_eq!(normal(a), normal(b), "{a} / {b}");
    }
    for (a, b) in [
        ("lan-1 streaming", "lan-2 streaming"),
        (
            "{\"http\":\"127.0.0.1:7301\"} HTTP 421",
            "{\"http\":\"127.0.0.1:7302\"} HTTP 421",
        ),
        ("{} HTTP 421", "{} HTTP 200"),
        (
            "curl -s localhost:7302/v1/execute",
            "curl -s localhost:7301/v1/execute",
        ),
    ] {
        assert_ne!(normal(a), normal(b), "{a} / {b}");
    }
    // Quoting is the shell's business; words are not.
    assert_eq!(
        words("spare sql \"SELECT 1\""),
        words("spare sql SELECT\\ 1")
    );
    assert_ne!(words("spare sql \"SELECT 1\""), words("spare sql SELECT 1"));
    // A page whose code block is never closed is refused, not half read.
    assert!(shown("p.md", "```\n$ spare status\n").is_err());
}
