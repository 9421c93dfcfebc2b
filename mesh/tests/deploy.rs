//! docker-compose.yml and the Dockerfile, checked without a Docker engine: the file parses, the databases'
//! ports stay private, every ordermesh service has a health check that probes its own port, every setting
//! it passes is one the services read, every credential is a secret that `scripts/compose-secrets` makes
//! (no password in the file, no guest account), and the image caches its dependencies in a layer of their own.

use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

#[path = "support/workspace.rs"]
mod workspace;

use workspace::{read_variables, root};

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Applies YAML merge keys (`<<: *anchor`), which compose honours and the YAML 1.2 parser leaves as they are.
fn merged(node: &Yaml) -> Yaml {
    match node {
        Yaml::Hash(map) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(base) = map.get(&Yaml::String("<<".into()))
                && let Yaml::Hash(base) = merged(base)
            {
                out.extend(base);
            }
            for (k, v) in map {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn compose_file_parses_and_each_service_is_private_healthy_and_configured() {
    let docs = YamlLoader::load_from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    let compose = merged(&docs[0]);
    let services = compose["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for expected in [
        "postgres",
        "rabbitmq",
        "inventory-manager",
        "cart-manager",
        "checkout-manager",
        "payment-gateway",
        "notifier",
        "api-gateway",
    ] {
        assert!(names.contains(&expected), "{expected} missing from compose");
    }
    for infra in ["postgres", "rabbitmq"] {
        assert!(compose["services"][infra]["ports"].is_badvalue(), "{infra} publishes ports on the host");
        assert!(!compose["services"][infra]["healthcheck"]["test"].is_badvalue(), "{infra} has a health check");
    }

    let variables = read_variables();
    let dockerfile = read("Dockerfile");
    let ours: BTreeMap<&str, &Yaml> = names
        .iter()
        .copied()
        .filter(|n| !["postgres", "rabbitmq"].contains(n))
        .map(|n| (n, &compose["services"][n]))
        .collect();
    let defined: Vec<&str> =
        compose["secrets"].as_hash().expect("top-level secrets").keys().filter_map(Yaml::as_str).collect();
    let text = read("docker-compose.yml");
    assert!(!text.contains("guest:guest") && !text.contains("ordermesh:ordermesh@"), "a credential in the file");
    for (name, service) in &ours {
        let command = strings(&service["command"]);
        // One-shot jobs (restart "no") run another service's binary with a subcommand.
        let one_shot = service["restart"].as_str() == Some("no");
        let binary = command.first().map(String::as_str).unwrap_or_default();
        if !one_shot {
            assert_eq!(binary, *name, "{name} runs its own binary");
        }
        assert!(dockerfile.contains(&format!("/src/target/release/{binary}")), "the image ships {binary}");

        let env = service["environment"].as_hash().unwrap_or_else(|| panic!("{name} has an environment"));
        let mounted = strings(&service["secrets"]);
        // RUST_LOG is read by tracing's EnvFilter, not by name in our code.
        for key in env.keys().filter_map(Yaml::as_str).filter(|k| *k != "RUST_LOG") {
            // A secret given as a file is read as `<KEY>_FILE` by the loader.
            let base = match key.strip_suffix("_FILE") {
                Some(base) => {
                    let value = env[&Yaml::String(key.into())].as_str().unwrap();
                    let secret = value.strip_prefix("/run/secrets/").unwrap_or_else(|| panic!("{name}: {key}={value}"));
                    assert!(mounted.iter().any(|m| m == secret), "{name} reads {value} but does not mount {secret}");
                    assert!(defined.contains(&secret), "{name} mounts {secret}, which compose does not define");
                    base
                }
                None => key,
            };
            assert!(variables.contains(base), "{name} sets {key}, which no service reads");
            let credential = base.ends_with("_DATABASE_URL") || base == "AMQP_URL" || base == "INVENTORY_TOKEN";
            assert!(!credential || key.ends_with("_FILE"), "{name} sets the credential {key} inline, not as a secret");
        }
        if one_shot {
            continue;
        }
        let setting = |k: &str| env.get(&Yaml::String(k.into())).and_then(Yaml::as_str).map(str::to_owned);

        let test = strings(&service["healthcheck"]["test"]);
        assert_eq!(test.get(..3).map(|t| t.join(" ")), Some("CMD ordermesh probe".into()), "{name}: {test:?}");
        let target = &test[3];
        // The probe must hit the port the service listens on, inside the container.
        let listen = match *name {
            "api-gateway" => setting("GATEWAY_LISTEN_ADDR"),
            "inventory-manager" => setting("INVENTORY_LISTEN_ADDR"),
            "cart-manager" => setting("CART_METRICS_ADDR"),
            "checkout-manager" => setting("CHECKOUT_METRICS_ADDR"),
            "payment-gateway" => setting("PAYMENT_METRICS_ADDR"),
            "notifier" => setting("NOTIFIER_METRICS_ADDR"),
            other => panic!("unexpected service {other}"),
        }
        .unwrap_or_else(|| panic!("{name} sets its listen address"));
        assert!(listen.starts_with("0.0.0.0:"), "{name} listens on all interfaces: {listen}");
        let port = listen.rsplit(':').next().unwrap();
        assert!(target.contains(&format!("127.0.0.1:{port}")), "{name} probes {target}, not its port {port}");

        for (dep, condition) in service["depends_on"].as_hash().into_iter().flatten() {
            let dep = dep.as_str().unwrap();
            assert!(names.contains(&dep), "{name} depends on unknown {dep}");
            if condition["condition"].as_str() == Some("service_healthy") {
                assert!(!compose["services"][dep]["healthcheck"].is_badvalue(), "{dep} must have a health check");
            }
        }
    }
}

#[test]
fn compose_secrets_makes_every_secret_compose_reads_with_one_password_per_engine_and_keeps_them() {
    let docs = YamlLoader::load_from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    let dir = std::env::temp_dir().join(format!("om-compose-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = std::process::Command::new(root().join("scripts/compose-secrets")).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run();
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (name, secret) in docs[0]["secrets"].as_hash().unwrap() {
        let path = secret["file"].as_str().unwrap_or_else(|| panic!("{name:?} is a file"));
        let made = path.strip_prefix("./secrets/").unwrap_or_else(|| panic!("{path} is under ./secrets"));
        assert!(!file(made).trim().is_empty(), "{made} is empty");
    }
    let pg = file("postgres_password").trim().to_owned();
    let mq = file("rabbitmq_password").trim().to_owned();
    assert!(pg.len() >= 32 && mq.len() >= 32 && pg != mq, "long, separate passwords");
    assert!(file("rabbitmq.conf").contains("default_user = ordermesh") && file("rabbitmq.conf").contains(&mq));
    assert_eq!(file("amqp_url").trim(), format!("amqp://ordermesh:{mq}@rabbitmq:5672/%2f"));
    assert_eq!(file("cart_database_url").trim(), format!("postgres://ordermesh:{pg}@postgres:5432/ordermesh_cart"));
    assert!(file("inventory_token").trim().len() >= 32, "a token inventory's `tokens register` accepts");
    let before = file("amqp_url");
    run();
    assert_eq!(file("amqp_url"), before, "a second run keeps what the first made");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_image_caches_dependencies_and_listens_on_all_interfaces() {
    let dockerfile = read("Dockerfile");
    let cook = dockerfile.find("cargo chef cook").expect("dependencies built in their own layer");
    let copy_all = dockerfile[cook..].find("COPY . .").expect("sources copied after the dependency layer");
    assert!(dockerfile[cook + copy_all..].contains("cargo build --release"));
    for setting in ["GATEWAY_LISTEN_ADDR=0.0.0.0:5003", "INVENTORY_LISTEN_ADDR=0.0.0.0:50051"] {
        assert!(dockerfile.contains(setting), "the image's default command listens on all interfaces ({setting})");
    }
    assert!(dockerfile.contains("CMD [\"ordermesh\"]"));
}
