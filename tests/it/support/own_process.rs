//! For the few tests that change what the whole process shares (environment variables): every
//! other test runs in this same process, so such a test runs alone in a child process of this
//! test binary instead.

use std::process::Command;

/// Set in the child to the name of the one test it runs.
const CHILD: &str = "IT_OWN_PROCESS_TEST";

/// Runs `body` in a child process of this test binary that runs only the test `name` of the
/// module `module` (`module_path!()`); the test calls this and nothing else. Fails with the
/// child's output if the child fails, or if it did not run exactly that one test.
pub fn run(module: &str, name: &str, body: impl FnOnce()) {
    // libtest names tests by their path below the crate root.
    let module = module.split_once("::").map_or("", |(_, path)| path);
    let test = format!("{module}::{name}");
    if std::env::var_os(CHILD).is_some_and(|v| v == test.as_str()) {
        return body();
    }
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([&test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, &test)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Indented: the child's own `test result:` line must not read as this binary's.
    let indent = |text: &str| -> String { text.lines().map(|l| format!("    | {l}\n")).collect() };
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} in its own process: {}\n{}{}",
        output.status,
        indent(&stdout),
        indent(&String::from_utf8_lossy(&output.stderr))
    );
}
