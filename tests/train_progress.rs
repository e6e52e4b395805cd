//! The trainer's progress display: on a terminal a live bar (step, loss,
//! tokens/s, ETA) drawn on stdout, off a terminal plain periodic lines.
//!
//! The terminal is a pseudo-terminal from `openpty`; the run is slowed down
//! between steps (`CLLM_TEST_STEP_DELAY_MS`) so the bar is drawn several
//! times.

#![cfg(unix)]

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const STEPS: u64 = 8;

/// Pseudo-terminal runs one at a time: a child spawned by another test
/// thread while our slave end is open could inherit it and keep the master
/// from seeing the end of output.
static PTY: Mutex<()> = Mutex::new(());

/// A new pseudo-terminal (master, slave) of 120 x 40 characters, both ends
/// close-on-exec; `None` where the system has none (e.g. a container
/// without /dev/pts).
fn openpty() -> Option<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let mut size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; a null name and termios are allowed. (A
    // raw `*mut` fits both the `*const` (Linux) and `*mut` (BSD) prototypes.)
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::addr_of_mut!(size),
        )
    };
    if r != 0 {
        eprintln!(
            "note: openpty failed ({}); terminal test skipped",
            std::io::Error::last_os_error()
        );
        return None;
    }
    for fd in [master, slave] {
        // SAFETY: fd is open and ours.
        assert_ne!(
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
            -1
        );
    }
    // SAFETY: openpty returned two new descriptors that nothing else owns.
    Some(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// Everything readable from `f` until end of file or, for a pty master,
/// EIO (every slave descriptor closed).
fn drain(mut f: File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break, // EIO: the child and its descendants are gone
        }
    }
    out
}

struct Run {
    status: ExitStatus,
    /// What the child wrote to its stdout (the terminal or a pipe).
    stdout: String,
    /// What it wrote to stderr (a pipe, or the terminal when shared).
    stderr: String,
}

/// Runs the trainer with stdout on a pseudo-terminal (and stderr too when
/// `stderr_on_tty`), or with both on pipes when `tty` is false. `None` when
/// a terminal is wanted and none can be had.
fn run(args: &[&str], tty: bool, stderr_on_tty: bool) -> Option<Run> {
    let exe = example("train");
    let _one = PTY.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_remove("CLLM_INJECT_FAILURE")
        .env("CLLM_TEST_STEP_DELAY_MS", "120")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut master = None;
    if tty {
        let (m, slave) = openpty()?;
        if stderr_on_tty {
            cmd.stderr(Stdio::from(slave.try_clone().unwrap()));
        }
        cmd.stdout(Stdio::from(slave));
        master = Some(File::from(m));
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn train");
    // Close our copies of the slave end, or the master never reaches EIO.
    drop(cmd);
    let out = master
        .or_else(|| child.stdout.take().map(|p| File::from(OwnedFd::from(p))))
        .map(|f| thread::spawn(move || drain(f)));
    let err = child
        .stderr
        .take()
        .map(|p| thread::spawn(move || drain(File::from(OwnedFd::from(p)))));
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the trainer did not finish in time");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| String::from_utf8_lossy(&h.join().unwrap()).into_owned())
            .unwrap_or_default()
    };
    Some(Run {
        status,
        stdout: text(out),
        stderr: text(err),
    })
}

/// `s` without ANSI escape sequences, with carriage returns as newlines.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    // CSI: parameters, then a final byte in @..~.
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            // The terminal turns "\n" into "\r\n"; a lone "\r" redraws.
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// Whether `line` is a drawn bar of the run: `step N/8 loss L | T tok/s
/// [HH:MM:SS, ETA E]`.
fn is_bar(line: &str) -> bool {
    let Some(i) = line.find("step ") else {
        return false;
    };
    let rest = &line[i + 5..];
    let Some((pos, rest)) = rest.split_once(&format!("/{STEPS} loss ")) else {
        return false;
    };
    let Some((loss, rest)) = rest.split_once(" | ") else {
        return false;
    };
    let Some((rate, rest)) = rest.split_once(" tok/s [") else {
        return false;
    };
    pos.parse::<u64>().is_ok_and(|p| (1..=STEPS).contains(&p))
        && loss.parse::<f32>().is_ok_and(f32::is_finite)
        && rate.parse::<f64>().is_ok_and(|r| r > 0.0)
        && rest.contains(", ETA ")
        && rest.trim_end().ends_with(']')
}

fn args<'a>(data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut a = vec![
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "8",
        "--log-every",
        "2",
        "--threads",
        "1",
    ];
    a.extend(tiny());
    a
}

fn assert_finished(r: &Run, out: &Path) {
    assert!(
        r.status.success(),
        "run failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert!(out.join("model.safetensors").is_file(), "no final model");
    assert!(out.join("checkpoint-8").is_dir(), "no final checkpoint");
}

fn check_bar(stderr_on_tty: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let out = tmp.path().join("run");
    let Some(r) = run(&args(&data, &out), true, stderr_on_tty) else {
        return;
    };
    assert_finished(&r, &out);
    let screen = plain(&r.stdout);
    let bars: Vec<&str> = screen.lines().filter(|l| is_bar(l)).collect();
    assert!(
        !bars.is_empty(),
        "no progress bar with step, loss, tok/s and ETA on the terminal:\n{screen}"
    );
    assert!(r.stdout.contains('\u{1b}'), "no terminal control sequences");
    // The messages are printed above the bar, on the terminal.
    for want in [
        "loaded 1 file",
        "saved ",
        "checkpoint-8",
        "done: 8 steps",
        "| val ",
    ] {
        assert!(screen.contains(want), "{want:?} missing:\n{screen}");
    }
    // The bar replaces the periodic lines (only evaluations are printed).
    assert!(!screen.contains("step 2 | loss"), "{screen}");
    if !stderr_on_tty {
        assert_eq!(r.stderr, "", "stderr");
    }
}

#[test]
fn terminal_shows_a_progress_bar() {
    check_bar(true);
}

/// `train … 2>log` on a terminal: the bar and the messages still reach the
/// terminal.
#[test]
fn terminal_stdout_with_redirected_stderr_shows_the_bar() {
    check_bar(false);
}

#[test]
fn pipe_gets_plain_periodic_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let out = tmp.path().join("run");
    let r = run(&args(&data, &out), false, false).expect("no terminal needed");
    assert_finished(&r, &out);
    let text = &r.stdout;
    for step in [2, 4, 6, 8] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("step {step} | loss ")))
            .unwrap_or_else(|| panic!("no line for step {step}:\n{text}"));
        assert!(line.contains(" tok/s | "), "{line}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("step 1 |")),
        "a line off the --log-every period:\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "control sequences in a pipe");
    assert!(!text.contains("ETA"), "a bar in a pipe:\n{text}");
    assert!(text.contains("done: 8 steps"), "{text}");
    assert_eq!(r.stderr, "", "stderr");
}
