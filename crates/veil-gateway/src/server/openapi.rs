//! The OpenAPI 3 description served at `/openapi.json`. It is written by hand (it says
//! what each endpoint promises, which no route table knows); a test compares its paths
//! and methods with [`super::endpoints`], from which the router is built.

/// The document as written, before the policy's names are filled in.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document served at `/openapi.json`: [`DOCUMENT`] with the loaded policy's names as
/// the allowed values where a parameter takes one (metric names, collection names), so
/// clients and generated tests know them.
pub fn document(policy: &veil_policy::Policy) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    // Both spellings the server takes: `builds` and `ci.build_finished.builds`.
    let metrics: Vec<String> = policy
        .metrics()
        .flat_map(|(c, m)| [m.name.clone(), format!("{}.{}", c.name, m.name)])
        .collect();
    let collections: Vec<&str> = policy
        .collections()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let paths = &mut doc["paths"];
    for p in paths["/v1/reports/{metric}"]["get"]["parameters"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        // OpenAPI forbids an empty enum: a policy without metrics lists none.
        if p["name"] == "metric" && !metrics.is_empty() {
            p["schema"]["enum"] = metrics.clone().into();
        }
    }
    let body = |op: &str| format!("{op}/requestBody/content/application~1json/schema/properties");
    if let Some(props) = paths.pointer_mut(&body("/~1v1~1grants/post")) {
        props["scope"]["enum"] = collections.into(); // a policy has at least one collection
    }
    if let Some(props) = paths
        .pointer_mut(&body("/~1v1~1contests/post"))
        .filter(|_| !metrics.is_empty())
    {
        props["metric"]["enum"] = metrics.into();
    }
    serde_json::to_string(&doc).expect("a JSON value serializes")
}

/// `(method, path)` of every operation in the document.
pub fn operations() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            ops.push((method.clone(), path.clone()));
        }
    }
    ops.sort();
    ops
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_served_document_lists_the_policy_names() {
        let (policy, _) = veil_policy::load_with_team_map(
            include_str!("../../../../examples/policy.yaml"),
            "policy.yaml",
            chrono::Utc::now().date_naive(),
            Some(include_str!("../../../../examples/teams.yaml")),
        )
        .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&super::document(&policy)).unwrap();
        let params = doc["paths"]["/v1/reports/{metric}"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let metric = &params.iter().find(|p| p["name"] == "metric").unwrap()["schema"]["enum"];
        assert!(
            metric.as_array().unwrap().iter().any(|m| m == "builds"),
            "{metric}"
        );
        let scope = doc.pointer("/paths/~1v1~1grants/post/requestBody/content/application~1json/schema/properties/scope/enum").unwrap();
        assert!(
            scope
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "ci.build_finished"),
            "{scope}"
        );
        let m = doc.pointer("/paths/~1v1~1contests/post/requestBody/content/application~1json/schema/properties/metric/enum").unwrap();
        assert_eq!(m, metric);
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let mut routes: Vec<(String, String)> = super::super::endpoints()
            .into_iter()
            .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
            .collect();
        routes.sort();
        assert_eq!(super::operations(), routes);
    }
}
