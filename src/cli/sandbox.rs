//! `apn sandbox check`: tries the sandbox on this kernel and says what it supports. Exit
//! status 1 when runs cannot be sandboxed here (such a node refuses peers' tasks).

use std::process::ExitCode;

/// Probes the kernel and prints the answer.
pub(crate) fn check(json: bool) -> anyhow::Result<ExitCode> {
    let support = apn::sandbox::probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&support)?);
    } else {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!("landlock abi          {}", support.landlock_abi);
        println!("tcp connect rules     {}", yes_no(support.tcp_rules));
        println!("signal/socket scopes  {}", yes_no(support.scopes));
        println!(
            "unix socket rules     {}",
            yes_no(support.unix_socket_rules)
        );
        println!("sandboxed trial run   {}", yes_no(support.trial_run));
        match &support.problem {
            None => println!("runs can be sandboxed on this kernel"),
            Some(problem) => println!(
                "runs CANNOT be sandboxed: {problem}\n\
                 a node here refuses peers' tasks unless executor.sandbox = \"off\""
            ),
        }
    }
    Ok(if support.available() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
