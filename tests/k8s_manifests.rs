//! The Kubernetes manifests in `docker/k8s/`, checked rather than read by eye: every document is
//! validated against the Kubernetes API models of the `kubernetes` Python package (unknown
//! fields, wrong types and missing required fields fail; `tests/k8s/validate.py`), the
//! containers' command lines and environment are parsed by this binary's own CLI, the pieces
//! refer to each other correctly (selectors, Secret keys, the KEDA target), and the probe paths
//! and the metric the autoscaler queries are served by a real `costream serve`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use clap::{CommandFactory, Parser};
use common::{Api, Serve};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/k8s");

fn validate() -> anyhow::Result<Value> {
    let mut files: Vec<_> = std::fs::read_dir(DIR)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/k8s/validate.py"
        ))
        .args(&files)
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "validator output unreadable ({e}); stderr: {} (scripts/setup.sh --test installs the kubernetes package)",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(report)
}

/// Documents by kind/name.
fn by_name(report: &Value) -> BTreeMap<String, Value> {
    report["checked"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(report["skipped"].as_array().into_iter().flatten())
        .map(|d| {
            let doc = d["doc"].clone();
            (
                format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap_or(""),
                    doc["metadata"]["name"].as_str().unwrap_or("")
                ),
                doc,
            )
        })
        .collect()
}

/// The container's command line as this binary would parse it: its args plus, for every
/// environment variable, the flag that reads it (with a sample value for computed ones).
fn parse_container(container: &Value) -> anyhow::Result<costream::cli::Cli> {
    let mut argv: Vec<String> = vec!["costream".into()];
    let command = container["command"].as_array().cloned().unwrap_or_default();
    argv.extend(
        command
            .iter()
            .skip(1)
            .chain(container["args"].as_array().into_iter().flatten())
            .map(|a| a.as_str().unwrap_or_default().to_string()),
    );
    let cli = costream::cli::Cli::command();
    let sub = cli
        .get_subcommands()
        .find(|s| Some(s.get_name()) == argv.get(1).map(String::as_str))
        .ok_or_else(|| anyhow::anyhow!("unknown subcommand in {argv:?}"))?;
    let envs: Vec<&Value> = container["env"].as_array().into_iter().flatten().collect();
    // A variable only other values refer to (`$(POD_IP)`, which Kubernetes expands) needs no
    // flag of its own; the value referring to it gets a sample address.
    let referenced = |name: &str| {
        envs.iter().any(|e| {
            e["value"]
                .as_str()
                .is_some_and(|v| v.contains(&format!("$({name})")))
        })
    };
    for env in envs.iter().copied() {
        let name = env["name"].as_str().unwrap_or_default();
        if referenced(name) {
            continue;
        }
        let arg = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name))
            .ok_or_else(|| {
                anyhow::anyhow!("{name} is read by no flag of `costream {}`", sub.get_name())
            })?;
        let value = match env["value"].as_str() {
            Some(v) => v.replace("$(POD_IP)", "10.0.0.9"),
            None if name.ends_with("_IP") => "10.0.0.9".into(),
            None => "a-sample-value-of-at-least-32-characters".into(),
        };
        let long = arg.get_long().expect("env flags have a long name");
        if arg.get_action().takes_values() {
            argv.extend([format!("--{long}"), value]);
        } else {
            argv.push(format!("--{long}"));
        }
    }
    costream::cli::Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{argv:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_match_the_kubernetes_api_and_each_other() -> anyhow::Result<()> {
    let report = validate()?;
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    let docs = by_name(&report);
    for expected in [
        "Deployment/costream-serve",
        "Service/costream-serve",
        "Deployment/costream-worker",
        "Deployment/costream-redis",
        "Service/costream-redis",
        "PodDisruptionBudget/costream-worker",
        "Secret/costream",
        "ScaledObject/costream-worker",
    ] {
        assert!(
            docs.contains_key(expected),
            "{expected} missing: {:?}",
            docs.keys()
        );
    }
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["doc"]["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        skipped,
        vec!["ScaledObject"],
        "only the KEDA CRD is not a core model"
    );

    // Both containers' command lines parse with this binary's CLI.
    let serve = &docs["Deployment/costream-serve"]["spec"]["template"]["spec"];
    let worker_deploy = &docs["Deployment/costream-worker"];
    let worker = &worker_deploy["spec"]["template"]["spec"];
    let serve_cli = parse_container(&serve["containers"][0])?;
    assert!(
        matches!(serve_cli.command, costream::cli::CliCommand::Serve(ref a) if a.redis.is_some())
    );
    let worker_cli = parse_container(&worker["containers"][0])?;
    let costream::cli::CliCommand::Worker(worker_args) = worker_cli.command else {
        panic!("the worker container does not run `costream worker`");
    };
    // The grace period outlasts the drain, and preStop drains.
    let grace = worker["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > worker_args.drain_timeout_secs,
        "grace {grace} s ≤ drain"
    );
    let pre_stop = worker["containers"][0]["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(pre_stop.contains("kill -TERM 1"), "{pre_stop}");
    // serve reaches UDP on the host network.
    assert_eq!(serve["hostNetwork"], true);

    // Selectors and references agree.
    let labels = &worker_deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &docs["PodDisruptionBudget/costream-worker"]["spec"]["selector"]["matchLabels"],
        labels
    );
    for (service, deployment) in [
        ("costream-serve", "costream-serve"),
        ("costream-redis", "costream-redis"),
    ] {
        assert_eq!(
            docs[&format!("Service/{service}")]["spec"]["selector"],
            docs[&format!("Deployment/{deployment}")]["spec"]["template"]["metadata"]["labels"]
        );
    }
    let secret_keys = docs["Secret/costream"]["stringData"]
        .as_object()
        .unwrap()
        .clone();
    for spec in [serve, worker] {
        for env in spec["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(key) = env["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert!(secret_keys.contains_key(key), "secret key {key} missing");
            }
        }
    }
    assert!(worker_args.redis.contains("costream-redis:6379"));
    // serve's rooms outlive the pod in Redis, sealed with the store key from a Secret: the data
    // directory holds nothing that must outlive it.
    let serve_env = serve["containers"][0]["env"].as_array().unwrap();
    let env_of = |name: &str| serve_env.iter().find(|e| e["name"] == name).cloned();
    let data_dir = env_of("COSTREAM_DATA_DIR").expect("COSTREAM_DATA_DIR set");
    let mount = serve["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == data_dir["value"])
        .expect("the data dir is a mounted volume");
    let volume = serve["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount names a volume");
    assert!(volume["emptyDir"].is_object(), "{volume}");
    // Several serve nodes, replaced one at a time, each telling the others its address; a
    // stopping pod keeps serving while endpoints update, then lets its rooms go.
    let serve_deploy = &docs["Deployment/costream-serve"];
    assert!(serve_deploy["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        serve_deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        0
    );
    assert!(env_of("COSTREAM_NODE_URL")
        .is_some_and(|e| e["value"].as_str().is_some_and(|v| v.contains("$(POD_IP)"))));
    assert!(
        env_of("POD_IP").is_some_and(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP")
    );
    let serve_pre_stop =
        serve["containers"][0]["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(serve_pre_stop.contains("sleep"), "{serve_pre_stop}");
    assert!(env_of("COSTREAM_STORE_KEY")
        .is_some_and(|e| e["valueFrom"]["secretKeyRef"]["key"] == "store-key"));
    // The worker's own /metrics: the flag, the container port and the scrape annotation agree.
    let metrics_port = worker_args
        .metrics_listen
        .expect("the worker serves its metrics (--metrics-listen)")
        .port();
    let annotations = &worker_deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics_port.to_string().as_str()
    );
    assert!(
        worker["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["containerPort"] == metrics_port),
        "no container port {metrics_port}"
    );
    let scaled = &docs["ScaledObject/costream-worker"];
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "costream-worker");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    let query = trigger["metadata"]["query"].as_str().unwrap();
    trigger["metadata"]["threshold"]
        .as_str()
        .unwrap()
        .parse::<f64>()?;

    // A real serve answers the probes and exports the metric the autoscaler queries.
    let serve_process = Serve::start()?;
    let api = Api::new(&serve_process.base_url);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = serve["containers"][0][probe]["httpGet"]["path"]
            .as_str()
            .unwrap();
        let status = api.http().get(api.url(path)).send().await?.status();
        assert_eq!(status, 200, "{probe} {path}");
    }
    let metrics = api
        .http()
        .get(api.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let metric = query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("costream_"))
        .expect("the query names a costream metric");
    assert!(
        metrics.lines().any(|l| l.starts_with(metric)),
        "{metric} not in /metrics:\n{metrics}"
    );
    Ok(())
}
