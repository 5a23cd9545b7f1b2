//! No drift between `deploy/` and the binary: every flag, environment variable, port, probe
//! path, config key and metric that the Kubernetes manifests, the Containerfile, the systemd
//! unit and the Grafana dashboard use exists in `facegate serve` as built.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use facegate::app::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of every manifest in `deploy/k8s/`, with its file name.
fn manifests() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    for n in names {
        for doc in YamlLoader::load_from_str(&read(&format!("deploy/k8s/{n}"))).unwrap() {
            out.push((n.clone(), doc));
        }
    }
    out
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

fn one<'a>(docs: &'a [(String, Yaml)], kind: &str) -> &'a Yaml {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

/// `facegate serve --help`: the flags and environment variables the binary takes.
fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn env_names(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_string())
        .collect()
}

/// The metric names facegate exports (the constants of `facegate::telemetry`).
fn metric_names() -> BTreeSet<String> {
    let src = read("src/telemetry.rs");
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("facegate_"))
        .map(str::to_string)
        .collect()
}

/// The `facegate_*` names an expression uses, with histogram suffixes taken off.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("facegate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf))
            .unwrap_or(name);
        out.push(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn kubernetes_manifests_use_only_what_the_binary_has() {
    let docs = manifests();
    let help = serve_help();
    let envs = env_names(&help);
    assert!(envs.contains("FACEGATE_BI_DB") && envs.contains("FACEGATE_LISTEN"));

    // The configuration file parses with the binary's own parser (unknown keys are errors).
    let cm = one(&docs, "ConfigMap");
    let toml = s(&cm["data"]["facegate.toml"]);
    let cfg = Config::parse(toml, "deploy/k8s/configmap.yaml").unwrap();
    let listen_port: i64 = cfg
        .server
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let dep = one(&docs, "Deployment");
    let labels = &dep["spec"]["selector"]["matchLabels"];
    assert_eq!(&dep["spec"]["template"]["metadata"]["labels"], labels);
    let pod = &dep["spec"]["template"]["spec"];
    let containers = list(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Arguments: a subcommand and flags that exist.
    let args: Vec<&str> = list(&c["args"]).iter().map(s).collect();
    assert_eq!(args.first(), Some(&"serve"), "{args:?}");
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")),
            "flag {flag} is not in serve --help"
        );
    }

    // Environment variables: each one the binary reads.
    let mut env_paths = Vec::new();
    for e in list(&c["env"]) {
        let name = s(&e["name"]);
        if name == "RUST_LOG" {
            continue;
        }
        assert!(
            envs.contains(name),
            "{name} is not an env of facegate serve"
        );
        if let Some(v) = e["value"].as_str() {
            if v.starts_with('/') {
                env_paths.push((name, v.to_string()));
            }
        }
    }
    // Paths come from mounted volumes: the config file, TLS files; and the config's own paths.
    let mounts: Vec<(String, Option<String>)> = list(&c["volumeMounts"])
        .iter()
        .map(|m| {
            (
                s(&m["mountPath"]).to_string(),
                m["subPath"].as_str().map(str::to_string),
            )
        })
        .collect();
    let mounted = |p: &str| {
        mounts.iter().any(|(at, sub)| match sub {
            Some(_) => p == at,
            None => p.starts_with(&format!("{at}/")) || p == at,
        })
    };
    for (name, p) in &env_paths {
        assert!(mounted(p), "{name}={p} is not on a mounted volume");
    }
    let models = cfg.engine.models_dir.to_str().unwrap().to_string();
    assert!(mounted(&models), "models_dir {models} is not mounted");
    for p in [&cfg.iad.capture.private_key, &cfg.knomi.private_key]
        .into_iter()
        .flatten()
    {
        assert!(
            mounted(p.to_str().unwrap()),
            "{} is not mounted",
            p.display()
        );
    }
    let config_env = list(&c["env"])
        .iter()
        .find(|e| s(&e["name"]) == "FACEGATE_CONFIG")
        .map(|e| s(&e["value"]))
        .expect("FACEGATE_CONFIG");
    assert!(mounted(config_env));
    // Every mount names a volume of the pod, and secret keys exist in the Secret.
    let volumes: Vec<&str> = list(&pod["volumes"])
        .iter()
        .map(|v| s(&v["name"]))
        .collect();
    for m in list(&c["volumeMounts"]) {
        assert!(volumes.contains(&s(&m["name"])), "{:?}", m["name"]);
    }
    let secrets = of_kind(&docs, "Secret");
    let secret_key = |secret: &str, key: &str| {
        secrets
            .iter()
            .any(|d| s(&d["metadata"]["name"]) == secret && d["stringData"][key].as_str().is_some())
    };
    for e in list(&c["env"]) {
        let r = &e["valueFrom"]["secretKeyRef"];
        if !r.is_badvalue() {
            assert!(secret_key(s(&r["name"]), s(&r["key"])), "{r:?}");
        }
    }
    for v in list(&pod["volumes"]) {
        let sec = &v["secret"];
        if sec.is_badvalue() {
            continue;
        }
        for item in list(&sec["items"]) {
            assert!(
                secret_key(s(&sec["secretName"]), s(&item["key"])),
                "{item:?}"
            );
        }
        if list(&sec["items"]).is_empty() {
            assert!(secrets
                .iter()
                .any(|d| s(&d["metadata"]["name"]) == s(&sec["secretName"])));
        }
    }
    assert!(cm["metadata"]["name"]
        .as_str()
        .is_some_and(|n| list(&pod["volumes"])
            .iter()
            .any(|v| v["configMap"]["name"].as_str() == Some(n))));

    // Ports and probes: the container port is the configured listen port, probes ask for
    // /health (a route of the binary) on it, with HTTPS when TLS is configured.
    let ports = list(&c["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"].as_i64(), Some(listen_port));
    let port_name = s(&ports[0]["name"]);
    let tls = envs.contains("FACEGATE_TLS_CERT")
        && list(&c["env"])
            .iter()
            .any(|e| s(&e["name"]) == "FACEGATE_TLS_CERT");
    let routes: Vec<String> = facegate::server::server_routes()
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let g = &c[probe]["httpGet"];
        assert!(routes.contains(&s(&g["path"]).to_string()), "{probe}");
        assert_eq!(s(&g["port"]), port_name, "{probe}");
        assert_eq!(
            s(&g["scheme"]),
            if tls { "HTTPS" } else { "HTTP" },
            "{probe}"
        );
    }

    // The preStop pause plus the server's drain fit in the grace period.
    let pre: Vec<&str> = list(&c["lifecycle"]["preStop"]["exec"]["command"])
        .iter()
        .map(s)
        .collect();
    assert_eq!(pre.first(), Some(&"/bin/sleep"));
    let pause: u64 = pre[1].parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    let drain_s = cfg.server.drain_timeout_ms.div_ceil(1000);
    assert!(
        pause + drain_s < grace,
        "preStop {pause} s + drain {drain_s} s must end before the grace period of {grace} s"
    );
    // Non-root, as the image's user.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(read("deploy/Containerfile").contains(&format!("USER {uid}:")));

    // Service, PodDisruptionBudget and autoscaler point at the Deployment's pods and port.
    let svc = one(&docs, "Service");
    assert_eq!(&svc["spec"]["selector"], labels);
    for p in list(&svc["spec"]["ports"]) {
        assert_eq!(s(&p["targetPort"]), port_name);
    }
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let replicas = dep["spec"]["replicas"].as_i64().unwrap();
    assert!(pdb["spec"]["minAvailable"].as_i64().unwrap() < replicas);
    let hpa = one(&docs, "HorizontalPodAutoscaler");
    assert_eq!(
        s(&hpa["spec"]["scaleTargetRef"]["name"]),
        s(&dep["metadata"]["name"])
    );
    let metrics = metric_names();
    for m in list(&hpa["spec"]["metrics"]) {
        let name = s(&m["pods"]["metric"]["name"]);
        assert!(metrics.contains(name), "HPA metric {name} is not exported");
    }

    // The kustomization lists every manifest.
    let kust = read("deploy/k8s/kustomization.yaml");
    for (file, _) in &docs {
        if file != "kustomization.yaml" {
            assert!(
                kust.contains(file.as_str()),
                "{file} not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn the_dashboard_container_and_unit_use_only_what_the_binary_has() {
    let metrics = metric_names();
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana-dashboard.json")).unwrap();
    let mut used = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            for m in metrics_in(t["expr"].as_str().unwrap()) {
                assert!(metrics.contains(&m), "{}: {m} is not exported", p["title"]);
                used.insert(m);
            }
        }
    }
    for m in [
        "facegate_requests_total",
        "facegate_request_duration_seconds",
        "facegate_batch_size",
        "facegate_queue_depth",
        "facegate_errors_total",
        "facegate_connections_refused_total",
    ] {
        assert!(used.contains(m), "the dashboard shows no {m}");
    }

    let help = serve_help();
    let envs = env_names(&help);
    let containerfile = read("deploy/Containerfile");
    for line in containerfile.lines() {
        for word in line.split(|c: char| c.is_whitespace() || c == '=' || c == '\\') {
            if word.starts_with("FACEGATE_") {
                assert!(envs.contains(word), "Containerfile: {word}");
            }
        }
    }
    assert!(containerfile.contains("EXPOSE 8080") && containerfile.contains("0.0.0.0:8080"));
    assert!(containerfile.contains("http://127.0.0.1:8080/health"));
    assert!(containerfile.contains("CMD [\"serve\"]"));

    let unit = read("deploy/facegate.service");
    for line in unit.lines() {
        if let Some(kv) = line.strip_prefix("Environment=") {
            let name = kv.split('=').next().unwrap();
            if name != "RUST_LOG" {
                assert!(envs.contains(name), "facegate.service: {name}");
            }
        }
    }
    assert!(unit.contains("ExecStart=/opt/facegate/bin/facegate serve"));
}
