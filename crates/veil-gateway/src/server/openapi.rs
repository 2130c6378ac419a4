//! The OpenAPI 3 description served at `/openapi.json`. It is written by hand (it says
//! what each endpoint promises, which no route table knows); a test compares its paths
//! and methods with [`super::endpoints`], from which the router is built.

/// The document, verbatim.
pub const DOCUMENT: &str = include_str!("openapi.json");

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
    fn every_route_is_documented_and_every_documented_route_exists() {
        let mut routes: Vec<(String, String)> = super::super::endpoints()
            .into_iter()
            .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
            .collect();
        routes.sort();
        assert_eq!(super::operations(), routes);
    }
}
