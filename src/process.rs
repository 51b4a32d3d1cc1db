//! Runs external programs (checkers, reload commands, plugins) as argument lists with a timeout.
//!
//! Each program gets its own process group so that a timeout kills whatever it started too; its
//! stdout is read up to a size limit and the tail of its output is kept for error messages.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How much of a program's output is kept for error messages.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4096;
/// stderr is drained in full but only this much of its end is kept in memory.
const STDERR_KEEP: usize = 64 * 1024;
/// How long the pipes are still read after the program exited: what it wrote is already there,
/// and a child it left holding them must not keep the run waiting.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// The most a program may print whose output only goes into logs and error messages (checkers,
/// reload commands, action plugins): such programs print little, and more is not read.
pub const MAX_ACTION_OUTPUT: usize = 1024 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    /// Program and arguments; never a shell string.
    pub argv: &'a [String],
    /// Hard limit; the process group is killed after it.
    pub timeout: Duration,
    /// Working directory (the config file's directory).
    pub cwd: &'a Path,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Bytes for stdin; none means stdin is /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// The most stdout bytes accepted.
    pub max_stdout: usize,
}

/// A program that ran and exited 0.
#[derive(Debug)]
pub struct Finished {
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// The end of what it printed on stderr.
    pub stderr: Vec<u8>,
}

/// Why running a program failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The argument list is empty.
    #[error("empty command")]
    Empty,
    /// The program could not be started (not found, not executable, ...).
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("`{command}` did not finish within {} and was killed{}", humantime::format_duration(*.timeout), tail_suffix("output", .output_tail))]
    Timeout {
        /// The command line, for the message.
        command: String,
        /// The limit it hit.
        timeout: Duration,
        /// The end of its stderr.
        output_tail: String,
    },
    /// It exited non-zero or died from a signal.
    #[error("`{command}` failed ({status}){}", tail_suffix("output", .output_tail))]
    Failed {
        /// The command line, for the message.
        command: String,
        /// Exit status as text (`exit status: 1`, `signal: 9 (SIGKILL)`).
        status: String,
        /// The end of its output.
        output_tail: String,
    },
    /// It printed more than the limit on stdout.
    #[error("`{command}` printed more than {limit} bytes on stdout and was killed")]
    TooMuchOutput {
        /// The command line, for the message.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// Talking to it failed.
    #[error("I/O error while running `{command}`: {source}")]
    Io {
        /// The command line, for the message.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `; its STREAM ends with:` and the tail quoted line by line, or nothing when the tail is blank:
/// the one way an error message shows what a program printed (`output`, `stderr`).
pub fn tail_suffix(stream: &str, tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = tail
            .trim_end()
            .lines()
            .map(|l| format!("    | {l}"))
            .collect();
        format!("; its {stream} ends with:\n{}", quoted.join("\n"))
    }
}

/// The last lines of `bytes`, bounded in lines and bytes, as lossy UTF-8.
pub fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    lines[from..].join("\n")
}

/// Quotes argv for messages (not for a shell).
pub fn display_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command; `Ok` only when it exits 0 within the timeout and the output limit.
pub async fn run(spec: CommandSpec<'_>) -> Result<Finished, ProcessError> {
    run_inner(spec, false).await
}

/// Like [`run`], but the program's environment is only `spec.env`: nothing is inherited.
pub async fn run_with_clean_env(spec: CommandSpec<'_>) -> Result<Finished, ProcessError> {
    run_inner(spec, true).await
}

/// Gives up on a run: kills the program's whole group and reaps it, so that nothing it started
/// outlives the error returned.
async fn abandon(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
    error: ProcessError,
) -> Result<Finished, ProcessError> {
    if let Some(pgid) = pgid {
        // The group may be gone already; that's the outcome we want anyway.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    Err(error)
}

async fn run_inner(spec: CommandSpec<'_>, clear_env: bool) -> Result<Finished, ProcessError> {
    let program = spec.argv.first().ok_or(ProcessError::Empty)?;
    let command = display_command(spec.argv);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.argv[1..])
        .current_dir(spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // In this process rather than in a `pre_exec` closure: with one, the standard library forks,
    // and after a fork every page this process writes faults once (copy-on-write), which at
    // 10,000 backends cost the daemon about 1,300 page faults, 5 ms of CPU, per reload command.
    // Without, it spawns with posix_spawn (vfork), which copies nothing.
    close_inherited_fds();
    if clear_env {
        cmd.env_clear();
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // If this future is dropped midway (the daemon shutting down, a locator timeout), whatever
    // the program started dies with it, not only the program itself.
    let mut group_guard = GroupGuard(pgid);
    let stdin_pipe = child.stdin.take();
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let input = spec.stdin.unwrap_or_default();
    let limit = spec.max_stdout;

    // Both outputs are collected outside the futures so that what a program said before a
    // timeout, or before it exited, is still there once the reads are given up.
    let mut stdout_buf = Vec::new();
    let mut stderr_buf = Vec::new();
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let outcome = {
        let feed = async {
            if let Some(mut pipe) = stdin_pipe {
                // A program that exits without reading its input is not an error of ours.
                let _ = pipe.write_all(&input).await;
            }
        };
        let streams = async {
            let (_, out, err) = tokio::join!(
                feed,
                read_limited(stdout_pipe, limit, &mut stdout_buf),
                read_tail(stderr_pipe, STDERR_KEEP, &mut stderr_buf)
            );
            out.and_then(|within| err.map(|()| within))
        };
        tokio::pin!(streams);
        // The exit status decides, not the end of the output: a program that exits 0 but leaves
        // a child holding its stdout (a reload that starts a daemon) is done.
        tokio::time::timeout_at(deadline, async {
            tokio::select! {
                status = child.wait() => {
                    // What it wrote before exiting is in the pipes; a short grace reads it.
                    let grace = tokio::time::Instant::now() + EXIT_GRACE;
                    let streams = tokio::time::timeout_at(grace.min(deadline), &mut streams)
                        .await
                        .unwrap_or(Ok(true));
                    (streams, Some(status))
                }
                streams = &mut streams => (streams, None),
            }
        })
        .await
    };
    let (within_limit, exited) = match outcome {
        Err(_) => {
            let error = ProcessError::Timeout {
                command,
                timeout: spec.timeout,
                output_tail: tail(&stderr_buf),
            };
            return abandon(&mut child, pgid, error).await;
        }
        Ok((Err(source), _)) => {
            return abandon(&mut child, pgid, ProcessError::Io { command, source }).await;
        }
        Ok((Ok(within), exited)) => (within, exited),
    };
    if !within_limit {
        return abandon(
            &mut child,
            pgid,
            ProcessError::TooMuchOutput { command, limit },
        )
        .await;
    }
    let (stdout, stderr) = (stdout_buf, stderr_buf);
    let status = match exited {
        Some(status) => status,
        // Output is closed; the program may still be running (it closed its pipes early).
        None => match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let error = ProcessError::Timeout {
                    command,
                    timeout: spec.timeout,
                    output_tail: tail(&stderr),
                };
                return abandon(&mut child, pgid, error).await;
            }
        },
    }
    .map_err(|source| ProcessError::Io {
        command: command.clone(),
        source,
    })?;
    group_guard.disarm();
    if status.success() {
        Ok(Finished { stdout, stderr })
    } else {
        let mut combined = stdout;
        if !combined.is_empty() && !combined.ends_with(b"\n") {
            combined.push(b'\n');
        }
        combined.extend_from_slice(&stderr);
        Err(ProcessError::Failed {
            command,
            status: describe_status(status),
            output_tail: tail(&combined),
        })
    }
}

/// Marks every descriptor above stderr close-on-exec, in this process, before a program is
/// started: descriptors that elasticd inherited without `O_CLOEXEC` (a socket from its parent, a
/// shell's `exec 7<file`) must not reach checkers, reload commands and plugins. Everything
/// elasticd opens itself is close-on-exec already, so nothing it uses changes. Kernels before 5.11
/// lack `CLOSE_RANGE_CLOEXEC`; then the descriptors listed in `/proc/self/fd` (else each one up
/// to the soft limit, at most 65536) are marked with fcntl.
fn close_inherited_fds() {
    // SAFETY: a raw syscall on descriptor numbers only; no memory is passed.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0
    {
        return;
    }
    let listed: Option<Vec<libc::c_int>> = std::fs::read_dir("/proc/self/fd").ok().map(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect()
    });
    let fds = listed.unwrap_or_else(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct passed, which lives on this stack.
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur.min(65_536) as libc::c_int
        } else {
            1024
        };
        (3..max).collect()
    });
    for fd in fds {
        // SAFETY: fcntl on a descriptor number only; one that is not open just makes it fail.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Kills a process group when dropped, unless disarmed after the program exited normally.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// Reads everything into `buf`, up to `limit` bytes; `false` when there was more. What was read
/// stays in `buf` when the future is dropped midway.
async fn read_limited(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Some(mut pipe) = pipe else {
        return Ok(true);
    };
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(true);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limit {
            return Ok(false);
        }
    }
}

/// Reads to the end, keeping only the last `keep` bytes.
async fn read_tail(
    pipe: Option<impl AsyncRead + Unpin>,
    keep: usize,
    kept: &mut Vec<u8>,
) -> std::io::Result<()> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > keep * 2 {
            kept.drain(..kept.len() - keep);
        }
    }
}

/// True for a regular file with an execute bit.
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `program` in the directories of `PATH`.
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|p| is_executable_file(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[String], timeout_ms: u64) -> CommandSpec<'_> {
        CommandSpec {
            argv,
            timeout: Duration::from_millis(timeout_ms),
            cwd: Path::new("/"),
            env: vec![],
            stdin: None,
            max_stdout: 1024,
        }
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn success_returns_stdout() {
        let a = argv(&["sh", "-c", "echo hello"]);
        let out = run(spec(&a, 5000)).await.unwrap();
        assert_eq!(out.stdout, b"hello\n");
    }

    #[tokio::test]
    async fn failure_carries_status_and_stderr_tail() {
        let a = argv(&["sh", "-c", "echo first >&2; echo boom >&2; exit 3"]);
        let err = run(spec(&a, 5000)).await.unwrap_err().to_string();
        assert!(err.contains("exit status 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // The grandchild holds stdout open; only a group kill ends it.
        let a = argv(&["sh", "-c", "sleep 30 & sleep 30"]);
        let started = std::time::Instant::now();
        let err = run(spec(&a, 300)).await.unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn oversized_output_is_refused() {
        let a = argv(&["sh", "-c", "head -c 5000 /dev/zero"]);
        let err = run(spec(&a, 5000)).await.unwrap_err();
        assert!(matches!(err, ProcessError::TooMuchOutput { .. }), "{err}");
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let a = argv(&["sh", "-c", &script]);
        let run_future = run(spec(&a, 60_000));
        // Give it time to start the grandchild, then drop the future.
        let _ = tokio::time::timeout(Duration::from_millis(500), run_future).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok() {
            // A killed child lingers as a zombie of the shell until reaped; /proc tells.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {pid} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let a = argv(&["/nonexistent/elasticd-test-program"]);
        let err = run(spec(&a, 5000)).await.unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn clean_env_inherits_nothing() {
        let a = argv(&["/usr/bin/env"]);
        let mut s = spec(&a, 5000);
        s.env = vec![("ONLY".into(), "this".into())];
        let out = run_with_clean_env(s).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ONLY=this\n");
    }

    #[test]
    fn tails_are_quoted_line_by_line_and_blank_ones_add_nothing() {
        assert_eq!(
            tail_suffix("stderr", "first\nlast\n\n"),
            "; its stderr ends with:\n    | first\n    | last"
        );
        assert_eq!(tail_suffix("output", " \n"), "");
    }

    #[tokio::test]
    async fn stdin_is_delivered() {
        let a = argv(&["cat"]);
        let mut s = spec(&a, 5000);
        s.stdin = Some(b"request".to_vec());
        assert_eq!(run(s).await.unwrap().stdout, b"request");
    }
}
