//! `openapi.yaml` is served, and the checker that every other test runs each reply through
//! (`common::openapi::check`) rejects what the description does not allow.

mod common;

use common::{get, openapi, Reply};

fn reply(status: u16, content_type: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![
        ("Access-Control-Allow-Origin".to_owned(), "*".to_owned()),
        (
            "X-Request-Id".to_owned(),
            "0123456789abcdef01234567".to_owned(),
        ),
    ];
    if let Some(t) = content_type {
        headers.push(("Content-Type".to_owned(), t.to_owned()));
        if t == "application/json" && status == 200 {
            headers.push(("ETag".to_owned(), "\"0123456789abcdef\"".to_owned()));
            headers.push(("Vary".to_owned(), "Accept-Encoding".to_owned()));
        }
    }
    Reply {
        status,
        headers,
        body: body.to_owned(),
        raw_body: body.as_bytes().to_vec(),
    }
}

fn accepted(request: &str, reply: &Reply) -> bool {
    let request = request.as_bytes().to_vec();
    let reply = Reply {
        status: reply.status,
        headers: reply.headers.clone(),
        body: reply.body.clone(),
        raw_body: reply.raw_body.clone(),
    };
    std::panic::catch_unwind(move || openapi::check(&request, &reply)).is_ok()
}

#[tokio::test]
async fn the_server_serves_its_own_description() {
    let db = common::migrated_database().await;
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("read openapi.yaml");
    for path in ["/openapi.yaml", "/api/fec2/hr-rfp/openapi.yaml/"] {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/yaml"));
        assert!(
            r.body == file,
            "{path} serves the repository's openapi.yaml"
        );
    }
}

#[test]
fn the_checker_rejects_what_the_description_does_not_allow() {
    let product = r#"{"id":1,"name":"n","slogan":"s","description":"d","category":"c","default_price":"1.00","features":[]}"#;
    let json = Some("application/json");
    let get = "GET /products/1 HTTP/1.1\r\n\r\n";
    assert!(accepted(get, &reply(200, json, product)), "a valid product");
    assert!(
        accepted(
            "GET /api/fec2/x/products/1/ HTTP/1.1\r\n\r\n",
            &reply(200, json, product)
        ),
        "prefix and trailing slash"
    );
    let text = Some("text/plain; charset=utf-8");
    assert!(accepted(get, &reply(404, text, "Not Found")));

    let wrong_field = product.replace(r#""default_price":"1.00""#, r#""default_price":1"#);
    assert!(
        !accepted(get, &reply(200, json, &wrong_field)),
        "a price must be a string"
    );
    let extra = product.replace(r#""features":[]"#, r#""features":[],"extra":1"#);
    assert!(
        !accepted(get, &reply(200, json, &extra)),
        "no undocumented field"
    );
    assert!(
        !accepted(get, &reply(418, text, "teapot")),
        "an undocumented status"
    );
    assert!(
        !accepted(get, &reply(200, text, product)),
        "an undocumented content type"
    );
    assert!(
        !accepted(get, &reply(404, text, "Nope")),
        "an undocumented error text"
    );
    let mut no_tag = reply(200, json, product);
    no_tag.headers.retain(|(k, _)| k != "ETag");
    assert!(!accepted(get, &no_tag), "a 200 JSON body carries its ETag");
    let mut no_vary = reply(200, json, product);
    no_vary.headers.retain(|(k, _)| k != "Vary");
    assert!(!accepted(get, &no_vary), "a 200 JSON body says Vary");
    let mut coded = reply(200, json, product);
    coded
        .headers
        .push(("Content-Encoding".to_owned(), "gzip".to_owned()));
    assert!(!accepted(get, &coded), "gzip to a client that did not ask");
    let asks = "GET /products/1 HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n";
    assert!(accepted(asks, &coded), "gzip to a client that asked");
    let refuses = "GET /products/1 HTTP/1.1\r\nAccept-Encoding: br, gzip;q=0\r\n\r\n";
    assert!(
        !accepted(refuses, &coded),
        "gzip to a client that refused it"
    );
    let mut no_cors = reply(200, json, product);
    no_cors
        .headers
        .retain(|(k, _)| k != "Access-Control-Allow-Origin");
    assert!(!accepted(get, &no_cors), "CORS header required");
    assert!(
        !accepted("GET /nowhere HTTP/1.1\r\n\r\n", &reply(200, json, "[]")),
        "an unknown path must answer 404"
    );
    assert!(
        !accepted(
            "DELETE /products/1 HTTP/1.1\r\n\r\n",
            &reply(200, json, product)
        ),
        "a method the path lacks must answer 405"
    );
    assert!(
        !accepted(
            "GET /reviews?product_id=1 HTTP/1.1\r\n\r\n",
            &reply(503, text, "Service Unavailable")
        ),
        "503 carries Retry-After"
    );
}
