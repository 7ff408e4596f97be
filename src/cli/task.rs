//! `apn task …`: list, show, cancel and submit task attempts on a running node. A task that
//! ended `failed` or `cancelled` exits 1. `submit` follows the task until it ends (a
//! progress bar on a terminal, a line per change otherwise, the run's log lines on stderr),
//! reading the node's event stream (`/api/execution-processes/{id}/raw-logs`) and polling
//! only when the stream is not there; then it prints the task with its diff.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use apn::actors::distributor::{CreateTaskAttempt, TaskStatus, TaskView};
use apn::client::{ApiClient, ClientError, StreamEvent, json_text};

use super::print_answer;

/// How often `task submit` polls the task while following it.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(300);

/// Prints one line per task attempt, newest first.
pub(crate) fn list(client: &ApiClient, json: bool) -> anyhow::Result<ExitCode> {
    let tasks = client.tasks()?;
    if json {
        print_answer(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    for task in &tasks {
        println!(
            "{}  {:<10} {:<14} {:>8} VIBE  {}",
            task.id,
            json_text(&task.status),
            json_text(&task.assigned_node),
            task.reward.to_string(),
            task.title
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one task attempt with its diff.
pub(crate) fn show(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let task = client.get_task(id)?;
    print_final(&task, json)
}

/// Cancels a task attempt (its escrow is refunded).
pub(crate) fn cancel(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let task = client.cancel_task(id)?;
    if json {
        print_answer(&task)?;
    } else {
        println!("cancelled {}", task.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates a task attempt; unless `follow` is off, follows it to its end and prints it.
pub(crate) fn submit(
    client: &ApiClient,
    request: &CreateTaskAttempt,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let created = client.create_task(request)?;
    if !follow {
        if json {
            print_answer(&created)?;
        } else {
            println!("{}", created.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let task = follow_to_end(client, &created.id.to_string(), json)?;
    print_final(&task, json)
}

/// How many times the final view is asked for after the stream's `finished` event before
/// polling takes over (the event and the task's final status are recorded together; this
/// only covers a race with the answer).
const FINAL_VIEW_TRIES: usize = 10;

/// Follows the task until it ends, showing its progress and log lines on stderr unless
/// `json`: from the node's event stream, or by polling when the stream breaks off.
fn follow_to_end(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<TaskView> {
    let bar = progress_bar(json);
    let mut last_line = String::new();
    let streamed = client.execution_events(id, |event| {
        show_event(event, bar.as_ref(), &mut last_line, json);
    });
    let task = match streamed {
        Ok(true) => final_view(client, id)?,
        Ok(false) => None,
        Err(error @ (ClientError::Api { .. } | ClientError::Unreachable { .. })) => {
            return Err(error.into());
        }
        Err(error) => {
            if !json {
                eprintln!("event stream: {error}; polling instead");
            }
            None
        }
    };
    let task = match task {
        Some(task) => task,
        None => poll_to_end(client, id, json, bar.as_ref(), &mut last_line)?,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(task)
}

/// The task once its status is final, or `None` if it is not yet after a few tries.
fn final_view(client: &ApiClient, id: &str) -> anyhow::Result<Option<TaskView>> {
    for _ in 0..FINAL_VIEW_TRIES {
        let task = client.get_task(id)?;
        if task.status.is_final() {
            return Ok(Some(task));
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
    Ok(None)
}

/// One stream event on stderr: the progress line (or bar) and the run's log lines.
fn show_event(
    event: &StreamEvent,
    bar: Option<&indicatif::ProgressBar>,
    last_line: &mut String,
    json: bool,
) {
    if json {
        return;
    }
    let (percent, line) = match event {
        StreamEvent::Started { executor } => (0, format!("running on {executor}")),
        StreamEvent::Progress {
            stage,
            percent,
            action,
        } => (u64::from(*percent), format!("{stage} {action}")),
        StreamEvent::Log { line } => {
            let text = format!("  {} | {}", line.stream, line.line);
            match bar {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            }
            return;
        }
        StreamEvent::Finished { succeeded, detail } => (
            100,
            format!("{} {detail}", if *succeeded { "done" } else { "failed" }),
        ),
        StreamEvent::Other => return,
    };
    match bar {
        Some(bar) => {
            bar.set_position(percent);
            bar.set_message(line.clone());
        }
        None if line != *last_line => eprintln!("{percent:>3}% {line}"),
        None => {}
    }
    *last_line = line;
}

fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    })
}

/// Polls the task until it ends, showing its progress on stderr unless `json`.
fn poll_to_end(
    client: &ApiClient,
    id: &str,
    json: bool,
    bar: Option<&indicatif::ProgressBar>,
    last_line: &mut String,
) -> anyhow::Result<TaskView> {
    let task = loop {
        let task = client.get_task(id)?;
        let line = format!(
            "{} on {} {} {}",
            json_text(&task.status),
            json_text(&task.assigned_node),
            json_text(&task.stage),
            task.current_action.as_deref().unwrap_or("")
        );
        let percent = u64::from(task.progress_percent);
        match bar {
            Some(bar) => {
                bar.set_position(percent);
                bar.set_message(line.clone());
            }
            None if line != *last_line && !json => eprintln!("{percent:>3}% {line}"),
            None => {}
        }
        *last_line = line;
        if task.status.is_final() {
            break task;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    };
    Ok(task)
}

/// Prints a task for people or as JSON; exits 1 when it failed or was cancelled.
fn print_final(task: &TaskView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_answer(task)?;
    } else {
        print_task(task);
    }
    Ok(match task.status {
        TaskStatus::Failed | TaskStatus::Cancelled => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn print_task(task: &TaskView) {
    println!("task      {}", task.id);
    println!("title     {}", task.title);
    println!("status    {}", json_text(&task.status));
    println!("executor  {}", json_text(&task.assigned_node));
    println!(
        "reward    {} VIBE, paid {}",
        task.reward,
        json_text(&task.paid)
    );
    if let Some(summary) = &task.summary {
        println!("summary   {summary}");
    }
    if let Some(error) = &task.error {
        println!("error     {error}");
    }
    if let Some(diff) = &task.diff {
        println!();
        print!("{diff}");
    }
}
