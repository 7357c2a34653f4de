//! `deploy/` agrees with `spin.toml`: every component runs in exactly one
//! SpinApp (selective deployment), each SpinApp has an autoscaler and the
//! store and variables the components need, and every route reaches the
//! SpinApp that runs its component through the Ingress.

use coupon_host::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
}

/// Every document of every YAML file in `deploy/`, with its file name.
fn documents() -> Vec<(String, Yaml)> {
    let mut documents = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(workspace().join("deploy"))
        .expect("deploy/")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for document in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            documents.push((name.clone(), document));
        }
    }
    documents
}

fn of_kind<'a>(documents: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    documents
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

fn name(document: &Yaml) -> &str {
    document["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .map(|items| items.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn spinapps_deploy_every_component_once_with_its_store_variables_and_autoscaler() {
    let manifest = Manifest::load(workspace().join("spin.toml")).expect("spin.toml");
    let documents = documents();
    let spinapps = of_kind(&documents, "SpinApp");
    let mut deployed: BTreeMap<&str, &str> = BTreeMap::new();
    let declared: BTreeSet<&str> = manifest.variables.keys().map(String::as_str).collect();
    for app in &spinapps {
        for component in strings(&app["spec"]["components"]) {
            assert!(
                manifest.components.contains_key(component),
                "SpinApp {} runs {component:?}, which spin.toml does not have",
                name(app)
            );
            let previous = deployed.insert(component, name(app));
            assert!(previous.is_none(), "{component:?} is in two SpinApps");
        }
        let stores = app["spec"]["runtimeConfig"]["keyValueStores"]
            .as_vec()
            .expect("keyValueStores");
        assert!(
            stores
                .iter()
                .any(|s| s["name"].as_str() == Some("default")
                    && s["type"].as_str() == Some("redis")),
            "SpinApp {} has no Redis default store",
            name(app)
        );
        let variables: BTreeSet<&str> = app["spec"]["variables"]
            .as_vec()
            .expect("variables")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(variables, declared, "SpinApp {} variables", name(app));
    }
    let components: BTreeSet<&str> = manifest.components.keys().map(String::as_str).collect();
    assert_eq!(
        deployed.keys().copied().collect::<BTreeSet<_>>(),
        components
    );

    let scaled: BTreeSet<&str> = of_kind(&documents, "HorizontalPodAutoscaler")
        .iter()
        .map(|hpa| {
            hpa["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .expect("a target")
        })
        .collect();
    let apps: BTreeSet<&str> = spinapps.iter().map(|app| name(app)).collect();
    assert_eq!(scaled, apps, "one autoscaler per SpinApp");
}

#[test]
fn the_ingress_sends_every_route_to_the_spinapp_running_its_component() {
    let manifest = Manifest::load(workspace().join("spin.toml")).expect("spin.toml");
    let documents = documents();
    let service_of: BTreeMap<&str, &str> = of_kind(&documents, "SpinApp")
        .into_iter()
        .flat_map(|app| {
            strings(&app["spec"]["components"])
                .into_iter()
                .map(move |c| (c, name(app)))
        })
        .collect();
    let ingress = of_kind(&documents, "Ingress");
    let paths: Vec<(String, String, String)> = ingress
        .iter()
        .flat_map(|i| i["spec"]["rules"].as_vec().cloned().unwrap_or_default())
        .flat_map(|rule| rule["http"]["paths"].as_vec().cloned().unwrap_or_default())
        .map(|p| {
            let text = |y: &Yaml| y.as_str().unwrap_or_default().to_owned();
            (
                text(&p["path"]),
                text(&p["pathType"]),
                text(&p["backend"]["service"]["name"]),
            )
        })
        .collect();
    for trigger in &manifest.http_triggers {
        // `/a/...` and `/a/:x` are a prefix; anything else is one exact path.
        let (path, kind) = match trigger.route.split_once("/...") {
            Some((prefix, _)) => (prefix.to_owned(), "Prefix"),
            None => match trigger.route.split_once("/:") {
                Some((prefix, _)) => (prefix.to_owned(), "Prefix"),
                None => (trigger.route.clone(), "Exact"),
            },
        };
        let service = service_of[trigger.component.as_str()];
        assert!(
            paths.contains(&(path.clone(), kind.to_owned(), service.to_owned())),
            "route {} (component {}) needs an Ingress path {path} {kind} -> {service}",
            trigger.route,
            trigger.component
        );
    }
    assert_eq!(
        paths.len(),
        manifest.http_triggers.len(),
        "one Ingress path per route"
    );
}
