//! The README's CLI table against the binary: every command `rkt --help`,
//! `rkt image --help` and `rkt app --help` list has a row, every row's command exists unless the row refuses the
//! whole command, and each command's flags in `--help` (minus the global ones) are exactly the
//! row's "done" and "ignored with a warning" flags; a refused flag is not in `--help`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;

/// One table row: command words after `rkt`, and the flags of each state column.
#[derive(Debug)]
struct Row {
    command: Vec<String>,
    done: BTreeSet<String>,
    ignored: BTreeSet<String>,
    refused: BTreeSet<String>,
    /// The refused column refuses the whole command.
    refused_command: bool,
}

/// `--flag` tokens of a text (a token ends at anything but `[a-z0-9-]`).
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let tail = &rest[i + 2..];
        let n: String = tail
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !n.is_empty() {
            out.insert(format!("--{n}"));
        }
        rest = &tail[n.len()..];
    }
    out
}

fn readme_rows() -> Vec<Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("\n## CLI\n").expect("README has a CLI section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `rkt")) {
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cols.len(), 4, "row with 4 columns: {line}");
        let cmd = cols[0].split('`').nth(1).unwrap();
        rows.push(Row {
            command: cmd.split_whitespace().skip(1).map(String::from).collect(),
            done: flags_in(cols[1]),
            ignored: flags_in(cols[2]),
            refused: flags_in(cols[3]),
            refused_command: cols[3].starts_with("the command"),
        });
    }
    assert!(rows.len() > 20, "the CLI table has a row per command");
    rows
}

fn help(words: &[String]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_rkt"))
        .args(words)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "rkt {words:?} --help");
    String::from_utf8(o.stdout).unwrap()
}

/// Flags of a `--help`: the first token of lines that start (after spaces) with `-`, minus
/// `--help`.
fn help_flags(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            let first = l.split([' ', '[', '=', '<']).find(|t| t.starts_with("--"));
            first.map(|t| t.trim_end_matches(',').to_string())
        })
        .filter(|f| f != "--help")
        .collect()
}

/// Subcommand names of a `--help` (the `Commands:` block), minus `help`.
fn subcommands(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn readme_cli_table_matches_help() {
    let rows = readme_rows();
    let top = help(&[]);
    let globals = help_flags(&top);
    let global_row = rows.iter().find(|r| r.command.is_empty()).unwrap();
    let mut problems = Vec::new();
    let documented: BTreeSet<String> = global_row
        .done
        .union(&global_row.ignored)
        .cloned()
        .collect();
    if documented != globals {
        problems.push(format!(
            "global flags: README {documented:?} vs --help {globals:?}"
        ));
    }
    // Every command of the binary has a row.
    let mut commands: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    for group in ["image", "app"] {
        for sub in subcommands(&help(&[group.into()])) {
            commands.push(vec![group.into(), sub]);
        }
    }
    commands.retain(|c| c != &["image".to_string()] && c != &["app".to_string()]);
    for c in &commands {
        if !rows.iter().any(|r| &r.command == c) {
            problems.push(format!("rkt {} has no README row", c.join(" ")));
        }
    }
    for r in rows.iter().filter(|r| !r.command.is_empty()) {
        let name = r.command.join(" ");
        let exists = commands.contains(&r.command);
        if r.refused_command {
            if exists {
                problems.push(format!("rkt {name} is refused in the README but exists"));
            }
            continue;
        }
        if !exists {
            problems.push(format!("rkt {name} is in the README but not in the binary"));
            continue;
        }
        let h = help(&r.command);
        let have: BTreeSet<String> = help_flags(&h).difference(&globals).cloned().collect();
        let documented: BTreeSet<String> = r.done.union(&r.ignored).cloned().collect();
        for f in have.difference(&documented) {
            problems.push(format!("rkt {name} {f}: in --help, missing in the README"));
        }
        for f in documented.difference(&have) {
            problems.push(format!("rkt {name} {f}: in the README, missing in --help"));
        }
        for f in r.refused.intersection(&have) {
            problems.push(format!(
                "rkt {name} {f}: refused in the README but in --help"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README CLI table vs --help:\n{}",
        problems.join("\n")
    );
}

#[test]
fn flag_tokens() {
    assert_eq!(
        flags_in("`--a-b` `--c`; `--stdin` other than x--y"),
        ["--a-b", "--c", "--stdin", "--y"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let h = "      --full[=<BOOL>]\n          Full --not-this\n  -h, --help\n  --volume\n";
    assert_eq!(
        help_flags(h),
        ["--full", "--volume"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
