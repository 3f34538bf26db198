//! The Kubernetes deployment (`deploy/k8s`): each kustomization rendered by kustomize (kubectl's
//! built-in one) and every object validated offline by `k8s_validate.py`, built-in kinds
//! against the Kubernetes schemas kubernetes-validate ships and KEDA's `ScaledObject` against
//! the models cloudcoil generates from KEDA's CRDs; then the objects checked against
//! `config/k8s.toml` as the config crate loads it. kubectl and both validators come from
//! `.services/venv` (`scripts/pytools.sh`). No cluster is involved: what the API server, the
//! kubelet and KEDA do with the objects is not tested here.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shardflow_config::Config;

/// The Kubernetes release whose schemas the objects must satisfy (the kubectl's release).
const KUBERNETES: &str = "1.37.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubectl kustomize DIR`: the rendered YAML, or kustomize's error.
fn render(dir: &Path) -> Result<String, String> {
    let kubectl = shardflow_testkit::python().with_file_name("kubectl");
    assert!(kubectl.is_file(), "{} is missing: run scripts/pytools.sh (make test does)", kubectl.display());
    let out = Command::new(&kubectl).arg("kustomize").arg(dir).output().expect("run kubectl kustomize");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("YAML is UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every object of `yaml`, when each one is valid; else the validator's complaints.
fn validate(yaml: &str) -> Result<Vec<Value>, String> {
    let mut child = Command::new(shardflow_testkit::python())
        .arg(root().join("tests/tests/k8s_validate.py"))
        .arg(KUBERNETES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the validator");
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("write the objects");
    let out = child.wait_with_output().expect("validator finishes");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("the validator prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn rendered_and_valid(kustomization: &str) -> Vec<Value> {
    let dir = root().join("deploy/k8s").join(kustomization);
    let yaml = render(&dir).unwrap_or_else(|e| panic!("kustomize refuses {}: {e}", dir.display()));
    validate(&yaml).unwrap_or_else(|e| panic!("invalid objects in {}:\n{e}", dir.display()))
}

/// `kind/name`, generated names without kustomize's hash suffix.
fn names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| {
            let name = o["metadata"]["name"].as_str().expect("named");
            let generated = matches!(o["kind"].as_str(), Some("ConfigMap" | "Secret"));
            let name = if generated { name.rsplit_once('-').expect("hash suffix").0 } else { name };
            format!("{}/{name}", o["kind"].as_str().expect("kind"))
        })
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn container(objects: &[Value], deployment: &str) -> Value {
    let pod = &object(objects, "Deployment", deployment)["spec"]["template"]["spec"];
    pod["containers"][0].clone()
}

fn k8s_config() -> Config {
    Config::load(Some(&root().join("config/k8s.toml"))).expect("config/k8s.toml loads through the config crate")
}

const BASE: [&str; 8] = [
    "ConfigMap/shardflow-config",
    "Deployment/shardflow-api",
    "Deployment/shardflow-consumer",
    "Deployment/shardflow-game-rounds",
    "PersistentVolumeClaim/shardflow-data",
    "Secret/shardflow-api",
    "Secret/shardflow-storage",
    "Service/shardflow-api",
];

#[test]
fn the_base_renders_and_every_object_is_valid() {
    let objects = rendered_and_valid("base");
    assert_eq!(names(&objects), BASE.iter().map(|s| (*s).to_string()).collect());
    assert_eq!(object(&objects, "Deployment", "shardflow-consumer")["spec"]["replicas"], 2);
    let sink = container(&objects, "shardflow-game-rounds");
    assert_eq!(sink["command"], serde_json::json!(["consumer", "game-rounds"]), "as docker-compose.yml starts it");
    assert_eq!(container(&objects, "shardflow-api")["command"], serde_json::json!(["producer", "serve"]));
}

#[test]
fn the_keda_overlay_scales_consumers_on_their_lag() {
    let objects = rendered_and_valid("keda");
    let mut expected: BTreeSet<String> = BASE.iter().map(|s| (*s).to_string()).collect();
    let _ = expected.insert("ScaledObject/shardflow-consumer".into());
    assert_eq!(names(&objects), expected);
    let consumer = object(&objects, "Deployment", "shardflow-consumer");
    assert!(consumer["spec"].get("replicas").is_none(), "KEDA owns the replica count: {consumer}");

    let config = k8s_config();
    let scaled = &object(&objects, "ScaledObject", "shardflow-consumer")["spec"];
    assert_eq!(scaled["scaleTargetRef"]["name"], "shardflow-consumer");
    let max = scaled["maxReplicaCount"].as_i64().expect("a maximum");
    assert!(max <= i64::from(config.kafka.partitions), "more consumers than partitions sit idle");
    let trigger = &scaled["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    let lag = &trigger["metadata"];
    assert_eq!(lag["bootstrapServers"], config.kafka.brokers.as_str());
    assert_eq!(lag["consumerGroup"], config.kafka.group_id.as_str());
    assert_eq!(lag["topic"], config.kafka.topic.as_str());
}

#[test]
fn the_objects_agree_with_the_configuration_they_mount() {
    let config = k8s_config();
    assert_eq!(
        (config.kafka.brokers.as_str(), config.clickhouse.url.as_str()),
        ("kafka:9092", "http://clickhouse:8123/")
    );
    let objects = rendered_and_valid("base");
    let file = std::fs::read_to_string(root().join("config/k8s.toml")).expect("read config/k8s.toml");
    assert_eq!(object(&objects, "ConfigMap", "shardflow-config")["data"]["shardflow.toml"], file.as_str());

    for deployment in ["shardflow-api", "shardflow-consumer", "shardflow-game-rounds"] {
        let c = container(&objects, deployment);
        let env = c["env"].as_array().expect("env");
        let path = env.iter().find(|e| e["name"] == "SHARDFLOW_CONFIG").expect("SHARDFLOW_CONFIG")["value"].clone();
        let mount = c["volumeMounts"].as_array().expect("mounts").iter().find(|m| m["name"] == "config").cloned();
        let mount = mount.unwrap_or_else(|| panic!("{deployment} mounts no config"));
        assert_eq!(path, format!("{}/shardflow.toml", mount["mountPath"].as_str().expect("path")), "{deployment}");
    }

    // The consumer: ready on /readyz of consumer.listen's port, and given longer than
    // consumer.shutdown_timeout to finish its chunk after SIGTERM.
    let consumer = container(&objects, "shardflow-consumer");
    let probe = &consumer["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/readyz");
    let port =
        consumer["ports"].as_array().expect("ports").iter().find(|p| p["name"] == probe["port"]).expect("probe port");
    assert_eq!(port["containerPort"], config.consumer.listen.port());
    for deployment in ["shardflow-consumer", "shardflow-game-rounds"] {
        let pod = &object(&objects, "Deployment", deployment)["spec"]["template"]["spec"];
        let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().expect("a grace period"));
        assert!(grace > config.consumer.shutdown_timeout, "{deployment}: {grace:?} is not above the shutdown timeout");
    }

    // The API listens beyond loopback, which it refuses without a token: the Secret gives one.
    assert!(config.api.check_exposure().is_err());
    let api = container(&objects, "shardflow-api");
    assert_eq!(api["ports"][0]["containerPort"], config.api.listen.port());
    let secret = object(&objects, "Secret", "shardflow-api");
    for (var, key) in [("SHARDFLOW__API__TOKEN", "token"), ("SHARDFLOW__API__READ_TOKEN", "read_token")] {
        let env = api["env"].as_array().expect("env").iter().find(|e| e["name"] == var).expect(var);
        let reference = &env["valueFrom"]["secretKeyRef"];
        assert_eq!((&reference["name"], &reference["key"]), (&secret["metadata"]["name"], &Value::from(key)));
        assert!(secret["data"].get(key).is_some(), "the Secret has no {key}");
    }
}

#[test]
fn the_validator_refuses_broken_objects() {
    let typo = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {a: b}}\n  \
                template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n      - name: c\n        \
                image: i\n        readinessProbes: {}\n";
    let err = validate(typo).expect_err("an unknown field");
    assert!(err.contains("Deployment/d") && err.contains("readinessProbes"), "{err}");
    let untargeted = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: s}\nspec:\n  triggers:\n  \
                      - type: kafka\n    metadata: {topic: t}\n";
    let err = validate(untargeted).expect_err("no scaleTargetRef");
    assert!(err.contains("ScaledObject/s") && err.contains("scaleTargetRef"), "{err}");
    let unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    assert!(validate(unknown).expect_err("no schema").contains("Widget"));

    // The same for a broken copy of the base, rendered by kustomize.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("deploy/k8s/base"), copy.path());
    let consumer = copy.path().join("consumer.yaml");
    let text = std::fs::read_to_string(&consumer).expect("read consumer.yaml");
    let broken = text.replace("readinessProbe:", "readinessProbes:");
    assert_ne!(broken, text, "consumer.yaml has a readiness probe to misspell");
    std::fs::write(&consumer, broken).expect("break consumer.yaml");
    let err = validate(&render(copy.path()).expect("renders")).expect_err("a misspelt field");
    assert!(err.contains("Deployment/shardflow-consumer") && err.contains("readinessProbes"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            let _ = std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
