//! `/apps/{app}/procfile`: what the dyno manager runs, recorded in the
//! formation; bad input named.

use serde_json::json;

use crate::support::{assert_error, Harness};

#[tokio::test]
async fn a_procfile_sets_the_formation_commands_and_scales_a_new_web_type_to_one() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, body) = h.get("/apps/demo/procfile").await;
    assert_error(status, &body, 404, "not_found", "procfile");

    let procfile = json!({
        "processes": { "web": "bin/web --port $PORT", "worker": "bin/worker" },
        "dir": "/srv/demo",
    });
    let (status, body) = h.call("PUT", "/apps/demo/procfile", Some(procfile)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processes"]["web"], "bin/web --port $PORT");
    let (_, formation) = h.get("/apps/demo/formation").await;
    let by_type = |t: &str| {
        formation
            .as_array()
            .and_then(|f| f.iter().find(|f| f["type"] == t))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            by_type("web")["quantity"].clone(),
            by_type("web")["command"].clone()
        ),
        (json!(1), json!("bin/web --port $PORT"))
    );
    assert_eq!(by_type("worker")["quantity"], json!(0));
    let (_, releases) = h.get("/apps/demo/releases").await;
    assert!(releases.as_array().is_some_and(|r| r
        .iter()
        .any(|r| r["description"] == "Deploy Procfile (web, worker)")));

    // Scaled by hand, then a Procfile without `worker`: it goes to zero,
    // web keeps its quantity.
    let (status, _) = h
        .call(
            "PATCH",
            "/apps/demo/formation",
            Some(json!({ "updates": [{ "type": "web", "quantity": 3 }, { "type": "worker", "quantity": 2 }] })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .call(
            "PUT",
            "/apps/demo/procfile",
            Some(json!({ "processes": { "web": "bin/web2" }, "dir": "/srv/demo" })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, formation) = h.get("/apps/demo/formation").await;
    let q = |t: &str| {
        formation
            .as_array()
            .and_then(|f| f.iter().find(|f| f["type"] == t))
            .map(|f| (f["quantity"].clone(), f["command"].clone()))
    };
    assert_eq!(q("web"), Some((json!(3), json!("bin/web2"))));
    assert_eq!(q("worker"), Some((json!(0), json!(""))));
}

#[tokio::test]
async fn a_bad_procfile_is_refused_naming_the_field() {
    let h = Harness::start().await;
    h.app("demo").await;
    for (body, field) in [
        (json!({ "processes": {}, "dir": "/srv" }), "processes"),
        (
            json!({ "processes": { "Web": "x" }, "dir": "/srv" }),
            "type",
        ),
        (
            json!({ "processes": { "web": "  " }, "dir": "/srv" }),
            "processes",
        ),
        (
            json!({ "processes": { "web": "x" }, "dir": "relative/dir" }),
            "dir",
        ),
    ] {
        let (status, answer) = h.call("PUT", "/apps/demo/procfile", Some(body)).await;
        assert_error(status, &answer, 422, "invalid_params", field);
    }
    let (status, answer) = h
        .call("PUT", "/apps/demo/procfile", Some(json!({ "dir": "/srv" })))
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn restart_and_stop_count_restarts_for_the_dyno_manager() {
    let h = Harness::start().await;
    h.app("demo").await;
    // No Procfile: nothing to restart, and DELETE of a dyno removes it.
    let (status, body) = h.call("DELETE", "/apps/demo/dynos", None).await;
    assert_error(status, &body, 422, "invalid_params", "Procfile");
    let dyno = json!({ "address": "127.0.0.1:5001" });
    let (status, _) = h.call("PUT", "/apps/demo/dynos/web.1", Some(dyno)).await;
    assert_eq!(status, 201);
    let (status, _) = h.call("DELETE", "/apps/demo/dynos/web.1", None).await;
    assert_eq!(status, 200, "removed");
    assert_eq!(h.get("/apps/demo/dynos/web.1").await.0, 404);

    let procfile = json!({ "processes": { "web": "bin/web" }, "dir": "/srv/demo" });
    assert_eq!(
        h.call("PUT", "/apps/demo/procfile", Some(procfile)).await.0,
        200
    );
    let app_id = h.get("/apps/demo").await.1["id"]
        .as_str()
        .expect("id")
        .to_string();
    for (method, path) in [
        ("DELETE", "/apps/demo/dynos"),
        ("DELETE", "/apps/demo/formations/web"),
        ("DELETE", "/apps/demo/dynos/web.1"),
        ("POST", "/apps/demo/dynos/web.1/actions/stop"),
        ("POST", "/apps/demo/formations/web/actions/stop"),
    ] {
        let (status, body) = h.call(method, path, None).await;
        assert_eq!(status, 202, "{method} {path}: {body}");
    }
    let record: control::model::ProcfileRecord = h
        .control
        .read()
        .get(&control::model::key::procfile(&app_id))
        .expect("procfile");
    assert_eq!(record.restarts_of("web.1"), 5);
    assert_eq!(record.restarts_of("web.2"), 3);
    // A new Procfile keeps the counts (a restart is not undone).
    let procfile = json!({ "processes": { "web": "bin/web2" }, "dir": "/srv/demo" });
    assert_eq!(
        h.call("PUT", "/apps/demo/procfile", Some(procfile)).await.0,
        200
    );
    let record: control::model::ProcfileRecord = h
        .control
        .read()
        .get(&control::model::key::procfile(&app_id))
        .expect("procfile");
    assert_eq!(record.restarts_of("web.1"), 5);
}
