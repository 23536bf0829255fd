//! `vzhost stop --all`: every running VPS stopped, many at a time. Each
//! goes through the daemon's ordinary stop (its init's stop signal, then
//! its stop timeout, then SIGKILL), so each still gets its clean shutdown;
//! running them side by side is what makes a host shutdown take seconds
//! rather than one stop timeout per VPS.
use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::bail;
use serde::Serialize;
use vzhost::{
    daemon::api::{Failure, List, Stop},
    model::{ErrorKind, Status},
};

use super::{
    args::Output,
    client::{Client, ClientError},
};

/// Stops in flight at once by default: enough that a thousand VPSs whose
/// inits take a couple of seconds to stop are down well within 30 s,
/// few enough for the daemon's pool of request threads (512).
pub const DEFAULT_JOBS: u16 = 100;

/// How one VPS's stop ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    Stopped,
    /// It stopped by itself or was destroyed meanwhile.
    AlreadyStopped,
    Failed {
        error: Failure,
    },
}

#[derive(Debug, Serialize)]
pub struct Stopped {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Run `work` on every item, at most `jobs` at a time; the results in
/// the items' order. `done` hears the count finished after each.
pub fn bounded<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    done: impl Fn(usize) + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = work(item);
                    *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                    done(finished.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every item was worked on")
        })
        .collect()
}

/// What a stop's answer means for `stop --all`: a VPS that is no longer
/// running or no longer exists is stopped, as asked.
pub fn outcome(answer: Result<(), ClientError>) -> Outcome {
    match answer {
        Ok(()) => Outcome::Stopped,
        Err(e) => match e.kind() {
            ErrorKind::Conflict | ErrorKind::NotFound => Outcome::AlreadyStopped,
            kind => Outcome::Failed {
                error: Failure {
                    kind,
                    message: e.to_string(),
                },
            },
        },
    }
}

pub fn run(client: &Client, out: Output, jobs: usize) -> anyhow::Result<ExitCode> {
    let running: Vec<String> = client
        .call(List {})?
        .into_iter()
        .filter(|v| v.status == Status::Running)
        .map(|v| v.name)
        .collect();
    let started = Instant::now();
    let progress = out == Output::Table && std::io::stderr().is_terminal();
    let total = running.len();
    let results = bounded(
        &running,
        jobs,
        |name| outcome(client.call(Stop { name: name.clone() })),
        |n| {
            if progress {
                eprint!("\rstopping: {n}/{total}");
                let _ = std::io::stderr().flush();
            }
        },
    );
    if progress && total > 0 {
        eprintln!();
    }
    let results: Vec<Stopped> = running
        .into_iter()
        .zip(results)
        .map(|(name, outcome)| Stopped { name, outcome })
        .collect();
    let failed: Vec<&Stopped> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .collect();
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Table => println!(
            "stopped {} of {total} running VPSs in {:.1} s",
            total - failed.len(),
            started.elapsed().as_secs_f64()
        ),
    }
    if !failed.is_empty() {
        let lines: Vec<String> = failed
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Failed { error } => format!("  {}: {}", r.name, error.message),
                _ => unreachable!("only failures are listed"),
            })
            .collect();
        bail!(
            "{} of {total} VPSs did not stop:\n{}",
            failed.len(),
            lines.join("\n")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_item_is_worked_once_and_results_keep_their_order() {
        let items: Vec<u32> = (0..200).collect();
        let seen = Mutex::new(Vec::new());
        let out = bounded(
            &items,
            7,
            |&i| {
                seen.lock().unwrap().push(i);
                if i.is_multiple_of(3) {
                    Err(i)
                } else {
                    Ok(i * 2)
                }
            },
            |_| {},
        );
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, items);
        for (i, r) in out.iter().enumerate() {
            let i = i as u32;
            assert_eq!(
                *r,
                if i.is_multiple_of(3) {
                    Err(i)
                } else {
                    Ok(i * 2)
                }
            );
        }
    }

    #[test]
    fn no_more_than_jobs_run_at_once_and_they_do_overlap() {
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items = [(); 24];
        bounded(
            &items,
            4,
            |()| {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                now.fetch_sub(1, Ordering::SeqCst);
            },
            |_| {},
        );
        assert_eq!(most.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn progress_counts_up_to_the_total() {
        let counts = Mutex::new(Vec::new());
        bounded(
            &[1, 2, 3, 4, 5],
            2,
            |_| (),
            |n| counts.lock().unwrap().push(n),
        );
        let mut counts = counts.into_inner().unwrap();
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3, 4, 5]);
        // Nothing to do: no thread, no call.
        let none: Vec<()> = bounded(&[] as &[u8], 8, |_| (), |_| panic!("nothing finished"));
        assert!(none.is_empty());
    }

    #[test]
    fn a_vps_gone_or_stopped_meanwhile_is_stopped_and_anything_else_fails() {
        let daemon = |kind, message: &str| {
            Err(ClientError::Daemon(Failure {
                kind,
                message: message.into(),
            }))
        };
        assert_eq!(outcome(Ok(())), Outcome::Stopped);
        assert_eq!(
            outcome(daemon(ErrorKind::Conflict, "VPS a is not running")),
            Outcome::AlreadyStopped
        );
        assert_eq!(
            outcome(daemon(ErrorKind::NotFound, "VPS a does not exist")),
            Outcome::AlreadyStopped
        );
        let failed = outcome(daemon(ErrorKind::Kernel, "cgroup busy"));
        assert_eq!(
            failed,
            Outcome::Failed {
                error: Failure {
                    kind: ErrorKind::Kernel,
                    message: "cgroup busy".into()
                }
            }
        );
        let json = serde_json::to_value(Stopped {
            name: "a".into(),
            outcome: failed,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "result": "failed",
                "error": {"kind": "kernel", "message": "cgroup busy"}})
        );
    }
}
