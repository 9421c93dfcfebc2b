//! deploy/kubernetes checked without a cluster: every core resource validates against the Kubernetes schemas
//! offline (`kubernetes-validate`), the operators' resources carry what their documentation requires, every
//! variable a container sets is one the services read and every one they need is set, every probe targets a
//! port its container declares, every Secret and ConfigMap referenced exists with the key asked for, and each
//! service has two replicas or more, a disruption budget and (the stateless workers and the gateway) an
//! autoscaler.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use yaml_rust2::{Yaml, YamlLoader};

#[path = "support/workspace.rs"]
mod workspace;

use workspace::{read_variables, root};

const SERVICES: [(&str, &str); 6] = [
    ("inventory-manager", "INVENTORY"),
    ("cart-manager", "CART"),
    ("checkout-manager", "CHECKOUT"),
    ("payment-gateway", "PAYMENT"),
    ("notifier", "NOTIFIER"),
    ("api-gateway", "GATEWAY"),
];

fn dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// Every document of every file the kustomization lists, with its file's name.
fn resources() -> Vec<(String, Yaml)> {
    let kustomization = load(&dir().join("kustomization.yaml")).remove(0);
    let listed: Vec<String> = kustomization["resources"]
        .as_vec()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), on_disk, "the kustomization lists every file");
    listed.iter().flat_map(|f| load(&dir().join(f)).into_iter().map(move |d| (f.clone(), d))).collect()
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} parses: {e}", path.display()))
}

fn strings_of(node: &Yaml) -> Vec<String> {
    node.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn kind_named<'a>(all: &'a [(String, Yaml)], kind: &str, name: &str) -> Option<&'a Yaml> {
    all.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn str_of(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `kubernetes-validate` command: `KUBERNETES_VALIDATE`, the one `scripts/test` installs, or `PATH`'s.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return path.into();
    }
    let installed = root().join(".venv-tools/bin/kubernetes-validate");
    if installed.exists() {
        return installed;
    }
    let on_path = Command::new("kubernetes-validate").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "kubernetes-validate is missing: run the README's test command (scripts/test installs it into .venv-tools), \
         or `pip install kubernetes-validate`"
    );
    "kubernetes-validate".into()
}

#[test]
fn every_core_resource_validates_against_the_kubernetes_schemas_and_a_broken_one_does_not() {
    let validator = validator();
    let files: Vec<PathBuf> =
        resources().into_iter().map(|(f, _)| dir().join(f)).collect::<BTreeSet<_>>().into_iter().collect();
    let out = Command::new(&validator).arg("--strict").args(&files).output().expect("kubernetes-validate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // Only the operators' kinds may lack a schema: every core kind must have been checked.
    for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
        assert!(
            ["RabbitmqCluster", "kind Cluster ", "kind Database "].iter().any(|k| line.contains(k)),
            "a core resource went unchecked: {line}"
        );
    }
    let passed = text.lines().filter(|l| l.contains(" passed for resource ")).count();
    let builtin = ["v1", "apps/v1", "policy/v1", "autoscaling/v2", "batch/v1"];
    let core =
        resources().iter().filter(|(_, d)| d["apiVersion"].as_str().is_some_and(|v| builtin.contains(&v))).count();
    assert_eq!(passed, core, "every core resource passed: {text}");

    // The validator is really checking: a Deployment with a string for its replicas fails.
    let broken = std::env::temp_dir().join(format!("ordermesh-broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers: [{name: x, image: x}]\n",
    )
    .unwrap();
    let out = Command::new(&validator).arg("--strict").arg(&broken).output().unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "a Deployment with replicas: two passed validation");
}

#[test]
fn the_engines_are_replicated_through_their_operators() {
    let all = resources();
    let rabbit = kind_named(&all, "RabbitmqCluster", "ordermesh-rabbitmq").expect("a RabbitmqCluster");
    assert_eq!(rabbit["apiVersion"].as_str(), Some("rabbitmq.com/v1beta1"));
    assert_eq!(rabbit["spec"]["replicas"].as_i64(), Some(3), "three RabbitMQ nodes");
    let config = rabbit["spec"]["rabbitmq"]["additionalConfig"].as_str().unwrap_or("");
    assert!(config.contains("cluster_partition_handling = pause_minority"), "{config}");

    let pg = kind_named(&all, "Cluster", "ordermesh-postgres").expect("a CloudNativePG Cluster");
    assert_eq!(pg["apiVersion"].as_str(), Some("postgresql.cnpg.io/v1"));
    assert_eq!(pg["spec"]["instances"].as_i64(), Some(3), "a primary and two standbys");
    assert!(pg["spec"]["storage"]["size"].as_str().is_some(), "CloudNativePG requires storage.size");
    let sync = &pg["spec"]["postgresql"]["synchronous"];
    assert_eq!(sync["method"].as_str(), Some("any"));
    assert!(sync["number"].as_i64().is_some_and(|n| n >= 1), "commits wait for a standby");
    assert_eq!(
        sync["dataDurability"].as_str(),
        Some("preferred"),
        "a promoted standby without a standby of its own must still take commits"
    );
    let owner = pg["spec"]["bootstrap"]["initdb"]["owner"].as_str().expect("initdb.owner");
    let credentials = pg["spec"]["bootstrap"]["initdb"]["secret"]["name"].as_str().expect("initdb.secret");
    let secret = kind_named(&all, "Secret", credentials).expect("the owner's credentials");
    assert_eq!(secret["type"].as_str(), Some("kubernetes.io/basic-auth"));
    assert_eq!(secret["stringData"]["username"].as_str(), Some(owner));

    // Every service's database exists: made at bootstrap or by a Database resource of that cluster.
    let mut made: BTreeSet<String> =
        pg["spec"]["bootstrap"]["initdb"]["database"].as_str().map(str::to_owned).into_iter().collect();
    for (_, d) in all.iter().filter(|(_, d)| d["kind"].as_str() == Some("Database")) {
        assert_eq!(d["apiVersion"].as_str(), Some("postgresql.cnpg.io/v1"));
        assert_eq!(d["spec"]["cluster"]["name"].as_str(), Some("ordermesh-postgres"));
        assert_eq!(d["spec"]["owner"].as_str(), Some(owner));
        made.insert(d["spec"]["name"].as_str().expect("Database spec.name").to_owned());
    }
    let urls = kind_named(&all, "Secret", "ordermesh-urls").expect("the URLs' Secret");
    for (_, prefix) in SERVICES {
        let url = urls["stringData"][format!("{prefix}_DATABASE_URL").as_str()].as_str().expect("a database URL");
        assert!(url.contains("@ordermesh-postgres-rw:"), "{prefix} goes through the primary's stable address: {url}");
        let database = url.rsplit('/').next().unwrap();
        assert!(made.contains(database), "nothing creates {database}");
    }
    let amqp = urls["stringData"]["AMQP_URL"].as_str().unwrap();
    assert_eq!(amqp.split(',').count(), 3, "every RabbitMQ node is listed: {amqp}");
}

#[test]
fn every_service_is_replicated_probed_on_its_ports_and_configured_with_what_it_reads() {
    let all = resources();
    let variables = read_variables();
    let config = kind_named(&all, "ConfigMap", "ordermesh-config").expect("the ConfigMap");
    let config_keys: Vec<String> = config["data"].as_hash().unwrap().keys().filter_map(str_of).collect();
    for (name, prefix) in SERVICES {
        let deployment = kind_named(&all, "Deployment", name).unwrap_or_else(|| panic!("a Deployment for {name}"));
        assert!(deployment["spec"]["replicas"].as_i64().is_some_and(|r| r >= 2), "{name} runs two replicas or more");
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels, "{name}'s selector matches its pods");
        let containers = deployment["spec"]["template"]["spec"]["containers"].as_vec().unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        assert_eq!(container["command"][0].as_str(), Some(name), "{name} runs its own binary");

        // Variables: the ConfigMap's (envFrom) and its own, each read by the code; the needed ones set.
        let mut env: BTreeMap<String, Option<String>> = config_keys.iter().map(|k| (k.clone(), None)).collect();
        for from in container["envFrom"].as_vec().into_iter().flatten() {
            let map = from["configMapRef"]["name"].as_str().expect("only the ConfigMap is taken whole");
            assert!(kind_named(&all, "ConfigMap", map).is_some(), "{name} takes a missing ConfigMap {map}");
        }
        for var in container["env"].as_vec().unwrap() {
            let key = var["name"].as_str().unwrap().to_owned();
            if let Some(r) = var["valueFrom"]["secretKeyRef"].as_hash().map(|_| &var["valueFrom"]["secretKeyRef"]) {
                let secret = kind_named(&all, "Secret", r["name"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("{name}: Secret {:?} is not in the directory", r["name"]));
                let wanted = r["key"].as_str().unwrap();
                assert!(!secret["stringData"][wanted].is_badvalue(), "{name}: Secret has no key {wanted}");
            }
            env.insert(key, str_of(&var["value"]));
        }
        for key in env.keys().filter(|k| *k != "RUST_LOG") {
            assert!(variables.contains(key), "{name} sets {key}, which no service reads");
        }
        let mut needed =
            vec![format!("{prefix}_DATABASE_URL"), "INVENTORY_URL".to_owned(), "AMQP_QUEUE_TYPE".to_owned()];
        if name != "inventory-manager" {
            needed.push("AMQP_URL".into());
        }
        if ["cart-manager", "checkout-manager", "api-gateway"].contains(&name) {
            needed.push("INVENTORY_TOKEN".into());
        }
        if name == "inventory-manager" {
            assert_eq!(env["INVENTORY_AUTH"].as_deref(), Some("required"), "inventory asks for tokens");
            // The services' token is registered from the same Secret they present it from.
            let init = &deployment["spec"]["template"]["spec"]["initContainers"][0];
            let command = strings_of(&init["command"]);
            assert_eq!(command[..4], ["inventory-manager", "tokens", "register", "--role"], "{command:?}");
            let file = &command[command.iter().position(|c| c == "--token-file").expect("--token-file") + 1];
            let mount = init["volumeMounts"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()));
            let volume = mount.expect("the token file is on a mounted volume")["name"].as_str().unwrap();
            let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_vec().unwrap();
            let secret =
                volumes.iter().find(|v| v["name"].as_str() == Some(volume)).unwrap()["secret"]["secretName"].as_str();
            assert_eq!(secret, Some("ordermesh-inventory-token"));
            let key = file.rsplit('/').next().unwrap();
            let stored = kind_named(&all, "Secret", "ordermesh-inventory-token").expect("the token Secret");
            assert!(!stored["stringData"][key].is_badvalue(), "the token Secret has no key {key}");
        }
        for key in &needed {
            assert!(env.contains_key(key), "{name} does not set {key}");
        }
        assert_eq!(
            env[&format!("{prefix}_CREATE_DATABASE")].as_deref(),
            Some("false"),
            "the operator makes {name}'s database"
        );

        // Ports: listen addresses on all interfaces at the declared ports; probes on declared ports.
        let ports: BTreeMap<String, i64> = container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
            .collect();
        for (key, value) in &env {
            if key.ends_with("_LISTEN_ADDR") || key.ends_with("_METRICS_ADDR") {
                let value = value.as_deref().unwrap();
                assert!(value.starts_with("0.0.0.0:"), "{name}: {key} listens on all interfaces, not {value}");
                let port: i64 = value.rsplit(':').next().unwrap().parse().unwrap();
                assert!(ports.values().any(|p| *p == port), "{name} listens on {port} without declaring it");
            }
        }
        let listened: BTreeSet<i64> = env
            .iter()
            .filter(|(k, _)| k.ends_with("_LISTEN_ADDR") || k.ends_with("_METRICS_ADDR"))
            .filter_map(|(_, v)| v.as_deref()?.rsplit(':').next()?.parse().ok())
            .collect();
        for probe in ["readinessProbe", "livenessProbe"] {
            let p = &container[probe];
            let target = if !p["grpc"].is_badvalue() { &p["grpc"]["port"] } else { &p["httpGet"]["port"] };
            let port = match target {
                Yaml::Integer(n) => *n,
                Yaml::String(named) => {
                    *ports.get(named).unwrap_or_else(|| panic!("{name}: {probe} names port {named}"))
                }
                other => panic!("{name}: {probe} has no port: {other:?}"),
            };
            assert!(listened.contains(&port), "{name}: {probe} targets {port}, where nothing listens");
        }

        // A Service selecting the pods, a disruption budget, an autoscaler.
        let service = kind_named(&all, "Service", name).unwrap_or_else(|| panic!("a Service for {name}"));
        assert_eq!(&service["spec"]["selector"], labels, "{name}'s Service selects its pods");
        for port in service["spec"]["ports"].as_vec().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(ports.contains_key(target), "{name}'s Service targets an undeclared port {target}");
        }
        if name == "inventory-manager" {
            assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"), "inventory is behind a headless Service");
        }
        let pdb = kind_named(&all, "PodDisruptionBudget", name).unwrap_or_else(|| panic!("a PDB for {name}"));
        assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
        assert!(pdb["spec"]["minAvailable"].as_i64().is_some_and(|n| n >= 1));
        let hpa = kind_named(&all, "HorizontalPodAutoscaler", name).unwrap_or_else(|| panic!("an HPA for {name}"));
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"].as_str(), Some(name));
        assert!(hpa["spec"]["minReplicas"].as_i64().is_some_and(|n| n >= 2));
        let resources = &container["resources"];
        assert!(resources["requests"]["memory"].as_str().is_some() && resources["limits"]["memory"].as_str().is_some());
    }
    let inventory_url = config["data"]["INVENTORY_URL"].as_str().unwrap();
    assert!(
        inventory_url.starts_with("http://inventory-manager:"),
        "clients resolve the headless Service: {inventory_url}"
    );
}
