//! The OpenAPI documents: generated from the code, committed under docs/openapi/, served by
//! each service with a docs page. `CTR_BLESS=1` rewrites the committed files.

use std::path::PathBuf;

use ctr_system_tests::World;

fn documents() -> [(&'static str, utoipa::openapi::OpenApi); 4] {
    [
        ("order-processing", order_processing::openapi()),
        ("coupons", coupons::openapi()),
        ("points", points::openapi()),
        ("payments", payments::openapi()),
    ]
}

fn committed(service: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/openapi/{service}.json"))
}

#[test]
fn the_committed_documents_are_the_generated_ones() {
    let bless = std::env::var_os("CTR_BLESS").is_some();
    let mut stale = Vec::new();
    for (service, doc) in documents() {
        let generated = ctr_service_kit::openapi::to_json(&doc);
        let path = committed(service);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(service);
        }
    }
    assert!(
        stale.is_empty(),
        "docs/openapi/ is stale for {stale:?}: run `CTR_BLESS=1 cargo test -p ctr-system-tests openapi` and commit the result"
    );
}

#[test]
fn every_document_is_openapi_3_1_with_its_problems() {
    for (service, doc) in documents() {
        let json: serde_json::Value =
            serde_json::from_str(&ctr_service_kit::openapi::to_json(&doc)).unwrap();
        assert_eq!(json["openapi"], "3.1.0", "{service}");
        assert!(
            json["components"]["schemas"]["Problem"].is_object(),
            "{service}"
        );
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.contains_key("500"), "{service} {method} {path}");
                assert!(
                    responses.contains_key("default"),
                    "{service} {method} {path}"
                );
                for (status, answer) in responses {
                    let content = answer["content"].as_object().unwrap();
                    let expected = if status.starts_with('2') {
                        "application/json"
                    } else {
                        "application/problem+json"
                    };
                    assert!(
                        content.contains_key(expected),
                        "{service} {method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_service_serves_its_document_and_an_offline_docs_page() {
    let world = World::start().await;
    let urls = [
        world.relay.url(""),
        world.coupons.running.url(""),
        world.points.running.url(""),
        world.payments.running.url(""),
    ];
    for ((service, doc), base) in documents().into_iter().zip(urls) {
        let response = world
            .customer
            .get(format!("{base}/service/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{service}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            ctr_service_kit::openapi::to_json(&doc),
            "{service}"
        );
        let page = world
            .customer
            .get(format!("{base}/service/v1/docs"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{service}");
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = page.text().await.unwrap();
        assert!(html.contains("fetch(\"openapi.json\")"), "{service}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{service}: the docs page loads nothing from elsewhere"
        );
    }
}

#[test]
fn the_relays_document_describes_each_event_it_sends_as_a_webhook() {
    let json: serde_json::Value = serde_json::from_str(&ctr_service_kit::openapi::to_json(
        &order_processing::openapi(),
    ))
    .unwrap();
    let webhooks = json["webhooks"].as_object().unwrap();
    let mut names: Vec<&str> = webhooks.keys().map(String::as_str).collect();
    let mut expected = ctr_webhooks::EventType::ALL.map(ctr_webhooks::EventType::as_str);
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (name, item) in webhooks {
        let post = &item["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Event",
            "{name}"
        );
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            ["webhook-id", "webhook-timestamp", "webhook-signature"],
            "{name}"
        );
    }
    let event = &json["components"]["schemas"]["Event"];
    assert!(event["properties"]["data"].is_object(), "{event}");
}
