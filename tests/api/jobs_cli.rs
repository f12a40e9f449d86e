//! `tenantd jobs list|show|retry|discard|tick` and `tenantd schedules list|add|remove` on a
//! data directory the test's app has filled: exit codes (0 done, 1 the operation failed, 2 a
//! command-line mistake, named), and the `--json` shapes.

use std::process::Output;

use serde_json::{json, Value};
use tenantd::api::jobs;

use crate::jobs::{app_with_workers, noop};
use crate::support::TestApp;

fn run(test: &TestApp, args: &[&str]) -> (i32, Value, String) {
    let out: Output = test.cli(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().expect("an exit status"), json, stderr)
}

/// Exit 0 and the JSON printed.
fn ok(test: &TestApp, args: &[&str]) -> Value {
    let (code, json, stderr) = run(test, args);
    assert_eq!(code, 0, "tenantd {args:?}: {stderr}");
    json
}

/// The exit status, which must be `code`, and stderr, which must name `what`.
fn fails(test: &TestApp, args: &[&str], code: i32, what: &str) {
    let (got, _, stderr) = run(test, args);
    assert_eq!(got, code, "tenantd {args:?}: {stderr}");
    assert!(
        stderr.contains(what),
        "tenantd {args:?} names {what:?}: {stderr}"
    );
}

fn ids(list: &Value, key: &str) -> Vec<i64> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is an array: {list}"))
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn jobs_commands_list_show_retry_discard_with_exit_codes_and_json() {
    let test = app_with_workers(0, 10);
    let alpha = test.create_tenant("alpha", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let beta = test.create_tenant("beta", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut failing = noop(Some(&alpha), json!({"fail": "boom"}));
    failing.max_attempts = Some(1);
    let failed = test.app.enqueue(failing).unwrap().id();
    let mut runner = None;
    assert!(jobs::run_next(
        &test.app,
        "default",
        "serve:test",
        &mut runner,
        jobs::now_ms()
    )
    .unwrap());
    let pending = test.app.enqueue(noop(Some(&beta), json!({}))).unwrap().id();

    let all = ok(&test, &["jobs", "list", "--json"]);
    assert_eq!(ids(&all, "jobs"), vec![pending, failed], "newest first");
    let only_failed = ok(&test, &["jobs", "list", "--status", "failed", "--json"]);
    assert_eq!(ids(&only_failed, "jobs"), vec![failed]);
    let alphas = ok(&test, &["jobs", "list", "--tenant", "alpha", "--json"]);
    assert_eq!(ids(&alphas, "jobs"), vec![failed], "one tenant's jobs only");
    let betas = ok(&test, &["jobs", "list", "--tenant", &beta, "--json"]);
    assert_eq!(ids(&betas, "jobs"), vec![pending]);
    let text = test.cli(&["jobs", "list"]);
    assert_eq!(String::from_utf8_lossy(&text.stdout).lines().count(), 2);
    fails(
        &test,
        &["jobs", "list", "--status", "nope"],
        2,
        "no status nope",
    );
    fails(&test, &["jobs", "list", "--limit", "0"], 2, "--limit");
    fails(
        &test,
        &["jobs", "list", "--tenant", "nobody"],
        1,
        "no tenant nobody",
    );

    let shown = ok(&test, &["jobs", "show", &failed.to_string(), "--json"]);
    assert_eq!(shown["id"], failed);
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["kind"], "noop");
    assert_eq!(shown["tenant_id"], alpha.as_str());
    assert_eq!(shown["last_error"], "boom");
    assert_eq!(
        (shown["attempts"].as_i64(), shown["max_attempts"].as_i64()),
        (Some(1), Some(1))
    );
    fails(&test, &["jobs", "show", "999999"], 1, "no job 999999");
    fails(&test, &["jobs", "show", "abc"], 2, "not a job id: abc");
    fails(&test, &["jobs", "show"], 2, "<id>");

    let retried = ok(&test, &["jobs", "retry", &failed.to_string(), "--json"]);
    assert_eq!(
        (retried["status"].as_str(), retried["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    fails(
        &test,
        &["jobs", "retry", &failed.to_string()],
        1,
        "is pending",
    );
    let discarded = ok(&test, &["jobs", "discard", &failed.to_string(), "--json"]);
    assert_eq!(discarded["status"], "discarded");
    fails(
        &test,
        &["jobs", "discard", &failed.to_string()],
        1,
        "is discarded",
    );
    fails(&test, &["jobs", "discard", "999999"], 1, "no job 999999");
    assert_eq!(
        test.app.catalog.job(pending).unwrap().unwrap().status,
        tenantd::catalog::JobStatus::Pending,
        "the other tenant's job untouched"
    );
    fails(
        &test,
        &["jobs", "frobnicate"],
        2,
        "unknown jobs command: frobnicate",
    );
    fails(&test, &["jobs"], 2, "missing a jobs command");
}

#[test]
fn schedules_commands_add_list_remove_and_tick_fires_each_due_time_once() {
    let test = app_with_workers(0, 10);
    let alpha = test.create_tenant("alpha", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let added = ok(
        &test,
        &[
            "schedules",
            "add",
            "--cron",
            "*/5 * * * *",
            "--kind",
            "noop",
            "--tenant",
            "alpha",
            "--payload",
            r#"{"record": true}"#,
            "--json",
        ],
    );
    let id = added["id"].as_i64().expect("an id");
    assert_eq!(added["cron"], "*/5 * * * *");
    assert_eq!(added["kind"], "noop");
    assert_eq!(added["tenant_id"], alpha.as_str());
    assert_eq!(added["payload"], json!({"record": true}));
    assert!(added["next_run_at"].as_i64().unwrap() > jobs::now_ms());
    let listed = ok(&test, &["schedules", "list", "--json"]);
    assert_eq!(ids(&listed, "schedules"), vec![id]);

    // Usage errors name the problem, and add nothing.
    let bad: [(&[&str], &str); 6] = [
        (
            &["--cron", "every day", "--kind", "noop"],
            "--cron: not a cron expression",
        ),
        (&["--cron", "61 * * * *", "--kind", "noop"], "--cron"),
        (
            &["--cron", "* * * * *", "--kind", "nothing"],
            "--kind: no job kind nothing",
        ),
        (&["--kind", "noop"], "--cron is required"),
        (
            &["--cron", "* * * * *", "--kind", "noop", "--payload", "{"],
            "--payload",
        ),
        (
            &[
                "--cron",
                "* * * * *",
                "--kind",
                "noop",
                "--tenant",
                "nobody",
            ],
            "--tenant: no tenant nobody",
        ),
    ];
    for (args, what) in bad {
        let all: Vec<&str> = ["schedules", "add"].iter().chain(args).copied().collect();
        fails(&test, &all, 2, what);
    }
    assert_eq!(
        ids(&ok(&test, &["schedules", "list", "--json"]), "schedules"),
        vec![id]
    );

    // Due now (as if its time had come): one tick enqueues its job, the next nothing.
    test.central_db()
        .execute("UPDATE schedules SET next_run_at = 0 WHERE id = ?1", [id])
        .unwrap();
    let fired = ok(&test, &["jobs", "tick", "--json"]);
    let enqueued = fired["enqueued"].as_array().expect("enqueued ids").clone();
    assert_eq!(enqueued.len(), 1, "{fired}");
    let job = test
        .app
        .catalog
        .job(enqueued[0].as_i64().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.kind.as_str(), job.tenant_id.as_deref()),
        ("noop", Some(alpha.as_str()))
    );
    assert_eq!(
        ok(&test, &["jobs", "tick", "--json"]),
        json!({"enqueued": []})
    );

    let (code, _, _) = run(&test, &["schedules", "remove", &id.to_string()]);
    assert_eq!(code, 0);
    fails(
        &test,
        &["schedules", "remove", &id.to_string()],
        1,
        &format!("no schedule {id}"),
    );
    assert_eq!(
        ok(&test, &["schedules", "list", "--json"]),
        json!({"schedules": []})
    );
    fails(&test, &["schedules", "remove"], 2, "<id>");
}
