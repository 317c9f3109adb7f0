use clap::Parser;
use serde_json::{Value, json};

use super::session::execute_message;
use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    exec: ExecArgs,
}

fn parse(args: &[&str]) -> ExecArgs {
    let mut argv = vec!["exec"];
    argv.extend(args);
    Cli::try_parse_from(argv).unwrap().exec
}

/// The `execute` message as it goes on the wire.
fn wire(s: &Session) -> Value {
    serde_json::to_value(execute_message(s, "cid")).unwrap()
}

#[test]
fn quoting_keeps_words_intact() {
    assert_eq!(shell_quote("ls"), "ls");
    assert_eq!(shell_quote("/usr/bin/x-y_z.1"), "/usr/bin/x-y_z.1");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote("$HOME"), "'$HOME'");
    assert_eq!(shell_quote("A=b"), "'A=b'");
    assert_eq!(shell_quote("*"), "'*'");
    assert_eq!(
        shell_join(&["bash".into(), "-c".into(), "echo \"hi\" | wc -c".into()]),
        r#"bash -c 'echo "hi" | wc -c'"#
    );
}

#[test]
fn exec_builds_the_execute_message() {
    let a = parse(&[
        "-e",
        "A=1",
        "-e",
        "B=x=y",
        "-w",
        "/app",
        "--timeout",
        "5",
        "box",
        "--",
        "echo",
        "a b",
    ]);
    assert_eq!(a.name, "box");
    let s = exec_session(&a, Some((40, 120))).unwrap();
    assert_eq!(
        wire(&s),
        json!({
            "type": "execute",
            "command": "echo 'a b'",
            "timeout_seconds": 5,
            "shell": "/bin/bash",
            "command_id": "cid",
            "kill_on_disconnect": true,
            "env": {"A": "1", "B": "x=y"},
            "cwd": "/app",
            "close_stdin": true,
        })
    );
}

#[test]
fn exec_flags_for_stdin_and_tty() {
    let s = exec_session(&parse(&["-i", "box", "cat"]), None).unwrap();
    let m = wire(&s);
    assert!(m.get("close_stdin").is_none());
    assert!(m.get("pty").is_none());
    assert_eq!(m["timeout_seconds"], 0);

    let s = exec_session(&parse(&["-it", "box", "--", "top", "-b"]), Some((40, 120))).unwrap();
    let m = wire(&s);
    assert_eq!(m["pty"], true);
    assert!(m.get("close_stdin").is_none());
    assert_eq!(m["command"], "stty rows 40 cols 120 2>/dev/null; top -b");
    assert!(m["env"]["TERM"].is_string());

    // Without a local terminal there is no size to pass on.
    let s = exec_session(&parse(&["-t", "-e", "TERM=vt100", "box", "ls"]), None).unwrap();
    let m = wire(&s);
    assert_eq!(m["command"], "ls");
    assert_eq!(m["env"]["TERM"], "vt100");
    assert_eq!(m["close_stdin"], true);
}

#[test]
fn exec_needs_a_command_and_good_env() {
    let mut argv = vec!["exec", "box"];
    assert!(Cli::try_parse_from(&argv).is_err());
    argv.push("true");
    assert!(Cli::try_parse_from(&argv).is_ok());
    assert!(exec_session(&parse(&["-e", "NOEQUALS", "box", "true"]), None).is_err());
    assert!(exec_session(&parse(&["-e", "=v", "box", "true"]), None).is_err());
    // Flags after the command belong to the command.
    let a = parse(&["box", "ls", "-i", "--timeout", "3"]);
    assert!(!a.interactive);
    assert_eq!(a.command, ["ls", "-i", "--timeout", "3"]);
}

#[test]
fn shell_runs_a_login_bash_on_a_pty() {
    #[derive(Debug, Parser)]
    struct ShellCli {
        #[command(flatten)]
        shell: ShellArgs,
    }
    let a = ShellCli::try_parse_from(["shell", "box"]).unwrap().shell;
    let m = wire(&shell_session(&a, Some((24, 80))).unwrap());
    assert_eq!(
        m["command"],
        "stty rows 24 cols 80 2>/dev/null; exec bash -l"
    );
    assert_eq!(m["pty"], true);
    assert_eq!(m["timeout_seconds"], 0);
    assert!(m.get("close_stdin").is_none());
}
